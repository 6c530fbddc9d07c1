package mesh

import (
	"context"
	"log/slog"
	"net/netip"
	"sync"
	"time"
	"unique"

	"golang.zx2c4.com/wireguard/wgctrl/wgtypes"

	"github.com/meshd/meshd/internal/device"
	"github.com/meshd/meshd/registry"
)

// Device is the WireGuard interface as the reconciler uses it. The real one
// is internal/device; tests use a fake.
type Device interface {
	Apply(device.Delta) error
	Stats() (map[wgtypes.Key]device.PeerStats, error)
	Handshake(wgtypes.Key) error
	// HandshakeOnce sends one initiation without restarting WireGuard's
	// retries: for peers that have not answered on any path.
	HandshakeOnce(wgtypes.Key) error
	// DropQueued drops the packets waiting for a peer's session.
	DropQueued(wgtypes.Key) error
	// ExpireSessions stops sending on a peer's sessions and lifts the
	// rate limit on its next handshake: the peer restarted, and its end
	// of them is gone.
	ExpireSessions(wgtypes.Key) error
}

// Members receives the firewall's share of the desired state: which overlay
// addresses are members, their groups and their underlay addresses. Each
// call carries one host's change only.
type Members interface {
	SetHost(h MemberHost) error
	RemoveHost(id string) error
}

// MemberHost is one host as the firewall sees it.
type MemberHost struct {
	ID        string
	OverlayIP netip.Addr
	Groups    []string
	Underlay  []netip.Addr // addresses its WireGuard packets may come from
}

// Prober checks a candidate path out of band before traffic moves to it.
type Prober interface {
	Reachable(ctx context.Context, addr netip.Addr) bool
}

// Config assembles a Reconciler.
type Config struct {
	Self     registry.Host
	Links    Links
	Timers   PathTimers
	HoldDown time.Duration // a vanished host stays this long before removal
	Breaker  BreakerConfig
	// Tick is how often device statistics are read; 1s if zero.
	Tick time.Duration
	// Batch is how long events are gathered into one device update; 20ms
	// if zero (the product bound is 50ms).
	Batch  time.Duration
	Prober Prober // nil: every path counts as reachable
	// Lazy, if set, keeps only peers with recent traffic in the device
	// (see lazy.go); nil: every known peer lives in it.
	Lazy *LazyConfig
	// OnApply, if set, is told of every device update: its duration and
	// how many peer changes it carried (for the metrics).
	OnApply func(d time.Duration, changes int)
	Logger  *slog.Logger
}

// Reconciler keeps the device and firewall in step with the registry.
type Reconciler struct {
	cfg     Config
	dev     Device
	members Members
	log     *slog.Logger

	mu       sync.Mutex
	links    Links
	peers    map[string]*peer // by instance id
	breaker  *breaker
	applied  uint64 // peer changes applied to the device
	pend     *pending
	lastSync time.Time
	now      func() time.Time
	kick     chan struct{}

	// Lazy peers' asks come by overlay address (a held packet) or by key
	// (an initiation): both are looked up, not searched for.
	byOverlay map[netip.Addr]*peer
	byKey     map[wgtypes.Key]*peer
	// gone holds the peers whose record vanished (or that were retired):
	// the only ones expireLocked has to look at, so a tick at rest costs
	// O(vanished peers), not O(fleet).
	gone map[string]*peer
	// inDev holds the peers in the device: the ones a tick reads
	// statistics for and steps, so with lazy peers a tick costs O(active).
	inDev map[string]*peer
	wants chan want // asks to bring an idle peer in
}

// noHost is a new peer's record before its first: the zero record, so an
// upsert compares against it like any old one.
var noHost = &registry.Host{}

// peer is one remote host and what the reconciler decided for it.
type peer struct {
	host  *registry.Host // the registry's own record, shared: never written
	cands []Candidate    // the ways to reach it, best first; nil: none
	// path chooses among cands for a peer in the device; nil while it is
	// out (idle), which with lazy peers is most of the fleet: 250 B each.
	path        *pathState
	unreachable string    // why there is no candidate, if none
	removeAt    time.Time // hold-down deadline after its record vanished
	goneAt      time.Time // when its record vanished; zero while it has one
	retired     bool      // decommissioned: removed at once, never held
	heardAt     time.Time // when its received bytes last grew
	lastCall    time.Time // the handshake sent to a silent vanished peer
	obs         Observation
	inDevice    bool
	nextKey     *wgtypes.Key // announced next key, in the device without allowed IPs
	idle        bool         // lazy: known, out of the device, its packets held
	activeAt    time.Time    // lazy: when its traffic last moved (either way)
}

