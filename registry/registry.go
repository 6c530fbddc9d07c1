package registry

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"path"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/go-zookeeper/zk"
)

// Buckets is how many parents host records are spread over.
const Buckets = 256

// Options configure a Registry.
type Options struct {
	Servers          []string
	Mesh             string
	SessionTimeout   time.Duration
	Pool             netip.Prefix
	Quarantine       time.Duration // a decommissioned address stays unused this long
	DigestSecretFile string        // "user:password": digest ACL on every node meshd creates (its own nodes under trust: acl.go)
	TLS              *tls.Config   // nil: plain TCP
	StateDir         string        // snapshot; "" keeps none
	Logger           *slog.Logger
	Trust            Trust // nil: records are neither signed nor verified (trust: none)
	// MaxGroups is how many groups a record may carry; 0: DefaultMaxGroups.
	MaxGroups int
	// Self is this host as known before it registers (id, network,
	// underlay addresses): another record claiming its addresses is refused.
	Self Host
	// HoldRecord: Register leases the address but publishes the record
	// only once Publish is called. meshd publishes when its WireGuard
	// socket is open: peers answer a new record with a handshake, and an
	// initiation sent before the socket is there is lost, which WireGuard
	// answers by waiting 5 s before the next. A host that fails to start
	// publishes nothing either.
	HoldRecord bool
	// ChildWatches watches each bucket with a child watch and lists it on
	// every change, as against a ZooKeeper older than 3.6, which has no
	// persistent watch (follow.go); for comparisons. Such a server is
	// found out without it.
	ChildWatches bool
}

// State is the registry connection as operators see it.
type State string

// States.
const (
	Connected    State = "connected"
	Disconnected State = "disconnected"
	Expired      State = "expired" // disconnected longer than the session timeout
)

// EventKind says what happened to a host.
type EventKind int

// Event kinds.
const (
	Added EventKind = iota + 1
	Updated
	Removed
)

func (k EventKind) String() string {
	return [...]string{"", "added", "updated", "removed"}[k]
}

// Event is one host's change; for Removed, Host is its last record. Host
// is the record as the registry holds it, shared and never changed: a
// receiver may keep the pointer (the reconciler does, so 10 000 records
// are held once, not once per layer) but must not write through it.
type Event struct {
	Kind EventKind
	Host *Host
	// Decommissioned is set on a removal whose lease is gone too: the host
	// was retired for good, not merely disconnected. A watch delivers it
	// as a second Removed of the host, after the plain one: finding out
	// takes a read that the removal does not wait for.
	Decommissioned bool
}

