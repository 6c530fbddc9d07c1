package e2e

import (
	"context"
	"encoding/json"
	"fmt"
	"net/netip"
	"os"
	"os/exec"
	"path"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"golang.zx2c4.com/wireguard/wgctrl/wgtypes"

	"github.com/meshd/meshd/internal/testbed"
	"github.com/meshd/meshd/internal/trust"
	"github.com/meshd/meshd/registry"
)

// trustFleet starts one strict-trust meshd per network, each certified by
// the testbed's CA with its network as its only group.
func trustFleet(t *testing.T, mode string, extra func(i int, o *testbed.MeshdOptions), networks ...string) (*testbed.Testbed, []*testbed.Meshd) {
	t.Helper()
	tb := testbed.NewForTest(t, testbed.Options{ZooKeeper: true})
	var ms []*testbed.Meshd
	for i, n := range networks {
		h, err := tb.AddHost(n)
		if err != nil {
			t.Fatal(err)
		}
		o := testbed.MeshdOptions{Bin: bin(t), Links: [][]string{{"vpc", "dc"}}, Groups: []string{n}, Trust: mode,
			Extra: "tuning:\n  hold_down: 2s\n  handshake_timeout: 3s\n  path_retry: 5s\n"}
		if extra != nil {
			extra(i, &o)
		}
		m, err := tb.StartMeshd(h, o)
		if err != nil {
			t.Fatal(err)
		}
		ms = append(ms, m)
	}
	t.Cleanup(func() {
		if t.Failed() {
			for _, m := range ms {
				t.Logf("--- log of %s:\n%s", m.Host.Name, m.LogTail(30))
			}
		}
	})
	return tb, ms
}

// recordOf reads a host's live record node from ZooKeeper.
func recordOf(t *testing.T, tb *testbed.Testbed, id string) (string, []byte) {
	t.Helper()
	bucket := fmt.Sprintf("/meshd/%s/hosts/%02x", tb.Prefix, registry.BucketOf(id))
	ls := zkDo(t, tb, zkOp{Op: "children", Path: bucket})
	for _, n := range ls[0].Names {
		if strings.HasPrefix(n, id+"#") {
			p := path.Join(bucket, n)
			return p, zkDo(t, tb, zkOp{Op: "get", Path: p})[0].Data
		}
	}
	t.Fatalf("no record of %s in %s", id, bucket)
	return "", nil
}

