package firewall

import (
	"bytes"
	"errors"
	"fmt"
	"io/fs"
	"net"
	"net/netip"
	"os/exec"
	"strings"
	"syscall"

	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netlink/nl"
)

// sets is the kernel's ipset as the firewall uses it; tests use a fake.
type sets interface {
	// Ensure creates a set, or leaves an existing one as it is.
	Ensure(name string, spec setSpec) error
	// Capacity is an existing set's maxelem.
	Capacity(name string) (int, error)
	Add(name string, p netip.Prefix) error
	Del(name string, p netip.Prefix) error
	Swap(a, b string) error
	Flush(name string) error
	Destroy(name string) error
	Names() ([]string, error)
}

// rules is the kernel's iptables as the firewall uses it.
type rules interface {
	Restore(text string) error
	// EnsureJump makes the jump from a built-in chain into one of meshd's,
	// narrowed by match (in iptables -S form), the only one there: jumps
	// to the same chain in another form (another port, an older meshd's)
	// are removed.
	EnsureJump(table, from, to string, match ...string) error
	// RemoveJump removes every jump from a built-in chain into one of meshd's.
	RemoveJump(table, from, to string) error
	DeleteChain(table, chain string) error
	// DropEmptyBuiltin deletes a built-in chain if it holds no rule and
	// its policy is ACCEPT (so deleting it changes no verdict); otherwise,
	// or where built-in chains cannot be deleted, it does nothing.
	DropEmptyBuiltin(table, chain string)
	Save(table string) (string, error)
}

// flows is the kernel's connection tracking as the firewall uses it.
type flows interface {
	// ForgetWireGuard deletes the tracked flows between this host's
	// WireGuard port and the given addresses, in both directions, and
	// says how many went.
	ForgetWireGuard(addrs []netip.Addr, port int) (int, error)
}

// netlinkFlows deletes conntrack entries over netlink. The kernel does the
// matching (a dump filtered by tuple, Linux 5.8 and later): vishvananda's
// ConntrackDeleteFilters copies the whole table out and matches it here,
// 3 µs an entry, so 0.3 s of CPU per leave on a host tracking 100 000
// flows, paid by every host for every member that leaves the fleet.
type netlinkFlows struct{}

// The kernel's tuple filter (nf_conntrack_netlink.c, uapi values): which
// fields of the request's CTA_TUPLE_ORIG an entry must match.
const (
	ctaFilter          = 25 // CTA_FILTER
	ctaFilterOrigFlags = 1  // CTA_FILTER_ORIG_FLAGS
	ctaFilterReplyFlag = 2  // CTA_FILTER_REPLY_FLAGS
	filterIPSrc        = 1 << 0
	filterIPDst        = 1 << 1
	filterProtoNum     = 1 << 3
	filterSrcPort      = 1 << 4
	filterDstPort      = 1 << 5
)

func (netlinkFlows) ForgetWireGuard(addrs []netip.Addr, port int) (int, error) {
	n := 0
	var errs []error
	for _, a := range addrs {
		a = a.Unmap()
		// Theirs to our port, and ours from our port to them.
		for _, theirs := range []bool{true, false} {
			k, err := forgetFlows(a, theirs, uint16(port))
			n += k
			if err != nil {
				errs = append(errs, fmt.Errorf("conntrack %s: %w", a, err))
			}
		}
	}
	return n, errors.Join(errs...)
}

