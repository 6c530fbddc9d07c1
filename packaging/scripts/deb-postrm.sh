#!/bin/sh
# meshd postrm. Remove keeps /var/lib/meshd: it holds the host's private
# key and lease, its identity in the fleet, for a reinstall. Purge removes
# everything meshd made, that state included (decommission the host first:
# meshctl decommission).
set -e
if [ -d /run/systemd/system ]; then
	systemctl --system daemon-reload >/dev/null || true
fi
if [ "$1" = "purge" ]; then
	deb-systemd-helper purge meshd.service >/dev/null || true
	rm -rf /var/lib/meshd /run/meshd
fi
exit 0
