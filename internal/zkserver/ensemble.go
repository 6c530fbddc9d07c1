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

// Ensemble is n servers on loopback forming one quorum.
type Ensemble struct {
	Servers []*Server
	dir     string
}

// StartEnsemble starts n servers and waits until each serves in a mode
// (leader or follower). By default they listen on loopback at free ports;
// with o.Host and o.Port set (a testbed's namespace) all n share that
// address, server i serving clients on o.Port+i-1 and its quorum and
// election on o.Port+1000+i and o.Port+2000+i.
func StartEnsemble(ctx context.Context, n int, o Options) (*Ensemble, error) {
	dir := o.Dir
	if dir == "" {
		var err error
		if dir, err = os.MkdirTemp("", "zk-ensemble-"); err != nil {
			return nil, err
		}
	}
	e := &Ensemble{dir: dir}
	host := "127.0.0.1"
	var servers []string
	var ports []int
	for i := 1; i <= n; i++ {
		var p [3]int
		if o.Host != "" && o.Port != 0 {
			host, p = o.Host, [3]int{o.Port + i - 1, o.Port + 1000 + i, o.Port + 2000 + i}
		} else {
			for j := range p {
				var err error
				if p[j], err = FreePort(); err != nil {
					return nil, err
				}
			}
		}
		ports = append(ports, p[0])
		servers = append(servers, fmt.Sprintf("server.%d=%s:%d:%d", i, host, p[1], p[2]))
	}
	for i := 1; i <= n; i++ {
		so := o
		so.Host, so.Port, so.Dir = host, ports[i-1], filepath.Join(dir, fmt.Sprint(i))
		so.myID, so.servers = i, servers
		s, err := Start(ctx, so)
		if err != nil {
			e.Stop()
			return nil, err
		}
		e.Servers = append(e.Servers, s)
	}
	for _, s := range e.Servers {
		if err := s.WaitReady(ctx, 90*time.Second); err != nil {
			e.Stop()
			return nil, err
		}
	}
	return e, nil
}

// Addrs lists the client addresses.
func (e *Ensemble) Addrs() []string {
	var out []string
	for _, s := range e.Servers {
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

// Stop stops every server and removes the data.
func (e *Ensemble) Stop() {
	for _, s := range e.Servers {
		s.Halt()
	}
	os.RemoveAll(e.dir)
}