// New returns a Reconciler; Run starts it. members may be nil (firewall off).
func New(cfg Config, dev Device, members Members) *Reconciler {
	if cfg.Tick == 0 {
		cfg.Tick = time.Second
	}
	if cfg.Batch == 0 {
		cfg.Batch = 20 * time.Millisecond
	}
	if cfg.Timers == (PathTimers{}) {
		cfg.Timers = DefaultPathTimers
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	if cfg.Lazy != nil && cfg.Lazy.IdleAfter == 0 {
		l := *cfg.Lazy
		l.IdleAfter = DefaultIdleAfter
		cfg.Lazy = &l
	}
	return &Reconciler{
		cfg: cfg, dev: dev, members: members, log: cfg.Logger,
		links:   cfg.Links,
		peers:   map[string]*peer{},
		breaker: newBreaker(cfg.Breaker),
		pend:    newPending(),
		now:     time.Now,
		kick:    make(chan struct{}, 1),

		byOverlay: map[netip.Addr]*peer{},
		byKey:     map[wgtypes.Key]*peer{},
		gone:      map[string]*peer{},
		inDev:     map[string]*peer{},
		wants:     make(chan want, 1024),
	}
}

// Run applies registry events until ctx ends. Events arriving within the
// batch window go to the device in one update.
func (r *Reconciler) Run(ctx context.Context, events <-chan registry.Event) error {
	tick := time.NewTicker(r.cfg.Tick)
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case ev, ok := <-events:
			if !ok {
				return nil
			}
			batch := []registry.Event{ev}
			timer := time.NewTimer(r.cfg.Batch)
		gather:
			for {
				select {
				case ev, ok := <-events:
					if !ok {
						break gather
					}
					batch = append(batch, ev)
				case <-timer.C:
					break gather
				}
			}
			timer.Stop()
			r.HandleEvents(batch)
		case <-tick.C:
			r.Tick()
		case <-r.kick:
			r.Tick()
		case w := <-r.wants:
			r.bringIn(w)
		}
	}
}

// HandleEvents applies a batch of registry events: one device update for
// the whole batch, one firewall change per host that changed.
func (r *Reconciler) HandleEvents(batch []registry.Event) {
	r.mu.Lock()
	defer r.mu.Unlock()
	now := r.now()
	var delta device.Delta
	var handshakes []wgtypes.Key
	expireNow := r.cfg.HoldDown == 0
	for _, ev := range batch {
		h := ev.Host
		if h.InstanceID == r.cfg.Self.InstanceID {
			continue
		}
		switch ev.Kind {
		case registry.Added, registry.Updated:
			hs := r.upsert(h, now, &delta)
			handshakes = append(handshakes, hs...)
		case registry.Removed:
			if p := r.peers[h.InstanceID]; p != nil && (p.removeAt.IsZero() || ev.Decommissioned) {
				p.removeAt, p.goneAt = now.Add(r.cfg.HoldDown), now
				r.gone[h.InstanceID] = p
				r.kickAfter(r.cfg.HoldDown)
				if ev.Decommissioned {
					// Retired for good: its key must go now, not after the
					// hold-down that covers restarts and blips, and not
					// when an operator gets round to the breaker.
					p.removeAt, p.retired = now, true
					expireNow = true
				}
			}
		}
	}
	r.lastSync = now
	r.applyDevice(delta, handshakes)
	if expireNow {
		r.expireLocked(now)
	}
}

