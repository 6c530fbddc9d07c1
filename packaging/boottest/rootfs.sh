#!/usr/bin/env bash
# rootfs.sh DIR: a Debian 12 root filesystem for the booted-package test,
# built once with debootstrap into DIR (outside the source tree) and reused;
# rebuilt when DIR/.complete is missing (an interrupted build is discarded)
# or names another recipe.
# rootfs.sh --key: that recipe's key, a hash of this script's code.
# package.mk puts it in the cache path, so a change here (a package added)
# builds a tree of its own, while trees of other keys stay intact for the
# branches and runs that still use them: rebuilding one path in place would
# pull it from under a container booted on it.
# It carries everything the meshd package depends on, so that
# `apt-get install ./meshd_*.deb` resolves inside a container that has no
# route to any mirror. The mirror is the one apt on this machine uses.
set -euo pipefail
dir=${1:?usage: rootfs.sh DIR}
key=$(grep -v "^#" "$0" | sha256sum | cut -c1-12) # comments do not count
if [ "$dir" = --key ]; then
	echo "$key"
	exit 0
fi
stamp="bookworm-$key"
if [ -f "$dir/.complete" ] && [ "$(cat "$dir/.complete")" = "$stamp" ]; then
	exit 0
fi
mirror=$(cat /etc/apt/sources.list /etc/apt/sources.list.d/*.sources /etc/apt/sources.list.d/*.list 2>/dev/null |
	awk '/^URIs:/ && $2 ~ /\/debian\/?$/ {print $2; exit} /^deb / && $2 ~ /\/debian\/?$/ && $3 == "bookworm" {print $2; exit}' || :)
mirror=${mirror:-http://deb.debian.org/debian}
echo "rootfs: building Debian 12 in $dir from $mirror"
rm -rf "$dir" "$dir.tmp"
mkdir -p "$(dirname "$dir")"
# systemd-resolved: meshd's hook routes the mesh's domain to it over D-Bus;
# the test asks resolvectl, as a user would.
include=systemd,systemd-sysv,dbus,systemd-resolved,iptables,ipset,iproute2,iputils-ping,wireguard-tools,kmod,procps
debootstrap --variant=minbase --include="$include" bookworm "$dir.tmp" "$mirror" >"$dir.log" 2>&1 ||
	{ tail -20 "$dir.log" >&2; echo "rootfs: debootstrap failed (log: $dir.log)" >&2; exit 1; }
# The container boots without a console login, a network manager or a
# hostname from DHCP; these only cost boot time there.
chroot "$dir.tmp" systemctl mask getty@tty1.service console-getty.service systemd-networkd-wait-online.service >/dev/null 2>&1 || :
echo meshd-boot > "$dir.tmp/etc/hostname"
rm -f "$dir.tmp/etc/machine-id"; : > "$dir.tmp/etc/machine-id"
echo "$stamp" > "$dir.tmp/.complete"
mv "$dir.tmp" "$dir"
echo "rootfs: ready"
