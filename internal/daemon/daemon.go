package daemon

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"fmt"
	"log/slog"
	"net/netip"
	"os"
	"sync"
	"time"

	"github.com/vishvananda/netlink"

	"github.com/meshd/meshd/firewall"
	"github.com/meshd/meshd/internal/admin"
	"github.com/meshd/meshd/internal/config"
	"github.com/meshd/meshd/internal/device"
	"github.com/meshd/meshd/internal/device/handshake"
	"github.com/meshd/meshd/internal/ec2"
	"github.com/meshd/meshd/internal/identity"
	"github.com/meshd/meshd/internal/keys"
	"github.com/meshd/meshd/internal/policy"
	"github.com/meshd/meshd/internal/probe"
	"github.com/meshd/meshd/internal/version"
	"github.com/meshd/meshd/mesh"
	"github.com/meshd/meshd/registry"
)

// Daemon is one running meshd host.
type Daemon struct {
	log   *slog.Logger
	level *slog.LevelVar
	start time.Time

	mu  sync.Mutex
	cfg config.Config

	reg   *registry.Registry
	dev   *device.Device
	rec   *mesh.Reconciler
	ident *handshake.Identifier // lazy peers: who sent an initiation; nil when off
	self  registry.Host

	fw            *firewall.Firewall // nil when firewall.mode is off
	policyErr     error
	policyWarning string // groups no live host has, or a missing policy node
	policyApplied bool   // a policy (or the no-policy default) is in force
	// policyInForce is the policy the firewall enforces (nil: members
	// reach members): explain describes it, not whatever ZooKeeper holds.
	policyInForce *policy.Policy

	linksFromRegistry [][]string
	metrics           *admin.Metrics
	rotateMu          sync.Mutex
	region            string // EC2 region, "" off EC2
	tagger            *ec2.Tagger
	dns               dnsState
	gate              trustGate        // the trust in force (none until configured)
	docGood           map[string]bool  // a signed document was accepted
	docRefused        map[string]int64 // refused fleet documents by reason
	docRefusals       []admin.Refusal
}

