package registry

import (
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"errors"
	"maps"
	"net/netip"
	"path"
	"slices"
	"sort"
	"time"

	"github.com/go-zookeeper/zk"
)

// Signed records (trust). With Options.Trust set, this host signs its
// record and checks everyone else's before the view changes:
//
//	{ ...the schema 1 fields, as before...,
//	  "seq": 1733100000000000,
//	  "signed": {"record": "<base64 of the exact signed bytes>",
//	             "sig": "<base64>", "chain": ["<base64 DER, leaf first>"]} }
//
// The signed bytes are the record itself (schema 1, with seq) before
// "signed" was added. A reader of this release believes only them, and
// takes groups and network from the certificate; a reader of the previous
// release reads the plain fields beside them and ignores the two new keys.
// The sequence is microseconds since 1970, or one more than the last one
// this host used if that is higher: it rises across restarts.
//
// Per host, the highest sequence seen (and a digest of its bytes) is kept
// in memory and in the snapshot, so an older signed record, replayed, is
// refused; so is an unsigned record for a host that has signed before (a
// downgrade), and a record claiming an overlay address that a signed record
// of another host holds (the address stays bound until a decommission).

// Trust signs this host's record and verifies everyone's; internal/trust
// implements it. nil in Options: records are neither signed nor checked.
type Trust interface {
	// SignRecord signs payload with this host's identity key and returns
	// the certificate chain (DER, leaf first) that vouches for the key.
	SignRecord(payload []byte) (sig []byte, chain [][]byte, err error)
	// VerifyRecord checks sig over payload by chain's leaf, the chain
	// against the fleet CA, validity and revocation. An error may say
	// why in a word with a method RefusalReason() string.
	VerifyRecord(payload, sig []byte, chain [][]byte) (Signer, error)
	// Strict refuses unsigned records; otherwise they are accepted and
	// listed (trust.mode permissive).
	Strict() bool
	// Enabled is false until trust is configured: a fleet turns it on host
	// by host, without restarts (SIGHUP).
	Enabled() bool
	// Revoked reports whether a certificate serial is on the operator-signed
	// revocation list.
	Revoked(serial string) bool
}

func (r *Registry) trustOn() bool { return r.o.Trust != nil && r.o.Trust.Enabled() }

// Signer is what a record's certificate says about its host.
type Signer struct {
	InstanceID string
	Network    string
	Groups     []string
	Operator   bool
	Serial     string
	NotAfter   time.Time
}

// Refusal reasons of the trust checks, beside the certificate's own
// (unknown_ca, expired, revoked, signature, certificate, role).
const (
	ReasonUnsigned  = "unsigned"  // no signature, trust.mode strict
	ReasonDowngrade = "downgrade" // no signature from a host that signed before
	ReasonReplay    = "replay"    // a sequence lower than (or equal to, with other content) one seen
	ReasonIdentity  = "identity"  // signed by another host's certificate
	ReasonNetwork   = "network"   // a network its certificate does not name
	ReasonAddress   = "address"   // an overlay address bound to another host
)

type signedJSON struct {
	Record string   `json:"record"`
	Sig    string   `json:"sig"`
	Chain  []string `json:"chain"`
}

// seqMark is the highest signed sequence seen for a host.
type seqMark struct {
	Seq uint64 `json:"seq"`
	Sum string `json:"sum"` // hex SHA-256 of the signed bytes
	// Serial is the certificate that signed it: once that is revoked, the
	// address the record bound is free again (DropRevoked), whether the
	// host is still in the view or left it long ago.
	Serial string `json:"serial,omitempty"`
}

// trustState is what the registry remembers between records.
type trustState struct {
	seqs   map[string]seqMark    // instance id -> highest sequence
	addrs  map[netip.Addr]string // overlay address -> id of its signed owner
	addrOf map[string]netip.Addr // and back
	recent []RecentRefusal       // the last refusals, newest last
	self   struct {
		key  string // the record's content without sequence and signature
		data []byte // what is published
		seq  uint64
	}
}

// RecentRefusal is one record that was not believed, for `meshctl status`.
type RecentRefusal struct {
	At     time.Time `json:"at"`
	Node   string    `json:"node"`
	Reason string    `json:"reason"`
	Detail string    `json:"detail"`
}

const keepRefusals = 32

func (s *trustState) init() {
	s.seqs, s.addrs, s.addrOf = map[string]seqMark{}, map[netip.Addr]string{}, map[string]netip.Addr{}
}

