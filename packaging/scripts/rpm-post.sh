# meshd %post ($1: 1 = install, 2 = upgrade), as %systemd_post expands.
sysctl -q -p /usr/lib/sysctl.d/60-meshd.conf >/dev/null 2>&1 || :
if [ "$1" -eq 1 ]; then
	systemctl --no-reload preset meshd.service >/dev/null 2>&1 || :
fi
