package main

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"time"

	"github.com/meshd/meshd/internal/admin"
	"github.com/meshd/meshd/internal/testbed"
)

// session is one run: the container, its testbed host and the peer.
type session struct {
	o    options
	tb   *testbed.Testbed
	c    *container
	host *testbed.Host  // the container's namespace on the testbed
	peer *testbed.Meshd // a meshd on another testbed host

	// What the names step saw systemd-resolved route to meshd, for the
	// stop step to see gone.
	dnsServer, domain string
}

const instanceID = "booted"

// probePort is a TCP listener in the container's namespace: the outsider
// on the internet reaching it or not is what "the firewall is in place"
// means to a user.
const probePort = "5202"

func (s *session) all(ctx context.Context) error {
	if _, err := s.tb.StartProcess(s.host, filepath.Join(s.tb.Dir, "probe.log"), "iperf3", "-s", "-p", probePort); err != nil {
		return err
	}
	if err := eventually(10*time.Second, func() error { return s.outsiderReaches(ctx, true) }); err != nil {
		return fmt.Errorf("before meshd (the probe itself must work): %w", err)
	}
	for _, f := range []func(context.Context) error{
		s.devicePolicy, s.install, s.start, s.joins, s.overlay, s.meshctlPeers, s.names, s.conntrack, s.firewall,
		s.verify, s.security, s.journal, s.restart, s.upgrade, s.names, s.stop, s.purge,
	} {
		if err := f(ctx); err != nil {
			return err
		}
	}
	return nil
}

// devicePolicy says whether this container enforces a unit's
// DevicePolicy/DeviceAllow at all: on a cgroup v1 host nspawn does not hand
// the devices controller to the container, and then a unit that lost
// /dev/net/tun from DeviceAllow still starts here. The run says so rather
// than imply it proved the line.
func (s *session) devicePolicy(ctx context.Context) error {
	step("does this container enforce DeviceAllow?")
	_, err := s.c.run(ctx, "systemd-run", "--wait", "-q", "-p", "DevicePolicy=closed", "sh", "-c", "exec 3<>/dev/net/tun")
	if err == nil {
		fmt.Println("NOT-PROVEN-HERE: DevicePolicy=closed did not stop a unit opening /dev/net/tun (no devices cgroup in the container); DeviceAllow= is not tested by this run")
	} else {
		fmt.Println("enforced: a unit without DeviceAllow=/dev/net/tun cannot open it")
	}
	return nil
}

func (s *session) install(ctx context.Context) error {
	step("apt-get install ./" + filepath.Base(s.o.deb))
	if err := s.c.copyIn(s.o.deb, "/root/"+filepath.Base(s.o.deb)); err != nil {
		return err
	}
	if _, err := s.c.run(ctx, "apt-get", "install", "-y", "-q", "/root/"+filepath.Base(s.o.deb)); err != nil {
		return err
	}
	// The operator's edit: this host's identity, the testbed's ZooKeeper.
	cfg := fmt.Sprintf(`# edited by the operator (boottest)
mesh: %s
zookeeper:
  servers: ["%s"]
  session_timeout: 6s
identity:
  source: static
  instance_id: %s
  network: %s
  private_ip: %s
  public_ip: %s
interface:
  name: mesh0
  listen_port: 51820
overlay:
  cidr: 100.100.0.0/16
firewall:
  mode: enforce
state_dir: /var/lib/meshd
admin_socket: /run/meshd/meshd.sock
metrics_listen: 127.0.0.1:9474
`, s.tb.Prefix, s.tb.ZooKeeperAddr(), instanceID, s.host.Network, s.host.PrivateIP, s.host.PublicIP)
	return os.WriteFile(filepath.Join(s.c.root, "etc/meshd/meshd.yaml"), []byte(cfg), 0o644)
}

func (s *session) start(ctx context.Context) error {
	step("systemctl start meshd: active (running) through Type=notify")
	if _, err := s.c.run(ctx, "systemctl", "start", "meshd"); err != nil {
		journal, _ := s.c.run(ctx, "journalctl", "-u", "meshd", "--no-pager", "-n", "40")
		return fmt.Errorf("%w\n%s", err, journal)
	}
	return s.running(ctx)
}

// running: what `systemctl status` calls active (running), reached as a
// notify service (systemctl start returns only after READY=1).
func (s *session) running(ctx context.Context) error {
	out, err := s.c.run(ctx, "systemctl", "show", "-p", "Type", "-p", "ActiveState", "-p", "SubState", "meshd")
	if err != nil {
		return err
	}
	for _, want := range []string{"Type=notify", "ActiveState=active", "SubState=running"} {
		if !strings.Contains(out, want+"\n") {
			return fmt.Errorf("meshd.service: want %s, have:\n%s", want, out)
		}
	}
	return nil
}

