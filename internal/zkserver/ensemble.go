package zkserver

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"time"
)

// Ensemble is n servers forming one quorum, and any observers.
type Ensemble struct {
	Servers []*Server // the voters
	// Observers serve sessions and watches and forward writes to the
	// leader; they take no part in elections or in the quorum.
	Observers []*Server
	dir       string
}

// Member places one server of an ensemble on a machine of its own: a
// network namespace and the address it listens on there.
type Member struct {
	Netns string
	Host  string
}

// StartEnsemble starts n voters and o.Observers observers and waits until
// each serves in a mode (leader, follower or observer). By default they
// listen on loopback at free ports. With o.Members (one per server, as on
// a testbed: the n voters, then the observers) server i runs in
// Members[i-1].Netns on Members[i-1].Host, every server serving clients on
// o.Port and its quorum and election on o.Port+1000 and o.Port+2000: each
// its own machine, so a test can cut one off from the others by address.
func StartEnsemble(ctx context.Context, n int, o Options) (*Ensemble, error) {
	total := n + o.Observers
	if o.Observers < 0 || len(o.Members) > 0 && (len(o.Members) != total || o.Port == 0) {
		return nil, fmt.Errorf("ensemble of %d and %d observers: %d members, client port %d", n, o.Observers, len(o.Members), o.Port)
	}
	dir := o.Dir
	if dir == "" {
		var err error
		if dir, err = os.MkdirTemp("", "zk-ensemble-"); err != nil {
			return nil, err
		}
	}
	e := &Ensemble{dir: dir}
	hosts := make([]string, total)
	netns := make([]string, total)
	var servers []string
	var ports []int
	for i := 1; i <= total; i++ {
		var p [3]int
		if len(o.Members) > 0 {
			m := o.Members[i-1]
			hosts[i-1], netns[i-1], p = m.Host, m.Netns, [3]int{o.Port, o.Port + 1000, o.Port + 2000}
		} else {
			hosts[i-1], netns[i-1] = "127.0.0.1", o.Netns
			for j := range p {
				var err error
				if p[j], err = FreePort(); err != nil {
					return nil, err
				}
			}
		}
		ports = append(ports, p[0])
		line := fmt.Sprintf("server.%d=%s:%d:%d", i, hosts[i-1], p[1], p[2])
		if i > n {
			// Every member's list marks the observers, or the voters
			// would count them towards the quorum.
			line += ":observer"
		}
		servers = append(servers, line)
	}
	for i := 1; i <= total; i++ {
		so := o
		so.Netns, so.Host, so.Port, so.Dir = netns[i-1], hosts[i-1], ports[i-1], filepath.Join(dir, fmt.Sprint(i))
		so.myID, so.servers, so.observer = i, servers, i > n
		s, err := Start(ctx, so)
		if err != nil {
			e.Stop()
			return nil, err
		}
		if i > n {
			e.Observers = append(e.Observers, s)
		} else {
			e.Servers = append(e.Servers, s)
		}
	}
	for _, s := range append(e.Servers[:len(e.Servers):len(e.Servers)], e.Observers...) {
		if err := s.WaitReady(ctx, 90*time.Second); err != nil {
			e.Stop()
			return nil, err
		}
	}
	return e, nil
}

// Addrs lists the voters' client addresses.
func (e *Ensemble) Addrs() []string { return addrs(e.Servers) }

// ObserverAddrs lists the observers' client addresses.
func (e *Ensemble) ObserverAddrs() []string { return addrs(e.Observers) }

func addrs(servers []*Server) []string {
	var out []string
	for _, s := range servers {
		out = append(out, s.Addr())
	}
	return out
}

// Leader returns the server in leader mode.
func (e *Ensemble) Leader() (*Server, error) {
	for _, s := range e.Servers {
		if st, err := s.FourLetter("srvr"); err == nil && strings.Contains(st, "Mode: leader") {
			return s, nil
		}
	}
	return nil, errors.New("no leader in the ensemble")
}

// Stop stops every server, voters and observers, and removes the data.
func (e *Ensemble) Stop() {
	for _, s := range e.Observers {
		s.Halt()
	}
	for _, s := range e.Servers {
		s.Halt()
	}
	os.RemoveAll(e.dir)
}