// Registry is one meshd's connection to the fleet's registry.
type Registry struct {
	o    Options
	log  *slog.Logger
	root string
	acl  []zk.ACL
	conn *zk.Conn

	events chan Event
	ctx    context.Context
	cancel context.CancelFunc
	wg     sync.WaitGroup

	mu    sync.Mutex
	view  *view                      // the accepted view and its candidates
	names [Buckets]map[string]string // per bucket: instance id -> newest record node name
	// stamps are, per bucket, the bucket node's creation stamp as of the
	// last listing, or as the snapshot names were listed under: a name
	// counts only under the same node (syncBucket).
	stamps [Buckets]bucketStamp
	// bucketPaths are the buckets' node paths, built once: every event of
	// every watch names its bucket several times.
	bucketPaths [Buckets]string
	// resync pokes a bucket's watch to list again (a read it owes failed).
	resync [Buckets]chan struct{}
	slots  chan struct{} // listings in flight (listSlots)
	// listing counts listings in flight, listingMax its high-water mark.
	listing, listingMax atomic.Int32
	// listings counts bucket listings made, for tests.
	listings atomic.Int64
	// listed counts buckets listed completely at least once: the first
	// sync is over when it reaches Buckets.
	listed atomic.Int32
	// earlyLeases counts records judged by a lease read made beside the
	// record's (leaseseen.go), for tests.
	earlyLeases atomic.Int64
	// Per bucket: the leases read for records its last listing held
	// (leaseseen.go), by id.
	leases [Buckets]map[string]leaseSeen
	// epoch is the decommission watch (decommissions.go); epochTried is
	// closed once it has been tried, which the first listings wait for.
	epoch leaseEpoch
	// listedIn is, per bucket, the decommission watch's generation its
	// last listing was answered in, or 0 (syncBucket).
	listedIn   [Buckets]uint64
	epochTried chan struct{}
	// epochArmed is the generation whose watch was last armed, read by
	// the persistent watch's callback, which may not take mu (follow.go).
	epochArmed atomic.Uint64
	// follow queues the persistent watch's events (follow.go); following
	// says the registry follows the tree rather than watching each
	// bucket, decided once modeDecided is closed.
	follow      hostEvents
	following   atomic.Bool
	modeDecided chan struct{}
	// seenZxid: every change up to it has been told by the watch (or a
	// bucket to list); watchConn: the connection (follow.conn) the watch
	// was last added on (follow.go).
	seenZxid  atomic.Int64
	watchConn atomic.Uint64
	session   sessionQueue  // the session's state changes, for watchSession
	changed   chan struct{} // one deep: the view changed since the last snapshot (saveLoop)
	// reverifies counts Reverify calls. A watch read that began before one
	// may have checked the record as trust was then (off), so it is read
	// again rather than put in the view unverified (see syncBucket).
	reverifies     atomic.Uint64
	refused        map[string]Refusal // records refused by their own checks, by id (or node)
	state          State
	lastSync       time.Time
	disconnectedAt time.Time
	self           *Host
	selfPublished  published // own record node last made or found: updates replace it, Close deletes it
	selfLease      netip.Addr
	registered     chan struct{} // poked when the session (re)starts
	held           atomic.Bool   // no record published until Publish (Options.HoldRecord)

	// badSeen: refusals already logged and counted, by the node's parent.
	// A bucket's entries go with their nodes at its next listing: a
	// ZooKeeper writer churning garbage nodes must not grow every host's
	// memory for good.
	badSeen map[string]map[badNode]bool
	stats   Stats
	dialErr atomic.Value // error: the last failed connection attempt
	docs    docWatchers
	trust   trustState
	auth    hostAuth
}

// Stats count the registry's work, for metrics and the watch measurement.
type Stats struct {
	Requests   atomic.Int64
	BytesIn    atomic.Int64
	BadRecords sync.Map // reason -> *atomicInt
}

// BadRecordCounts returns skipped records by reason.
func (s *Stats) BadRecordCounts() map[string]int64 {
	out := map[string]int64{}
	s.BadRecords.Range(func(k, v any) bool { out[k.(string)] = v.(*atomicInt).Load(); return true })
	return out
}

