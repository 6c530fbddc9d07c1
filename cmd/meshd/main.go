// Command meshd is the mesh daemon: it joins this host to the overlay, keeps
// its WireGuard peers and firewall in step with the registry, and serves the
// admin API that meshctl talks to.
package main

import (
	"context"
	"fmt"
	"log/slog"
	"os"

	"github.com/alecthomas/kong"

	"github.com/meshd/meshd/firewall"
	"github.com/meshd/meshd/internal/config"
	"github.com/meshd/meshd/internal/identity"
	"github.com/meshd/meshd/internal/trust"
	"github.com/meshd/meshd/internal/version"
)

type cli struct {
	Run         runCmd         `cmd:"" help:"Run the daemon in the foreground (systemd Type=notify)."`
	CheckConfig checkConfigCmd `cmd:"" name:"check-config" help:"Validate a config file and print the effective config."`
	CSR         csrCmd         `cmd:"" name:"csr" help:"Print a PKCS#10 request (PEM) for this host's identity key, creating the key (0600) at trust.key_file if missing."`
	Version     versionCmd     `cmd:"" help:"Print the version."`
	Firewall    firewallCmd    `cmd:"" help:"The host firewall meshd leaves in force when it stops."`
}

type csrCmd struct {
	Config string `short:"c" default:"/etc/meshd/meshd.yaml" type:"path" help:"Config file: instance id and trust.key_file."`
}

// Run writes the request on stdout; the CA (meshctl ca sign, or the
// fleet's PKI) decides groups and network.
func (c *csrCmd) Run() error {
	cfg, err := config.Load(c.Config)
	if err != nil {
		return err
	}
	res, err := identity.Resolve(context.Background(), cfg.Identity, identity.Options{})
	if err != nil {
		return err
	}
	key, err := trust.LoadOrCreateKey(cfg.TrustKeyFile())
	if err != nil {
		return err
	}
	csr, err := trust.CSR(key, res.Identity.InstanceID)
	if err != nil {
		return err
	}
	_, err = os.Stdout.Write(csr)
	return err
}

type firewallCmd struct {
	Flush firewallFlushCmd `cmd:"" help:"Remove meshd's chains and sets (IPv4 and IPv6): the host is open again.\n\nA stopped meshd leaves the host closed with its last policy; this opens it by hand.\n\nExample:\n  systemctl stop meshd && meshd firewall flush"`
}

type firewallFlushCmd struct{}

func (firewallFlushCmd) Run() error { return firewall.Flush(slog.Default()) }

type checkConfigCmd struct {
	Config string `short:"c" default:"/etc/meshd/meshd.yaml" type:"path" help:"Config file to check."`
}

func (c *checkConfigCmd) Run() error {
	cfg, err := config.Load(c.Config)
	if err != nil {
		return err
	}
	fmt.Printf("# effective config of %s (defaults included)\n%s", c.Config, cfg.Marshal())
	return nil
}

type versionCmd struct{}

func (versionCmd) Run() error {
	fmt.Println("meshd", version.Version)
	return nil
}

func main() {
	var c cli
	ctx := kong.Parse(&c,
		kong.Name("meshd"),
		kong.Description("meshd joins this host to an encrypted WireGuard overlay whose members find each other through ZooKeeper.\n\n"+
			"Examples:\n  meshd run --config /etc/meshd/meshd.yaml\n  meshd check-config --config /etc/meshd/meshd.yaml"),
		kong.UsageOnError(),
		kong.Exit(func(code int) {
			// Usage errors exit 2, as CONTRACTS.md says; kong uses 80+ otherwise.
			if code != 0 {
				code = 2
			}
			os.Exit(code)
		}),
	)
	if err := ctx.Run(); err != nil {
		fmt.Fprintf(os.Stderr, "meshd: %v\n", err)
		os.Exit(1)
	}
}