// upsert brings one host's peer to its new record. It adds to delta only
// what changed for this host.
func (r *Reconciler) upsert(h *registry.Host, now time.Time, delta *device.Delta) (handshake []wgtypes.Key) {
	p := r.peers[h.InstanceID]
	if p == nil {
		p = &peer{host: noHost}
		r.peers[h.InstanceID] = p
	}
	old, wasIn := p.host, p.inDevice
	p.host, p.removeAt, p.goneAt, p.retired, p.lastCall = h, time.Time{}, time.Time{}, false, time.Time{}
	delete(r.gone, h.InstanceID)
	if old.OverlayIP != h.OverlayIP || old.PublicKey != h.PublicKey {
		r.unindex(p, old)
		if r.lazy() && old.PublicKey != (wgtypes.Key{}) {
			r.forgetLazy(old.OverlayIP, old.PublicKey)
			p.idle = false
		}
	}
	r.byOverlay[h.OverlayIP], r.byKey[h.PublicKey] = p, p
	r.breaker.forget(h.InstanceID, r.log)
	cands, why := Candidates(r.selfLocation(), location(*h), r.links)
	p.cands = cands
	// The reasons are the same few sentences for the whole fleet ("same
	// network vpc"); held once each, not once per peer (1 MB at 10 000).
	for i := range cands {
		cands[i].Reason = unique.Make(cands[i].Reason).Value()
	}
	p.unreachable = unique.Make(why).Value()

	if p.inDevice && old.PublicKey != h.PublicKey {
		// A new key is a new WireGuard peer; the old one must go.
		delta.Remove = append(delta.Remove, old.PublicKey)
		r.setInDevice(p, false)
		if p.nextKey != nil && *p.nextKey == h.PublicKey {
			p.nextKey = nil // promoted: the upsert below takes it over
		}
	}
	switch {
	case len(cands) == 0:
		if p.inDevice {
			delta.Remove = append(delta.Remove, h.PublicKey)
			r.setInDevice(p, false)
		}
		if p.idle { // no path: nothing to bring it in on
			r.cfg.Lazy.Gate.Forget(h.OverlayIP)
			p.idle = false
		}
		p.path = nil
	case !p.inDevice && r.lazy() && !wasIn:
		// Known, not yet talked to: it comes in with its first packet,
		// and gets its path state then.
		p.path = nil
		if !p.idle {
			r.idleLocked(p, delta)
		}
	case !p.inDevice:
		p.path = newPathState(cands, now, r.cfg.Timers)
		delta.Upsert = append(delta.Upsert, r.devicePeer(p))
		r.setInDevice(p, true)
		p.activeAt = now
		handshake = append(handshake, h.PublicKey)
	default:
		a := p.path.reset(cands, p.obs, now, r.cfg.Timers)
		if a.setEndpoint || old.OverlayIP != h.OverlayIP {
			delta.Upsert = append(delta.Upsert, r.devicePeer(p))
		}
		if restarted(old, h) {
			if err := r.dev.ExpireSessions(h.PublicKey); err != nil {
				r.log.Debug("device: expire sessions of a restarted peer", "peer", h.InstanceID, "err", err)
			}
		}
		if a.handshake {
			handshake = append(handshake, h.PublicKey)
		}
	}
	r.syncNextKey(p, delta)
	r.registerInitiator(p)
	if r.members != nil && !sameMember(*old, *h) {
		if err := r.members.SetHost(MemberOf(*h)); err != nil {
			r.log.Error("firewall: set member", "host", h.InstanceID, "err", err)
		}
	}
	return handshake
}

// restarted says the peer's record comes from a new process: the sessions
// the device holds with it died with the old one. A peer with lazy peers
// (the default) brings this host in only when it has something to send, so
// what this host sent it on them was lost until WireGuard gave up on the
// session (15 s). Expired, the next packet starts a handshake at once; a
// peer with nothing to send costs no handshake.
func restarted(old, h *registry.Host) bool {
	return !old.StartTime.IsZero() && !old.StartTime.Equal(h.StartTime)
}

// syncNextKey keeps a device entry for the key a peer announced it will
// rotate to: with no allowed IPs, so it takes no traffic, but its
// handshakes are accepted the moment the peer switches. When the record's
// key becomes that key, the ordinary key change moves the allowed IPs to
// it in the same delta that removes the old entry, and the session made
// meanwhile is kept.
func (r *Reconciler) syncNextKey(p *peer, delta *device.Delta) {
	next := p.host.NextPublicKey
	if next != nil && *next == p.host.PublicKey {
		next = nil
	}
	had := p.nextKey
	switch {
	case had != nil && (next == nil || *next != *had):
		if *had != p.host.PublicKey { // not promoted: drop it
			delta.Remove = append(delta.Remove, *had)
		}
		p.nextKey = nil
	}
	if next != nil && p.nextKey == nil && p.path != nil {
		c, _ := p.path.current()
		delta.Upsert = append(delta.Upsert, device.Peer{PublicKey: *next, Endpoint: c.Endpoint})
		k := *next
		p.nextKey = &k
	}
}