// Open connects to ZooKeeper in the background and starts watching. It
// does not wait for ZooKeeper: until it answers, the view is the snapshot.
func Open(ctx context.Context, o Options) (*Registry, error) {
	if o.SessionTimeout == 0 {
		o.SessionTimeout = 10 * time.Second
	}
	if o.Logger == nil {
		o.Logger = slog.Default()
	}
	if o.MaxGroups == 0 {
		o.MaxGroups = DefaultMaxGroups
	}
	if len(o.Servers) == 0 || o.Mesh == "" || !o.Pool.IsValid() {
		return nil, fmt.Errorf("registry: servers, mesh and pool are required")
	}
	r := &Registry{
		o: o, log: o.Logger.With("component", "registry"), root: "/meshd/" + o.Mesh,
		acl: zk.WorldACL(zk.PermAll), events: make(chan Event, 4096),
		view: newView(), refused: map[string]Refusal{}, state: Disconnected,
		badSeen: map[string]map[badNode]bool{}, registered: make(chan struct{}, 1),
		slots: make(chan struct{}, listSlots), epochTried: make(chan struct{}),
		session: sessionQueue{poke: make(chan struct{}, 1)},
		changed: make(chan struct{}, 1), modeDecided: make(chan struct{}),
	}
	r.follow.init(r.hostsPath(), &r.stats.BytesIn, &r.epochArmed)
	r.held.Store(o.HoldRecord)
	r.trust.init()
	for b := range r.names {
		r.names[b] = map[string]string{}
		r.resync[b] = make(chan struct{}, 1)
		r.leases[b] = map[string]leaseSeen{}
		r.bucketPaths[b] = path.Join(r.hostsPath(), fmt.Sprintf("%02x", b))
	}
	var auth []byte
	if o.DigestSecretFile != "" {
		secret, err := os.ReadFile(o.DigestSecretFile)
		if err != nil {
			return nil, fmt.Errorf("registry: read digest secret: %w", err)
		}
		user, pass, ok := strings.Cut(strings.TrimSpace(string(secret)), ":")
		if !ok || user == "" || pass == "" {
			return nil, fmt.Errorf("registry: digest secret %s: want user:password", o.DigestSecretFile)
		}
		r.acl = zk.DigestACL(zk.PermAll, user, pass)
		r.auth.reader = zk.DigestACL(zk.PermRead, user, pass)
		auth = []byte(user + ":" + pass)
	} else {
		r.auth.reader = zk.WorldACL(zk.PermRead)
	}
	snap, err := r.loadSnapshot()
	if err != nil {
		r.log.Warn("snapshot unreadable; starting without it", "err", err)
	}
	dialer := zk.Dialer(net.DialTimeout)
	if o.TLS != nil {
		dialer = tlsDialer(o.TLS)
	}
	dialer = r.recordDialErrors(dialer)
	conn, _, err := zk.Connect(o.Servers, o.SessionTimeout,
		zk.WithLogger(zkLogger{r.log}), zk.WithLogInfo(false), zk.WithDialer(dialer),
		zk.WithEventCallback(r.onEvent))
	if err != nil {
		return nil, fmt.Errorf("registry: connect %v: %w", o.Servers, err)
	}
	if auth != nil {
		// AddAuth is queued and resent by the client after reconnects.
		go func() {
			if err := conn.AddAuth("digest", auth); err != nil {
				r.log.Error("digest auth", "err", err)
			}
		}()
	}
	r.conn = conn
	r.ctx, r.cancel = context.WithCancel(context.Background())
	// The snapshot becomes the view, not events: a consumer takes the
	// view from Hosts() before it reads Events, so starting costs no more
	// with 10 000 hosts than the view's size, whatever the channel holds.
	// The snapshot may be older than this host's bounds: checked again.
	r.mu.Lock()
	now := time.Now()
	for b, bs := range snap.Buckets {
		r.stamps[b] = bs.bucketStamp
	}
	for _, h := range snap.Hosts {
		// Known, from no node yet: the first listing reads it again or,
		// if it is gone, removes it (and ends a refusal).
		b := BucketOf(h.InstanceID)
		r.names[b][h.InstanceID] = ""
		if err := r.boundsLocked().check(h); err != nil {
			r.mu.Unlock()
			r.skip(r.snapshotPath()+":"+h.InstanceID, h.InstanceID, err)
			r.mu.Lock()
			continue
		}
		node := r.snapshotPath()
		if name := snap.nodeOf(b, h.InstanceID); name != "" {
			// Known from that node: the first listing reads it only if
			// the newest node is another (a restart of a whole fleet
			// costs ZooKeeper its listings, not every record again).
			r.names[b][h.InstanceID], node = name, path.Join(r.bucketPath(b), name)
		}
		r.putLocked(h.InstanceID, &h, node, now)
	}
	r.mu.Unlock()
	if snap.Lease.IsValid() {
		r.selfLease = snap.Lease
	}
	r.docs.seed(snap.Docs)
	r.wg.Add(5)
	go r.watchHosts()
	go r.watchSession()
	go r.keepRegistered()
	go r.saveLoop()
	go r.watchDecommissions()
	for b := 0; b < Buckets; b++ {
		r.wg.Add(1)
		go r.watchBucket(b)
	}
	r.startDocWatchers()
	return r, nil
}

// tlsDialer wraps the client's TCP connection in TLS: hosts reach the
// ensemble over public addresses.
func tlsDialer(cfg *tls.Config) zk.Dialer {
	return func(network, address string, timeout time.Duration) (net.Conn, error) {
		c := cfg.Clone()
		if c.ServerName == "" {
			host, _, _ := net.SplitHostPort(address)
			c.ServerName = host
		}
		d := &net.Dialer{Timeout: timeout}
		conn, err := tls.DialWithDialer(d, network, address, c)
		if err != nil {
			return nil, fmt.Errorf("TLS to ZooKeeper %s: %w", address, err)
		}
		return conn, nil
	}
}

