package zkserver

import (
	"context"
	"os/exec"
	"strings"
	"testing"
	"time"
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
