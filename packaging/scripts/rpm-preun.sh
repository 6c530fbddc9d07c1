# meshd %preun ($1: 0 = erase, 1 = upgrade): rpm runs it on upgrade too, so
# stop and disable only on erase, as %systemd_preun does. On erase meshd's
# firewall goes too: nothing would maintain its allowlists (a plain stop
# leaves them up). /var/lib/meshd (key, lease) stays: rpm has no purge.
if [ "$1" -eq 0 ]; then
	systemctl --no-reload disable --now meshd.service >/dev/null 2>&1 || :
	if /usr/bin/meshd firewall flush --help >/dev/null 2>&1; then
		/usr/bin/meshd firewall flush || echo "meshd: could not remove meshd's firewall rules and sets; see meshd firewall flush" >&2
	fi
fi