// recordDialErrors keeps the last connection error, so that "ZooKeeper
// unreachable" can say why (refused, timed out, certificate not trusted).
func (r *Registry) recordDialErrors(d zk.Dialer) zk.Dialer {
	return func(network, address string, timeout time.Duration) (net.Conn, error) {
		c, err := d(network, address, timeout)
		if err != nil {
			r.dialErr.Store(err)
		}
		return c, err
	}
}

// LastError is the last failed connection attempt, or nil.
func (r *Registry) LastError() error {
	if err, ok := r.dialErr.Load().(error); ok {
		return err
	}
	return nil
}

// Events delivers host changes. A consumer takes the view from Hosts()
// first, then reads Events: the channel may repeat changes the view
// already holds (the watch runs meanwhile); applied in order after the
// view they end in the same state, as each host's last event is its state.
func (r *Registry) Events() <-chan Event { return r.events }

// Hosts returns the current view: at start, the snapshot's hosts. The
// records are the registry's own, shared as in Event: read, never written.
func (r *Registry) Hosts() []*Host {
	r.mu.Lock()
	defer r.mu.Unlock()
	out := make([]*Host, 0, len(r.view.hosts))
	for _, h := range r.view.hosts {
		out = append(out, h)
	}
	return out
}

// State reports the connection and when the view was last in step.
func (r *Registry) State() (State, time.Time) {
	r.mu.Lock()
	defer r.mu.Unlock()
	st := r.state
	// go-zookeeper learns of an expiry only on reconnect; judge by the
	// clock, as the server would.
	if st == Disconnected && !r.disconnectedAt.IsZero() && time.Since(r.disconnectedAt) > r.o.SessionTimeout {
		st = Expired
	}
	return st, r.lastSync
}

// Synced says every bucket has been listed completely (the records it
// named read) at least once since Open: the view is ZooKeeper's, not
// only the snapshot's.
func (r *Registry) Synced() bool { return r.listed.Load() == Buckets }

// Stats returns the work counters.
func (r *Registry) Stats() *Stats { return &r.stats }

// watchSession follows the client's session state.
func (r *Registry) watchSession() {
	defer r.wg.Done()
	for {
		select {
		case <-r.ctx.Done():
			return
		case <-r.session.poke:
		}
		for _, ev := range r.session.take() {
			r.sessionChanged(ev)
		}
	}
}

// sessionQueue holds the session's state changes for watchSession, in
// order, none dropped. go-zookeeper also puts every watch event on the
// channel Connect returns (six deep, the rest dropped): read there, each
// of a registry's watch events woke watchSession for nothing, and a burst
// of them could crowd out a state change. add runs as the client's event
// callback, in its own loops, so it keeps only the session's and never
// blocks.
type sessionQueue struct {
	mu     sync.Mutex
	events []zk.Event
	poke   chan struct{} // one deep: there are events to take
}

func (q *sessionQueue) add(ev zk.Event) {
	if ev.Type != zk.EventSession {
		return
	}
	q.mu.Lock()
	q.events = append(q.events, ev)
	q.mu.Unlock()
	select {
	case q.poke <- struct{}{}:
	default:
	}
}

func (q *sessionQueue) take() []zk.Event {
	q.mu.Lock()
	defer q.mu.Unlock()
	evs := q.events
	q.events = nil
	return evs
}

// sessionChanged follows one state change of the session.
func (r *Registry) sessionChanged(ev zk.Event) {
	r.mu.Lock()
	switch ev.State {
	case zk.StateHasSession:
		r.state, r.disconnectedAt = Connected, time.Time{}
		r.pokePublish()
	case zk.StateDisconnected, zk.StateConnecting:
		if r.state == Connected {
			r.disconnectedAt = time.Now()
		}
		r.state = Disconnected
	case zk.StateExpired:
		r.state = Expired
	case zk.StateAuthFailed:
		r.log.Error("ZooKeeper authentication failed: check zookeeper.digest_secret_file")
	}
	st := r.state
	r.mu.Unlock()
	r.log.Info("registry session", "state", st, "zk_state", ev.State.String(), "server", ev.Server)
}

