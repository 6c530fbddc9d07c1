// Package zkext sends the ZooKeeper requests that go-zookeeper/zk v1.0.4,
// the newest the module proxy serves, does not: addWatch and setWatches2
// (ZooKeeper 3.6), for a persistent recursive watch, a read that tells
// the zxid it was answered at, and multiRead.
//
// The registry needs them to keep a fleet's view without listings: one
// persistent recursive watch on the hosts tree delivers every record node
// created or deleted as its own event with its path, so a change costs a
// watching host one read of the new record (none for a removal), whatever
// the fleet's size. After a reconnect one setWatches2 adds the watch again
// and, in the same request, has the server fire a child watch on each
// bucket changed since the last zxid the host is known to have had every
// event of, which its reads tell. A fork of go-zookeeper with these
// requests is not served here, and copying the client into this tree
// would fork all of it for a few messages; so the client's own request
// queue is borrowed (go:linkname below): it frames, orders and times out
// these requests exactly like its own, and hands the watch's events to the
// connection's event callback with their paths, which is all a persistent
// watch needs from it. go.sum pins the client; a change of the borrowed
// method's name fails the link, and the tests here run every request
// against a real ZooKeeper.
//
// Persistent watches are not re-registered by the client after a
// reconnect: the caller adds the watch again on every new connection.
package zkext

import (
	"encoding/binary"
	"errors"
	"fmt"
	"unsafe"

	"github.com/go-zookeeper/zk"
)

// request is go-zookeeper's (*Conn).request: queue one request, wait for
// its reply, decode the reply's body into res. Its last parameter is a
// func of the client's own unexported types; zkext always passes nil.
//
//go:linkname request github.com/go-zookeeper/zk.(*Conn).request
func request(c *zk.Conn, opcode int32, req, res any, recvFunc func(unsafe.Pointer, unsafe.Pointer, error)) (int64, error)

// ZooKeeper's opcodes and the watch mode (zookeeper.jute, ZooDefs.java).
const (
	opGetData     = 4
	opMultiRead   = 22
	opSetWatches2 = 105
	opAddWatch    = 106
	opError       = -1

	modePersistentRecursive = 1
)

type addWatchRequest struct {
	Path string
	Mode int32
}

// empty decodes a reply with no body the caller needs (addWatch's).
type empty struct{}

// AddRecursiveWatch sets a persistent recursive watch on p: every node
// created, deleted or changed under p (p included) comes to the
// connection's event callback, until the connection ends. A server older
// than 3.6 answers zk.ErrUnimplemented.
// It returns the zxid of the reply: every change after it is told.
func AddRecursiveWatch(c *zk.Conn, p string) (int64, error) {
	return request(c, opAddWatch, &addWatchRequest{Path: p, Mode: modePersistentRecursive}, &empty{}, nil)
}

// getDataRequest and getDataResponse are getData's, without a watch.
type getDataRequest struct {
	Path  string
	Watch bool
}

type getDataResponse struct {
	Data []byte
	Stat zk.Stat
}

// Get reads p like (*zk.Conn).Get, and also returns the zxid the server
// answered at: every change up to it was applied before the read, and
// its watch events were sent on this connection before the reply.
func Get(c *zk.Conn, p string) (data []byte, stat zk.Stat, zxid int64, err error) {
	res := &getDataResponse{}
	zxid, err = request(c, opGetData, &getDataRequest{Path: p}, res, nil)
	return res.Data, res.Stat, zxid, err
}

// setWatches2Request is ZooKeeper 3.6's setWatches: watches of every kind
// set on this connection, with the zxid they are relative to.
type setWatches2Request struct {
	RelativeZxid               int64
	DataWatches                []string
	ExistWatches               []string
	ChildWatches               []string
	PersistentWatches          []string
	PersistentRecursiveWatches []string
}

// SetWatches sets, in one request, a persistent recursive watch on each
// of recursive and a child watch on each of children. A child watch on a
// node whose children changed after relativeZxid fires at once, before
// the reply (its event comes to the callback first); the others stay set
// and fire at the node's next change. It returns the zxid of the reply.
func SetWatches(c *zk.Conn, relativeZxid int64, children, recursive []string) (int64, error) {
	req := &setWatches2Request{RelativeZxid: relativeZxid, ChildWatches: children, PersistentRecursiveWatches: recursive}
	return request(c, opSetWatches2, req, &empty{}, nil)
}

