#!/usr/bin/env bash
# rootfs.sh DIR: a Debian 12 root filesystem for the booted-package test,
# built once with debootstrap into DIR (outside the source tree) and reused;
# rebuilt when DIR/.complete is missing (an interrupted build is discarded).
# It carries everything the meshd package depends on, so that
# `apt-get install ./meshd_*.deb` resolves inside a container that has no
# route to any mirror. The mirror is the one apt on this machine uses.
set -euo pipefail
dir=${1:?usage: rootfs.sh DIR}
# Bump when the package list changes, so cached trees are rebuilt.
stamp="bookworm-1"
if [ -f "$dir/.complete" ] && [ "$(cat "$dir/.complete")" = "$stamp" ]; then
	exit 0
fi
mirror=$(cat /etc/apt/sources.list /etc/apt/sources.list.d/*.sources /etc/apt/sources.list.d/*.list 2>/dev/null |
	awk '/^URIs:/ && $2 ~ /\/debian\/?$/ {print $2; exit} /^deb / && $2 ~ /\/debian\/?$/ && $3 == "bookworm" {print $2; exit}' || :)
mirror=${mirror:-http://deb.debian.org/debian}
echo "rootfs: building Debian 12 in $dir from $mirror"
rm -rf "$dir" "$dir.tmp"
mkdir -p "$(dirname "$dir")"
include=systemd,systemd-sysv,dbus,iptables,ipset,iproute2,iputils-ping,wireguard-tools,kmod,procps
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
