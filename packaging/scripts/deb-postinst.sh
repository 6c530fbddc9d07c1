#!/bin/sh
# meshd postinst: enable on first install (start it once the config names
# this host: edit /etc/meshd/meshd.yaml, then systemctl start meshd);
# restart a running meshd on upgrade. The state in /var/lib/meshd (key,
# lease, snapshot) is never touched.
set -e
if [ "$1" = "configure" ]; then
	sysctl -q -p /usr/lib/sysctl.d/60-meshd.conf >/dev/null 2>&1 || true
	if [ -z "$2" ]; then
		deb-systemd-helper enable meshd.service >/dev/null || true
	fi
	if [ -d /run/systemd/system ]; then
		systemctl --system daemon-reload >/dev/null || true
		if [ -n "$2" ]; then
			deb-systemd-invoke try-restart meshd.service >/dev/null || true
		fi
	fi
fi
exit 0
