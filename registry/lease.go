package registry

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"net/netip"
	"path"
	"strconv"
	"strings"
	"time"

	"github.com/go-zookeeper/zk"

	"github.com/meshd/meshd/internal/name"
)

// randomTries bounds how many random addresses are tried before the pool is
// scanned in order; a scan lists every lease, so it is kept for a pool that
// is nearly full.
const randomTries = 16

const quarantinePrefix = "~quarantined:"

func (r *Registry) leasePath(ip netip.Addr) string { return path.Join(r.root, "leases", ip.String()) }
func (r *Registry) ownerPath(id string) string     { return path.Join(r.root, "owners", id) }

// ErrPoolFull is returned when no address is free.
var ErrPoolFull = errors.New("overlay pool full")

// Lease returns the overlay address leased to id, claiming a free one the
// first time. An existing lease is always reused: a host keeps its address
// across restarts, session expiry and re-homing.
func (r *Registry) Lease(ctx context.Context, id string) (netip.Addr, error) {
	ip, err := r.lease(ctx, id)
	if errors.Is(err, errParentGone) {
		// leases or owners is missing (a new mesh, or deleted by hand).
		for _, p := range []string{path.Join(r.root, "leases"), path.Join(r.root, "owners")} {
			if err := r.ensurePath(p); err != nil {
				return netip.Addr{}, err
			}
		}
		ip, err = r.lease(ctx, id)
	}
	return ip, err
}

func (r *Registry) lease(ctx context.Context, id string) (netip.Addr, error) {
	// Authenticated as the host before its lease is even read: a restart
	// finds its nodes and may write them again.
	if _, err := r.ownACL(id); err != nil {
		return netip.Addr{}, err
	}
	if ip, err := r.existingLease(id); err == nil || !errors.Is(err, zk.ErrNoNode) {
		return ip, err
	}
	first, last := poolRange(r.o.Pool)
	size := int(last - first + 1)
	for i := 0; i < randomTries; i++ {
		if err := ctx.Err(); err != nil {
			return netip.Addr{}, err
		}
		ip := u32ToAddr(first + uint32(rand.IntN(size)))
		if got, err := r.claim(id, ip); err == nil {
			return got, nil
		} else if !errors.Is(err, errTaken) {
			return netip.Addr{}, err
		}
	}
	// Nearly full: one listing, then the free addresses in order.
	r.stats.Requests.Add(1)
	taken, _, err := r.conn.Children(path.Join(r.root, "leases"))
	if err != nil {
		return netip.Addr{}, fmt.Errorf("lease for %s: list leases: %w", id, err)
	}
	used := make(map[string]bool, len(taken))
	for _, t := range taken {
		used[t] = true
	}
	for a := first; a <= last; a++ {
		ip := u32ToAddr(a)
		if used[ip.String()] && !r.quarantineOver(ip) {
			continue
		}
		if got, err := r.claim(id, ip); err == nil {
			return got, nil
		} else if !errors.Is(err, errTaken) {
			return netip.Addr{}, err
		}
	}
	return netip.Addr{}, fmt.Errorf("lease for %s: %w: all %d addresses of %s are leased or quarantined", id, ErrPoolFull, size, r.o.Pool)
}

var errTaken = errors.New("address taken")

// errParentGone: a parent node of a lease is missing; Lease makes it.
var errParentGone = errors.New("parent node missing")

// existingLease reads id's owner node and checks the lease agrees.
func (r *Registry) existingLease(id string) (netip.Addr, error) {
	r.stats.Requests.Add(1)
	data, _, err := r.conn.Get(r.ownerPath(id))
	if err != nil {
		return netip.Addr{}, err
	}
	ip, err := netip.ParseAddr(string(data))
	if err != nil {
		return netip.Addr{}, fmt.Errorf("lease for %s: owner node holds %q, not an address", id, data)
	}
	r.stats.Requests.Add(1)
	owner, _, err := r.conn.Get(r.leasePath(ip))
	switch {
	case err == nil && string(owner) == id:
		return ip, nil
	case err == nil:
		return netip.Addr{}, fmt.Errorf("lease %s for %s: node exists, owned by %s", ip, id, owner)
	case errors.Is(err, zk.ErrNoNode):
		// Half of a lease (an operator deleted the other half): repair it.
		acl, err := r.ownACL(id)
		if err != nil {
			return netip.Addr{}, fmt.Errorf("lease %s for %s: repair: %w", ip, id, err)
		}
		if _, err := r.conn.Create(r.leasePath(ip), []byte(id), 0, acl); err != nil && !errors.Is(err, zk.ErrNodeExists) {
			return netip.Addr{}, fmt.Errorf("lease %s for %s: repair: %w", ip, id, err)
		}
		return r.existingLease(id)
	default:
		return netip.Addr{}, fmt.Errorf("lease for %s: read %s: %w", id, r.leasePath(ip), err)
	}
}

