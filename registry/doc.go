// Package registry is meshd's view of the fleet, kept in ZooKeeper: it
// leases each host its overlay address for life, publishes the host's
// record while it runs, reports every other host's changes as events, and
// keeps a snapshot on disk so meshd starts and runs while ZooKeeper is
// unreachable. Nothing outside this package imports the ZooKeeper client.
//
// Layout under /meshd/<mesh>:
//
//	hosts/<bb>/<instance-id>#<seq>  ephemeral+sequential, JSON host record;
//	                                <bb> is one of 256 hash buckets
//	leases/<overlay-ip>             persistent, data: owner instance id, or
//	                                "~quarantined:<unix>" after decommission
//	owners/<instance-id>            persistent, data: its overlay ip
//	decommissions                   persistent, data: the last host whose
//	                                lease ended; its version counts them
//	policy, links                   persistent JSON documents
//
// Leases. A lease and its owner node are created together in one multi, so
// an address never has two owners and an owner never two addresses; the
// owner node makes the lookup of an existing lease one read. New addresses
// are tried at random with a bounded number of attempts, then by a
// deterministic scan of the lease list (only when the pool is nearly full).
// A decommissioned address stays quarantined for Options.Quarantine.
//
// Records are immutable: an update creates a new sequential node and
// deletes the old one in one multi, so every change is a create, a delete
// or both, under one bucket.
//
// Watching (follow.go). Against ZooKeeper 3.6 or later each host keeps one
// persistent recursive watch on hosts/ (registry/zkext sends the addWatch
// go-zookeeper/zk v1.0.4 lacks): every record node created or deleted
// arrives with its path, so a host mirrors each bucket's names without
// listing it. A change costs each watching host one read of the new
// record (none for a leave) plus, for a host whose lease it has not read
// since the fleet's last decommission, one of its lease (leaseseen.go,
// decommissions.go); a removal made by a decommission, one look at the
// host's owner node. None of it grows with the fleet: the fleet's bytes
// per change grow as N. The watch is the connection's, so it is added
// again on each new connection by one setWatches2, which also sets a child
// watch on every bucket relative to the last zxid the host is known to
// have had every event of: the server fires at once those of the buckets
// changed since, and only they are listed again.
//
// A server without addWatch (before 3.6) gets the older shape: one child
// watch per bucket, 256 per host, and a listing of the bucket (about N/256
// names) on every change, so the fleet's bytes per change grow as
// N^2/256: fleetsim measured 508 bytes of ZooKeeper's socket traffic per
// host per change at 1 000 hosts and 1 467 at 9 600. bench/zkwatch chose
// 256 buckets for it (302 bytes per change per host at 100 hosts, 919 at
// 5000, against 325 and 2534 with 64). A data watch on every record
// instead would be O(N^2) watches for the fleet.
//
// With ephemeral records a host that dies vanishes without anyone's help.
//
// Every listing is compared with what the package last saw, so the same
// code that handles a change also resyncs after a reconnect or a session
// expiry: it emits exactly the adds, updates and removals that happened.
// While ZooKeeper is unreachable nothing is listed and nothing is removed.
//
// The snapshot keeps, beside each host, the record node it was read from
// and its bucket node's creation stamp (zxid and time). A start lists
// every bucket and reads only the records whose newest node is another,
// so a restart of every host of a fleet costs ZooKeeper each host's 256
// listings rather than every record of the fleet on every host. The stamp
// guards the names: sequence numbers start again in a bucket node made
// again (or on another ensemble), so under another stamp every record of
// the bucket is read again. The snapshot's records are still checked at
// start, signatures included.
package registry
