package daemon

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"sync"
	"time"

	"github.com/vishvananda/netlink"

	"github.com/meshd/meshd/firewall"
	"github.com/meshd/meshd/internal/admin"
	"github.com/meshd/meshd/internal/config"
	"github.com/meshd/meshd/internal/device"
	"github.com/meshd/meshd/internal/ec2"
	"github.com/meshd/meshd/internal/identity"
	"github.com/meshd/meshd/internal/keys"
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

	reg  *registry.Registry
	dev  *device.Device
	rec  *mesh.Reconciler
	self registry.Host

	fw            *firewall.Firewall // nil when firewall.mode is off
	policyErr     error
	policyWarning string // groups no live host has, or a missing policy node
	policyApplied bool   // a policy (or the no-policy default) is in force

	linksFromRegistry [][]string
	metrics           *admin.Metrics
	rotateMu          sync.Mutex
	region            string // EC2 region, "" off EC2
	tagger            *ec2.Tagger
}

// Start brings the host up: key, registry (or its snapshot), lease, device,
// reconciler. On error everything already started is taken down again.
func Start(ctx context.Context, cfg config.Config, log *slog.Logger, level *slog.LevelVar) (_ *Daemon, err error) {
	var d *Daemon
	res, err := identity.Resolve(ctx, cfg.Identity, identity.Options{})
	if err != nil {
		return nil, err
	}
	cfg.Identity = res.Identity
	if errs := cfg.ValidateIdentity(); len(errs) > 0 {
		return nil, fmt.Errorf("identity from %s:\n%w", cfg.Identity.Source, errs)
	}
	d = &Daemon{cfg: cfg, log: log, level: level, start: time.Now(), region: res.Region}
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
	d.reg, err = registry.Open(ctx, registry.Options{
		Servers: cfg.ZooKeeper.Servers, Mesh: cfg.Mesh, SessionTimeout: cfg.ZooKeeper.SessionTimeout,
		Pool: cfg.Overlay.CIDR, Quarantine: cfg.Tuning.Quarantine, DigestSecretFile: cfg.ZooKeeper.DigestSecretFile,
		TLS: tlsCfg, StateDir: cfg.StateDir, Logger: log,
	})
	if err != nil {
		return nil, err
	}
	id := cfg.Identity
	d.self = registry.Host{
		InstanceID: id.InstanceID, PublicKey: key.PublicKey(), Network: id.Network,
		PrivateIP: id.PrivateIP, PublicIP: id.PublicIP, ListenPort: uint16(cfg.Interface.ListenPort),
		Groups: id.Groups, Version: version.Version, StartTime: d.start.UTC(),
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
		mtu = autoMTU(cfg.ZooKeeper.Servers, log)
	}
	d.dev, err = device.New(device.Config{
		Name: cfg.Interface.Name, PrivateKey: key, ListenPort: cfg.Interface.ListenPort, MTU: mtu,
		Address: netip.PrefixFrom(overlay, cfg.Overlay.CIDR.Bits()), Logger: log,
	})
	if err != nil {
		return nil, err
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
		OnApply: func(took time.Duration, n int) {
			d.metrics.ApplyLatency.Observe(took.Seconds())
			d.metrics.Applied.Add(float64(n))
		},
		Logger: log,
	}, d.dev, mem)
	d.reg.OnDocument(registry.DocLinks, d.onLinks)
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
	if d.cfg.Tuning.KeyRotation > 0 {
		go d.rotateOnSchedule(ctx, d.cfg.Tuning.KeyRotation)
	}
	return d.rec.Run(ctx, d.reg.Events())
}

// onLinks merges the fleet-wide links from the registry with the config's.
func (d *Daemon) onLinks(data []byte) {
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
	d.mu.Lock()
	d.cfg.Links, d.cfg.LogLevel = cfg.Links, cfg.LogLevel
	all := append(append([][]string{}, cfg.Links...), d.linksFromRegistry...)
	d.mu.Unlock()
	d.rec.SetLinks(mesh.NewLinks(all))
	d.log.Info("configuration reloaded", "links", all, "log_level", cfg.LogLevel)
}

// Close deregisters and removes the interface. Safe on a partial start.
func (d *Daemon) Close() {
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

// autoMTU fits the overlay into the underlay: the MTU of the interface that
// routes to the registry, less WireGuard's 80 bytes.
func autoMTU(servers []string, log *slog.Logger) int {
	for _, s := range servers {
		host, _, err := net.SplitHostPort(s)
		if err != nil {
			continue
		}
		ips, err := net.LookupIP(host)
		if err != nil || len(ips) == 0 {
			continue
		}
		routes, err := netlink.RouteGet(ips[0])
		if err != nil || len(routes) == 0 {
			continue
		}
		link, err := netlink.LinkByIndex(routes[0].LinkIndex)
		if err != nil {
			continue
		}
		if mtu := link.Attrs().MTU - 80; mtu >= 1280 {
			return mtu
		}
	}
	log.Debug("underlay MTU unknown; using the default", "mtu", device.DefaultMTU)
	return device.DefaultMTU
}
