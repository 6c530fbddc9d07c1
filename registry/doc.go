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
// deletes the old one in one multi (one firing of the bucket's watch), so
// a child watch sees every change and no data watch per host is needed. go-zookeeper/zk v1.0.4 has no persistent recursive
// watch (ZooKeeper's addWatch) and the fork that has it is not available
// from the module proxy here, so each host keeps one child watch per
// bucket: 256 watches per host, O(N) for the fleet (1.3M at 5000 hosts,
// far from the ~100M where ZooKeeper suffers) instead of the O(N^2) of a
// data watch on every record. A change costs each host two or three
// requests whatever the fleet size: a listing of one bucket (about N/256
// names) and a read of the changed record, plus, for a host whose lease
// it has not read since the fleet's last decommission, one of its lease
// (leaseseen.go, decommissions.go; beside the record's read when the host's
// address is known); a removal, the listing alone, or with a look at the
// host's owner node when the decommission counter moved (a decommission
// rather than a leave). Measured with
// bench/zkwatch (bench/RESULTS.md): 302 bytes per change per host at 100
// hosts, 919 at 5000 with 256 buckets, against 325 and 2534 with 64; so 256.
// The listing still grows with N, so the fleet's bytes per change grow as
// N^2/256: fleetsim measured 508 bytes of ZooKeeper's socket traffic per
// host per change at 1 000 hosts and 1 467 at 9 600.
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
