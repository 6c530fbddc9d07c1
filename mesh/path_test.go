package mesh

import (
	"net/netip"
	"testing"
)

func loc(network, priv, pub string) Location {
	l := Location{Network: network, PrivateIP: netip.MustParseAddr(priv), Port: 51820}
	if pub != "" {
		l.PublicIP = netip.MustParseAddr(pub)
	}
	return l
}

func TestCandidates(t *testing.T) {
	links := NewLinks([][]string{{"dc", "vpc"}})
	self := map[string]Location{
		"classic": loc("classic", "198.18.1.11", "198.19.1.11"),
		"vpc":     loc("vpc", "198.18.2.11", "198.19.2.11"),
	}
	cases := []struct {
		name       string
		self, peer Location
		want       []string // path endpoint reason
		why        string
	}{
		{"same network: private first, public fallback", self["classic"], loc("classic", "198.18.1.12", "198.19.1.12"),
			[]string{"private 198.18.1.12:51820 same network classic", "public 198.19.1.12:51820 same network classic, private path failed"}, ""},
		{"linked networks: private over the link", self["vpc"], loc("dc", "198.18.3.11", "198.19.3.11"),
			[]string{"link 198.18.3.11:51820 link vpc<->dc", "public 198.19.3.11:51820 link vpc<->dc, private path failed"}, ""},
		{"link is symmetric", loc("dc", "198.18.3.11", ""), loc("vpc", "198.18.2.11", ""),
			[]string{"link 198.18.2.11:51820 link dc<->vpc"}, ""},
		{"different networks: public only", self["classic"], loc("vpc", "198.18.2.12", "198.19.2.12"),
			[]string{"public 198.19.2.12:51820 different networks classic and vpc"}, ""},
		{"different networks, no public address: unreachable", self["classic"], loc("dc", "198.18.3.12", ""),
			nil, "unreachable: peer in network dc has no public address and classic is not linked to it"},
		{"same network without public address: private only", self["vpc"], loc("vpc", "198.18.2.13", ""),
			[]string{"private 198.18.2.13:51820 same network vpc"}, ""},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			got, why := Candidates(c.self, c.peer, links)
			if why != c.why {
				t.Errorf("why = %q, want %q", why, c.why)
			}
			if len(got) != len(c.want) {
				t.Fatalf("got %d candidates %v, want %v", len(got), got, c.want)
			}
			for i, g := range got {
				if s := string(g.Path) + " " + g.Endpoint.String() + " " + g.Reason; s != c.want[i] {
					t.Errorf("candidate %d = %q, want %q", i, s, c.want[i])
				}
			}
		})
	}
}

func TestLinksPairsStable(t *testing.T) {
	l := NewLinks([][]string{{"vpc", "dc"}, {"b", "a"}, {"x"}, {"y", "y"}})
	got := l.Pairs()
	if len(got) != 2 || got[0][0] != "a" || got[1][0] != "dc" || got[1][1] != "vpc" {
		t.Errorf("pairs = %v", got)
	}
}