// devicePeer renders a peer's device configuration from its current path.
func (r *Reconciler) devicePeer(p *peer) device.Peer {
	c, _ := p.path.current()
	dp := device.Peer{
		PublicKey:  p.host.PublicKey,
		Endpoint:   c.Endpoint,
		AllowedIPs: []netip.Prefix{netip.PrefixFrom(p.host.OverlayIP, 32)},
	}
	// Only a public path crosses NAT, whose mappings expire when idle. A
	// peer that answers on no path gets none: WireGuard's keepalive would
	// restart its 90 s of handshake retries every 25 s, for ever.
	// Lazy peers keep none either: a keepalive is traffic, so the peer
	// would never go idle (EC2's public addresses are one-to-one NAT, and
	// an initiation from behind other NAT opens its own mapping).
	if c.Path == PathPublic && !p.path.exhausted && !r.lazy() {
		dp.PersistentKeepalive = 25 * time.Second
	}
	return dp
}

// Tick reads the device's statistics once and advances every peer's path
// state machine; it also removes peers whose hold-down expired.
func (r *Reconciler) Tick() {
	stats, err := r.dev.Stats()
	if err != nil {
		r.log.Error("device stats", "err", err)
		r.mu.Lock()
		r.applyDevice(device.Delta{}, nil) // pending changes still get their retry
		r.mu.Unlock()
		return
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	now := r.now()
	var delta device.Delta
	var handshakes, once []wgtypes.Key
	for _, p := range r.inDev {
		if p.path == nil {
			continue
		}
		st := stats[p.host.PublicKey]
		if st.RxBytes != p.obs.RxBytes && st.RxBytes > 0 {
			p.heardAt = now
		}
		if st.RxBytes != p.obs.RxBytes || st.TxBytes != p.obs.TxBytes {
			p.activeAt = now
		}
		if r.reapLocked(p, now, &delta) {
			continue
		}
		p.obs = Observation{Endpoint: st.Endpoint, LastHandshake: st.LastHandshake, RxBytes: st.RxBytes, TxBytes: st.TxBytes}
		before, _ := p.path.current()
		a := p.path.step(p.obs, now, r.cfg.Timers)
		if after, _ := p.path.current(); after != before {
			r.log.Info("path changed", "peer", p.host.InstanceID, "from", before.Endpoint, "to", after.Endpoint, "path", after.Path, "reason", p.path.reason())
		}
		if a.probe {
			r.probe(p)
		}
		if a.dropQueued {
			if err := r.dev.DropQueued(p.host.PublicKey); err != nil {
				r.log.Debug("device: drop queued", "peer", p.host.InstanceID, "err", err)
			}
		}
		if a.setEndpoint {
			delta.Upsert = append(delta.Upsert, r.devicePeer(p))
		}
		switch {
		case a.handshake && a.once:
			once = append(once, p.host.PublicKey)
		case a.handshake:
			handshakes = append(handshakes, p.host.PublicKey)
		}
	}
	r.applyDevice(delta, handshakes)
	for _, k := range once {
		if err := r.dev.HandshakeOnce(k); err != nil {
			r.log.Debug("device: handshake", "peer", k, "err", err)
		}
	}
	r.expireLocked(now)
}

// probe checks a fallen-back peer's best candidate in the background and
// starts a trial there only if it answers.
func (r *Reconciler) probe(p *peer) {
	target := p.path.cands[0].Endpoint.Addr()
	id := p.host.InstanceID
	go func() {
		ok := true
		if r.cfg.Prober != nil {
			ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
			ok = r.cfg.Prober.Reachable(ctx, target)
			cancel()
		}
		r.mu.Lock()
		defer r.mu.Unlock()
		q := r.peers[id]
		if q != p || p.path == nil {
			return // the peer changed meanwhile
		}
		a := p.path.probed(ok, r.now(), r.cfg.Timers)
		r.log.Debug("path probe", "peer", id, "target", target, "reachable", ok)
		var delta device.Delta
		var hs []wgtypes.Key
		if a.setEndpoint {
			delta.Upsert = append(delta.Upsert, r.devicePeer(p))
		}
		if a.handshake {
			hs = append(hs, p.host.PublicKey)
		}
		r.applyDevice(delta, hs)
	}()
}

// expireLocked removes peers whose hold-down has run out, through the
// mass-removal breaker; decommissioned peers go past it.
//
// A vanished record is the registry's word, not the data plane's: when a
// host is cut off from ZooKeeper (a severed link, a proxy down) its session
// expires while WireGuard between it and us works. Removing it would cut
// traffic because of the mesh. So a peer heard from (a handshake, or bytes
// received) within the hold-down stays, as stale, and goes only after a
// hold-down of silence; one that is silent gets one handshake first and
// goes if it does not answer within the handshake timeout. A host that
// really died is thus gone within hold-down plus a handshake timeout.
// hold_down 0 means at once, liveness or not.
func (r *Reconciler) expireLocked(now time.Time) {
	var due, retired []string
	var calls []wgtypes.Key
	for id, p := range r.gone {
		switch {
		case p.retired:
			retired = append(retired, id)
			r.breaker.forget(id, r.log)
		case p.removeAt.IsZero() || now.Before(p.removeAt):
		case r.cfg.HoldDown == 0:
			due = append(due, id)
		case r.alive(p, now):
			r.breaker.forget(id, r.log)
			p.lastCall = time.Time{}
		case p.lastCall.IsZero() && p.inDevice:
			p.lastCall = now
			r.kickAfter(r.cfg.Timers.Handshake)
			calls = append(calls, p.host.PublicKey)
			r.log.Info("peer's record is gone and it is silent: one handshake before removal", "peer", id,
				"silent_for", r.silence(p, now), "record_gone_for", now.Sub(p.goneAt).Round(time.Second))
		case p.inDevice && now.Sub(p.lastCall) < r.cfg.Timers.Handshake:
		default:
			due = append(due, id)
		}
	}
	r.handshake(calls)
	if len(due)+len(retired) == 0 {
		return
	}
	allowed := append(retired, r.breaker.admit(due, len(r.peers), now, r.log)...)
	var delta device.Delta
	for _, id := range allowed {
		p := r.peers[id]
		if p.inDevice {
			delta.Remove = append(delta.Remove, p.host.PublicKey)
		}
		if p.nextKey != nil {
			delta.Remove = append(delta.Remove, *p.nextKey)
		}
		delete(r.peers, id)
		delete(r.gone, id)
		delete(r.inDev, id)
		r.unindex(p, p.host)
		r.forgetLazy(p.host.OverlayIP, p.host.PublicKey)
		if r.members != nil {
			if err := r.members.RemoveHost(id); err != nil {
				r.log.Error("firewall: remove member", "host", id, "err", err)
			}
		}
		if p.goneAt.IsZero() {
			r.log.Info("peer removed", "peer", id)
		} else { // how long after its record vanished: the bound operators (and tests) judge
			r.log.Info("peer removed", "peer", id, "record_gone_for", now.Sub(p.goneAt).Round(100*time.Millisecond))
		}
	}
	r.applyDevice(delta, nil)
}

// lastHeard is when the device last showed the peer alive: its last
// handshake or the last growth of its received bytes.
func lastHeard(p *peer) time.Time {
	if p.heardAt.After(p.obs.LastHandshake) {
		return p.heardAt
	}
	return p.obs.LastHandshake
}

// alive: heard from within the hold-down.
func (r *Reconciler) alive(p *peer, now time.Time) bool {
	t := lastHeard(p)
	return !t.IsZero() && now.Sub(t) < r.cfg.HoldDown
}

func (r *Reconciler) silence(p *peer, now time.Time) string {
	if t := lastHeard(p); !t.IsZero() {
		return now.Sub(t).Round(time.Second).String()
	}
	return "ever"
}

// applyDevice sends one delta to the device, then starts the handshakes:
// a new or moved peer is handshaken at once rather than at the first packet,
// so a restarted host is reachable again in both directions within a second.
// A delta the device refuses is kept and retried with backoff, merged with
// every later one (see pending); Tick retries when the backoff is over.
func (r *Reconciler) applyDevice(delta device.Delta, handshakes []wgtypes.Key) {
	if r.pend.changes() == 0 && delta.Empty() {
		r.handshake(handshakes)
		return
	}
	r.pend.merge(delta, handshakes)
	now := r.now()
	if r.pend.waiting(now) {
		return
	}
	d := r.pend.delta()
	n := len(d.Upsert) + len(d.Remove)
	start := time.Now()
	if err := r.dev.Apply(d); err != nil {
		wait := r.pend.failed(err, now)
		r.log.Error("device: apply peers failed; keeping the changes and retrying", "upsert", len(d.Upsert), "remove", len(d.Remove),
			"retry_in", wait, "failures", r.pend.failures, "err", err)
		return
	}
	if r.pend.backoff > 0 {
		r.log.Info("device: pending peer changes applied after retrying", "changes", n, "failures", r.pend.failures)
	}
	r.applied += uint64(n)
	if r.cfg.OnApply != nil {
		r.cfg.OnApply(time.Since(start), n)
	}
	r.handshake(r.pend.done())
}

func (r *Reconciler) handshake(keys []wgtypes.Key) {
	for _, k := range keys {
		if err := r.dev.Handshake(k); err != nil {
			r.log.Debug("device: handshake", "peer", k, "err", err)
		}
	}
}

// SetLinks replaces the direct-connect links; peers whose candidates change
// move, the rest are untouched.
func (r *Reconciler) SetLinks(l Links) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.links = l
	now := r.now()
	var delta device.Delta
	var handshakes []wgtypes.Key
	for _, p := range r.peers {
		if p.removeAt.IsZero() {
			handshakes = append(handshakes, r.upsert(p.host, now, &delta)...)
		}
	}
	r.applyDevice(delta, handshakes)
}