// claim takes ip for id in one multi: lease and owner node together.
func (r *Registry) claim(id string, ip netip.Addr) (netip.Addr, error) {
	acl, err := r.ownACL(id)
	if err != nil {
		return netip.Addr{}, fmt.Errorf("lease %s for %s: %w", ip, id, err)
	}
	ops := []any{
		&zk.CreateRequest{Path: r.leasePath(ip), Data: []byte(id), Acl: acl},
		&zk.CreateRequest{Path: r.ownerPath(id), Data: []byte(ip.String()), Acl: acl},
	}
	// A quarantined address whose time is over is taken over in the same
	// multi, guarded by the quarantine node's version, and counted as a
	// decommission is (decommissions.go): the address changes hands.
	if ver, over := r.quarantineVersion(ip); over {
		count, err := r.countDecommission(id)
		if err != nil {
			return netip.Addr{}, fmt.Errorf("lease %s for %s: %w", ip, id, err)
		}
		ops = append([]any{count, &zk.DeleteRequest{Path: r.leasePath(ip), Version: ver}}, ops...)
	}
	r.stats.Requests.Add(1)
	res, err := r.conn.Multi(ops...)
	if err == nil {
		return ip, nil
	}
	if len(res) < 2 {
		return netip.Addr{}, fmt.Errorf("lease %s for %s: %w", ip, id, err)
	}
	ownerErr := res[len(res)-1].Error
	leaseErr := res[len(res)-2].Error
	switch {
	case errors.Is(leaseErr, zk.ErrNoNode), errors.Is(ownerErr, zk.ErrNoNode):
		// A create's parent is missing.
		return netip.Addr{}, fmt.Errorf("lease %s for %s: %w", ip, id, errParentGone)
	case errors.Is(ownerErr, zk.ErrNodeExists):
		// The same id registered concurrently elsewhere: its lease wins.
		return r.existingLease(id)
	case errors.Is(leaseErr, zk.ErrNodeExists), errors.Is(err, zk.ErrBadVersion), errors.Is(err, zk.ErrNoNode):
		return netip.Addr{}, errTaken
	case errors.Is(err, zk.ErrNodeExists):
		return netip.Addr{}, errTaken
	}
	return netip.Addr{}, fmt.Errorf("lease %s for %s: %w", ip, id, err)
}

// quarantineVersion reports whether ip is quarantined with its time over,
// and the lease node's version to guard the takeover.
func (r *Registry) quarantineVersion(ip netip.Addr) (int32, bool) {
	r.stats.Requests.Add(1)
	data, st, err := r.conn.Get(r.leasePath(ip))
	if err != nil || !strings.HasPrefix(string(data), quarantinePrefix) {
		return 0, false
	}
	since, err := strconv.ParseInt(strings.TrimPrefix(string(data), quarantinePrefix), 10, 64)
	if err != nil {
		return 0, false
	}
	return st.Version, time.Since(time.Unix(since, 0)) >= r.o.Quarantine
}

func (r *Registry) quarantineOver(ip netip.Addr) bool {
	_, over := r.quarantineVersion(ip)
	return over
}

