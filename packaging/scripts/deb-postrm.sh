#!/bin/sh
# meshd postrm. On purge the unit's enablement goes; /var/lib/meshd stays:
# it holds the host's private key and lease, its identity in the fleet.
# Remove it by hand only when the host is decommissioned for good.
set -e
if [ -d /run/systemd/system ]; then
	systemctl --system daemon-reload >/dev/null || true
fi
if [ "$1" = "purge" ]; then
	deb-systemd-helper purge meshd.service >/dev/null || true
	if [ -d /var/lib/meshd ]; then
		echo "meshd: keeping /var/lib/meshd (this host's key and lease); remove it after decommissioning the host" >&2
	fi
fi
exit 0