func (s *session) status(ctx context.Context) (admin.Status, error) {
	var st admin.Status
	out, err := s.c.run(ctx, "meshctl", "status", "-o", "json")
	if err != nil {
		return st, err
	}
	return st, json.Unmarshal([]byte(out), &st)
}

func (s *session) joins(ctx context.Context) error {
	step("joins ZooKeeper: registry connected, the peer sees it")
	return eventually(30*time.Second, func() error {
		st, err := s.status(ctx)
		if err != nil {
			return err
		}
		if st.Registry != "connected" || st.OverlayIP == "" {
			return fmt.Errorf("meshctl status: registry %q, overlay ip %q", st.Registry, st.OverlayIP)
		}
		peers, err := s.peer.Peers()
		if err != nil {
			return err
		}
		for _, p := range peers {
			if p.Name == instanceID && p.OverlayIP == st.OverlayIP {
				return nil
			}
		}
		return fmt.Errorf("the peer's meshd does not list %s at %s", instanceID, st.OverlayIP)
	})
}

func (s *session) overlay(ctx context.Context) error {
	step("reaches the peer over the overlay, both ways")
	pst, err := s.peer.Status()
	if err != nil {
		return err
	}
	return eventually(30*time.Second, func() error {
		if _, err := s.c.run(ctx, "ping", "-c", "1", "-W", "1", pst.OverlayIP); err != nil {
			return err
		}
		st, err := s.status(ctx)
		if err != nil {
			return err
		}
		if _, err := s.peer.Host.Run(ctx, "ping", "-c", "1", "-W", "1", st.OverlayIP); err != nil {
			return err
		}
		return nil
	})
}

func (s *session) meshctlPeers(ctx context.Context) error {
	step("meshctl peers, as root")
	// Its traffic figures come from a once-a-second read of the device: the
	// pings just answered show within a few seconds.
	return eventually(10*time.Second, func() error {
		out, err := s.c.run(ctx, "meshctl", "peers")
		if err != nil {
			return err
		}
		if !regexp.MustCompile(`(?m)^` + s.peer.Host.Name + `\s.*\sup$`).MatchString(out) {
			return fmt.Errorf("meshctl peers does not show %s up:\n%s", s.peer.Host.Name, out)
		}
		fmt.Print(out)
		return nil
	})
}

func (s *session) conntrack(ctx context.Context) error {
	step("conntrack table and hash size raised (boot configuration as systemd and kmod read it)")
	if err := s.c.copyIn(s.o.conntrack, "/root/check-conntrack.sh"); err != nil {
		return err
	}
	out, err := s.c.run(ctx, "bash", "/root/check-conntrack.sh")
	fmt.Print(out)
	return err
}

func (s *session) firewall(ctx context.Context) error {
	step("firewall in place: meshd's chains hooked, the peer in the member set, the underlay closed")
	out, err := s.c.run(ctx, "iptables-save")
	if err != nil {
		return err
	}
	if !strings.Contains(out, "-j MESHD-INPUT") {
		return fmt.Errorf("iptables-save shows no jump to MESHD-INPUT:\n%s", out)
	}
	pst, err := s.peer.Status()
	if err != nil {
		return err
	}
	if _, err := s.c.run(ctx, "ipset", "test", "meshd-members", pst.OverlayIP); err != nil {
		return fmt.Errorf("the peer is not in meshd's member set: %w", err)
	}
	return eventually(10*time.Second, func() error { return s.outsiderReaches(ctx, false) })
}

// outsiderReaches checks whether a TCP connection from the internet's
// outsider to the probe on the host's public address is answered as want.
func (s *session) outsiderReaches(ctx context.Context, want bool) error {
	target := fmt.Sprintf("/dev/tcp/%s/%s", s.host.PublicIP, probePort)
	_, err := s.tb.Outsider().Run(ctx, "timeout", "3", "bash", "-c", "exec 3<>"+target)
	if got := err == nil; got != want {
		return fmt.Errorf("outsider connecting to %s:%s: connected=%v, want %v", s.host.PublicIP, probePort, got, want)
	}
	return nil
}

// verifyNoise is the one benign complaint of systemd-analyze verify: the
// Documentation= man pages cannot be opened where man-db is not installed.
var verifyNoise = regexp.MustCompile(`^meshd\.service: Command 'man [a-z]+\([0-9]\)' failed with code [0-9]+$`)

