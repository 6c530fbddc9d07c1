package daemon

import (
	"context"
	"fmt"
	"net/netip"
	"sort"
	"strings"
	"time"

	"github.com/meshd/meshd/firewall"
	"github.com/meshd/meshd/internal/admin"
	"github.com/meshd/meshd/internal/version"
	"github.com/meshd/meshd/registry"
)

// The daemon answers the admin API from what its components report.
var _ admin.Source = (*Daemon)(nil)

func (d *Daemon) registryLive() (registry.State, time.Time) { return d.reg.State() }

// Peers reports every peer in CONTRACTS.md's shape.
func (d *Daemon) Peers(ctx context.Context) ([]admin.Peer, error) {
	st, _ := d.registryLive()
	ps := d.rec.Peers(st == registry.Connected)
	out := make([]admin.Peer, 0, len(ps))
	for _, p := range ps {
		ap := admin.Peer{
			Name: p.Name, OverlayIP: p.OverlayIP.String(), Network: p.Network, Path: string(p.Path), Reason: p.Reason,
			RxBytes: p.RxBytes, TxBytes: p.TxBytes, State: p.State, PublicKey: p.PublicKey.String(), Groups: p.Groups,
			RemovalHeld: p.RemovalHeld, HeldByBreaker: p.HeldByBreaker, KeptAlive: p.KeptAlive, StaleReason: p.StaleReason,
		}
		if ap.Groups == nil {
			ap.Groups = []string{}
		}
		if p.Endpoint.IsValid() {
			ap.Endpoint = p.Endpoint.String()
		}
		ap.PrivateIP6, ap.PublicIP6 = addrOrEmpty(p.PrivateIP6), addrOrEmpty(p.PublicIP6)
		if !p.LastHandshake.IsZero() {
			ap.LastHandshake = p.LastHandshake.UTC().Format(time.RFC3339)
		}
		out = append(out, ap)
	}
	return out, nil
}

// Status reports this host.
func (d *Daemon) Status(ctx context.Context) (admin.Status, error) {
	st, lastSync := d.registryLive()
	d.mu.Lock()
	pub := d.self.PublicKey
	d.mu.Unlock()
	peers, _ := d.Peers(ctx)
	sum := d.rec.Summary()
	s := admin.Status{
		Name: d.self.InstanceID, OverlayIP: d.self.OverlayIP.String(), Network: d.self.Network,
		PublicKey: pub.String(), Registry: string(st), Peers: len(peers),
		PeersByState: map[string]int{}, PeersByPath: map[string]int{},
		Interface: d.dev.Name(), ListenPort: int(d.self.ListenPort), MTU: d.dev.MTU(),
		Firewall: d.cfg.Firewall.Mode, Links: sum.Links, Version: version.Version,
		Uptime:             time.Since(d.start).Round(time.Second).String(),
		Breaker:            admin.Breaker{Tripped: sum.Breaker.Tripped, Held: sum.Breaker.Held, Limit: sum.Breaker.Limit},
		BadRecords:         d.reg.Stats().BadRecordCounts(),
		Apply:              admin.Apply{Failures: sum.Apply.Failures, LastError: sum.Apply.LastError, Pending: sum.Apply.Pending},
		KeptAliveByNetwork: sum.KeptAlive,
		PrivateIP6:         addrOrEmpty(d.self.PrivateIP6),
		PublicIP6:          addrOrEmpty(d.self.PublicIP6),
	}
	for _, n := range sum.KeptAlive {
		s.KeptAlive += n
	}
	if !sum.Apply.LastErrorAt.IsZero() {
		s.Apply.LastErrorAt = sum.Apply.LastErrorAt.UTC().Format(time.RFC3339)
	}
	if !sum.Apply.RetryAt.IsZero() {
		s.Apply.RetryAt = sum.Apply.RetryAt.UTC().Format(time.RFC3339)
	}
	d.trustStatus(&s)
	refused := d.reg.Refused()
	s.RefusedTotal, s.RefusedRecords = len(refused), []admin.RefusedRecord{}
	for _, f := range refused[:min(len(refused), admin.MaxRefusedListed)] {
		s.RefusedRecords = append(s.RefusedRecords, admin.RefusedRecord{Host: f.Host, Node: f.Node, Reason: f.Reason,
			Detail: f.Detail, Since: f.Since.UTC().Format(time.RFC3339)})
	}
	d.mu.Lock()
	if d.policyErr != nil {
		s.PolicyError = d.policyErr.Error()
	}
	s.PolicyWarning = d.policyWarning
	d.mu.Unlock()
	if d.fw != nil {
		s.FirewallCounters, _ = d.fw.Counters()
		s.FirewallDrops = firewall.Drops(s.FirewallCounters)
		s.FirewallSets, s.FirewallError = firewallSets(d.fw.Sets())
	}
	s.Conntrack[0], s.Conntrack[1] = firewall.Conntrack()
	s.Region = d.region
	s.DNS = d.dnsStatus()
	s.Lazy = d.lazyStatus()
	if d.tagger != nil {
		if _, err := d.tagger.Status(); err != nil {
			s.TagError = err.Error()
		}
	}
	if !lastSync.IsZero() {
		s.LastSync = lastSync.UTC().Format(time.RFC3339)
	}
	for _, p := range peers {
		s.PeersByState[p.State]++
		if p.Path != "" {
			s.PeersByPath[p.Path]++
		}
	}
	return s, nil
}

// ReleaseBreaker lets held removals through.
func (d *Daemon) ReleaseBreaker(ctx context.Context) (int, error) { return d.rec.ReleaseBreaker(), nil }

// firewallSets turns the firewall's set use into status fields; a full set
// is an error an operator must see.
func firewallSets(use map[string]firewall.SetUse) (map[string]admin.FirewallSet, string) {
	out := map[string]admin.FirewallSet{}
	var full []string
	for name, u := range use {
		out[name] = admin.FirewallSet{Entries: u.Entries, Capacity: u.Capacity, Full: u.Full}
		if u.Full {
			full = append(full, fmt.Sprintf("set %s full at %d entries: members are left out", name, u.Capacity))
		}
	}
	sort.Strings(full)
	return out, strings.Join(full, "; ")
}

// addrOrEmpty is an optional address in the admin API: "" when none.
func addrOrEmpty(a netip.Addr) string {
	if !a.IsValid() {
		return ""
	}
	return a.String()
}

// lazyStatus sums up lazy peers for meshctl status; nil when they are off.
func (d *Daemon) lazyStatus() *admin.LazyStatus {
	if d.ident == nil {
		return nil
	}
	g, id := d.dev.IdleGateCounts(), d.ident.Stats()
	l := &admin.LazyStatus{IdleAfter: d.cfg.Peers.IdleAfter.String(),
		Held: g.Held, Replayed: g.Replayed, HeldDrops: g.Dropped,
		Identified: id.ByEndpoint + id.ByDecryption,
		Refused:    id.UnknownKey + id.Malformed + id.BadMAC1 + id.Undecryptable + id.Unauthenticated + id.Replayed,
		Throttled:  id.Dropped + id.RateLimited}
	l.InDevice, l.Idle = d.rec.LazyCounts()
	return l
}
