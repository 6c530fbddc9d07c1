#!/usr/bin/env bash
# install-deps.sh: what meshd's tests, demo and benchmarks need on Debian 12.
# Installs only when something is missing, so `make demo` stays quick.
set -euo pipefail
need=()
for pair in zookeeper:/usr/share/java/zookeeper.jar java:/usr/bin/java ipset:/usr/sbin/ipset iptables:/usr/sbin/iptables \
	iproute2:/usr/sbin/ip iputils-ping:/usr/bin/ping wireguard-tools:/usr/bin/wg iperf3:/usr/bin/iperf3 \
	conntrack:/usr/sbin/conntrack nftables:/usr/sbin/nft dnsutils:/usr/bin/dig \
	memcached:/usr/bin/memcached libmemcached-tools:/usr/bin/memcslap sockperf:/usr/bin/sockperf; do
	[ -e "${pair#*:}" ] || need+=("${pair%%:*}")
done
# The instance metadata mock for the EC2 identity tests, from the Go module proxy.
gobin=$(go env GOPATH)/bin
if [ ! -x "$gobin/ec2-metadata-mock" ] && ! command -v ec2-metadata-mock >/dev/null; then
	echo "installing: ec2-metadata-mock"
	go install github.com/aws/amazon-ec2-metadata-mock/cmd/ec2-metadata-mock@v1.13.0
fi
[ ${#need[@]} -eq 0 ] && exit 0
echo "installing: ${need[*]}"
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
pkgs=()
for p in "${need[@]}"; do
	case $p in
	java) pkgs+=(default-jre-headless) ;;
	*) pkgs+=("$p") ;;
	esac
done
apt-get install -y -qq --no-install-recommends "${pkgs[@]}" procps kmod >/dev/null
