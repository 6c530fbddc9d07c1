// Package zkext sends the ZooKeeper requests that go-zookeeper/zk v1.0.4,
// the newest the module proxy serves, does not: addWatch and setWatches2
// (ZooKeeper 3.6), for a persistent recursive watch, and a read that tells
// the zxid it was answered at.
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
	opSetWatches2 = 105
	opAddWatch    = 106

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
// than 3.6 answers "unimplemented" (code -6, which go-zookeeper v1.0.4
// reports as "unknown error: -6") and then closes the connection.
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