// forger signs made-up records under a certificate the test chooses.
func forger(t *testing.T, ca *trust.CA, id string, tmpl trust.Template) *trust.Signer {
	t.Helper()
	dir := t.TempDir()
	key, err := trust.LoadOrCreateKey(filepath.Join(dir, "k"))
	if err != nil {
		t.Fatal(err)
	}
	cert, err := ca.Issue(key.Public(), id, tmpl)
	if err != nil {
		t.Fatal(err)
	}
	os.WriteFile(filepath.Join(dir, "c"), cert, 0o644)
	pool, _ := trust.NewPool(ca.PEM)
	s, err := trust.LoadSigner(filepath.Join(dir, "k"), filepath.Join(dir, "c"), pool)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// TestTrustAttacksFail: with trust strict, a second ZooKeeper client with
// full access writes forged records for h1. Every observer keeps h1's real
// key and address, counts and names each refusal, and still reaches h1.
func TestTrustAttacksFail(t *testing.T) {
	tb, ms := trustFleet(t, "strict", func(i int, o *testbed.MeshdOptions) {
		if i == 0 {
			// h1 claims a group its certificate does not give it.
			o.Groups, o.CertGroups = []string{"vpc", "admin"}, []string{"vpc"}
		}
	}, "vpc", "vpc", "dc")
	h1, observers := ms[0], ms[1:]
	st1, _ := h1.Status()
	if st1.Trust != "ca" || st1.TrustMode != "strict" || st1.Cert == nil {
		t.Fatalf("h1 status trust %q mode %q cert %v", st1.Trust, st1.TrustMode, st1.Cert)
	}
	ip1 := netip.MustParseAddr(st1.OverlayIP)
	for _, o := range observers {
		waitFor(t, 30*time.Second, o.Host.Name+" reaches h1", func() error {
			_, err := o.Host.Run(context.Background(), "ping", "-c", "1", "-W", "1", st1.OverlayIP)
			return err
		})
		p, _ := peerOf(o, "h1")
		if strings.Join(p.Groups, ",") != "vpc" {
			t.Errorf("%s sees h1 in groups %v; its certificate says [vpc]", o.Host.Name, p.Groups)
		}
	}
	// An older signed record of h1, for the replay: rotate h1's key.
	_, oldRecord := recordOf(t, tb, "h1")
	if out, err := meshctl(t, h1, "key", "rotate"); err != nil {
		t.Fatalf("key rotate: %v\n%s", err, out)
	}
	st1, _ = h1.Status()
	for _, o := range observers {
		waitFor(t, 10*time.Second, o.Host.Name+" has h1's rotated key", func() error {
			p, err := peerOf(o, "h1")
			if err == nil && p.PublicKey != st1.PublicKey {
				err = fmt.Errorf("h1's key is %s, want %s", p.PublicKey, st1.PublicKey)
			}
			return err
		})
	}

	ca, err := tb.CA()
	if err != nil {
		t.Fatal(err)
	}
	otherCA, err := trust.InitCA(t.TempDir(), "another CA")
	if err != nil {
		t.Fatal(err)
	}
	evil, _ := wgtypes.GeneratePrivateKey()
	st2, _ := ms[1].Status()
	forged := registry.Host{InstanceID: "h1", OverlayIP: ip1, PublicKey: evil.PublicKey(), Network: "vpc",
		PrivateIP: netip.MustParseAddr("198.18.2.250"), ListenPort: 51820, Groups: []string{"vpc", "admin"},
		StartTime: time.Now().UTC(), Seq: uint64(time.Now().Add(time.Hour).UnixMicro())}
	h2claims := forged
	h2claims.InstanceID, h2claims.OverlayIP = "h2", ip1
	seal := func(h registry.Host, s *trust.Signer) []byte {
		data, err := registry.SealRecord(h, s)
		if err != nil {
			t.Fatal(err)
		}
		return data
	}
	h2cert := forger(t, ca, "h2", trust.Template{Network: "vpc"})
	expiring := forger(t, ca, "h1", trust.Template{Network: "vpc", NotAfter: time.Now().Add(2 * time.Second)})
	// A certificate for h1 that an operator revoked (signed revocation list).
	revoked := forger(t, ca, "h1", trust.Template{Network: "vpc"})
	operator := forger(t, ca, "alice", trust.Template{Operator: true})
	list, _ := json.Marshal(map[string][]string{"serials": {revoked.Identity().Serial}})
	sealedList, err := trust.SealDocument(operator, "revoked", list)
	if err != nil {
		t.Fatal(err)
	}
	zkDo(t, tb, zkOp{Op: "create", Path: "/meshd/" + tb.Prefix + "/revoked", Data: sealedList})
	for _, o := range observers {
		waitFor(t, 10*time.Second, o.Host.Name+" applies the revocation list", func() error {
			st, err := o.Status()
			if err == nil && st.RevokedCerts != 1 {
				err = fmt.Errorf("%d revoked", st.RevokedCerts)
			}
			return err
		})
	}
	unsigned := forged
	unsigned.Seq = 0
	unsignedJSON, _ := json.Marshal(unsigned)

	attacks := []struct {
		name, reason, id string
		data             func() []byte
	}{
		{"unsigned record of h1 with another key", registry.ReasonUnsigned, "h1", func() []byte { return unsignedJSON }},
		{"h1's id signed by h2's valid certificate", registry.ReasonIdentity, "h1", func() []byte { return seal(forged, h2cert) }},
		{"h2 claiming h1's overlay address", "lease", "h2", func() []byte { return seal(h2claims, h2cert) }},
		{"older record of h1, replayed", registry.ReasonReplay, "h1", func() []byte { return oldRecord }},
		{"certified by another CA", trust.ReasonUnknownCA, "h1", func() []byte { return seal(forged, forger(t, otherCA, "h1", trust.Template{})) }},
		{"revoked certificate", trust.ReasonRevoked, "h1", func() []byte { return seal(forged, revoked) }},
		{"expired certificate", trust.ReasonExpired, "h1", func() []byte {
			for time.Now().Before(expiring.Identity().NotAfter.Add(time.Second)) {
				time.Sleep(100 * time.Millisecond)
			}
			return seal(forged, expiring)
		}},
	}
	bucket := func(id string) string {
		return fmt.Sprintf("/meshd/%s/hosts/%02x/%s#", tb.Prefix, registry.BucketOf(id), id)
	}
	for _, a := range attacks {
		node := zkDo(t, tb, zkOp{Op: "create", Path: bucket(a.id), Data: a.data(), Seq: true})[0].Path
		for _, o := range observers {
			waitFor(t, 10*time.Second, a.name+": refused and named on "+o.Host.Name, func() error {
				st, err := o.Status()
				if err != nil {
					return err
				}
				for _, r := range st.Refusals {
					if r.Node == node && r.Reason == a.reason {
						if st.BadRecords[a.reason] < 1 {
							return fmt.Errorf("refusal named but not counted: %v", st.BadRecords)
						}
						return nil
					}
				}
				return fmt.Errorf("no %s refusal of %s in %+v", a.reason, node, st.Refusals)
			})
			p, err := peerOf(o, "h1")
			if err != nil || p.PublicKey != st1.PublicKey || p.OverlayIP != st1.OverlayIP {
				t.Fatalf("%s: %s's h1 is %+v (%v), want key %s at %s", a.name, o.Host.Name, p, err, st1.PublicKey, st1.OverlayIP)
			}
			// Polled: the first attack follows h1's key rotation, whose
			// new sessions a lost handshake can delay by a retry; a
			// hijack would last.
			waitFor(t, 5*time.Second, a.name+": "+o.Host.Name+" still reaches h1", func() error {
				_, err := o.Host.Run(context.Background(), "ping", "-c", "1", "-W", "1", st1.OverlayIP)
				return err
			})
		}
	}
	if p, _ := peerOf(ms[2], "h2"); p.OverlayIP != st2.OverlayIP {
		t.Errorf("h2 moved to %s", p.OverlayIP)
	}
}

// TestTrustSignedDocuments: with trust strict, hosts ignore a policy that
// no operator signed (keeping the one in force), apply one an operator
// signed, and drop a host at once when an operator revokes its
// certificate.
func TestTrustSignedDocuments(t *testing.T) {
	tb, ms := trustFleet(t, "strict", nil, "vpc", "dc")
	h1, h2 := ms[0], ms[1]
	st1, _ := h1.Status()
	st2, _ := h2.Status()
	reaches := func(from *testbed.Meshd, to string) bool {
		_, err := from.Host.Run(context.Background(), "ping", "-c", "1", "-W", "1", to)
		return err == nil
	}
	waitFor(t, 30*time.Second, "h2 reaches h1", func() error {
		if !reaches(h2, st1.OverlayIP) {
			return fmt.Errorf("no ping")
		}
		return nil
	})
	// An operator, provisioned with the CLI.
	opDir := t.TempDir()
	out, err := exec.Command(filepath.Join(bin(t), "meshctl"), "ca", "operator", "--ca", filepath.Join(tb.Dir, "ca"), "--name", "alice",
		"--out", filepath.Join(opDir, "alice.crt"), "--key-out", filepath.Join(opDir, "alice.key")).CombinedOutput()
	if err != nil {
		t.Fatalf("meshctl ca operator: %v\n%s", err, out)
	}
	sign := []string{"--sign-key", filepath.Join(opDir, "alice.key"), "--sign-cert", filepath.Join(opDir, "alice.crt")}
	writePolicy := func(yaml string) string {
		p := filepath.Join(t.TempDir(), "policy.yaml")
		os.WriteFile(p, []byte(yaml), 0o644)
		return p
	}
	// Unsigned, through meshctl: refused by meshd with advice.
	if out, err := meshctl(t, h1, "policy", "set", writePolicy("rules: []\nicmp_echo: false\n")); err == nil || !strings.Contains(out, "--sign-key") {
		t.Fatalf("unsigned policy set: %v\n%s", err, out)
	}
	// Operator-signed: applies fleet-wide (no echo between members).
	if out, err := meshctl(t, h1, append([]string{"policy", "set", writePolicy("rules: []\nicmp_echo: false\n")}, sign...)...); err != nil {
		t.Fatalf("signed policy set: %v\n%s", err, out)
	}
	waitFor(t, 10*time.Second, "the signed policy applies on h1", func() error {
		if reaches(h2, st1.OverlayIP) {
			return fmt.Errorf("h2 still pings h1")
		}
		return nil
	})
	// Unsigned, straight into ZooKeeper: ignored, counted, named; the
	// signed policy stays.
	policyPath := "/meshd/" + tb.Prefix + "/policy"
	zkDo(t, tb, zkOp{Op: "set", Path: policyPath, Data: []byte(`{"rules":[]}`)})
	waitFor(t, 10*time.Second, "unsigned policy refused on both", func() error {
		for _, m := range ms {
			st, err := m.Status()
			if err != nil {
				return err
			}
			if st.DocumentsRefused["unsigned"] < 1 {
				return fmt.Errorf("%s: documents refused %v", m.Host.Name, st.DocumentsRefused)
			}
		}
		return nil
	})
	if reaches(h2, st1.OverlayIP) {
		t.Fatal("an unsigned policy in ZooKeeper replaced the signed one")
	}
	// explain describes the policy in force (the signed one: no echo),
	// not the refused document the node now holds.
	if out, err := meshctl(t, h1, "explain", h2.Host.Name); err != nil || !strings.Contains(out, "ICMP echo false") {
		t.Errorf("explain does not describe the signed policy in force: %v\n%s", err, out)
	}
	// Signed by an operator of another CA: ignored as well.
	otherDir := t.TempDir()
	if out, err := exec.Command(filepath.Join(bin(t), "meshctl"), "ca", "init", otherDir).CombinedOutput(); err != nil {
		t.Fatalf("ca init: %v\n%s", err, out)
	}
	other, err := trust.LoadCA(otherDir)
	if err != nil {
		t.Fatal(err)
	}
	mallory := forger(t, other, "mallory", trust.Template{Operator: true})
	sealed, err := trust.SealDocument(mallory, "policy", []byte(`{"rules":[]}`))
	if err != nil {
		t.Fatal(err)
	}
	zkDo(t, tb, zkOp{Op: "set", Path: policyPath, Data: sealed})
	waitFor(t, 10*time.Second, "foreign operator refused", func() error {
		st, _ := h1.Status()
		if st.DocumentsRefused[trust.ReasonUnknownCA] < 1 {
			return fmt.Errorf("documents refused %v", st.DocumentsRefused)
		}
		return nil
	})
	if reaches(h2, st1.OverlayIP) {
		t.Fatal("a policy signed under another CA applied")
	}
	// Signed again by alice, allowing echo: applies.
	if out, err := meshctl(t, h2, append([]string{"policy", "set", writePolicy("rules: []\n")}, sign...)...); err != nil {
		t.Fatalf("signed policy set: %v\n%s", err, out)
	}
	waitFor(t, 10*time.Second, "echo allowed again", func() error {
		if !reaches(h2, st1.OverlayIP) {
			return fmt.Errorf("h2 does not ping h1")
		}
		return nil
	})
	// A decommission before the revocation is refused, naming what to
	// revoke: until then h1 would keep h2 and its address.
	if out, err := meshctl(t, h1, "decommission", "h2", "--yes"); err == nil || !strings.Contains(out, st2.Cert.Serial) || !strings.Contains(out, "meshctl revoke") {
		t.Fatalf("decommission of h2 before its revocation: %v\n%s", err, out)
	}
	// Revoking h2's certificate removes it from h1 at once.
	if out, err := meshctl(t, h1, append([]string{"revoke", st2.Cert.Serial}, sign...)...); err != nil {
		t.Fatalf("revoke: %v\n%s", err, out)
	}
	waitFor(t, 5*time.Second, "h2 gone from h1", func() error {
		if p, err := peerOf(h1, "h2"); err == nil {
			return fmt.Errorf("h1 still lists h2 (%s)", p.State)
		}
		return nil
	})
	if reaches(h2, st1.OverlayIP) {
		t.Error("revoked h2 still reaches h1")
	}
	// The list is replaced whole: one that leaves h2 out is refused
	// without --replace, and h2 stays out.
	if out, err := meshctl(t, h1, append([]string{"revoke", "1B2C"}, sign...)...); err == nil || !strings.Contains(out, st2.Cert.Serial) || !strings.Contains(out, "--replace") {
		t.Errorf("a revocation list that drops h2: %v\n%s", err, out)
	}
	if out, err := meshctl(t, h1, append([]string{"revoke", "1B2C", st2.Cert.Serial}, sign...)...); err != nil {
		t.Errorf("a revocation list that keeps h2: %v\n%s", err, out)
	}
	if p, err := peerOf(h1, "h2"); err == nil {
		t.Errorf("h1 lists revoked h2 again (%s)", p.State)
	}
	// Revoked, it can be decommissioned.
	if out, err := meshctl(t, h1, "decommission", "h2", "--yes"); err != nil || !strings.Contains(out, "h2 decommissioned") {
		t.Errorf("decommission of revoked h2: %v\n%s", err, out)
	}
}

// TestTrustCertRenewalWithoutRestart: a certificate renewed in place (new
// groups) is picked up by the running meshd and its peers, same process.
func TestTrustCertRenewalWithoutRestart(t *testing.T) {
	_, ms := trustFleet(t, "strict", nil, "vpc", "dc")
	h1, h2 := ms[0], ms[1]
	waitFor(t, 30*time.Second, "h2 sees h1 up", func() error {
		p, err := peerOf(h2, "h1")
		if err == nil && strings.Join(p.Groups, ",") != "vpc" {
			err = fmt.Errorf("h1 groups %v", p.Groups)
		}
		return err
	})
	before, _ := h1.Status()
	pid := h1.Proc.PID()
	if err := h1.Certify(trust.Template{Groups: []string{"vpc", "web"}}); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 20*time.Second, "h2 sees h1's renewed groups", func() error {
		p, err := peerOf(h2, "h1")
		if err == nil && strings.Join(p.Groups, ",") != "vpc,web" {
			err = fmt.Errorf("h1 groups %v", p.Groups)
		}
		return err
	})
	after, _ := h1.Status()
	if after.Cert == nil || after.Cert.Serial == before.Cert.Serial || h1.Proc.PID() != pid {
		t.Errorf("cert %v -> %v, pid %d -> %d: want a new certificate in the same process", before.Cert, after.Cert, pid, h1.Proc.PID())
	}
}