// forgetFlows deletes the UDP flows from a to port (theirs) or from port
// to a: the kernel lists the matching entries, and each is deleted by the
// tuples it was listed with.
func forgetFlows(a netip.Addr, theirs bool, port uint16) (int, error) {
	family, ipSrc, ipDst := uint8(syscall.AF_INET), nl.CTA_IP_V4_SRC, nl.CTA_IP_V4_DST
	if a.Is6() {
		family, ipSrc, ipDst = syscall.AF_INET6, nl.CTA_IP_V6_SRC, nl.CTA_IP_V6_DST
	}
	ipAttr, portAttr, flags := ipSrc, nl.CTA_PROTO_DST_PORT, uint32(filterIPSrc|filterProtoNum|filterDstPort)
	if !theirs {
		ipAttr, portAttr, flags = ipDst, nl.CTA_PROTO_SRC_PORT, filterIPDst|filterProtoNum|filterSrcPort
	}
	hdr := &nl.Nfgenmsg{NfgenFamily: family, Version: nl.NFNETLINK_V0}
	req := nl.NewNetlinkRequest(int(netlink.ConntrackTable)<<8|nl.IPCTNL_MSG_CT_GET, syscall.NLM_F_DUMP)
	req.AddData(hdr)
	tuple := nl.NewRtAttr(syscall.NLA_F_NESTED|nl.CTA_TUPLE_ORIG, nil)
	tuple.AddRtAttr(syscall.NLA_F_NESTED|nl.CTA_TUPLE_IP, nil).AddRtAttr(ipAttr, a.AsSlice())
	proto := tuple.AddRtAttr(syscall.NLA_F_NESTED|nl.CTA_TUPLE_PROTO, nil)
	proto.AddRtAttr(nl.CTA_PROTO_NUM, []byte{syscall.IPPROTO_UDP})
	proto.AddRtAttr(portAttr, nl.BEUint16Attr(port))
	filter := nl.NewRtAttr(syscall.NLA_F_NESTED|ctaFilter, nil)
	filter.AddRtAttr(ctaFilterOrigFlags, nl.Uint32Attr(flags))
	filter.AddRtAttr(ctaFilterReplyFlag, nl.Uint32Attr(0))
	req.AddData(tuple)
	req.AddData(filter)
	msgs, err := req.Execute(syscall.NETLINK_NETFILTER, 0)
	if err != nil {
		return 0, err
	}
	n := 0
	for _, m := range msgs {
		del := nl.NewNetlinkRequest(int(netlink.ConntrackTable)<<8|nl.IPCTNL_MSG_CT_DELETE, syscall.NLM_F_ACK)
		del.AddData(hdr)
		del.AddRawData(m[4:]) // the entry's attributes, past its nfgenmsg header
		if _, err := del.Execute(syscall.NETLINK_NETFILTER, 0); err != nil && !errors.Is(err, fs.ErrNotExist) {
			return n, err
		}
		n++
	}
	return n, nil
}

// setSpec is what a set is created with.
type setSpec struct {
	Type    string // hash:ip | hash:net
	V6      bool   // family inet6
	MaxElem int    // 0: ipset's default
}

// netlinkSets drives ipset over netlink: one message per change, no
// process per change.
type netlinkSets struct{}

func (netlinkSets) Ensure(name string, spec setSpec) error {
	o := netlink.IpsetCreateOptions{Family: syscall.AF_INET, MaxElements: uint32(spec.MaxElem)}
	if spec.V6 {
		o.Family = syscall.AF_INET6
	}
	err := netlink.IpsetCreate(name, spec.Type, o)
	if err != nil && !errors.Is(err, syscall.EEXIST) {
		return fmt.Errorf("create set %s (%s, maxelem %d): %w", name, spec.Type, spec.MaxElem, err)
	}
	return nil
}

func (netlinkSets) Capacity(name string) (int, error) {
	r, err := netlink.IpsetList(name)
	if err != nil {
		return 0, fmt.Errorf("list set %s: %w", name, err)
	}
	return int(r.MaxElements), nil
}

func entry(p netip.Prefix) *netlink.IPSetEntry {
	e := &netlink.IPSetEntry{IP: net.IP(p.Addr().AsSlice()), Replace: true}
	if p.Bits() < p.Addr().BitLen() {
		e.CIDR = uint8(p.Bits())
	}
	return e
}

func (netlinkSets) Add(name string, p netip.Prefix) error {
	if err := netlink.IpsetAdd(name, entry(p)); err != nil {
		return fmt.Errorf("add %s to set %s: %w", p, name, err)
	}
	return nil
}

func (netlinkSets) Del(name string, p netip.Prefix) error {
	err := netlink.IpsetDel(name, entry(p))
	if err != nil && !isMissing(err) {
		return fmt.Errorf("delete %s from set %s: %w", p, name, err)
	}
	return nil
}

// isMissing: the entry was not in the set; deleting it is then done.
func isMissing(err error) bool {
	return errors.Is(err, syscall.ENOENT) || strings.Contains(err.Error(), "exist")
}

func (netlinkSets) Swap(a, b string) error {
	if err := netlink.IpsetSwap(a, b); err != nil {
		return fmt.Errorf("swap sets %s and %s: %w", a, b, err)
	}
	return nil
}

func (netlinkSets) Flush(name string) error {
	if err := netlink.IpsetFlush(name); err != nil {
		return fmt.Errorf("flush set %s: %w", name, err)
	}
	return nil
}

