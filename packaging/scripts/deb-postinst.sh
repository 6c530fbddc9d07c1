#!/bin/sh
# meshd postinst: enable on first install (start it once the config names
# this host: edit /etc/meshd/meshd.yaml, then systemctl start meshd);
# restart a running meshd on upgrade. The state in /var/lib/meshd (key,
# lease, snapshot) is never touched.
set -e
if [ "$1" = "configure" ]; then
	# Size connection tracking now as the next boot will (modules-load.d
	# loads nf_conntrack with modprobe.d's hash size, then sysctl.d sets the
	# table size). Where /sys or the table size is read-only (a container),
	# the host's boot configuration decides; nothing here can fail install.
	modprobe nf_conntrack >/dev/null 2>&1 || true
	hs=$(sed -n 's/^options nf_conntrack hashsize=//p' /usr/lib/modprobe.d/meshd.conf)
	cur=$(cat /sys/module/nf_conntrack/parameters/hashsize 2>/dev/null || echo 0)
	if [ -n "$hs" ] && [ "$cur" -gt 0 ] && [ "$cur" -lt "$hs" ]; then
		echo "$hs" > /sys/module/nf_conntrack/parameters/hashsize 2>/dev/null || true
	fi
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
