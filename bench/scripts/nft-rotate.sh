#!/bin/bash
# nft-rotate.sh: what would a native nftables ruleset cost a 64-byte flow,
# against meshd's iptables-nft rules and against no rules at all?
#
# Runs udp-profile (meshd enforcing on two testbed hosts, a fixed-rate
# 64-byte UDP flow between them) and, within that one flow, rotates both
# hosts' firewall every 5 s: meshd's own rules (iptables-nft with ipset)
# -> a hand-written native equivalent for this flow's packets (one inet
# table, native sets, no counters) -> nothing -> meshd's rules again,
# four times. Prints the machine's busy cores (/proc/stat) over the last
# 4 s of each segment: at a fixed rate, the CPU the firewall costs.
#
#   go build -o /tmp/udp-profile ./bench/cmd/udp-profile && make build
#   bench/scripts/nft-rotate.sh 15M
#
# The native ruleset covers what this flow meets (the WireGuard port
# untracked and allowlisted, established flows, the overlay from members,
# anti-spoof, underlay default deny); it is an experiment, not a backend.
#
# meshd's rules come back with iptables-restore, which makes every built-in
# chain of a table a hooked base chain, though meshd hooks only the chains
# it uses; the base chains meshd did not make are deleted again after each
# restore (trim), or "meshd's rules" would cost more than meshd's do.
set -euo pipefail
rate=${1:-15M}
bin=${BIN:-bin}
busy() { awk '/^cpu /{t=0; for(i=2;i<=NF;i++) t+=$i; print t-$5-$6, t}' /proc/stat; }

native() { # ns: meshd's rules -> the native equivalent
	local ns=$1 tun peers members
	tun=$(ip netns exec "$ns" ip -br link | awk '$1 ~ /^mt/ {print $1}' | head -1)
	peers=$(ip netns exec "$ns" ipset list meshd-peers | awk '/^Members:/{m=1;next} m&&NF{print $1}' | paste -sd, -)
	members=$(ip netns exec "$ns" ipset list meshd-members | awk '/^Members:/{m=1;next} m&&NF{print $1}' | paste -sd, -)
	ip netns exec "$ns" nft -f - <<NFT
table inet meshx {
  set peers4 { type ipv4_addr; elements = { $peers } }
  set members4 { type ipv4_addr; elements = { $members } }
  chain pre { type filter hook prerouting priority raw; policy accept;
    udp dport 51820 notrack
  }
  chain out { type filter hook output priority raw; policy accept;
    udp sport 51820 notrack
  }
  chain input { type filter hook input priority filter; policy accept;
    iif lo accept
    ct state established,related accept
    udp dport 51820 ip saddr @peers4 accept
    udp dport 51820 drop
    iifname != "$tun" ip saddr 100.64.0.0/10 drop
    iifname "$tun" ip saddr @members4 accept
    iifname "$tun" drop
    ip saddr @peers4 accept
    drop
  }
}
NFT
	for t in "ip filter" "ip raw" "ip mangle" "ip6 filter" "ip6 raw"; do
		ip netns exec "$ns" nft delete table $t 2>/dev/null || true
	done
}

/tmp/udp-profile -perf=false -lazy=false -firewall enforce -seconds 75 -rate "$rate" -bin "$bin" > /tmp/nft-rotate.out 2>&1 &
pid=$!
for _ in $(seq 1 300); do pgrep -P "$pid" >/dev/null && pgrep -f "iperf3 -c" >/dev/null && break; sleep 0.1; done
nss=$(ip netns list | awk '{print $1}' | grep -E -- '-h[12]$')
# basechains: "family table chain" of each hooked chain in ns.
basechains() {
	ip netns exec "$1" nft list chains | awk '$1=="table"{f=$2; t=$3} $1=="chain"{c=$2} /hook/{print f, t, c}'
}
for ns in $nss; do
	ip netns exec "$ns" iptables-save > "/tmp/nft-rotate-$ns.v4"
	ip netns exec "$ns" ip6tables-save > "/tmp/nft-rotate-$ns.v6"
	basechains "$ns" > "/tmp/nft-rotate-$ns.base"
done
trim() { # ns: delete the base chains the restore made and meshd had not
	basechains "$1" | awk 'NR==FNR{made[$0]=1; next} !made[$0]' "/tmp/nft-rotate-$1.base" - | while read -r f t c; do
		ip netns exec "$1" nft delete chain "$f" "$t" "$c"
	done
}
to() {
	for ns in $nss; do
		case $1 in
		native) native "$ns" ;;
		none) ip netns exec "$ns" nft delete table inet meshx ;;
		ipt) ip netns exec "$ns" iptables-restore < "/tmp/nft-rotate-$ns.v4"
			ip netns exec "$ns" ip6tables-restore < "/tmp/nft-rotate-$ns.v6"
			trim "$ns" ;;
		esac
	done
}
sleep 6
state=ipt
for next in native none ipt native none ipt native none ipt native none ipt; do
	sleep 1; a=$(busy); sleep 4; b=$(busy)
	set -- $a $b
	echo "$state $(echo "$3 $1 $4 $2" | awk -v n="$(nproc)" '{printf "%.3f", ($1-$2)/($3-$4)*n}') cores busy"
	to "$next"; state=$next
done
wait "$pid"
grep receiver /tmp/nft-rotate.out | tail -1