func (s *session) verify(ctx context.Context) error {
	step("systemd-analyze verify meshd.service, on the booted system")
	out, err := s.c.run(ctx, "systemd-analyze", "verify", "/usr/lib/systemd/system/meshd.service")
	var problems []string
	for _, l := range strings.Split(strings.TrimSpace(out), "\n") {
		if l != "" && !verifyNoise.MatchString(l) {
			problems = append(problems, l)
		}
	}
	if len(problems) > 0 {
		return fmt.Errorf("systemd-analyze verify (%v):\n%s", err, strings.Join(problems, "\n"))
	}
	return nil
}

var exposureRE = regexp.MustCompile(`Overall exposure level for meshd\.service: ([0-9.]+)`)

func (s *session) security(ctx context.Context) error {
	step("systemd-analyze security meshd")
	out, err := s.c.run(ctx, "systemd-analyze", "security", "--no-pager", "meshd.service")
	if err != nil {
		return err
	}
	m := exposureRE.FindStringSubmatch(out)
	if m == nil {
		return fmt.Errorf("systemd-analyze security: no overall exposure in:\n%s", out)
	}
	v, _ := strconv.ParseFloat(m[1], 64)
	fmt.Printf("exposure %.1f (highest accepted %.1f)\n", v, s.o.maxExposure)
	if v > s.o.maxExposure {
		return fmt.Errorf("systemd-analyze security: exposure %.1f, worse than %.1f", v, s.o.maxExposure)
	}
	return nil
}

// errorLine is how an error reaches the journal: meshd's own log lines at
// level ERROR, or systemd's word on the unit failing.
var errorLine = regexp.MustCompile(`level=ERROR|meshd\.service: (Failed|Main process exited)|code=exited, status=[1-9]`)

func (s *session) journal(ctx context.Context) error {
	step("journalctl -u meshd: no error")
	out, err := s.c.run(ctx, "journalctl", "-u", "meshd", "--no-pager", "-o", "cat")
	if err != nil {
		return err
	}
	var bad []string
	for _, l := range strings.Split(out, "\n") {
		if errorLine.MatchString(l) {
			bad = append(bad, l)
		}
	}
	prio, err := s.c.run(ctx, "journalctl", "-u", "meshd", "--no-pager", "-q", "-p", "err")
	if err != nil {
		return err
	}
	if len(bad) > 0 || strings.TrimSpace(prio) != "" {
		return fmt.Errorf("journalctl -u meshd shows errors:\n%s\n%s", strings.Join(bad, "\n"), prio)
	}
	return nil
}

func (s *session) restart(ctx context.Context) error {
	step("systemctl restart meshd mid-flow: the pause the peer (receiving) sees")
	pst, err := s.peer.Status()
	if err != nil {
		return err
	}
	srv, err := s.tb.StartProcess(s.peer.Host, filepath.Join(s.tb.Dir, "iperf3-peer.log"), "iperf3", "-s", "-B", pst.OverlayIP, "-J", "-i", "0.1")
	if err != nil {
		return err
	}
	defer srv.Stop(2 * time.Second)
	if err := eventually(5*time.Second, func() error {
		out, _ := s.peer.Host.Run(ctx, "ss", "-Hltn", "sport = :5201")
		if !strings.Contains(out, "5201") {
			return fmt.Errorf("iperf3 server on %s not listening", s.peer.Host.Name)
		}
		return nil
	}); err != nil {
		return err
	}
	type result struct {
		out []byte
		err error
	}
	done := make(chan result, 1)
	// The flow leaves from the container's namespace (iperf3 is not in the
	// rootfs; the namespace, and so meshd's device, is the container's).
	go func() {
		out, err := s.host.Command(ctx, "iperf3", "-c", pst.OverlayIP, "-t", "6", "-b", "100M", "-J", "--get-server-output").Output()
		done <- result{out, err}
	}()
	time.Sleep(2 * time.Second) // the flow runs first
	if _, err := s.c.run(ctx, "systemctl", "restart", "meshd"); err != nil {
		return err
	}
	r := <-done
	var rep struct {
		Error  string `json:"error"`
		Server *struct {
			Intervals []struct {
				Sum struct {
					Bytes   float64 `json:"bytes"`
					Seconds float64 `json:"seconds"`
				} `json:"sum"`
			} `json:"intervals"`
		} `json:"server_output_json"`
	}
	if err := json.Unmarshal(r.out, &rep); err != nil || rep.Error != "" || rep.Server == nil {
		return fmt.Errorf("iperf3 across the restart: %v %v %s", r.err, err, rep.Error)
	}
	var longest, cur time.Duration
	for _, iv := range rep.Server.Intervals {
		if iv.Sum.Bytes == 0 {
			cur += time.Duration(iv.Sum.Seconds * float64(time.Second))
			longest = max(longest, cur)
		} else {
			cur = 0
		}
	}
	fmt.Printf("restart pause seen by the receiver: %.1f s (bound %s)\n", longest.Seconds(), s.o.maxPause)
	if longest > s.o.maxPause {
		return fmt.Errorf("systemctl restart paused the flow %.1f s, bound %s", longest.Seconds(), s.o.maxPause)
	}
	return s.running(ctx)
}