// Stats reads the stat of each path in one multiRead request, in order;
// a path that fails (no node, no access) has its error in errs and a zero
// Stat. err is the request's own failure (connection, server too old).
func Stats(c *zk.Conn, paths []string) (stats []zk.Stat, errs []error, err error) {
	res := &multiReadResponse{want: len(paths)}
	if _, err := request(c, opMultiRead, &multiReadRequest{paths: paths}, res, nil); err != nil {
		return nil, nil, err
	}
	return res.stats, res.errs, nil
}

// multiReadRequest is a multiRead of getData ops without watches: per op a
// MultiHeader (type, done, err) and a GetDataRequest (path, watch), then a
// closing header.
type multiReadRequest struct{ paths []string }

func (m *multiReadRequest) Encode(buf []byte) (int, error) {
	n := 0
	put32 := func(v int32) error {
		if len(buf[n:]) < 4 {
			return zk.ErrShortBuffer
		}
		binary.BigEndian.PutUint32(buf[n:], uint32(v))
		n += 4
		return nil
	}
	putBool := func(v bool) error {
		if len(buf[n:]) < 1 {
			return zk.ErrShortBuffer
		}
		buf[n] = 0
		if v {
			buf[n] = 1
		}
		n++
		return nil
	}
	header := func(typ int32, done bool) error {
		return errors.Join(put32(typ), putBool(done), put32(-1))
	}
	for _, p := range m.paths {
		if err := header(opGetData, false); err != nil {
			return n, err
		}
		if err := put32(int32(len(p))); err != nil {
			return n, err
		}
		if len(buf[n:]) < len(p) {
			return n, zk.ErrShortBuffer
		}
		n += copy(buf[n:], p)
		if err := putBool(false); err != nil {
			return n, err
		}
	}
	return n, header(-1, true)
}

// multiReadResponse decodes the reply: per op a MultiHeader, then either
// a GetDataResponse (data, stat) or an ErrorResponse (err).
type multiReadResponse struct {
	want  int
	stats []zk.Stat
	errs  []error
}

// statSize is a Stat on the wire: czxid, mzxid, ctime, mtime (8 each),
// version, cversion, aversion (4 each), ephemeralOwner (8), dataLength,
// numChildren (4 each), pzxid (8).
const statSize = 68

func (m *multiReadResponse) Decode(buf []byte) (int, error) {
	n := 0
	short := fmt.Errorf("zkext: multiRead reply: %w", zk.ErrShortBuffer)
	get32 := func() (int32, bool) {
		if len(buf[n:]) < 4 {
			return 0, false
		}
		v := int32(binary.BigEndian.Uint32(buf[n:]))
		n += 4
		return v, true
	}
	get64 := func() int64 {
		v := int64(binary.BigEndian.Uint64(buf[n:]))
		n += 8
		return v
	}
	for {
		if len(buf[n:]) < 9 {
			return n, short
		}
		typ, _ := get32()
		done := buf[n] != 0
		n++
		get32() // the header's err; an error op carries its own
		if done {
			break
		}
		switch typ {
		case opError:
			code, ok := get32()
			if !ok {
				return n, short
			}
			m.stats = append(m.stats, zk.Stat{})
			m.errs = append(m.errs, zkError(code))
		case opGetData:
			l, ok := get32()
			if !ok {
				return n, short
			}
			if l > 0 {
				if len(buf[n:]) < int(l) {
					return n, short
				}
				n += int(l)
			}
			if len(buf[n:]) < statSize {
				return n, short
			}
			var s zk.Stat
			s.Czxid, s.Mzxid, s.Ctime, s.Mtime = get64(), get64(), get64(), get64()
			v, _ := get32()
			cv, _ := get32()
			av, _ := get32()
			s.Version, s.Cversion, s.Aversion = v, cv, av
			s.EphemeralOwner = get64()
			dl, _ := get32()
			nc, _ := get32()
			s.DataLength, s.NumChildren = dl, nc
			s.Pzxid = get64()
			m.stats = append(m.stats, s)
			m.errs = append(m.errs, nil)
		default:
			return n, fmt.Errorf("zkext: multiRead reply: op type %d", typ)
		}
	}
	if len(m.stats) != m.want {
		return n, fmt.Errorf("zkext: multiRead reply: %d results for %d reads", len(m.stats), m.want)
	}
	return n, nil
}

// zkError maps a ZooKeeper error code to the client's error values, for
// the codes a read can meet.
func zkError(code int32) error {
	switch code {
	case 0:
		return nil
	case -101:
		return zk.ErrNoNode
	case -102:
		return zk.ErrNoAuth
	default:
		return fmt.Errorf("zkext: ZooKeeper error %d", code)
	}
}
