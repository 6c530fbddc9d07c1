package handshake

import (
	"context"
	"errors"
	"net/netip"
	"sync"
	"sync/atomic"
	"time"

	"golang.zx2c4.com/wireguard/wgctrl/wgtypes"
)

// Defaults for Config.
const (
	DefaultQueue = 256
	// DefaultRate and DefaultBurst bound decryptions, each about 80 µs of
	// CPU on the 2-core test VM, twice that on a peer's first while its
	// static-static secret is computed (bench/PROFILES.md): 100 a second is
	// about 1% of a core. Peers whose registered endpoint matches never use
	// them; a NATed active peer rekeys every 2 minutes.
	DefaultRate  = 100
	DefaultBurst = 50
	// DefaultRecheck is longer than WireGuard's retry of an unanswered
	// initiation (REKEY_TIMEOUT, 5 s, plus up to 1/3 s of jitter) and far
	// shorter than its rekey (120 s).
	DefaultRecheck = 15 * time.Second
	// recentCap bounds the endpoints remembered for Recheck.
	recentCap = 4096
)

// Method says how an initiator was identified.
type Method uint8

const (
	// ByEndpoint: the initiation came from an endpoint registered to
	// exactly one peer; no Diffie-Hellman was done.
	ByEndpoint Method = iota + 1
	// ByDecryption: the initiator's static key was recovered from the
	// initiation and authenticated (NAT, a changed port, an endpoint not
	// registered).
	ByDecryption
)

func (m Method) String() string {
	switch m {
	case ByEndpoint:
		return "endpoint"
	case ByDecryption:
		return "decryption"
	}
	return "unknown"
}

// Initiation is a handshake initiation from a registered peer.
//
// By decryption it is authenticated: the timestamp opened with the claimed
// key's static-static secret, and was later than any before from that peer
// (a replay is not reported). By endpoint it is not: mac1 proves only that
// the sender knows this host's public key, which the registry publishes,
// and the source address is the registered one. Either is a reason to bring
// Peer into the device, where wireguard-go checks the initiation again and
// learns the peer's endpoint from it; From need not be configured as the
// peer's endpoint.
type Initiation struct {
	Peer wgtypes.Key    // the initiator's static public key
	From netip.AddrPort // the datagram's source address
	By   Method
	// Msg is the initiation itself, for a caller that holds it back from
	// wireguard-go and hands it over once the peer is in the device.
	Msg [MessageSize]byte
}

// Config configures an Identifier.
type Config struct {
	// PrivateKey is this host's WireGuard private key.
	PrivateKey wgtypes.Key
	// OnInitiation receives each identified initiation on the Identifier's
	// one worker goroutine: while it runs, further initiations wait in the
	// queue, and once that is full they are dropped (and counted), never
	// waited for. Required.
	OnInitiation func(Initiation)
	// Queue is how many initiations may wait for the worker; 0 means
	// DefaultQueue.
	Queue int
	// Rate (per second) and Burst bound decryptions with a token bucket;
	// 0 means DefaultRate, DefaultBurst. Endpoint lookups are not limited.
	Rate  float64
	Burst int
	// Recheck: an initiation from an endpoint that was identified by
	// endpoint less than this long ago is decrypted instead. A repeat so
	// soon is the initiator retrying unanswered, and if the endpoint has
	// come to another host than the registry says, the endpoint would name
	// the wrong peer on every retry. 0 means DefaultRecheck.
	Recheck time.Duration

	now func() time.Time // tests: the clock of Rate and Recheck
}

// Stats counts what an Identifier did with the initiations offered to it.
type Stats struct {
	ByEndpoint      uint64 `json:"by_endpoint"`     // identified by source endpoint
	ByDecryption    uint64 `json:"by_decryption"`   // identified and authenticated by the key inside
	UnknownKey      uint64 `json:"unknown_key"`     // decrypted, but no registered peer has that key
	Malformed       uint64 `json:"malformed"`       // wrong size or type
	BadMAC1         uint64 `json:"bad_mac1"`        // not addressed to this host's key, or garbage
	Undecryptable   uint64 `json:"undecryptable"`   // mac1 right, static key does not open
	Unauthenticated uint64 `json:"unauthenticated"` // a registered key claimed, the timestamp does not open: forged
	Replayed        uint64 `json:"replayed"`        // authenticated, but not later than the peer's last
	Dropped         uint64 `json:"dropped"`         // the queue was full
	RateLimited     uint64 `json:"rate_limited"`    // needed a decryption, the bucket was empty
}

type counters struct {
	byEndpoint, byDecryption, unknownKey, malformed, badMAC1, undecryptable,
	unauthenticated, replayed, dropped, rateLimited atomic.Uint64
}

// Identifier turns handshake initiations seen on the receive path into
// "peer K initiated from endpoint E". Offer is the Bind's hook: it checks
// mac1 and queues, never blocks. Run is the worker: source endpoint first
// (unless the same endpoint was just identified that way, see Recheck),
// then, rate-limited, the key inside the initiation.
type Identifier struct {
	cfg   Config
	resp  atomic.Pointer[Responder]
	queue chan offered
	// The worker's alone: the rate limit, and when each endpoint was last
	// identified by endpoint.
	limit  bucket
	recent map[netip.AddrPort]time.Time

	mu         sync.RWMutex
	peers      map[wgtypes.Key]*peerState
	byEndpoint map[netip.AddrPort][]wgtypes.Key

	n counters
}

type offered struct {
	from netip.AddrPort
	msg  [MessageSize]byte
}