func (s *session) upgrade(ctx context.Context) error {
	step("upgrade to " + filepath.Base(s.o.upgrade) + ": key, lease and edited config kept")
	files := []string{"/var/lib/meshd/private.key", "/etc/meshd/meshd.yaml"}
	before, err := s.c.run(ctx, "sha256sum", files...)
	if err != nil {
		return err
	}
	st0, err := s.status(ctx)
	if err != nil {
		return err
	}
	want, err := exec.Command("dpkg-deb", "-f", s.o.upgrade, "Version").Output()
	if err != nil {
		return fmt.Errorf("dpkg-deb -f %s Version: %w", s.o.upgrade, err)
	}
	if err := s.c.copyIn(s.o.upgrade, "/root/"+filepath.Base(s.o.upgrade)); err != nil {
		return err
	}
	if _, err := s.c.run(ctx, "apt-get", "install", "-y", "-q", "/root/"+filepath.Base(s.o.upgrade)); err != nil {
		return err
	}
	have, err := s.c.run(ctx, "dpkg-query", "-W", "-f=${Version}", "meshd")
	if err != nil {
		return err
	}
	if have != strings.TrimSpace(string(want)) {
		return fmt.Errorf("after the upgrade dpkg says meshd %s, want %s", have, want)
	}
	if after, err := s.c.run(ctx, "sha256sum", files...); err != nil || after != before {
		return fmt.Errorf("the upgrade changed the key or the edited config (%v):\nbefore %s\nafter  %s", err, before, after)
	}
	if err := s.running(ctx); err != nil {
		return err
	}
	return eventually(30*time.Second, func() error {
		st, err := s.status(ctx)
		if err != nil {
			return err
		}
		if st.OverlayIP != st0.OverlayIP || st.Registry != "connected" {
			return fmt.Errorf("after the upgrade: overlay ip %s (was %s), registry %s", st.OverlayIP, st0.OverlayIP, st.Registry)
		}
		return s.overlay(ctx)
	})
}

func (s *session) stop(ctx context.Context) error {
	step("systemctl stop meshd: the host stays closed, the mesh's names leave systemd-resolved")
	if _, err := s.c.run(ctx, "systemctl", "stop", "meshd"); err != nil {
		return err
	}
	if out, _ := s.c.run(ctx, "systemctl", "is-active", "meshd"); strings.TrimSpace(out) != "inactive" {
		return fmt.Errorf("after systemctl stop, meshd is %q", strings.TrimSpace(out))
	}
	closed := s.outsiderReaches(ctx, false)
	if closed == nil {
		if out, err := s.c.run(ctx, "iptables-save"); err != nil || !strings.Contains(out, "-j MESHD-INPUT") {
			closed = fmt.Errorf("after stop meshd's chains are unhooked (%v)", err)
		}
	}
	if closed != nil {
		return closed
	}
	return s.namesGone(ctx)
}

func (s *session) purge(ctx context.Context) error {
	step("apt-get purge meshd: rules, sets and state gone")
	if _, err := s.c.run(ctx, "apt-get", "purge", "-y", "-q", "meshd"); err != nil {
		return err
	}
	rules, err := s.c.run(ctx, "iptables-save")
	if err != nil {
		return err
	}
	rules6, err := s.c.run(ctx, "ip6tables-save")
	if err != nil {
		return err
	}
	sets, err := s.c.run(ctx, "ipset", "list", "-n")
	if err != nil {
		return err
	}
	if strings.Contains(rules+rules6, "MESHD") || strings.Contains(sets, "meshd") {
		return fmt.Errorf("after purge meshd's rules or sets remain:\n%s%s%s", rules, rules6, sets)
	}
	if _, err := os.Stat(filepath.Join(s.c.root, "var/lib/meshd")); !os.IsNotExist(err) {
		return fmt.Errorf("after purge /var/lib/meshd is still there (%v)", err)
	}
	return eventually(10*time.Second, func() error { return s.outsiderReaches(ctx, true) })
}

// eventually polls f every 200 ms until it succeeds or limit passes.
func eventually(limit time.Duration, f func() error) error {
	deadline := time.Now().Add(limit)
	for {
		err := f()
		if err == nil || time.Now().After(deadline) {
			return err
		}
		time.Sleep(200 * time.Millisecond)
	}
}
