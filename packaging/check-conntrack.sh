#!/usr/bin/env bash
# check-conntrack.sh: after installing meshd, connection tracking is sized
# at boot (systemd-modules-load loads nf_conntrack with modprobe.d's hash
# size, then systemd-sysctl sets the table size: the sysctl alone is skipped
# when the module is not loaded yet) and now (postinst). Read as systemd
# and kmod resolve their config directories, so an override in /etc counts.
# Run by packaging/check.sh on the build machine and by packaging/boottest
# inside a booted container (whose kernel, and so whose live values, are
# the host's).
set -euo pipefail
max_floor=262144 hash_floor=262144
fail() { echo "check-conntrack: FAIL: $*" >&2; exit 1; }
# Read whole before grep: grep -q closing the pipe early would fail the
# pipeline under pipefail, and with it a check that had matched.
modules=$(systemd-analyze cat-config modules-load.d)
grep -qx nf_conntrack <<<"$modules" ||
	fail "no modules-load.d file loads nf_conntrack at boot: the sysctl drop-in would find no key"
hs=$(modprobe -c | awk '$1 == "options" && $2 == "nf_conntrack" { for (i = 3; i <= NF; i++) if ($i ~ /^hashsize=/) { sub(/^hashsize=/, "", $i); v = $i } } END { print v + 0 }')
[ "$hs" -ge $hash_floor ] || fail "modprobe.d gives nf_conntrack hashsize=$hs at load, want >= $hash_floor"
max=$(systemd-analyze cat-config sysctl.d | awk -F= '{ gsub(/[ \t]/, "", $1); gsub(/[ \t]/, "", $2) } $1 == "net.netfilter.nf_conntrack_max" { v = $2 } END { print v + 0 }')
[ "$max" -ge $max_floor ] || fail "sysctl.d gives net.netfilter.nf_conntrack_max=$max at boot, want >= $max_floor"
live_hs=$(cat /sys/module/nf_conntrack/parameters/hashsize)
live_max=$(cat /proc/sys/net/netfilter/nf_conntrack_max)
[ "$live_hs" -ge $hash_floor ] && [ "$live_max" -ge $max_floor ] ||
	fail "live: hashsize $live_hs, nf_conntrack_max $live_max, want >= $hash_floor and $max_floor"
echo "conntrack at boot: nf_conntrack loaded, hashsize=$hs, nf_conntrack_max=$max; live: hashsize=$live_hs, nf_conntrack_max=$live_max"
