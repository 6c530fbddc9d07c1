package registry

import (
	"context"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/meshd/meshd/internal/zkserver"
)

// TestObserversCarryTheMesh: two hosts, each knowing only its own
// observer of a 3-voter ensemble, see each other's registration and
// endpoint change. Killing the voters' leader makes the observers drop
// their clients until a new leader is elected and they have re-synced:
// the sessions survive that, so neither view loses a host, and a change
// made after the election reaches the other side.
func TestObserversCarryTheMesh(t *testing.T) {
	ctx := context.Background()
	e := startEnsemble(t, zkserver.Options{Observers: 2})
	obs := e.ObserverAddrs()
	mesh := meshName(t)
	openOn := func(server string) *Registry {
		// The default session timeout of meshd's config.
		r, err := Open(ctx, Options{Servers: []string{server}, Mesh: mesh, SessionTimeout: 10 * time.Second, Pool: testPool})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { r.Close() })
		return r
	}
	a, b := openOn(obs[0]), openOn(obs[1])
	ha, hb := hostFor("obs-a", "vpc", 70), hostFor("obs-b", "dc", 71)
	if _, err := a.Register(ctx, ha, 15*time.Second); err != nil {
		t.Fatalf("register through observer %s: %v", obs[0], err)
	}
	if _, err := b.Register(ctx, hb, 15*time.Second); err != nil {
		t.Fatalf("register through observer %s: %v", obs[1], err)
	}
	expect(t, a, 10*time.Second, "added obs-a", "added obs-b")
	expect(t, b, 10*time.Second, "added obs-a", "added obs-b")
	ha.PublicIP = netip.MustParseAddr("198.19.7.70")
	a.UpdateSelf(ha)
	expect(t, b, 10*time.Second, "updated obs-a")
	expect(t, a, 10*time.Second, "updated obs-a")
	before := map[string]netip.Addr{}
	for _, h := range b.Hosts() {
		before[h.InstanceID] = h.OverlayIP
	}

	sessions := map[*Registry]int64{a: a.conn.SessionID(), b: b.conn.SessionID()}

	l, err := e.Leader()
	if err != nil {
		t.Fatal(err)
	}
	l.Kill()
	// Until a new leader serves and both observers serve again, neither
	// registry may report anything: a removal here is a lost session.
	deadline := time.Now().Add(60 * time.Second)
	for !electedAndObserved(e, l) {
		select {
		case ev := <-a.Events():
			t.Fatalf("a: %s %s during the election", ev.Kind, ev.Host.InstanceID)
		case ev := <-b.Events():
			t.Fatalf("b: %s %s during the election", ev.Kind, ev.Host.InstanceID)
		case <-time.After(100 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			t.Fatal("no new leader with both observers serving 60 s after the leader was killed")
		}
	}
	// A change after the election travels observer to leader to observer.
	hb.PublicIP = netip.MustParseAddr("198.19.7.71")
	b.UpdateSelf(hb)
	expect(t, a, 30*time.Second, "updated obs-b")
	expect(t, b, 10*time.Second, "updated obs-b")
	for name, r := range map[string]*Registry{"a": a, "b": b} {
		hs := r.Hosts()
		if len(hs) != 2 {
			t.Errorf("%s's view after the leader's loss: %d hosts, want 2", name, len(hs))
		}
		for _, h := range hs {
			if before[h.InstanceID] != h.OverlayIP {
				t.Errorf("%s: %s moved from %s to %s", name, h.InstanceID, before[h.InstanceID], h.OverlayIP)
			}
		}
		if st, _ := r.State(); st != Connected {
			t.Errorf("%s: registry %s", name, st)
		}
		if id := r.conn.SessionID(); id != sessions[r] {
			t.Errorf("%s: session %#x became %#x: the leader's loss cost it its session", name, sessions[r], id)
		}
	}
}

// electedAndObserved: a voter other than old leads, and every observer
// serves clients again.
func electedAndObserved(e *zkserver.Ensemble, old *zkserver.Server) bool {
	if nl, err := e.Leader(); err != nil || nl == old {
		return false
	}
	for _, o := range e.Observers {
		if st, err := o.FourLetter("srvr"); err != nil || !strings.Contains(st, "Mode: observer") {
			return false
		}
	}
	return true
}

// TestObserverLossMovesSessions: hosts list two observers; the one a host
// is on dies. Its session moves to the other within the session timeout,
// keeping its id, so nobody sees a removal, and changes flow after the move.
func TestObserverLossMovesSessions(t *testing.T) {
	ctx := context.Background()
	e := startEnsemble(t, zkserver.Options{Observers: 2})
	mesh := meshName(t)
	openOn := func(servers []string) *Registry {
		r, err := Open(ctx, Options{Servers: servers, Mesh: mesh, SessionTimeout: 10 * time.Second, Pool: testPool})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { r.Close() })
		return r
	}
	a, w := openOn(e.ObserverAddrs()), openOn(e.ObserverAddrs())
	ha := hostFor("moving", "vpc", 80)
	if _, err := a.Register(ctx, ha, 15*time.Second); err != nil {
		t.Fatal(err)
	}
	expect(t, w, 10*time.Second, "added moving")
	expect(t, a, 10*time.Second, "added moving")
	from, sid := a.conn.Server(), a.conn.SessionID()
	var dead *zkserver.Server
	for _, o := range e.Observers {
		if o.Addr() == from {
			dead = o
		}
	}
	if dead == nil {
		t.Fatalf("a is on %s, not an observer (%v)", from, e.ObserverAddrs())
	}
	dead.Kill()
	deadline := time.Now().Add(30 * time.Second)
	for {
		if st, _ := a.State(); st == Connected && a.conn.Server() != from {
			break
		}
		select {
		case ev := <-w.Events():
			t.Fatalf("w: %s %s while a moved", ev.Kind, ev.Host.InstanceID)
		case ev := <-a.Events():
			t.Fatalf("a: %s %s while it moved", ev.Kind, ev.Host.InstanceID)
		case <-time.After(100 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			t.Fatalf("a not connected to another server 30 s after %s died", from)
		}
	}
	if id := a.conn.SessionID(); id != sid {
		t.Errorf("session %#x became %#x: the move cost a its session", sid, id)
	}
	ha.PublicIP = netip.MustParseAddr("198.19.8.80")
	a.UpdateSelf(ha)
	expect(t, w, 15*time.Second, "updated moving")
	if len(w.Hosts()) != 1 {
		t.Errorf("w's view: %d hosts, want 1", len(w.Hosts()))
	}
}
