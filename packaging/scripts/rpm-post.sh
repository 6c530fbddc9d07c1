# meshd %post ($1: 1 = install, 2 = upgrade), as %systemd_post expands.
# Size connection tracking now as the next boot will (modules-load.d
# loads nf_conntrack with modprobe.d's hash size, then sysctl.d sets the
# table size). Where /sys or the table size is read-only (a container),
# the host's boot configuration decides; nothing here can fail install.
modprobe nf_conntrack >/dev/null 2>&1 || :
hs=$(sed -n 's/^options nf_conntrack hashsize=//p' /usr/lib/modprobe.d/meshd.conf)
cur=$(cat /sys/module/nf_conntrack/parameters/hashsize 2>/dev/null || echo 0)
if [ -n "$hs" ] && [ "$cur" -gt 0 ] && [ "$cur" -lt "$hs" ]; then
	echo "$hs" > /sys/module/nf_conntrack/parameters/hashsize 2>/dev/null || :
fi
sysctl -q -p /usr/lib/sysctl.d/60-meshd.conf >/dev/null 2>&1 || :
if [ "$1" -eq 1 ]; then
	systemctl --no-reload preset meshd.service >/dev/null 2>&1 || :
fi
