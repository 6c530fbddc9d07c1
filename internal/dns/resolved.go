package dns

import (
	"encoding/binary"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"strings"

	"github.com/godbus/dbus/v5"
)

// systemd-resolved's D-Bus API (org.freedesktop.resolve1(5)).
const (
	resolvedName = "org.freedesktop.resolve1"
	resolvedPath = "/org/freedesktop/resolve1"
	resolvedMgr  = "org.freedesktop.resolve1.Manager"
)

// Resolved is the overlay link's DNS configuration in systemd-resolved,
// set the way Tailscale sets it on Linux: meshd's address as the link's
// server and ~<domain> (and the pool's reverse zones) as routing-only
// domains, so only the mesh's names go to meshd and the link never
// becomes the default route for other names.
type Resolved struct {
	conn    *dbus.Conn
	ifindex int32
	log     *slog.Logger
	own     bool // conn is ours to close
}

// ConfigureResolved routes domain to server on the overlay interface when
// systemd-resolved runs and manages this network namespace. It returns nil
// and no error when resolved is not there: then meshd touches nothing
// (never /etc/resolv.conf) and the README says how to point a resolver
// at it.
func ConfigureResolved(iface string, server netip.AddrPort, domain string, pool netip.Prefix, log *slog.Logger) (*Resolved, error) {
	if !resolvedInThisNetns() {
		return nil, nil
	}
	conn, err := dbus.ConnectSystemBus()
	if err != nil {
		return nil, fmt.Errorf("system bus: %w", err)
	}
	r, err := configureResolved(conn, iface, server, domain, pool, log)
	if r == nil {
		conn.Close()
	} else {
		r.own = true
	}
	return r, err
}

// resolvedSocket is the varlink socket systemd-resolved (246 and later)
// listens on.
const resolvedSocket = "/run/systemd/resolve/io.systemd.Resolve"

// resolvedInThisNetns says whether a systemd-resolved runs in this
// network namespace, so that the links it manages are the ones meshd sees.
// A meshd in another network namespace that shares the host's /run and
// system bus (the testbed, `ip netns exec`) must not configure the host's
// resolver for a link index that means another link there. Unix sockets
// belong to the network namespace that made them and /proc/self/net/unix
// lists only this one's, so resolved's own socket there answers the
// question. Comparing /proc/1/ns/net with ours does not: under the shipped
// unit (no CAP_SYS_PTRACE, ProtectProc=invisible) PID 1's namespace links
// cannot be read, and the hook never ran.
func resolvedInThisNetns() bool {
	table, err := os.ReadFile("/proc/self/net/unix")
	return err == nil && listsUnixSocket(string(table), resolvedSocket)
}

// listsUnixSocket finds path in the Path column of a /proc/net/unix table.
func listsUnixSocket(table, path string) bool {
	for _, l := range strings.Split(table, "\n") {
		// Num RefCount Protocol Flags Type St Inode Path
		if f := strings.Fields(l); len(f) == 8 && f[7] == path {
			return true
		}
	}
	return false
}

// configureResolved does the calls on conn; nil and no error if nobody
// owns resolved's name on that bus.
func configureResolved(conn *dbus.Conn, iface string, server netip.AddrPort, domain string, pool netip.Prefix, log *slog.Logger) (*Resolved, error) {
	var owned bool
	if err := conn.BusObject().Call("org.freedesktop.DBus.NameHasOwner", 0, resolvedName).Store(&owned); err != nil {
		return nil, fmt.Errorf("ask the bus for %s: %w", resolvedName, err)
	}
	if !owned {
		return nil, nil
	}
	ifi, err := net.InterfaceByName(iface)
	if err != nil {
		return nil, fmt.Errorf("interface %s: %w", iface, err)
	}
	r := &Resolved{conn: conn, ifindex: int32(ifi.Index), log: log}
	obj := conn.Object(resolvedName, resolvedPath)
	ip := server.Addr().Unmap()
	family := int32(2) // AF_INET
	if ip.Is6() {
		family = 10
	}
	var call *dbus.Call
	if server.Port() == 53 {
		type dnsAddr struct {
			Family int32
			Addr   []byte
		}
		call = obj.Call(resolvedMgr+".SetLinkDNS", 0, r.ifindex, []dnsAddr{{family, ip.AsSlice()}})
	} else {
		// Another port needs the Ex call (systemd 246 and later).
		type dnsAddrEx struct {
			Family int32
			Addr   []byte
			Port   uint16
			Name   string
		}
		call = obj.Call(resolvedMgr+".SetLinkDNSEx", 0, r.ifindex, []dnsAddrEx{{family, ip.AsSlice(), server.Port(), ""}})
	}
	if call.Err != nil {
		return nil, fmt.Errorf("resolved SetLinkDNS %s on %s: %w", server, iface, call.Err)
	}
	type routeDomain struct {
		Domain      string
		RoutingOnly bool
	}
	domains := []routeDomain{{domain, true}}
	for _, z := range reverseZones(pool) {
		domains = append(domains, routeDomain{z, true})
	}
	err = errors.Join(
		obj.Call(resolvedMgr+".SetLinkDomains", 0, r.ifindex, domains).Err,
		obj.Call(resolvedMgr+".SetLinkDefaultRoute", 0, r.ifindex, false).Err,
	)
	if err != nil {
		r.Revert()
		return nil, fmt.Errorf("resolved SetLinkDomains ~%s on %s: %w", domain, iface, err)
	}
	log.Info("dns: systemd-resolved routes the mesh's names to meshd", "domain", "~"+domain, "server", server, "link", iface)
	return r, nil
}

// reverseZones lists the pool's in-addr.arpa zones, the pool rounded out
// to whole octets: a /16 pool is one zone, a /10 is 64 /16s.
func reverseZones(pool netip.Prefix) []string {
	if !pool.IsValid() || !pool.Addr().Is4() {
		return nil
	}
	bits := (pool.Bits() + 7) / 8 * 8
	start := binary.BigEndian.Uint32(pool.Masked().Addr().AsSlice())
	var out []string
	for i := range 1 << (bits - pool.Bits()) {
		var b [4]byte
		binary.BigEndian.PutUint32(b[:], start+uint32(i)<<(32-bits))
		name := "in-addr.arpa"
		for _, o := range b[:bits/8] {
			name = fmt.Sprintf("%d.%s", o, name)
		}
		out = append(out, name)
	}
	return out
}

// Revert removes meshd's configuration from the link (on stop).
func (r *Resolved) Revert() {
	err := r.conn.Object(resolvedName, resolvedPath).Call(resolvedMgr+".RevertLink", 0, r.ifindex).Err
	if err != nil {
		r.log.Error("dns: systemd-resolved: revert the overlay link", "ifindex", r.ifindex, "err", err)
	}
	if r.own {
		r.conn.Close()
	}
}