// Decommission releases id's address into quarantine and removes its
// record: the host is gone for good, and its address is not handed out
// again until the quarantine is over.
func (r *Registry) Decommission(ctx context.Context, id string) error {
	if !name.Valid(id) {
		// An id is a path element: "../x" would name another node.
		return fmt.Errorf("decommission %q: not an instance id", id)
	}
	if serial := r.unrevokedSerial(id); serial != "" {
		// Nothing is written: a decommission alone would quarantine the
		// address while every peer keeps it bound to the signed host, and
		// the host that leases it next would be refused everywhere.
		return fmt.Errorf("decommission %s: its certificate %s is not revoked, and with trust on its peers keep a signed host and its address until it is: add %s to the revocation list (meshctl revoke), then decommission", id, serial, serial)
	}
	r.stats.Requests.Add(1)
	data, ost, err := r.conn.Get(r.ownerPath(id))
	if errors.Is(err, zk.ErrNoNode) {
		return fmt.Errorf("decommission %s: no such host (no lease)", id)
	}
	if err != nil {
		return fmt.Errorf("decommission %s: %w", id, err)
	}
	ip, err := netip.ParseAddr(string(data))
	if err != nil {
		return fmt.Errorf("decommission %s: owner node holds %q", id, data)
	}
	_, lst, err := r.conn.Get(r.leasePath(ip))
	if err != nil {
		return fmt.Errorf("decommission %s: read lease %s: %w", id, ip, err)
	}
	mark := []byte(quarantinePrefix + strconv.FormatInt(time.Now().Unix(), 10))
	// The lease is replaced, not rewritten: it may be the host's own node
	// (per-host ACL), which no other host may setData; deleting and
	// creating are the parent's to allow. The marker belongs to no host.
	// The decommission counter moves in the same multi: every watcher's
	// lease reads made before it count no more (decommissions.go).
	count, err := r.countDecommission(id)
	if err != nil {
		return fmt.Errorf("decommission %s: %w", id, err)
	}
	ops := []any{
		&zk.DeleteRequest{Path: r.leasePath(ip), Version: lst.Version},
		&zk.CreateRequest{Path: r.leasePath(ip), Data: mark, Acl: r.acl},
		&zk.DeleteRequest{Path: r.ownerPath(id), Version: ost.Version},
		count,
	}
	b := r.bucketPath(BucketOf(id))
	children, _, err := r.conn.Children(b)
	if err == nil {
		for _, c := range children {
			if cid, _, ok := splitName(c); ok && cid == id {
				ops = append(ops, &zk.DeleteRequest{Path: path.Join(b, c), Version: -1})
			}
		}
	}
	if _, err := r.conn.Multi(ops...); err != nil {
		return fmt.Errorf("decommission %s (%s): %w", id, ip, err)
	}
	r.log.Info("decommissioned", "host", id, "overlay_ip", ip, "quarantine", r.o.Quarantine)
	return nil
}

func poolRange(p netip.Prefix) (first, last uint32) {
	base := addrToU32(p.Masked().Addr())
	size := uint32(1) << (32 - p.Bits())
	// Skip the network and broadcast addresses.
	return base + 1, base + size - 2
}

func addrToU32(a netip.Addr) uint32 {
	b := a.As4()
	return uint32(b[0])<<24 | uint32(b[1])<<16 | uint32(b[2])<<8 | uint32(b[3])
}

func u32ToAddr(v uint32) netip.Addr {
	return netip.AddrFrom4([4]byte{byte(v >> 24), byte(v >> 16), byte(v >> 8), byte(v)})
}

// Register leases the host's address and publishes its record, and keeps
// it published across session expiries until Close. If ZooKeeper does not
// answer within wait, the lease remembered in the snapshot is used and the
// record is published once ZooKeeper is back.
func (r *Registry) Register(ctx context.Context, self Host, wait time.Duration) (netip.Addr, error) {
	r.mu.Lock()
	if r.selfLease.IsValid() && wait > time.Second {
		// A lease is for life: with one in the snapshot there is no need
		// to hold the data plane back for a slow or absent ZooKeeper.
		wait = time.Second
	}
	r.mu.Unlock()
	lctx, cancel := context.WithTimeout(ctx, wait)
	ip, err := r.leaseWithin(lctx, self.InstanceID)
	cancel()
	if err != nil {
		r.mu.Lock()
		cached := r.selfLease
		r.mu.Unlock()
		if !cached.IsValid() || !errors.Is(err, context.DeadlineExceeded) {
			if errors.Is(err, context.DeadlineExceeded) {
				why := ""
				if last := r.LastError(); last != nil {
					why = " (last error: " + last.Error() + ")"
				}
				return netip.Addr{}, fmt.Errorf("lease for %s: ZooKeeper %v not reachable within %s%s and no lease in the snapshot", self.InstanceID, r.o.Servers, wait, why)
			}
			return netip.Addr{}, err
		}
		r.log.Warn("ZooKeeper unreachable: using the lease from the snapshot", "overlay_ip", cached)
		ip = cached
	}
	self.OverlayIP, self.Schema = ip, Schema
	r.mu.Lock()
	r.self, r.selfLease = &self, ip
	r.snapshotBehind()
	r.mu.Unlock()
	r.pokePublish()
	return ip, nil
}