// TestTrustRolloutWithTrafficFlowing: three hosts go from no trust to
// permissive one at a time, then to strict one at a time, each by a
// config change and SIGHUP, while pings flow between all of them. Not a
// packet is lost and no host drops a peer.
func TestTrustRolloutWithTrafficFlowing(t *testing.T) {
	_, ms := trustFleet(t, "", nil, "vpc", "vpc", "dc")
	ips := map[string]string{}
	for _, m := range ms {
		st, _ := m.Status()
		if st.Trust != "none" {
			t.Fatalf("%s starts with trust %q, want none", m.Host.Name, st.Trust)
		}
		ips[m.Host.Name] = st.OverlayIP
	}
	for _, a := range ms {
		for _, b := range ms {
			if a != b {
				waitFor(t, 30*time.Second, a.Host.Name+" reaches "+b.Host.Name, func() error {
					_, err := a.Host.Run(context.Background(), "ping", "-c", "1", "-W", "1", ips[b.Host.Name])
					return err
				})
			}
		}
	}
	// Pings every 50 ms around the ring for the whole rollout.
	type flow struct {
		cmd *exec.Cmd
		out *strings.Builder
	}
	var flows []flow
	for i, a := range ms {
		b := ms[(i+1)%len(ms)]
		out := &strings.Builder{}
		cmd := a.Host.Command(context.Background(), "ping", "-i", "0.05", "-W", "1", ips[b.Host.Name])
		cmd.Stdout, cmd.Stderr = out, out
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		flows = append(flows, flow{cmd, out})
	}
	stopFlows := func() {
		for _, f := range flows {
			f.cmd.Process.Signal(os.Interrupt)
			f.cmd.Wait()
		}
	}
	defer stopFlows()
	setMode := func(m *testbed.Meshd, mode string) {
		t.Helper()
		pid := m.Proc.PID()
		m.SetTrust(mode)
		if err := m.WriteConfig(); err != nil {
			t.Fatal(err)
		}
		if err := syscall.Kill(pid, syscall.SIGHUP); err != nil {
			t.Fatal(err)
		}
		waitFor(t, 10*time.Second, m.Host.Name+" in "+mode, func() error {
			st, err := m.Status()
			if err == nil && (st.Trust != "ca" || st.TrustMode != mode) {
				err = fmt.Errorf("trust %q mode %q", st.Trust, st.TrustMode)
			}
			return err
		})
		if m.Proc.PID() != pid {
			t.Fatalf("%s restarted", m.Host.Name)
		}
	}
	for _, m := range ms {
		setMode(m, "permissive")
	}
	waitFor(t, 15*time.Second, "every host signing, seen by each", func() error {
		for _, m := range ms {
			var f struct {
				Unsigned int `json:"unsigned"`
				InMesh   int `json:"in_mesh"`
			}
			out, err := meshctl(t, m, "fleet", "-o", "json")
			if err == nil {
				err = json.Unmarshal([]byte(out), &f)
			}
			if err != nil {
				return err
			}
			if f.Unsigned != 0 || f.InMesh != 3 {
				return fmt.Errorf("%s: %d of %d not yet signing", m.Host.Name, f.Unsigned, f.InMesh)
			}
		}
		return nil
	})
	for _, m := range ms {
		setMode(m, "strict")
	}
	time.Sleep(2 * time.Second) // traffic after the last step, for the loss count
	stopFlows()
	for i, f := range flows {
		sent, missing := unanswered(f.out.String(), 20) // a second at -i 0.05
		// More sent than the settle window, or nothing was judged. (Not
		// "more than 2 s worth": under load ping's 50 ms interval
		// stretches, and exactly 40 were once sent with none lost.)
		if sent <= 20 || len(missing) > 0 {
			t.Errorf("%s -> %s: %d sent, unanswered icmp_seq %v during the rollout:\n%s", ms[i].Host.Name, ms[(i+1)%len(ms)].Host.Name,
				sent, missing, lastLines(f.out.String(), 3))
		}
	}
	for _, m := range ms {
		st, _ := m.Status()
		if st.Peers != 2 || len(st.Refusals) != 0 {
			t.Errorf("%s: %d peers, refusals %+v", m.Host.Name, st.Peers, st.Refusals)
		}
	}
}