// Start brings the host up: key, registry (or its snapshot), lease, device,
// reconciler. On error everything already started is taken down again.
func Start(ctx context.Context, cfg config.Config, log *slog.Logger, level *slog.LevelVar) (_ *Daemon, err error) {
	var d *Daemon
	if err := applyDebugIdleAfter(&cfg, os.Getenv, log); err != nil {
		return nil, err
	}
	res, err := identity.Resolve(ctx, cfg.Identity, identity.Options{})
	if err != nil {
		return nil, err
	}
	cfg.Identity = res.Identity
	if errs := cfg.ValidateIdentity(); len(errs) > 0 {
		return nil, fmt.Errorf("identity from %s:\n%w", cfg.Identity.Source, errs)
	}
	d = &Daemon{cfg: cfg, log: log, level: level, start: time.Now(), region: res.Region,
		docGood: map[string]bool{}, docRefused: map[string]int64{}}
	d.metrics = admin.NewMetrics(d, version.Version)
	defer func() {
		if err != nil {
			d.Close()
		}
	}()
	// A rotation a crash interrupted is dropped: the current key stays.
	if err := keys.DiscardNext(cfg.StateDir); err != nil {
		return nil, err
	}
	key, err := keys.LoadOrCreate(cfg.StateDir)
	if err != nil {
		return nil, err
	}
	tlsCfg, err := zkTLS(cfg.ZooKeeper.TLS)
	if err != nil {
		return nil, err
	}
	t, err := loadTrust(cfg, log)
	if err != nil {
		return nil, err
	}
	if t != nil {
		d.gate.p.Store(t)
		// Groups come from the certificate alone, for this host too.
		cfg.Identity.Groups = t.signer.Identity().Groups
		d.cfg.Identity.Groups = cfg.Identity.Groups
	}
	d.reg, err = registry.Open(ctx, registry.Options{
		Servers: cfg.ZooKeeper.Servers, Mesh: cfg.Mesh, SessionTimeout: cfg.ZooKeeper.SessionTimeout,
		Pool: cfg.Overlay.CIDR, Quarantine: cfg.Tuning.Quarantine, DigestSecretFile: cfg.ZooKeeper.DigestSecretFile,
		TLS: tlsCfg, StateDir: cfg.StateDir, Logger: log, Trust: &d.gate, MaxGroups: cfg.Registry.MaxGroups,
		HoldRecord: true, // published in Run, once the device's socket is open
		Self: registry.Host{InstanceID: cfg.Identity.InstanceID, Network: cfg.Identity.Network,
			PrivateIP: cfg.Identity.PrivateIP, PublicIP: cfg.Identity.PublicIP,
			PrivateIP6: cfg.Identity.PrivateIP6, PublicIP6: cfg.Identity.PublicIP6},
	})
	if err != nil {
		return nil, err
	}
	id := cfg.Identity
	d.self = registry.Host{
		InstanceID: id.InstanceID, PublicKey: key.PublicKey(), Network: id.Network,
		PrivateIP: id.PrivateIP, PublicIP: id.PublicIP, PrivateIP6: id.PrivateIP6, PublicIP6: id.PublicIP6,
		ListenPort: uint16(cfg.Interface.ListenPort), Groups: id.Groups, Version: version.Version, StartTime: d.start.UTC(),
	}
	// The firewall comes up from the snapshot while the lease is fetched:
	// both must be done before the device, neither waits for the other.
	type leased struct {
		ip  netip.Addr
		err error
	}
	lease := make(chan leased, 1)
	go func(self registry.Host) {
		ip, err := d.reg.Register(ctx, self, 5*time.Second)
		lease <- leased{ip, err}
	}(d.self)
	if err = d.startFirewall(cfg, log); err != nil {
		return nil, err
	}
	l := <-lease
	overlay, err := l.ip, l.err
	if err != nil {
		return nil, err
	}
	d.self.OverlayIP = overlay
	mtu := cfg.Interface.MTU
	if mtu == 0 {
		mtu = autoMTU(id.PrivateIP, log)
	}
	devCfg := device.Config{
		Name: cfg.Interface.Name, PrivateKey: key, ListenPort: cfg.Interface.ListenPort, MTU: mtu, Bind: cfg.Interface.Bind,
		Address: netip.PrefixFrom(overlay, cfg.Overlay.CIDR.Bits()), Logger: log,
	}
	if cfg.Peers.Lazy {
		// Both asks reach the reconciler, created below; neither comes
		// before it: packets are held only for addresses it marks idle,
		// and the identifier's worker starts in Run.
		d.ident, err = handshake.NewIdentifier(handshake.Config{PrivateKey: key,
			OnInitiation: func(in handshake.Initiation) {
				d.rec.PeerInitiated(in.Peer, func() error { return d.dev.Redeliver(in.From, in.Msg[:]) })
			}})
		if err != nil {
			return nil, err
		}
		devCfg.OnInitiation = d.ident.Offer
		devCfg.OnIdlePacket = func(a netip.Addr) { d.rec.WantPeer(a) }
	}
	d.dev, err = device.New(devCfg)
	if err != nil {
		return nil, err
	}
	var lazy *mesh.LazyConfig
	if cfg.Peers.Lazy {
		lazy = &mesh.LazyConfig{IdleAfter: cfg.Peers.IdleAfter, Gate: d.dev, Initiators: d.ident}
	}
	var mem mesh.Members
	if d.fw != nil {
		mem = members{d.fw}
	}
	d.rec = mesh.New(mesh.Config{
		Self:     d.self,
		Links:    mesh.NewLinks(cfg.Links),
		Timers:   mesh.PathTimers{Handshake: cfg.Tuning.HandshakeTimeout, FirstRetry: cfg.Tuning.PathRetry, MaxRetry: 5 * time.Minute},
		HoldDown: cfg.Tuning.HoldDown,
		Breaker:  mesh.BreakerConfig{MaxRemovals: cfg.Tuning.MaxRemovals, Window: cfg.Tuning.BreakerWindow},
		Prober:   probe.ICMP{},
		Lazy:     lazy,
		OnApply: func(took time.Duration, n int) {
			d.metrics.ApplyLatency.Observe(took.Seconds())
			d.metrics.Applied.Add(float64(n))
		},
		Logger: log,
	}, d.dev, mem)
	// The view (at start the snapshot's hosts) goes in as one batch: the
	// reconciler knows every peer before the admin API answers, and the
	// registry's events are only the changes after it.
	d.rec.HandleEvents(viewAsEvents(d.reg.Hosts()))
	d.startDNS()
	d.reg.OnDocument(registry.DocLinks, d.onLinks)
	d.reg.OnDocument(registry.DocRevoked, d.onRevoked)
	log.Info("meshd up", "host", id.InstanceID, "overlay_ip", overlay, "interface", cfg.Interface.Name, "mtu", mtu,
		"network", id.Network, "public_key", key.PublicKey(), "version", version.Version)
	return d, nil
}

// Run applies registry changes until ctx ends.
func (d *Daemon) Run(ctx context.Context) error {
	if d.cfg.MetricsListen != "" {
		go func() {
			if err := d.metrics.ServeMetrics(ctx, d.cfg.MetricsListen); err != nil {
				d.log.Error("metrics endpoint", "listen", d.cfg.MetricsListen, "err", err)
			}
		}()
	}
	if d.fw != nil {
		go d.resyncFirewall(ctx)
	}
	d.startTagger(ctx)
	go d.watchCert(ctx)
	if d.ident != nil {
		go d.ident.Run(ctx)
	}
	// The device's socket is open and the reconciler knows the fleet:
	// peers that handshake on seeing this record reach it.
	d.reg.Publish()
	go trimMemory(ctx, trimCheck, d.log)
	if d.cfg.Tuning.KeyRotation > 0 {
		go d.rotateOnSchedule(ctx, d.cfg.Tuning.KeyRotation)
	}
	return d.rec.Run(ctx, d.reg.Events())
}

