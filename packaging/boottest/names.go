package main

import (
	"context"
	"fmt"
	"net/netip"
	"slices"
	"strings"
	"time"
)

// names checks meshd's hook into systemd-resolved the way a user of the
// host sees it: resolvectl shows meshd as the overlay link's DNS server
// for the routing-only domain ~<domain>, and a peer's name resolves to its
// overlay address through resolved, both asked directly and through the
// stub at 127.0.0.53 that /etc/resolv.conf points at. It runs again after
// the upgrade: each start of meshd makes a new link and must set it again.
func (s *session) names(ctx context.Context) error {
	step("systemd-resolved routes the mesh's names to meshd: resolvectl, getent")
	if _, err := s.c.run(ctx, "systemctl", "is-active", "systemd-resolved"); err != nil {
		return fmt.Errorf("systemd-resolved must run in the container for this step: %w", err)
	}
	st, err := s.status(ctx)
	if err != nil {
		return err
	}
	if st.DNS == nil || st.DNS.Listen == "" {
		return fmt.Errorf("meshctl status: meshd serves no DNS (%+v)", st.DNS)
	}
	listen, err := netip.ParseAddrPort(st.DNS.Listen)
	if err != nil {
		return fmt.Errorf("meshctl status: dns listen %q: %w", st.DNS.Listen, err)
	}
	pst, err := s.peer.Status()
	if err != nil {
		return err
	}
	link, dom := st.Interface, st.DNS.Domain
	s.dnsServer, s.domain = listen.Addr().String(), dom
	name := pst.Name + "." + dom
	var shown []string
	err = eventually(15*time.Second, func() error {
		shown = shown[:0]
		// resolvectl prints a server on port 53 as the bare address.
		if err := s.linkShows(ctx, "dns", link, s.dnsServer, &shown); err != nil {
			return err
		}
		if err := s.linkShows(ctx, "domain", link, "~"+dom, &shown); err != nil {
			return err
		}
		out, err := s.c.run(ctx, "resolvectl", "query", name)
		if err != nil {
			return err
		}
		if !slices.Contains(strings.Fields(out), pst.OverlayIP) || !strings.Contains(out, "link: "+link) {
			return fmt.Errorf("resolvectl query %s: want %s from link %s, have:\n%s", name, pst.OverlayIP, link, out)
		}
		shown = append(shown, "$ resolvectl query "+name, strings.TrimSpace(out))
		// getent goes the way of any program: libc, /etc/resolv.conf, the stub.
		out, err = s.c.run(ctx, "getent", "hosts", name)
		if err != nil {
			return err
		}
		if f := strings.Fields(out); len(f) == 0 || f[0] != pst.OverlayIP {
			return fmt.Errorf("getent hosts %s: want %s, have %q", name, pst.OverlayIP, out)
		}
		shown = append(shown, "$ getent hosts "+name, strings.TrimSpace(out))
		st, err := s.status(ctx)
		if err != nil {
			return err
		}
		// What meshctl status tells the operator about the hook.
		if !strings.HasPrefix(st.DNS.Resolved, "routes ~"+dom) {
			return fmt.Errorf("meshctl status: dns resolved %q, want it to route ~%s", st.DNS.Resolved, dom)
		}
		shown = append(shown, "meshctl status: resolved: "+st.DNS.Resolved)
		return nil
	})
	if err != nil {
		// meshd's own word on the hook, for whoever reads the failure.
		if st, serr := s.status(ctx); serr == nil && st.DNS != nil {
			err = fmt.Errorf("%w\n(meshctl status: resolved: %s)", err, st.DNS.Resolved)
		}
		return err
	}
	fmt.Println(strings.Join(shown, "\n"))
	return nil
}

// linkShows runs `resolvectl what link` ("Link 3 (mesh0): a b c") and wants
// item among the values.
func (s *session) linkShows(ctx context.Context, what, link, item string, shown *[]string) error {
	out, err := s.c.run(ctx, "resolvectl", what, link)
	if err != nil {
		return err
	}
	_, values, ok := strings.Cut(strings.TrimSpace(out), "):")
	if !ok || !slices.Contains(strings.Fields(values), item) {
		return fmt.Errorf("resolvectl %s %s: want %s, have %q", what, link, item, out)
	}
	*shown = append(*shown, "$ resolvectl "+what+" "+link, strings.TrimSpace(out))
	return nil
}

// namesGone: after meshd stopped, no link of resolved names meshd's
// server or routes its domain, and meshd's journal has no complaint about
// undoing it. The overlay link leaves with meshd, taking its settings
// along, so the journal is what tells a failed RevertLink apart.
func (s *session) namesGone(ctx context.Context) error {
	server, dom := s.dnsServer, "~"+s.domain
	err := eventually(10*time.Second, func() error {
		for _, what := range []string{"dns", "domain"} {
			out, err := s.c.run(ctx, "resolvectl", what)
			if err != nil {
				return err
			}
			if f := strings.Fields(out); slices.Contains(f, server) || slices.Contains(f, dom) {
				return fmt.Errorf("after stop, resolvectl %s still shows meshd's %s or %s:\n%s", what, server, dom, out)
			}
		}
		return nil
	})
	if err != nil {
		return err
	}
	out, err := s.c.run(ctx, "journalctl", "-u", "meshd", "--no-pager", "-o", "cat")
	if err != nil {
		return err
	}
	for _, l := range strings.Split(out, "\n") {
		if strings.Contains(l, "level=ERROR") && strings.Contains(l, "systemd-resolved") {
			return fmt.Errorf("meshd's journal: %s", l)
		}
	}
	fmt.Printf("resolvectl dns, resolvectl domain: no link has %s or %s\n", server, dom)
	return nil
}
