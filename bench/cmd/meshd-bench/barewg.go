package main

import (
	"encoding/json"
	"fmt"
	"log/slog"
	"net/netip"
	"os"
	"os/signal"
	"syscall"

	"golang.zx2c4.com/wireguard/wgctrl/wgtypes"

	"github.com/meshd/meshd/internal/device"
)

// bareSpec configures one bare wireguard-go interface: the reference
// without meshd (no registry, no reconciler, no firewall).
type bareSpec struct {
	Name     string
	Key      wgtypes.Key
	Address  netip.Prefix
	Peer     wgtypes.Key
	Endpoint netip.AddrPort
	PeerIP   netip.Addr
}

// runBareWG is the `bare-wg SPEC` mode, run inside a host's namespace: it
// brings the interface up with one peer and holds it until SIGTERM.
func runBareWG(spec string) error {
	var s bareSpec
	if err := json.Unmarshal([]byte(spec), &s); err != nil {
		return err
	}
	// Upstream's bind: this is the reference without anything of meshd's.
	d, err := device.New(device.Config{Name: s.Name, PrivateKey: s.Key, ListenPort: 51820, Address: s.Address, Bind: device.BindWireGuardGo,
		Logger: slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelError}))})
	if err != nil {
		return err
	}
	defer d.Close()
	if err := d.Apply(device.Delta{Upsert: []device.Peer{{PublicKey: s.Peer, Endpoint: s.Endpoint, AllowedIPs: []netip.Prefix{netip.PrefixFrom(s.PeerIP, 32)}}}}); err != nil {
		return err
	}
	fmt.Println("ready")
	sig := make(chan os.Signal, 1)
	signal.Notify(sig, syscall.SIGTERM, syscall.SIGINT)
	<-sig
	return nil
}