func viewAsEvents(hosts []*registry.Host) []registry.Event {
	evs := make([]registry.Event, len(hosts))
	for i, h := range hosts {
		evs[i] = registry.Event{Kind: registry.Added, Host: h}
	}
	return evs
}

// onLinks merges the fleet-wide links from the registry with the config's.
func (d *Daemon) onLinks(data []byte) {
	data, err := d.openDocument(registry.DocLinks, data)
	if err != nil {
		return
	}
	var pairs [][]string
	if len(data) > 0 {
		if err := json.Unmarshal(data, &pairs); err != nil {
			d.log.Error("registry links document is not a JSON list of pairs; keeping the previous links", "err", err)
			return
		}
	}
	d.mu.Lock()
	d.linksFromRegistry = pairs
	all := append(append([][]string{}, d.cfg.Links...), pairs...)
	d.mu.Unlock()
	d.rec.SetLinks(mesh.NewLinks(all))
}

// Reload applies what can change without a restart: log level and links.
func (d *Daemon) Reload(cfg config.Config) {
	d.level.Set(parseLevel(cfg.LogLevel))
	d.reloadTrust(cfg)
	d.mu.Lock()
	d.cfg.Links, d.cfg.LogLevel = cfg.Links, cfg.LogLevel
	all := append(append([][]string{}, cfg.Links...), d.linksFromRegistry...)
	d.mu.Unlock()
	d.rec.SetLinks(mesh.NewLinks(all))
	d.log.Info("configuration reloaded", "links", all, "log_level", cfg.LogLevel, "trust_mode", cfg.Trust.Mode)
}

// Close deregisters and removes the interface. Safe on a partial start.
func (d *Daemon) Close() {
	d.stopDNS()
	if d.reg != nil {
		d.reg.Close()
	}
	if d.fw != nil {
		d.fw.Close()
	}
	if d.dev != nil {
		if err := d.dev.Close(); err != nil {
			d.log.Error("close device", "err", err)
		}
	}
}

// zkTLS builds the client TLS config: the CA verifies the servers; a
// client certificate is presented when configured (mutual TLS).
func zkTLS(t config.TLS) (*tls.Config, error) {
	if !t.Enabled() {
		return nil, nil
	}
	pem, err := os.ReadFile(t.CAFile)
	if err != nil {
		return nil, fmt.Errorf("zookeeper.tls.ca_file: %w", err)
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(pem) {
		return nil, fmt.Errorf("zookeeper.tls.ca_file %s: no PEM certificate in it", t.CAFile)
	}
	c := &tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS12}
	if t.CertFile != "" {
		cert, err := tls.LoadX509KeyPair(t.CertFile, t.KeyFile)
		if err != nil {
			return nil, fmt.Errorf("zookeeper.tls.cert_file/key_file: %w", err)
		}
		c.Certificates = []tls.Certificate{cert}
	}
	return c, nil
}

// autoMTU picks the overlay MTU when interface.mtu is 0. A packet to a
// peer may cross the private network, a direct-connect link or the public
// internet, and this host cannot see the narrowest of them: its own
// interface (9001 bytes on EC2, 65536 on loopback) says nothing about the
// internet, which carries 1500 and often drops the ICMP that would say so,
// so a larger overlay MTU blackholes large packets there. The default is
// 1420 (1500 less WireGuard's 80 bytes), lower only when the interface
// holding the host's underlay address is itself narrower; an overlay MTU
// above 1420 is for interface.mtu, set by someone who knows every path.
func autoMTU(underlay netip.Addr, log *slog.Logger) int {
	mtu := device.DefaultMTU
	if link, err := linkWithAddr(underlay); err != nil {
		log.Debug("underlay interface unknown; using the default overlay MTU", "underlay", underlay, "mtu", mtu, "err", err)
	} else if m := link.Attrs().MTU - 80; m < mtu {
		// Never below IPv6's minimum: a smaller overlay would not work at all.
		mtu = max(m, 1280)
	}
	return mtu
}

// linkWithAddr finds the interface that holds addr.
func linkWithAddr(addr netip.Addr) (netlink.Link, error) {
	if !addr.IsValid() {
		return nil, fmt.Errorf("no underlay address")
	}
	addrs, err := netlink.AddrList(nil, netlink.FAMILY_ALL)
	if err != nil {
		return nil, fmt.Errorf("list addresses: %w", err)
	}
	for _, a := range addrs {
		if ip, ok := netip.AddrFromSlice(a.IP); ok && ip.Unmap() == addr.Unmap() {
			return netlink.LinkByIndex(a.LinkIndex)
		}
	}
	return nil, fmt.Errorf("no interface holds %s", addr)
}
