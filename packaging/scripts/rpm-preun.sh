# meshd %preun ($1: 0 = erase, 1 = upgrade): rpm runs it on upgrade too, so
# stop and disable only on erase, as %systemd_preun does.
if [ "$1" -eq 0 ]; then
	systemctl --no-reload disable --now meshd.service >/dev/null 2>&1 || :
fi