// decode checks a record as this host's trust settings say: signature
// first, and only then the signed bytes.
func (r *Registry) decode(data []byte) (Host, error) {
	t := r.o.Trust
	if !r.trustOn() {
		// Nothing is verified: a sequence read here proves nothing.
		h, err := DecodeHost(data, r.o.Pool)
		h.Seq = 0
		return h, err
	}
	var env struct {
		Signed *signedJSON `json:"signed"`
	}
	if err := json.Unmarshal(data, &env); err != nil {
		return Host{}, bad("decode", "%v", err)
	}
	if env.Signed == nil {
		if t.Strict() {
			return Host{}, bad(ReasonUnsigned, "unsigned record; trust.mode is strict")
		}
		h, err := DecodeHost(data, r.o.Pool)
		h.Seq, h.CertSerial = 0, ""
		return h, err
	}
	payload, sig, chain, err := env.Signed.parts()
	if err != nil {
		return Host{}, bad("decode", "signed: %v", err)
	}
	who, err := t.VerifyRecord(payload, sig, chain)
	if err != nil {
		reason := "signature"
		var rr interface{ RefusalReason() string }
		if errors.As(err, &rr) {
			reason = rr.RefusalReason()
		}
		return Host{}, bad(reason, "%v", err)
	}
	h, err := DecodeHost(payload, r.o.Pool)
	if err != nil {
		return Host{}, err
	}
	if h.InstanceID != who.InstanceID {
		return Host{}, bad(ReasonIdentity, "record for %q signed by certificate %s of %q", h.InstanceID, who.Serial, who.InstanceID)
	}
	if who.Network != "" && h.Network != who.Network {
		return Host{}, bad(ReasonNetwork, "%s claims network %q; its certificate %s says %q", h.InstanceID, h.Network, who.Serial, who.Network)
	}
	if h.Seq == 0 {
		return Host{}, bad(ReasonReplay, "signed record of %s without a sequence", h.InstanceID)
	}
	h.Groups = slices.Clone(who.Groups)
	if who.Network != "" {
		h.Network = who.Network
	}
	h.CertSerial, h.signed = who.Serial, env.Signed
	return h, nil
}

func (s *signedJSON) parts() (payload, sig []byte, chain [][]byte, err error) {
	if payload, err = base64.StdEncoding.DecodeString(s.Record); err != nil {
		return
	}
	if sig, err = base64.StdEncoding.DecodeString(s.Sig); err != nil {
		return
	}
	for _, c := range s.Chain {
		der, err := base64.StdEncoding.DecodeString(c)
		if err != nil {
			return nil, nil, nil, err
		}
		chain = append(chain, der)
	}
	return payload, sig, chain, nil
}

func (s *signedJSON) sum() string {
	if s == nil {
		return ""
	}
	h := sha256.Sum256([]byte(s.Record))
	return hex.EncodeToString(h[:])
}