func (netlinkSets) Destroy(name string) error {
	err := netlink.IpsetDestroy(name)
	if err != nil && !errors.Is(err, syscall.ENOENT) {
		return fmt.Errorf("destroy set %s: %w", name, err)
	}
	return nil
}

func (netlinkSets) Names() ([]string, error) {
	var all []netlink.IPSetResult
	var err error
	for range 3 { // a dump raced by a change is retried
		if all, err = netlink.IpsetListAll(); !errors.Is(err, netlink.ErrDumpInterrupted) {
			break
		}
	}
	if err != nil {
		return nil, fmt.Errorf("list sets: %w", err)
	}
	var out []string
	for _, s := range all {
		out = append(out, s.SetName)
	}
	return out, nil
}

// iptables drives the fixed rules with iptables-restore, one transaction
// per change of the rules (start, policy change), never per member; with
// v6, the same with ip6tables.
type iptables struct{ v6 bool }

// cmd names the tool of the family: iptables, ip6tables-restore, ...
func (b iptables) cmd(tool string) string {
	if b.v6 {
		return strings.Replace(tool, "iptables", "ip6tables", 1)
	}
	return tool
}

func run(stdin string, name string, args ...string) (string, error) {
	cmd := exec.Command(name, args...)
	if stdin != "" {
		cmd.Stdin = strings.NewReader(stdin)
	}
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	err := cmd.Run()
	if err != nil {
		return out.String(), fmt.Errorf("%s %s: %v: %s", name, strings.Join(args, " "), err, strings.TrimSpace(out.String()))
	}
	return out.String(), nil
}

func (b iptables) Restore(text string) error {
	_, err := run(text, b.cmd("iptables-restore"), "-w", "--noflush")
	return err
}

func (b iptables) EnsureJump(table, from, to string, match ...string) error {
	want := strings.Join(append(append([]string{}, match...), "-j", to), " ")
	specs, err := b.jumps(table, from, to)
	if err != nil {
		return err
	}
	have := false
	for _, spec := range specs {
		if spec == want && !have {
			have = true
			continue
		}
		if err := b.deleteRule(table, from, spec); err != nil {
			return fmt.Errorf("remove stale hook %q: %w", spec, err)
		}
	}
	if have {
		return nil
	}
	_, err = run("", b.cmd("iptables"), append(append([]string{"-w", "-t", table, "-I", from, "1"}, match...), "-j", to)...)
	return err
}

func (b iptables) RemoveJump(table, from, to string) error {
	specs, err := b.jumps(table, from, to)
	for _, spec := range specs {
		if derr := b.deleteRule(table, from, spec); derr != nil {
			err = derr
		}
	}
	return err
}

// deleteRule deletes one rule of a chain given in iptables -S form.
func (b iptables) deleteRule(table, chain, spec string) error {
	_, err := run("", b.cmd("iptables"), append([]string{"-w", "-t", table, "-D", chain}, strings.Fields(spec)...)...)
	return err
}

// jumps lists the rules of a built-in chain that jump to chain to, in
// iptables -S form without the "-A CHAIN" prefix.
func (b iptables) jumps(table, from, to string) ([]string, error) {
	out, err := run("", b.cmd("iptables"), "-w", "-t", table, "-S", from)
	if err != nil {
		return nil, err
	}
	var specs []string
	for _, line := range strings.Split(out, "\n") {
		spec, ok := strings.CutPrefix(strings.TrimSpace(line), "-A "+from+" ")
		if ok && (spec == "-j "+to || strings.HasSuffix(spec, " -j "+to)) {
			specs = append(specs, spec)
		}
	}
	return specs, nil
}

func (b iptables) DeleteChain(table, chain string) error {
	run("", b.cmd("iptables"), "-w", "-t", table, "-F", chain)
	if _, err := run("", b.cmd("iptables"), "-w", "-t", table, "-X", chain); err != nil && !strings.Contains(err.Error(), "No chain") && !strings.Contains(err.Error(), "does not exist") {
		return err
	}
	return nil
}

func (b iptables) DropEmptyBuiltin(table, chain string) {
	// iptables-nft deletes a built-in chain only when it is empty with the
	// policy ACCEPT (it answers "busy" or "not empty" otherwise);
	// iptables-legacy never does. Either refusal is the answer wanted.
	run("", b.cmd("iptables"), "-w", "-t", table, "-X", chain)
}

func (b iptables) Save(table string) (string, error) {
	return run("", b.cmd("iptables-save"), "-c", "-t", table)
}