// HandshakeAll starts a handshake with every peer now: after this host's
// key changed, its peers should not wait for their timers.
func (r *Reconciler) HandshakeAll() {
	r.mu.Lock()
	defer r.mu.Unlock()
	var keys []wgtypes.Key
	for _, p := range r.peers {
		if p.inDevice {
			keys = append(keys, p.host.PublicKey)
		}
	}
	r.applyDevice(device.Delta{}, keys)
}

// ReleaseBreaker lets held removals through at the next tick.
func (r *Reconciler) ReleaseBreaker() int {
	r.mu.Lock()
	n := r.breaker.release()
	r.mu.Unlock()
	r.kickNow()
	return n
}

// kickNow asks Run for a tick now (one pending kick is enough).
func (r *Reconciler) kickNow() {
	select {
	case r.kick <- struct{}{}:
	default:
	}
}

// kickAfter asks Run for a tick when a deadline set now runs out: the
// hold-down of a vanished record, the handshake timeout of a last call. On
// the ticker alone such a deadline would be judged up to a tick late, and
// a tick's jitter could add another, so a dead host's removal would drift
// past hold-down plus handshake timeout.
func (r *Reconciler) kickAfter(d time.Duration) {
	if d > 0 {
		time.AfterFunc(d, r.kickNow)
	}
}

