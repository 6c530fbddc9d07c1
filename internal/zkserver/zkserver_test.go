package zkserver

import (
	"context"
	"net/netip"
	"os/exec"
	"slices"
	"strings"
	"testing"
	"time"

	"golang.zx2c4.com/wireguard/wgctrl/wgtypes"

	"github.com/meshd/meshd/registry"
)

func needZooKeeper(t *testing.T) {
	if _, err := exec.LookPath("java"); err != nil {
		t.Skip("SKIP-DEP: java is missing; Debian's zookeeper package is needed (scripts/install-deps.sh)")
	}
}

func TestStandaloneStartRestartStop(t *testing.T) {
	needZooKeeper(t)
	ctx := context.Background()
	s, err := Start(ctx, Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Stop()
	if out, err := FourLetter(s.Addr(), "ruok"); err != nil || out != "imok" {
		t.Fatalf("ruok = %q, %v", out, err)
	}
	if st, _ := FourLetter(s.Addr(), "srvr"); !strings.Contains(st, "Mode: standalone") {
		t.Errorf("srvr = %q", st)
	}
	pid := s.PID()
	if err := s.Restart(ctx); err != nil {
		t.Fatal(err)
	}
	if s.PID() == pid {
		t.Errorf("restart kept the old process")
	}
	s.Stop()
	if _, err := FourLetter(s.Addr(), "ruok"); err == nil {
		t.Errorf("server still answers after Stop")
	}
}

func TestEnsembleLeader(t *testing.T) {
	needZooKeeper(t)
	if testing.Short() {
		t.Skip("ensemble start is slow")
	}
	e, err := StartEnsemble(context.Background(), 3, Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer e.Stop()
	l, err := e.Leader()
	if err != nil {
		t.Fatal(err)
	}
	l.Kill()
	// A new leader is elected among the two left.
	deadline := 0
	for {
		if nl, err := e.Leader(); err == nil && nl != l {
			break
		}
		deadline++
		if deadline > 300 {
			t.Fatal("no new leader after the old one was killed")
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// TestEnsembleObservers: three voters and two observers. Each observer
// says so, the voters stay three (an observer neither votes nor counts
// towards the quorum), and a client that knows only an observer sees a
// write made through a voter, and writes through the observer.
func TestEnsembleObservers(t *testing.T) {
	needZooKeeper(t)
	if testing.Short() {
		t.Skip("ensemble start is slow")
	}
	ctx := context.Background()
	e, err := StartEnsemble(ctx, 3, Options{Observers: 2})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(e.Stop) // after the registries close (cleanups run last first)
	if len(e.Servers) != 3 || len(e.ObserverAddrs()) != 2 {
		t.Fatalf("%d voters, observers at %v; want 3 and 2", len(e.Servers), e.ObserverAddrs())
	}
	for _, s := range e.Observers {
		if st, err := s.FourLetter("srvr"); err != nil || !strings.Contains(st, "Mode: observer") {
			t.Errorf("observer %s: srvr = %q, %v", s.Addr(), st, err)
		}
	}
	modes := map[string]int{}
	for _, s := range e.Servers {
		st, _ := s.FourLetter("srvr")
		for _, line := range strings.Split(st, "\n") {
			if m, ok := strings.CutPrefix(line, "Mode: "); ok {
				modes[m]++
			}
		}
	}
	if modes["leader"] != 1 || modes["follower"] != 2 {
		t.Errorf("voters' modes %v, want one leader and two followers", modes)
	}

	// Through the registry, the one package that speaks ZooKeeper.
	pool := netip.MustParsePrefix("100.100.0.0/16")
	openAt := func(addr string) *registry.Registry {
		r, err := registry.Open(ctx, registry.Options{Servers: []string{addr}, Mesh: "observers", SessionTimeout: 4 * time.Second, Pool: pool})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { r.Close() })
		return r
	}
	viaVoter, viaObserver := openAt(e.Addrs()[0]), openAt(e.ObserverAddrs()[1])
	host := func(id string, last byte) registry.Host {
		k, _ := wgtypes.GeneratePrivateKey()
		return registry.Host{InstanceID: id, PublicKey: k.PublicKey(), Network: "vpc",
			PrivateIP: netip.AddrFrom4([4]byte{198, 18, 0, last}), ListenPort: 51820, StartTime: time.Now().UTC()}
	}
	if _, err := viaVoter.Register(ctx, host("on-voter", 1), 15*time.Second); err != nil {
		t.Fatal(err)
	}
	if _, err := viaObserver.Register(ctx, host("on-observer", 2), 15*time.Second); err != nil {
		t.Fatalf("register through an observer: %v", err)
	}
	for _, r := range []*registry.Registry{viaVoter, viaObserver} {
		waitHosts(t, r, 10*time.Second, "on-observer", "on-voter")
	}
}

// waitHosts polls r's view until it holds exactly ids.
func waitHosts(t *testing.T, r *registry.Registry, limit time.Duration, ids ...string) {
	t.Helper()
	deadline := time.Now().Add(limit)
	for {
		var got []string
		for _, h := range r.Hosts() {
			got = append(got, h.InstanceID)
		}
		slices.Sort(got)
		if slices.Equal(got, ids) {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("view %v after %s, want %v", got, limit, ids)
		}
		time.Sleep(50 * time.Millisecond)
	}
}
