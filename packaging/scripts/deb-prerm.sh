#!/bin/sh
# meshd prerm: stop only when the package goes away, not on upgrade (the
# new postinst restarts it, keeping the gap to one restart).
set -e
if [ "$1" = "remove" ] && [ -d /run/systemd/system ]; then
	deb-systemd-invoke stop meshd.service >/dev/null || true
fi
exit 0