// Close removes this host's record and ends the session.
func (r *Registry) Close() error {
	r.mu.Lock()
	node := r.selfPublished.node
	r.mu.Unlock()
	if node != "" && r.conn.State() == zk.StateHasSession {
		// Peers see the leave at once, not at the session's expiry. A
		// server gone mute answers only by the connection's receive
		// timeout: the expiry will do then.
		if !finishesWithin(closeWait, func() { r.conn.Delete(node, -1) }) {
			r.log.Warn("ZooKeeper does not answer; leaving the record to the session's expiry", "node", node, "waited", closeWait)
		}
	}
	r.cancel()
	// go-zookeeper's Close waits up to three seconds for a server that
	// does not take its close request, and the registry's goroutines end
	// once their requests do: against a server that took the connection
	// and answers nothing, only when go-zookeeper gives the connection
	// up, ten receive timeouts later (67 s with the default session). A
	// stopping meshd must not wait that long (systemd kills it at 20 s).
	// The snapshot is written either way.
	if !finishesWithin(2*closeWait, func() { r.conn.Close(); r.wg.Wait() }) {
		r.log.Warn("ZooKeeper does not answer; closing without waiting for its requests", "waited", 2*closeWait)
	}
	r.saveSnapshot()
	return nil
}

// closeWait bounds Close's waits on ZooKeeper: a second for the own
// record's delete, two for the session's close and the requests in
// flight.
const closeWait = time.Second

// finishesWithin runs f and reports whether it returned within d. When it
// did not, f goes on in the background: the waits it bounds are
// go-zookeeper's, which end with the connection.
func finishesWithin(d time.Duration, f func()) bool {
	done := make(chan struct{})
	go func() {
		f()
		close(done)
	}()
	select {
	case <-done:
		return true
	case <-time.After(d):
		return false
	}
}

func (r *Registry) bucketPath(b int) string { return r.bucketPaths[b] }

// hostsPath is the parent of the buckets.
func (r *Registry) hostsPath() string { return r.root + "/hosts" }

// onEvent is the client's event callback: it runs in the client's loops
// and must not block.
func (r *Registry) onEvent(ev zk.Event) {
	r.session.add(ev)
	r.follow.add(ev)
}

// BucketOf is the hash bucket of an instance id's record.
func BucketOf(id string) int {
	// FNV-1a: stable across builds and machines.
	h := uint32(2166136261)
	for i := 0; i < len(id); i++ {
		h ^= uint32(id[i])
		h *= 16777619
	}
	return int(h % Buckets)
}

// ensurePath makes sure p and its parents exist, for the callers that find
// a parent missing (ErrNoNode). It is not called before every write: a
// create that fails because the node exists is still a transaction in
// ZooKeeper's log, which every write after it waits for.
func (r *Registry) ensurePath(p string) error {
	r.stats.Requests.Add(1)
	ok, _, err := r.conn.Exists(p)
	if err != nil {
		return fmt.Errorf("look up %s: %w", p, err)
	}
	if ok {
		return nil
	}
	return r.createPath(p)
}

// createPath creates p, and its parents only if p's create says they are
// missing.
func (r *Registry) createPath(p string) error {
	r.stats.Requests.Add(1)
	_, err := r.conn.Create(p, nil, 0, r.acl)
	if errors.Is(err, zk.ErrNoNode) && path.Dir(p) != "/" {
		if err = r.createPath(path.Dir(p)); err == nil {
			r.stats.Requests.Add(1)
			_, err = r.conn.Create(p, nil, 0, r.acl)
		}
	}
	if err != nil && !errors.Is(err, zk.ErrNodeExists) {
		return fmt.Errorf("create %s: %w", p, err)
	}
	return nil
}

// zkLogger sends the client's chatter to debug level.
type zkLogger struct{ l *slog.Logger }

func (z zkLogger) Printf(format string, args ...any) { z.l.Debug(fmt.Sprintf(format, args...)) }

type atomicInt = atomic.Int64
