#!/bin/bash
# conntrack-floor.sh: what does the least any stateful host firewall needs
# -- connection tracking on, and one rule admitting established flows --
# cost a saturating 64-byte UDP flood over meshd, against meshd's rules
# and against no rules at all?
#
# Runs udp-profile (meshd enforcing on two testbed hosts, a 64-byte UDP
# flood as fast as iperf3 sends) and, within that one flood, rotates both
# hosts' firewall every 6 s through STATES (default "ipt floor none"),
# CYCLES times (default 4):
#   ipt    meshd's own rules, as it installed them;
#   floor  an inet table whose only chain, hooked at input, accepts
#          established flows: conntrack on, nothing else;
#   none   no rules at all;
#   alt    meshd's rules passed through the shell filter ALT (iptables-save
#          text in, iptables-restore text out), for a variant.
# Prints the datagrams per second the receiver got over the last 4 s of
# each segment (from the iperf3 server's 1 s intervals); with TCP=1, one
# full-size TCP stream instead of the flood, and its Gbit/s.
#
#   go build -o /tmp/udp-profile ./bench/cmd/udp-profile && make build
#   bench/scripts/conntrack-floor.sh
#   STATES="ipt alt" CYCLES=8 ALT='sed "/^\*raw/,/^COMMIT/d"' bench/scripts/conntrack-floor.sh
#
# meshd's rules come back with iptables-restore, which makes every built-in
# chain of a table a hooked base chain; the empty ones (meshd makes none)
# are deleted again after each restore (trim, as in nft-rotate.sh).
set -euo pipefail
bin=${BIN:-bin}
rate=${1:-0}
read -ra states <<< "${STATES:-ipt floor none}"
CYCLES_SECS=$(( ${CYCLES:-4} * ${#states[@]} * 6 + 8 ))

unit=kpps
flow=(-rate "$rate")
if [ -n "${TCP:-}" ]; then unit=Gbit/s flow=(-tcp); fi
/tmp/udp-profile -perf=false -lazy=false -firewall enforce -seconds "$((CYCLES_SECS))" "${flow[@]}" -bin "$bin" > /tmp/conntrack-floor.out 2>&1 &
pid=$!
for _ in $(seq 1 300); do pgrep -P "$pid" >/dev/null && pgrep -f "iperf3 -c" >/dev/null && break; sleep 0.1; done
log=$(ls -td /tmp/udp-profile-*/ | head -1)iperf3.log
nss=$(ip netns list | awk '{print $1}' | grep -E -- '-h[12]$')
basechains() {
	ip netns exec "$1" nft list chains | awk '$1=="table"{f=$2; t=$3} $1=="chain"{c=$2} /hook/{print f, t, c}'
}
for ns in $nss; do
	ip netns exec "$ns" iptables-save > "/tmp/conntrack-floor-$ns.v4"
	ip netns exec "$ns" ip6tables-save > "/tmp/conntrack-floor-$ns.v6"
	if [ -n "${ALT:-}" ]; then # a variant of meshd's rules: ALT filters iptables-save
		sh -c "$ALT" < "/tmp/conntrack-floor-$ns.v4" > "/tmp/conntrack-floor-$ns.v4.alt"
		sh -c "$ALT" < "/tmp/conntrack-floor-$ns.v6" > "/tmp/conntrack-floor-$ns.v6.alt"
	fi
done
trim() { # ns: delete the empty base chains (meshd makes none)
	basechains "$1" | while read -r f t c; do
		if [ "$(ip netns exec "$1" nft list chain "$f" "$t" "$c" | grep -cvE '^\s*(table|chain|type|\}|$)')" = 0 ]; then
			ip netns exec "$1" nft delete chain "$f" "$t" "$c"
		fi
	done
}
clear() { # ns: no rules at all
	for t in "ip filter" "ip raw" "ip mangle" "ip6 filter" "ip6 raw" "ip6 mangle" "inet floor"; do
		ip netns exec "$1" nft delete table $t 2>/dev/null || true
	done
}
to() {
	for ns in $nss; do
		clear "$ns"
		case $1 in
		floor)
			ip netns exec "$ns" nft -f - <<NFT
table inet floor {
  chain input { type filter hook input priority filter; policy accept;
    ct state established,related accept
  }
}
NFT
			;;
		ipt|alt)
			v4=/tmp/conntrack-floor-$ns.v4 v6=/tmp/conntrack-floor-$ns.v6
			if [ "$1" = alt ]; then v4=$v4.alt v6=$v6.alt; fi
			ip netns exec "$ns" iptables-restore < "$v4"
			ip netns exec "$ns" ip6tables-restore < "$v6"
			trim "$ns" ;;
		esac
	done
}
# rate: received datagrams per second (TCP: Gbit/s) over the last 4
# complete intervals.
rate() {
	if [ -n "${TCP:-}" ]; then
		grep -E '^\[ *[0-9]+\] +[0-9.]+-[0-9.]+ +sec .* [0-9.]+ [KMG]bits/sec *$' "$log" | tail -4 |
			sed -E 's/.* ([0-9.]+) ([KMG])bits\/sec *$/\1 \2/' |
			awk '{m=($2=="G")?1:($2=="M")?1e-3:1e-6; r+=$1*m} END{printf "%.2f", r/NR}'
		return
	fi
	grep -E '^\[ *[0-9]+\] +[0-9.]+-[0-9.]+ +sec .*[0-9]+/[0-9]+ \(' "$log" | tail -4 |
		sed -E 's/.* ([0-9]+)\/([0-9]+) \(.*/\1 \2/' | awk '{r+=$2-$1} END{printf "%.1f", r/NR/1000}'
}
sleep 4
: > /tmp/conntrack-floor.rates
state=ipt
for _ in $(seq 1 "${CYCLES:-4}"); do for next in "${states[@]:1}" "${states[0]}"; do
	sleep 5.2
	echo "$state $(rate) $unit" | tee -a /tmp/conntrack-floor.rates
	to "$next"; state=$next
done; done
wait "$pid"
grep receiver /tmp/conntrack-floor.out | tail -1
awk '{s[$1]+=$2; n[$1]++} END{for (k in s) printf "mean %s %.2f %s\n", k, s[k]/n[k], u}' u="$unit" /tmp/conntrack-floor.rates