func (r *Reconciler) selfLocation() Location { return location(r.cfg.Self) }

func location(h registry.Host) Location {
	return Location{Network: h.Network, PrivateIP: h.PrivateIP, PublicIP: h.PublicIP, Port: h.ListenPort}
}

// MemberOf is a host as the firewall sees it: its underlay addresses are
// every address its record gives, IPv4 and IPv6 (each lands in the sets
// of its family), though WireGuard endpoints use only the IPv4 ones. The
// daemon fills the firewall from the snapshot with it too, so both agree.
func MemberOf(h registry.Host) MemberHost {
	m := MemberHost{ID: h.InstanceID, OverlayIP: h.OverlayIP, Groups: h.Groups}
	for _, a := range []netip.Addr{h.PrivateIP, h.PublicIP, h.PrivateIP6, h.PublicIP6} {
		if a.IsValid() {
			m.Underlay = append(m.Underlay, a)
		}
	}
	return m
}

func sameMember(a, b registry.Host) bool {
	if a.OverlayIP != b.OverlayIP || a.PrivateIP != b.PrivateIP || a.PublicIP != b.PublicIP ||
		a.PrivateIP6 != b.PrivateIP6 || a.PublicIP6 != b.PublicIP6 || len(a.Groups) != len(b.Groups) {
		return false
	}
	for i := range a.Groups {
		if a.Groups[i] != b.Groups[i] {
			return false
		}
	}
	return true
}

// setInDevice records whether p is in the device, keeping the index a
// tick walks in step.
func (r *Reconciler) setInDevice(p *peer, in bool) {
	p.inDevice = in
	if in {
		r.inDev[p.host.InstanceID] = p
	} else {
		delete(r.inDev, p.host.InstanceID)
	}
}

// unindex drops p from the lookups by overlay address and key, where h
// (what p's record was) had filed it.
func (r *Reconciler) unindex(p *peer, h *registry.Host) {
	if r.byOverlay[h.OverlayIP] == p {
		delete(r.byOverlay, h.OverlayIP)
	}
	if r.byKey[h.PublicKey] == p {
		delete(r.byKey, h.PublicKey)
	}
}