// NewIdentifier returns an Identifier with no registered peers; start its
// worker with Run.
func NewIdentifier(cfg Config) (*Identifier, error) {
	if cfg.OnInitiation == nil {
		return nil, errors.New("handshake identifier: no OnInitiation callback")
	}
	if cfg.Rate < 0 || cfg.Burst < 0 || cfg.Queue < 0 || cfg.Recheck < 0 {
		return nil, errors.New("handshake identifier: negative queue, rate, burst or recheck")
	}
	if cfg.Queue == 0 {
		cfg.Queue = DefaultQueue
	}
	if cfg.Rate == 0 {
		cfg.Rate = DefaultRate
	}
	if cfg.Burst == 0 {
		cfg.Burst = DefaultBurst
	}
	if cfg.Recheck == 0 {
		cfg.Recheck = DefaultRecheck
	}
	if cfg.now == nil {
		cfg.now = time.Now
	}
	id := &Identifier{
		cfg:        cfg,
		queue:      make(chan offered, cfg.Queue),
		limit:      newBucket(cfg.Rate, cfg.Burst),
		recent:     map[netip.AddrPort]time.Time{},
		peers:      map[wgtypes.Key]*peerState{},
		byEndpoint: map[netip.AddrPort][]wgtypes.Key{},
	}
	id.resp.Store(NewResponder(cfg.PrivateKey))
	return id, nil
}

// SetPrivateKey follows a key rotation: initiations checked from now on
// must be addressed to the new key.
func (id *Identifier) SetPrivateKey(k wgtypes.Key) { id.resp.Store(NewResponder(k)) }

// Offer takes a datagram that looks like an initiation, as
// device.BindOptions.OnInitiation gets it. It checks mac1 (one BLAKE2s, no
// allocation) and queues a copy of msg for the worker, or drops it if the
// queue is full. It never blocks.
func (id *Identifier) Offer(from netip.AddrPort, msg []byte) {
	switch err := id.resp.Load().CheckMAC1(msg); {
	case errors.Is(err, ErrMalformed):
		id.n.malformed.Add(1)
		return
	case err != nil:
		id.n.badMAC1.Add(1)
		return
	}
	o := offered{from: from, msg: [MessageSize]byte(msg)}
	select {
	case id.queue <- o:
	default:
		id.n.dropped.Add(1)
	}
}

// Run identifies queued initiations until ctx ends. It is the one worker:
// call it once (the rate limit and the recheck memory are its alone).
func (id *Identifier) Run(ctx context.Context) {
	for {
		select {
		case <-ctx.Done():
			return
		case o := <-id.queue:
			id.identify(&o)
		}
	}
}

func (id *Identifier) identify(o *offered) {
	now := id.cfg.now()
	ep := normalize(o.from)
	epKey, epOK := id.endpointPeer(ep)
	if epOK && !id.seenRecently(ep, now) {
		id.n.byEndpoint.Add(1)
		id.cfg.OnInitiation(Initiation{Peer: epKey, From: o.from, By: ByEndpoint, Msg: o.msg})
		return
	}
	if !id.limit.take(now) {
		if epOK { // a recheck under a flood: the endpoint's answer beats none
			id.n.byEndpoint.Add(1)
			id.cfg.OnInitiation(Initiation{Peer: epKey, From: o.from, By: ByEndpoint, Msg: o.msg})
			return
		}
		id.n.rateLimited.Add(1)
		return
	}
	r := id.resp.Load()
	key, ts, err := r.Authenticate(o.msg[:], func(k wgtypes.Key) ([32]byte, error) { return id.staticSecret(r, k) })
	switch {
	case errors.Is(err, ErrMAC1): // the key rotated since Offer
		id.n.badMAC1.Add(1)
		return
	case errors.Is(err, errUnknownPeer):
		id.n.unknownKey.Add(1)
		return
	case errors.Is(err, ErrUnauthenticated):
		id.n.unauthenticated.Add(1)
		return
	case err != nil:
		id.n.undecryptable.Add(1)
		return
	case !id.fresh(key, ts):
		id.n.replayed.Add(1)
		return
	}
	id.n.byDecryption.Add(1)
	id.cfg.OnInitiation(Initiation{Peer: key, From: o.from, By: ByDecryption, Msg: o.msg})
}

// seenRecently reports whether ep was identified by endpoint less than
// Recheck before now, and if not, remembers now for it.
func (id *Identifier) seenRecently(ep netip.AddrPort, now time.Time) bool {
	if t, ok := id.recent[ep]; ok && now.Sub(t) < id.cfg.Recheck && !now.Before(t) {
		return true
	}
	if len(id.recent) >= recentCap {
		for e, t := range id.recent {
			if now.Sub(t) >= id.cfg.Recheck || now.Before(t) {
				delete(id.recent, e)
			}
		}
		if len(id.recent) >= recentCap { // a flood of endpoints: start over
			clear(id.recent)
		}
	}
	id.recent[ep] = now
	return false
}

// Stats returns the counters so far.
func (id *Identifier) Stats() Stats {
	return Stats{
		ByEndpoint:      id.n.byEndpoint.Load(),
		ByDecryption:    id.n.byDecryption.Load(),
		UnknownKey:      id.n.unknownKey.Load(),
		Malformed:       id.n.malformed.Load(),
		BadMAC1:         id.n.badMAC1.Load(),
		Undecryptable:   id.n.undecryptable.Load(),
		Unauthenticated: id.n.unauthenticated.Load(),
		Replayed:        id.n.replayed.Load(),
		Dropped:         id.n.dropped.Load(),
		RateLimited:     id.n.rateLimited.Load(),
	}
}