// admit is the last check before a record enters the view, and records it
// as seen: sequence, downgrade, address binding. Check and record happen
// under one lock, so two records racing for one address cannot both win.
func (r *Registry) admit(h Host) error {
	if !r.trustOn() {
		return nil
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	ts := &r.trust
	mark := ts.seqs[h.InstanceID]
	sum := h.signed.sum()
	if h.signed == nil {
		if mark.Seq > 0 {
			return bad(ReasonDowngrade, "unsigned record for %s, which signed up to sequence %d", h.InstanceID, mark.Seq)
		}
	} else {
		switch {
		case h.Seq < mark.Seq:
			return bad(ReasonReplay, "sequence %d of %s is older than %d, already seen", h.Seq, h.InstanceID, mark.Seq)
		case h.Seq == mark.Seq && sum != mark.Sum:
			return bad(ReasonReplay, "sequence %d of %s already seen with other content", h.Seq, h.InstanceID)
		}
	}
	if owner, ok := ts.addrs[h.OverlayIP]; ok && owner != h.InstanceID {
		return bad(ReasonAddress, "%s claims %s, which belongs to %s", h.InstanceID, h.OverlayIP, owner)
	}
	if h.signed != nil {
		ts.seqs[h.InstanceID] = seqMark{Seq: h.Seq, Sum: sum, Serial: h.CertSerial}
		if prev, ok := ts.addrOf[h.InstanceID]; ok && prev != h.OverlayIP {
			delete(ts.addrs, prev) // its lease moved: only a decommission does that
		}
		ts.addrs[h.OverlayIP], ts.addrOf[h.InstanceID] = h.InstanceID, h.OverlayIP
	}
	return nil
}

// retired says whether a host whose record and owner node are gone was
// decommissioned for good. Without trust, ZooKeeper says so. With trust,
// deleting nodes is something anyone with write access can do: a signed
// host counts as retired only once an operator revoked its certificate;
// until then its removal is a vanish (hold-down, breaker) and its address
// stays bound to it.
func (r *Registry) retired(h Host) bool {
	if !r.trustOn() || h.signed == nil {
		return true
	}
	return h.CertSerial != "" && r.o.Trust.Revoked(h.CertSerial)
}

// unrevokedSerial is the certificate of id's last signed record when trust
// is on, the record binds an address here, and the certificate is not
// revoked; "" otherwise. Only revocation retires a signed host (retired),
// so that is what a decommission of one waits for.
func (r *Registry) unrevokedSerial(id string) string {
	if !r.trustOn() {
		return ""
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	serial := r.trust.seqs[id].Serial
	if _, bound := r.trust.addrOf[id]; !bound || serial == "" || r.o.Trust.Revoked(serial) {
		return ""
	}
	return serial
}

// release unbinds a decommissioned host's address; its sequence is kept.
func (r *Registry) release(h Host) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.trust.unbind(h.InstanceID, h.OverlayIP)
}

// unbind frees ip if it is bound to id, and says whether it was.
func (s *trustState) unbind(id string, ip netip.Addr) bool {
	if s.addrs[ip] != id {
		return false
	}
	delete(s.addrs, ip)
	delete(s.addrOf, id)
	return true
}

// noteRefusal keeps the latest refusals for operators.
func (r *Registry) noteRefusal(node, reason string, err error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	rs := append(r.trust.recent, RecentRefusal{At: time.Now().UTC(), Node: node, Reason: reason, Detail: err.Error()})
	if len(rs) > keepRefusals {
		rs = rs[len(rs)-keepRefusals:]
	}
	r.trust.recent = rs
}

// Refusals are the latest records that were skipped, newest last.
func (r *Registry) Refusals() []RecentRefusal {
	r.mu.Lock()
	defer r.mu.Unlock()
	return slices.Clone(r.trust.recent)
}

// Unsigned names the hosts in the view whose record is not signed: with
// trust.mode permissive, the hosts that keep a fleet from going strict.
func (r *Registry) Unsigned() []string {
	r.mu.Lock()
	defer r.mu.Unlock()
	var out []string
	for id, h := range r.view.hosts {
		if h.Seq == 0 {
			out = append(out, id)
		}
	}
	sort.Strings(out)
	return out
}

// selfRecord is this host's record as published: with trust, signed under
// a new, higher sequence whenever its content changed, else the same bytes
// as before (a session restart republishes them unchanged).
func (r *Registry) selfRecord(self Host) ([]byte, error) {
	if !r.trustOn() {
		return json.Marshal(self)
	}
	self.Seq, self.signed = 0, nil
	plain, err := json.Marshal(self)
	if err != nil {
		return nil, err
	}
	r.mu.Lock()
	if r.trust.self.key == string(plain) && r.trust.self.data != nil {
		data := r.trust.self.data
		r.mu.Unlock()
		return data, nil
	}
	self.Seq = max(r.trust.self.seq+1, uint64(time.Now().UnixMicro()))
	r.mu.Unlock()
	data, err := SealRecord(self, r.o.Trust)
	if err != nil {
		return nil, err
	}
	r.mu.Lock()
	r.trust.self.key, r.trust.self.data, r.trust.self.seq = string(plain), data, self.Seq
	r.snapshotBehind()
	r.mu.Unlock()
	return data, nil
}

// RecordSigner signs a record's bytes; trust.Signer is one.
type RecordSigner interface {
	SignRecord(payload []byte) (sig []byte, chain [][]byte, err error)
}

// SealRecord signs h (its Seq set) and returns the record as stored: the
// signed bytes, and beside them the same fields for older readers. meshd
// calls it for its own record; tests and benchmarks for made-up ones.
func SealRecord(h Host, t RecordSigner) ([]byte, error) {
	h.Schema = Schema
	h.signed = nil
	payload, err := json.Marshal(h)
	if err != nil {
		return nil, err
	}
	sig, chain, err := t.SignRecord(payload)
	if err != nil {
		return nil, err
	}
	s := &signedJSON{Record: base64.StdEncoding.EncodeToString(payload), Sig: base64.StdEncoding.EncodeToString(sig)}
	for _, der := range chain {
		s.Chain = append(s.Chain, base64.StdEncoding.EncodeToString(der))
	}
	h.signed = s
	return json.Marshal(h)
}

// Resign publishes this host's record signed anew: after its certificate
// was renewed, so peers see the new one long before the old one expires.
func (r *Registry) Resign() {
	r.mu.Lock()
	r.trust.self.key, r.trust.self.data = "", nil
	r.mu.Unlock()
	r.pokePublish()
}

// trustSnapshot is the trust state kept in the snapshot.
type trustSnapshot struct {
	SelfSeq uint64             `json:"self_seq,omitempty"`
	Seqs    map[string]seqMark `json:"seqs,omitempty"`
	Addrs   map[string]string  `json:"addrs,omitempty"` // overlay address -> owner
}

func (r *Registry) trustForSnapshot() *trustSnapshot {
	if r.o.Trust == nil {
		return nil
	}
	ts := &trustSnapshot{SelfSeq: r.trust.self.seq, Seqs: maps.Clone(r.trust.seqs), Addrs: map[string]string{}}
	for ip, id := range r.trust.addrs {
		ts.Addrs[ip.String()] = id
	}
	return ts
}

func (r *Registry) restoreTrust(ts *trustSnapshot) {
	if ts == nil {
		return
	}
	r.trust.self.seq = ts.SelfSeq
	for id, m := range ts.Seqs {
		r.trust.seqs[id] = m
	}
	for ip, id := range ts.Addrs {
		if a, err := netip.ParseAddr(ip); err == nil {
			r.trust.addrs[a], r.trust.addrOf[id] = id, a
		}
	}
}

// DropRevoked removes at once every host whose certificate is revoked now,
// as a decommission would (no hold-down): a signed revocation list takes
// effect without waiting. Its record stays refused until it is signed
// under a certificate that is not revoked.
func (r *Registry) DropRevoked(revoked func(serial string) bool) []string {
	r.mu.Lock()
	var gone []*Host
	var ids0 []string
	released := false
	for id, h := range r.view.hosts {
		if h.CertSerial != "" && revoked(h.CertSerial) {
			gone = append(gone, h)
			ids0 = append(ids0, id)
		}
	}
	// Through the view, so its key index forgets the host too; the node
	// name stays known: not read again until it changes.
	for _, id := range ids0 {
		r.putLocked(id, nil, "", time.Now())
	}
	// A revoked certificate holds no address: whatever it bound is free for
	// the host that leases it after the quarantine, in the view or not (a
	// host that left before it was revoked, or decommissioned first).
	for id, m := range r.trust.seqs {
		if m.Serial == "" || !revoked(m.Serial) {
			continue
		}
		if ip, ok := r.trust.addrOf[id]; ok && r.trust.unbind(id, ip) {
			released = true
		}
	}
	if len(gone) > 0 || released {
		r.snapshotBehind()
	}
	r.mu.Unlock()
	var ids []string
	for _, h := range gone {
		ids = append(ids, h.InstanceID)
		r.noteRefusal(h.InstanceID, "revoked", bad("revoked", "certificate %s of %s revoked by the signed revocation list", h.CertSerial, h.InstanceID))
		select {
		case r.events <- Event{Kind: Removed, Host: h, Decommissioned: true}:
		case <-r.ctx.Done():
			return ids
		}
	}
	return ids
}

// Reverify reads every record in the view again and checks it as trust now
// says: after trust was turned on, hosts read while it was off are then
// known to sign (or not). A record that is now refused is counted and the
// view keeps what it had, as for any refused record.
func (r *Registry) Reverify() {
	type named struct{ id, name string }
	var all []named
	r.mu.Lock()
	// Under the lock that puts names: a watch read that began before this
	// sees the count change when it puts its record, and reads it again.
	r.reverifies.Add(1)
	for b := range r.names {
		for id, name := range r.names[b] {
			all = append(all, named{id, name})
		}
	}
	r.mu.Unlock()
	for _, n := range all {
		if r.ctx.Err() != nil {
			return
		}
		p := path.Join(r.bucketPath(BucketOf(n.id)), n.name)
		h, err := r.readRecord(p, n.id)
		if transient(err) {
			// Not read as trust is now: its bucket reads it again.
			r.mu.Lock()
			if r.names[BucketOf(n.id)][n.id] == n.name {
				r.names[BucketOf(n.id)][n.id] = ""
			}
			r.mu.Unlock()
			select {
			case r.resync[BucketOf(n.id)] <- struct{}{}:
			default:
			}
			continue
		}
		if err != nil {
			if !errors.Is(err, zk.ErrNoNode) && r.stillNewest(n.id, n.name) {
				r.skip(p, n.id, err)
				// A newer record put while skip waited supersedes the
				// refusal, as one put after it does (syncBucket).
				r.mu.Lock()
				if r.names[BucketOf(n.id)][n.id] != n.name && r.refused[n.id].Node == p {
					delete(r.refused, n.id)
				}
				r.mu.Unlock()
			}
			continue
		}
		r.mu.Lock()
		var events []Event
		if r.names[BucketOf(n.id)][n.id] == n.name { // else changed meanwhile: the watch has it
			events = r.putLocked(n.id, &h, p, time.Now())
		}
		r.mu.Unlock()
		for _, ev := range events {
			select {
			case r.events <- ev:
			case <-r.ctx.Done():
				return
			}
		}
	}
}
