package firewall

import (
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net/netip"
	"os"
	"os/exec"
	"strings"
	"testing"
)

const hooksHelperEnv = "MESHD_FIREWALL_HOOKS_HELPER"

// hookChains is what the hooks test reads back after each step: every
// built-in chain meshd hooks into, as iptables -S prints it.
func hookChains() string {
	var b strings.Builder
	for _, tc := range [][2]string{{"filter", "INPUT"}, {"filter", "FORWARD"}, {"mangle", "POSTROUTING"}, {"raw", "PREROUTING"}, {"raw", "OUTPUT"}} {
		out, _ := exec.Command("iptables", "-t", tc[0], "-S", tc[1]).CombinedOutput()
		b.Write(out)
	}
	return b.String()
}

func TestHelperHooks(t *testing.T) {
	if os.Getenv(hooksHelperEnv) == "" {
		t.Skip("helper process for TestFirewallHooksInKernel")
	}
	res := map[string]string{}
	defer func() { json.NewEncoder(os.Stdout).Encode(res) }()
	exec.Command("ip", "link", "add", "mesh0", "type", "dummy").Run()
	// What an older meshd left: an unconditional MSS hook, and a NOTRACK
	// hook for another listen port.
	for _, args := range [][]string{
		{"-t", "mangle", "-N", "MESHD-MSS"}, {"-t", "mangle", "-I", "POSTROUTING", "-j", "MESHD-MSS"},
		{"-t", "raw", "-N", "MESHD-NOTRACK"}, {"-t", "raw", "-I", "PREROUTING", "-p", "udp", "--dport", "51999", "-j", "MESHD-NOTRACK"},
	} {
		if out, err := exec.Command("iptables", args...).CombinedOutput(); err != nil {
			res["error"] = string(out)
			return
		}
	}
	cfg := Config{Mode: "enforce", Interface: "mesh0", ListenPort: 51820, Overlay: netip.MustParsePrefix("100.100.0.0/16"),
		Logger: slog.New(slog.NewTextHandler(io.Discard, nil))}
	for _, step := range []string{"start", "restart"} {
		if err := New(cfg).Start(); err != nil {
			res["error"] = err.Error()
			return
		}
		res[step] = hookChains()
	}
	New(cfg).Close()
	res["stopped"] = hookChains()
	if err := Flush(cfg.Logger); err != nil {
		res["error"] = err.Error()
		return
	}
	res["closed"] = hookChains()
	all, _ := exec.Command("iptables-save").CombinedOutput()
	all6, _ := exec.Command("ip6tables-save").CombinedOutput()
	res["left"] = fmt.Sprint(strings.Count(string(all)+string(all6), "MESHD"))
}

// TestFirewallHooksInKernel: meshd's hooks are narrowed to the packets
// their chains concern, replace what an older meshd left, stay single
// across a restart, stay when meshd stops, and are all gone after Flush.
func TestFirewallHooksInKernel(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("SKIP-ROOT: needs root for a network namespace and iptables")
	}
	var res map[string]string
	runHelperInNamespace(t, "TestHelperHooks", hooksHelperEnv, &res)
	if res["error"] != "" {
		t.Fatalf("helper: %s", res["error"])
	}
	want := []string{
		"-A INPUT -j MESHD-INPUT",
		"-A FORWARD -j MESHD-FORWARD",
		"-A POSTROUTING -o mesh0 -p tcp -j MESHD-MSS",
		"-A PREROUTING -p udp -m udp --dport 51820 -j MESHD-NOTRACK",
		"-A OUTPUT -p udp -m udp --sport 51820 -j MESHD-NOTRACK",
	}
	for _, step := range []string{"start", "restart"} {
		var hooks []string
		for _, l := range strings.Split(res[step], "\n") {
			if strings.Contains(l, "-j MESHD-") {
				hooks = append(hooks, l)
			}
		}
		if strings.Join(hooks, "\n") != strings.Join(want, "\n") {
			t.Errorf("hooks after %s:\n%s\nwant exactly:\n%s", step, strings.Join(hooks, "\n"), strings.Join(want, "\n"))
		}
	}
	// A stopped meshd leaves the host closed: every hook stays.
	for _, h := range want {
		if !strings.Contains(res["stopped"], h) {
			t.Errorf("after Close (meshd stopped) the hook %q is gone:\n%s", h, res["stopped"])
		}
	}
	if strings.Contains(res["closed"], "MESHD") || res["left"] != "0" {
		t.Errorf("after Flush: %s rules or chains named MESHD left:\n%s", res["left"], res["closed"])
	}
}