// leaseWithin is leaseWhenConnected bounded by ctx. go-zookeeper's
// requests take no deadline: against a server that took the connection
// and answers nothing (stuck before creating the session) one waits until
// the client gives the connection up, ten receive timeouts later (over a
// minute with meshd's session timeout), while the host could start on the
// lease in its snapshot. The lease read left behind ends with the
// connection; a lease it claims is the host's for life all the same.
func (r *Registry) leaseWithin(ctx context.Context, id string) (netip.Addr, error) {
	type leased struct {
		ip  netip.Addr
		err error
	}
	done := make(chan leased, 1)
	go func() {
		ip, err := r.leaseWhenConnected(ctx, id)
		done <- leased{ip, err}
	}()
	select {
	case l := <-done:
		return l.ip, l.err
	case <-ctx.Done():
		return netip.Addr{}, ctx.Err()
	}
}

// leaseWhenConnected retries Lease while the connection is down.
func (r *Registry) leaseWhenConnected(ctx context.Context, id string) (netip.Addr, error) {
	for {
		ip, err := r.Lease(ctx, id)
		if err == nil || !(retryable(err) || errors.Is(err, errParentGone)) {
			return ip, err
		}
		select {
		case <-ctx.Done():
			return netip.Addr{}, ctx.Err()
		case <-time.After(200 * time.Millisecond):
		}
	}
}

// retryable says a request failed with the connection or the session, not
// with an answer from ZooKeeper. Besides the client's own errors that
// includes a socket error: when go-zookeeper's send loop fails to write a
// request it hands the write's error (a *net.OpError, "broken pipe") to
// that request as is. Taken for an answer, it refused a good record for
// good after a connection drop under load.
func retryable(err error) bool {
	var netErr net.Error
	return errors.Is(err, zk.ErrNoServer) || errors.Is(err, zk.ErrConnectionClosed) || errors.Is(err, zk.ErrSessionExpired) || errors.Is(err, zk.ErrClosing) ||
		errors.As(err, &netErr) || errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF)
}

// Publish lets a registry opened with HoldRecord publish this host's
// record, now and from then on.
func (r *Registry) Publish() {
	r.held.Store(false)
	r.pokePublish()
}

// UpdateSelf republishes this host's record (new key, new addresses).
func (r *Registry) UpdateSelf(h Host) {
	r.mu.Lock()
	h.OverlayIP, h.Schema = r.selfLease, Schema
	r.self = &h
	r.mu.Unlock()
	r.pokePublish()
}

// keepRegistered publishes the own record whenever the session starts or
// the record changes. Records are immutable: a new node, then the old one
// goes. Nodes of this id left by an earlier process (kill -9: its session
// lingers until timeout) are removed, so peers see an update, not a gap.
func (r *Registry) keepRegistered() {
	defer r.wg.Done()
	for {
		select {
		case <-r.ctx.Done():
			return
		case <-r.registered:
		}
		for r.ctx.Err() == nil {
			err := r.publishSelf()
			if err == nil {
				break
			}
			if errors.Is(err, errNoOwner) {
				r.log.Error("own record not published", "err", err)
				break // until the next session or change
			}
			r.log.Warn("publish own record", "err", err)
			select {
			case <-r.ctx.Done():
				return
			case <-time.After(500 * time.Millisecond):
			}
		}
	}
}

func (r *Registry) publishSelf() error {
	r.mu.Lock()
	if r.self == nil || r.held.Load() {
		r.mu.Unlock()
		return nil // Publish pokes us
	}
	self, last := *r.self, r.selfPublished
	r.mu.Unlock()
	if r.conn.State() != zk.StateHasSession {
		return nil // the next session start pokes us again
	}
	data, err := r.selfRecord(self)
	if err != nil {
		return fmt.Errorf("record for %s: %w", self.InstanceID, err)
	}
	b := r.bucketPath(BucketOf(self.InstanceID))
	session := r.conn.SessionID()
	if last.node != "" && last.session == session && !bytes.Equal(last.data, data) {
		// An update of the record this session made (a new endpoint, key or
		// groups): replace that node at once. Listing the bucket and reading
		// the record first cost two round trips more, which every watcher
		// waited for. If the node went meanwhile (deleted by hand,
		// decommissioned), replaceRecord creates the record alone, still
		// only while the host holds its lease.
		acl, err := r.ownACL(self.InstanceID)
		if err != nil {
			return err
		}
		created, err := r.replaceRecord(b, self.InstanceID, data, acl, []string{last.node})
		if err != nil {
			return fmt.Errorf("replace record for %s: %w", self.InstanceID, err)
		}
		r.setPublished(created, session, data)
		r.log.Info("record updated", "host", self.InstanceID, "node", created)
		return nil
	}
	r.stats.Requests.Add(1)
	children, _, err := r.conn.Children(b)
	if errors.Is(err, zk.ErrNoNode) {
		if err = r.ensurePath(b); err == nil {
			r.stats.Requests.Add(1)
			children, _, err = r.conn.Children(b)
		}
	}
	if err != nil {
		return fmt.Errorf("list %s: %w", b, err)
	}
	var mine []string
	for _, c := range children {
		id, _, ok := splitName(c)
		if !ok || id != self.InstanceID {
			continue
		}
		p := path.Join(b, c)
		r.stats.Requests.Add(1)
		cur, st, err := r.conn.Get(p)
		if err == nil && st.EphemeralOwner == session && string(cur) == string(data) {
			r.setPublished(p, session, data)
			return nil // already published by this session
		}
		mine = append(mine, p)
	}
	acl, err := r.ownACL(self.InstanceID)
	if err != nil {
		return err
	}
	created, err := r.replaceRecord(b, self.InstanceID, data, acl, mine)
	if err != nil {
		return fmt.Errorf("create record for %s: %w", self.InstanceID, err)
	}
	r.setPublished(created, session, data)
	r.log.Info("registered", "host", self.InstanceID, "overlay_ip", self.OverlayIP, "node", created)
	return nil
}

