#!/bin/sh
# meshd prerm: stop only when the package goes away, not on upgrade (the
# new postinst restarts it, keeping the gap to one restart).
set -e
if [ "$1" = "remove" ]; then
	if [ -d /run/systemd/system ]; then
		deb-systemd-invoke stop meshd.service >/dev/null || true
	fi
	# A stopped meshd leaves its firewall up (the host stays closed while
	# meshd restarts or is stopped); once the package goes, nothing would
	# maintain the allowlists, so its rules and sets go with it. The binary
	# is gone by postrm, so this is the last chance.
	if meshd firewall flush --help >/dev/null 2>&1; then
		meshd firewall flush || echo "meshd: could not remove meshd's firewall rules and sets; see meshd firewall flush" >&2
	fi
fi
exit 0