// unanswered reads a ping run that was interrupted and returns how many
// echo requests it sent and which went unanswered. ping's own loss figure
// counts the request in flight at the interrupt as lost, so the last
// `settle` requests (a second's worth) are not judged: the rollout ends
// with seconds of traffic, so a real loss still shows in the ones before.
func unanswered(out string, settle int) (sent int, missing []int) {
	got := map[int]bool{}
	for _, l := range strings.Split(out, "\n") {
		if _, after, ok := strings.Cut(l, " icmp_seq="); ok && strings.Contains(l, "bytes from") {
			var seq int
			if _, err := fmt.Sscan(strings.Fields(after)[0], &seq); err == nil {
				got[seq] = true
			}
		}
		if before, _, ok := strings.Cut(l, " packets transmitted"); ok {
			fmt.Sscan(before, &sent)
		}
	}
	for seq := 1; seq <= sent-settle; seq++ {
		if !got[seq] {
			missing = append(missing, seq)
		}
	}
	return sent, missing
}

func lastLines(s string, n int) string {
	lines := strings.Split(strings.TrimSpace(s), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}

// TestProvisioningCLI: the documented flow without a PKI. meshd csr makes
// the identity key (0600) and a request naming the host; meshctl ca sign
// certifies it with the groups and network the signer chooses, whatever
// the request asked.
func TestProvisioningCLI(t *testing.T) {
	dir := t.TempDir()
	keyFile := filepath.Join(dir, "state", "identity.key")
	cfg := filepath.Join(dir, "meshd.yaml")
	os.WriteFile(cfg, []byte(fmt.Sprintf(`mesh: m
zookeeper: {servers: ["127.0.0.1:2181"]}
identity: {instance_id: web-7, network: vpc, private_ip: 198.18.2.7}
trust: {mode: strict, ca_file: %[1]s/ca/ca.crt, cert_file: %[1]s/host.crt, key_file: %[2]s}
`, dir, keyFile)), 0o644)
	csr, err := exec.Command(filepath.Join(bin(t), "meshd"), "csr", "--config", cfg).Output()
	if err != nil || !strings.Contains(string(csr), "BEGIN CERTIFICATE REQUEST") {
		t.Fatalf("meshd csr: %v\n%s", err, csr)
	}
	if fi, err := os.Stat(keyFile); err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("identity key: %v %v", fi, err)
	}
	again, _ := exec.Command(filepath.Join(bin(t), "meshd"), "csr", "--config", cfg).Output()
	csrFile := filepath.Join(dir, "web-7.csr")
	os.WriteFile(csrFile, again, 0o644)
	run := func(args ...string) string {
		t.Helper()
		out, err := exec.Command(filepath.Join(bin(t), "meshctl"), args...).CombinedOutput()
		if err != nil {
			t.Fatalf("meshctl %v: %v\n%s", args, err, out)
		}
		return string(out)
	}
	run("ca", "init", filepath.Join(dir, "ca"))
	if out, err := exec.Command(filepath.Join(bin(t), "meshctl"), "ca", "init", filepath.Join(dir, "ca")).CombinedOutput(); err == nil {
		t.Fatalf("second ca init replaced the CA:\n%s", out)
	}
	run("ca", "sign", "--ca", filepath.Join(dir, "ca"), "--csr", csrFile, "--groups", "web,api", "--network", "vpc", "--out", filepath.Join(dir, "host.crt"))
	pool, err := trust.LoadPool(filepath.Join(dir, "ca", "ca.crt"))
	if err != nil {
		t.Fatal(err)
	}
	s, err := trust.LoadSigner(keyFile, filepath.Join(dir, "host.crt"), pool)
	if err != nil {
		t.Fatalf("the certificate does not fit the key meshd csr made: %v", err)
	}
	if id := s.Identity(); id.InstanceID != "web-7" || id.Network != "vpc" || strings.Join(id.Groups, ",") != "web,api" || id.Operator {
		t.Errorf("certificate says %+v", id)
	}
	// check-config accepts the trust block and names a bad mode.
	if out, err := exec.Command(filepath.Join(bin(t), "meshd"), "check-config", "--config", cfg).CombinedOutput(); err != nil {
		t.Errorf("check-config: %v\n%s", err, out)
	}
	data, _ := os.ReadFile(cfg)
	os.WriteFile(cfg, []byte(strings.Replace(string(data), "mode: strict", "mode: lax", 1)), 0o644)
	if out, err := exec.Command(filepath.Join(bin(t), "meshd"), "check-config", "--config", cfg).CombinedOutput(); err == nil || !strings.Contains(string(out), "trust.mode") {
		t.Errorf("bad trust.mode: %v\n%s", err, out)
	}
}

// TestUnanswered: the rollout's loss check finds a gap among the judged
// requests, and ignores only the tail in flight at the interrupt.
func TestUnanswered(t *testing.T) {
	var b strings.Builder
	for seq := 1; seq <= 30; seq++ {
		if seq != 7 && seq < 29 {
			fmt.Fprintf(&b, "64 bytes from 100.64.0.2: icmp_seq=%d ttl=64 time=0.512 ms\n", seq)
		}
	}
	b.WriteString("\n--- 100.64.0.2 ping statistics ---\n30 packets transmitted, 27 received, 10% packet loss, time 1450ms\n")
	if sent, missing := unanswered(b.String(), 2); sent != 30 || !slices.Equal(missing, []int{7}) {
		t.Errorf("unanswered = %d, %v; want 30, [7]", sent, missing)
	}
	if _, missing := unanswered(b.String(), 1); !slices.Equal(missing, []int{7, 29}) {
		t.Errorf("with a 1-request tail: missing %v, want [7 29]", missing)
	}
}