// published is the record node this host last made or found, the session
// it belongs to, and its data.
type published struct {
	node    string
	session int64
	data    []byte
}

func (r *Registry) setPublished(node string, session int64, data []byte) {
	r.mu.Lock()
	r.selfPublished = published{node, session, data}
	r.mu.Unlock()
}

// pokePublish asks keepRegistered to publish this host's record again; a
// poke already waiting covers this one.
func (r *Registry) pokePublish() {
	select {
	case r.registered <- struct{}{}:
	default:
	}
}

// replaceRecord creates the new record and deletes the old ones in one
// multi: one transaction, and one firing of the bucket's watch, where a
// create and a delete apart make every watcher list the bucket twice. The
// multi checks that id's owner node is there: a record is created only
// while its host holds a lease, which is what lets a watcher skip reading
// the lease again for the record that replaces one it checked
// (leaseseen.go). If an old node cannot be deleted (gone meanwhile), the
// record is created alone and the old nodes deleted one by one.
func (r *Registry) replaceRecord(b, id string, data []byte, acl []zk.ACL, old []string) (string, error) {
	check := &zk.CheckVersionRequest{Path: r.ownerPath(id), Version: -1}
	create := &zk.CreateRequest{Path: path.Join(b, id+"#"), Data: data, Acl: acl, Flags: zk.FlagEphemeral | zk.FlagSequence}
	ops := []any{check, create}
	for _, p := range old {
		ops = append(ops, &zk.DeleteRequest{Path: p, Version: -1})
	}
	r.stats.Requests.Add(1)
	res, err := r.conn.Multi(ops...)
	if err == nil {
		return res[1].String, nil
	}
	if len(res) > 0 && errors.Is(res[0].Error, zk.ErrNoNode) {
		return "", fmt.Errorf("%w (%s)", errNoOwner, r.ownerPath(id))
	}
	if len(old) == 0 || len(res) < 2 || res[1].Error != nil {
		return "", err
	}
	r.stats.Requests.Add(1)
	if res, err = r.conn.Multi(check, create); err != nil {
		if len(res) > 0 && errors.Is(res[0].Error, zk.ErrNoNode) {
			return "", fmt.Errorf("%w (%s)", errNoOwner, r.ownerPath(id))
		}
		return "", err
	}
	for _, p := range old {
		r.stats.Requests.Add(1)
		r.conn.Delete(p, -1)
	}
	return res[1].String, nil
}

// errNoOwner: the host's owner node is gone, so it holds no lease (it was
// decommissioned): its record is not published again until it leases.
var errNoOwner = errors.New("no owner node: this host holds no lease (decommissioned?)")

// Leases lists every instance id that holds an address (live or not),
// for the fleet report. It reads every owner node: an operator's command,
// not a hot path.
func (r *Registry) Leases(ctx context.Context) (map[string]netip.Addr, error) {
	ids, _, err := r.conn.Children(path.Join(r.root, "owners"))
	if errors.Is(err, zk.ErrNoNode) {
		return map[string]netip.Addr{}, nil
	}
	if err != nil {
		return nil, fmt.Errorf("list leases: %w", err)
	}
	out := make(map[string]netip.Addr, len(ids))
	for _, id := range ids {
		if ctx.Err() != nil {
			return nil, ctx.Err()
		}
		data, _, err := r.conn.Get(r.ownerPath(id))
		if err != nil {
			continue
		}
		if ip, err := netip.ParseAddr(string(data)); err == nil {
			out[id] = ip
		}
	}
	return out, nil
}
