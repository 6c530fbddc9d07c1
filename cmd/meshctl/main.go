// Command meshctl asks a running meshd, over its admin socket, what the
// mesh looks like from this host.
package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/url"
	"os"
	"strings"
	"time"

	"github.com/alecthomas/kong"

	"github.com/meshd/meshd/internal/admin"
	"github.com/meshd/meshd/internal/name"
	"github.com/meshd/meshd/internal/policy"
	"github.com/meshd/meshd/internal/version"
)

type globals struct {
	Socket string `default:"/run/meshd/meshd.sock" type:"path" help:"meshd's admin socket (admin_socket in the config)."`
}

type cli struct {
	globals
	Peers        peersCmd        `cmd:"" help:"List peers: path, endpoint, handshake, traffic, state.\n\nExamples:\n  meshctl peers\n  meshctl peers -o json | jq '.[] | select(.state != \"up\")'"`
	Status       statusCmd       `cmd:"" help:"Show this host: identity, registry connection, peer counts, breaker.\n\nExamples:\n  meshctl status\n  meshctl status -o json"`
	Ping         pingCmd         `cmd:"" help:"Ping a peer over the overlay from this host and say which path answered.\n\nExamples:\n  meshctl ping db-1\n  meshctl ping 100.100.3.7 -c 5"`
	Explain      explainCmd      `cmd:"" help:"Walk the chain (record, lease, path, handshake, firewall, registry) for one peer and name the cause of trouble.\n\nExample:\n  meshctl explain db-1"`
	Fleet        fleetCmd        `cmd:"" help:"Every host holding a lease: network, overlay address, version, in the mesh or not; counts per network and version.\n\nExamples:\n  meshctl fleet\n  meshctl fleet -o json | jq .summary"`
	Completion   completionCmd   `cmd:"" help:"Print a shell completion script.\n\nExample:\n  meshctl completion bash > /usr/share/bash-completion/completions/meshctl"`
	Links        linksCmd        `cmd:"" help:"The fleet-wide direct-connect links (private paths between networks)."`
	Decommission decommissionCmd `cmd:"" help:"Retire a host for good: its address goes into quarantine, its record is removed. Switch the host off first: a live host's record goes, but it keeps its session until it stops. With trust on, only a revoked certificate retires a signed host: revoke it first (meshctl revoke), or the decommission is refused.\n\nExample:\n  meshctl decommission i-0abc123 --yes"`
	Key          keyCmd          `cmd:"" help:"This host's WireGuard key."`
	Breaker      breakerCmd      `cmd:"" help:"The mass-removal breaker."`
	Policy       policyCmd       `cmd:"" help:"The fleet-wide group ingress policy."`
	Revoke       revokeCmd       `cmd:"" help:"Replace the fleet's signed certificate revocation list: hosts with these certificates leave the mesh at once. The list is replaced whole, so name every serial to keep revoked; one left out is refused without --replace.\n\nExample:\n  meshctl revoke --sign-key alice.key --sign-cert alice.crt 5F3A09 1B2C"`
	CA           caCmd           `cmd:"" name:"ca" help:"A fleet CA on files, for fleets without a PKI: init, sign host requests, make operator certificates."`
	Version      versionCmd      `cmd:"" help:"Print meshctl's version."`
}

type output struct {
	Output string `short:"o" enum:"table,json" default:"table" help:"Output format: table or json."`
}

type peersCmd struct{ output }

func (c *peersCmd) Run(g *globals) error {
	var peers []admin.Peer
	if err := admin.Dial(g.Socket).Get(context.Background(), "/v1/peers", &peers); err != nil {
		return err
	}
	if c.Output == "json" {
		return writeJSON(os.Stdout, peers)
	}
	writePeersTable(os.Stdout, peers, time.Now())
	return nil
}

type statusCmd struct{ output }

func (c *statusCmd) Run(g *globals) error {
	var s admin.Status
	if err := admin.Dial(g.Socket).Get(context.Background(), "/v1/status", &s); err != nil {
		return err
	}
	if c.Output == "json" {
		return writeJSON(os.Stdout, s)
	}
	writeStatus(os.Stdout, s)
	return nil
}

type breakerCmd struct {
	Release breakerReleaseCmd `cmd:"" help:"Let the removals the breaker holds go through.\n\nExample:\n  meshctl breaker release"`
}

type breakerReleaseCmd struct{}

func (breakerReleaseCmd) Run(g *globals) error {
	var r map[string]int
	if err := admin.Dial(g.Socket).Post(context.Background(), "/v1/breaker/release", &r); err != nil {
		return err
	}
	fmt.Printf("released %d held removal(s)\n", r["released"])
	return nil
}

type policyCmd struct {
	Get      policyGetCmd      `cmd:"" help:"Print the fleet's policy (null: none set; every member reaches every member).\n\nExample:\n  meshctl policy get"`
	Set      policySetCmd      `cmd:"" help:"Validate a policy file (YAML or JSON) and store it for the whole fleet.\n\nExample:\n  meshctl policy set db-policy.yaml\n\nA policy file:\n  rules:\n    - {to: db, from: web, ports: [tcp/5432]}\n    - {to: web, from: '*', ports: [tcp/443]}"`
	Validate policyValidateCmd `cmd:"" help:"Check a policy file against the fleet's groups without storing it.\n\nExample:\n  meshctl policy validate db-policy.yaml"`
}

type policyGetCmd struct{}

func (policyGetCmd) Run(g *globals) error {
	doc, err := admin.Dial(g.Socket).GetRaw(context.Background(), "/v1/policy")
	if err != nil {
		return err
	}
	fmt.Println(string(doc))
	return nil
}

type policySetCmd struct {
	File     string `arg:"" optional:"" type:"existingfile" help:"Policy file (YAML or JSON)."`
	AllowAll bool   `name:"allow-all" help:"Lift the policy: every member may reach every member. Deleting the policy node does not: meshd keeps the last policy."`
	signFlags
}

func (c *policySetCmd) Run(g *globals) error {
	if c.AllowAll == (c.File != "") {
		return fmt.Errorf("give a policy file or --allow-all, not both or neither")
	}
	if c.AllowAll && c.SignKey == "" {
		var r map[string]any
		return admin.Dial(g.Socket).Send(context.Background(), "PUT", "/v1/policy", []byte(`{"allow_all": true}`), &r)
	}
	if c.SignKey == "" {
		return sendPolicy(g, "PUT", "/v1/policy", c.File, "stored: every meshd applies it within a second")
	}
	what := c.File
	p := policy.Policy{AllowAll: true}
	if c.AllowAll {
		what = "allow-all"
	} else {
		data, err := os.ReadFile(c.File)
		if err != nil {
			return err
		}
		if p, err = policy.Parse(data); err != nil {
			return fmt.Errorf("%s: %w", c.File, err)
		}
	}
	sealed, err := c.seal("policy", p.JSON())
	if err != nil {
		return err
	}
	var r map[string]any
	if err := admin.Dial(g.Socket).Send(context.Background(), "PUT", "/v1/policy", sealed, &r); err != nil {
		return fmt.Errorf("%s: %w", what, err)
	}
	fmt.Printf("%s: signed and stored: every meshd applies it within a second\n", what)
	return nil
}

type policyValidateCmd struct {
	File string `arg:"" type:"existingfile" help:"Policy file (YAML or JSON)."`
}

func (c *policyValidateCmd) Run(g *globals) error {
	return sendPolicy(g, "POST", "/v1/policy/validate", c.File, "valid")
}

func sendPolicy(g *globals, method, path, file, ok string) error {
	doc, err := os.ReadFile(file)
	if err != nil {
		return err
	}
	var r struct {
		Warnings []string `json:"warnings"`
	}
	if err := admin.Dial(g.Socket).Send(context.Background(), method, path, doc, &r); err != nil {
		return fmt.Errorf("%s: %w", file, err)
	}
	fmt.Printf("%s: %s\n", file, ok)
	for _, w := range r.Warnings {
		fmt.Printf("warning: %s\n", w)
	}
	return nil
}

type pingCmd struct {
	Peer  string `arg:"" help:"Peer name (instance id), its DNS name (<id>.<dns.domain>) or overlay address."`
	Count int    `short:"c" default:"3" help:"Echo requests to send (1-100)."`
}

func (c *pingCmd) Run(g *globals) error {
	var r admin.PingResult
	if err := admin.Dial(g.Socket).Post(context.Background(), "/v1/ping/"+url.PathEscape(c.Peer)+"?count="+fmt.Sprint(c.Count), &r); err != nil {
		return err
	}
	for _, rep := range r.Replies {
		if rep.Error != "" {
			fmt.Printf("%s (%s) seq=%d: %s\n", r.Peer, r.OverlayIP, rep.Seq, rep.Error)
		} else {
			fmt.Printf("%s (%s) seq=%d: %.2f ms\n", r.Peer, r.OverlayIP, rep.Seq, rep.RTTms)
		}
	}
	fmt.Printf("%d/%d answered over the %s path via %s (%s)\n", r.Received, len(r.Replies), orDash(r.Path), orDash(r.Endpoint), r.Reason)
	if r.Received == 0 {
		return fmt.Errorf("%s did not answer; try meshctl explain %s", r.Peer, r.Peer)
	}
	return nil
}

type explainCmd struct {
	Peer string `arg:"" help:"Peer name (instance id), its DNS name (<id>.<dns.domain>) or overlay address."`
	output
}

func (c *explainCmd) Run(g *globals) error {
	var ex admin.Explanation
	if err := admin.Dial(g.Socket).Get(context.Background(), "/v1/explain/"+url.PathEscape(c.Peer), &ex); err != nil {
		return err
	}
	if c.Output == "json" {
		return writeJSON(os.Stdout, ex)
	}
	writeExplanation(os.Stdout, ex)
	for _, s := range ex.Steps {
		if !s.OK {
			return fmt.Errorf("%s: %s", c.Peer, s.Check+" check failed (see above)")
		}
	}
	return nil
}

type fleetCmd struct {
	output
	EC2      bool   `name:"ec2" help:"Join with EC2's instances (DescribeInstances): instances in the mesh, missing from it, hosts with no instance."`
	Region   string `help:"EC2 region (default: this host's, from meshd)."`
	Endpoint string `help:"EC2 API endpoint URL, e.g. a VPC interface endpoint (default: the region's)."`
}

func (c *fleetCmd) Run(g *globals) error {
	var f admin.Fleet
	if err := admin.Dial(g.Socket).Get(context.Background(), "/v1/fleet", &f); err != nil {
		return err
	}
	if c.EC2 {
		return c.runEC2(g, f)
	}
	if c.Output == "json" {
		return writeJSON(os.Stdout, f)
	}
	writeFleet(os.Stdout, f)
	return nil
}

type linksCmd struct {
	Get linksGetCmd `cmd:"" help:"Print the fleet-wide links.\n\nExample:\n  meshctl links get"`
	Set linksSetCmd `cmd:"" help:"Replace the fleet-wide links; every meshd applies them.\n\nExample:\n  meshctl links set vpc:dc classic:dc2"`
}

type linksGetCmd struct{}

func (linksGetCmd) Run(g *globals) error {
	doc, err := admin.Dial(g.Socket).GetRaw(context.Background(), "/v1/links")
	if err != nil {
		return err
	}
	fmt.Println(string(doc))
	return nil
}

type linksSetCmd struct {
	Pairs []string `arg:"" optional:"" help:"Links as NET:NET; none clears them."`
	signFlags
}

func (c *linksSetCmd) Run(g *globals) error {
	pairs := [][]string{}
	for _, p := range c.Pairs {
		a, b, ok := strings.Cut(p, ":")
		if !ok || a == "" || b == "" || a == b {
			return fmt.Errorf("bad link %q: want two different networks as NET:NET, e.g. vpc:dc", p)
		}
		pairs = append(pairs, []string{a, b})
	}
	body, _ := json.Marshal(pairs)
	send := body
	if c.SignKey != "" {
		var err error
		if send, err = c.seal("links", body); err != nil {
			return err
		}
	}
	var r map[string]string
	if err := admin.Dial(g.Socket).Send(context.Background(), "PUT", "/v1/links", send, &r); err != nil {
		return err
	}
	fmt.Printf("links stored: %s\n", body)
	return nil
}

type decommissionCmd struct {
	ID  string `arg:"" help:"Instance id of the host to retire."`
	Yes bool   `help:"Confirm: the host loses its address and record for good."`
}

func (c *decommissionCmd) Run(g *globals) error {
	if !name.Valid(c.ID) {
		return fmt.Errorf("decommission %q: not an instance id (1-63 letters, digits, '.', '_' or '-', beginning with a letter or digit)", c.ID)
	}
	if !c.Yes {
		return fmt.Errorf("decommission %s removes its lease and record for good; add --yes to confirm", c.ID)
	}
	var r map[string]string
	if err := admin.Dial(g.Socket).Post(context.Background(), "/v1/decommission/"+url.PathEscape(c.ID), &r); err != nil {
		return err
	}
	fmt.Printf("%s decommissioned: its address is quarantined and its record removed\n", c.ID)
	return nil
}

type keyCmd struct {
	Rotate keyRotateCmd `cmd:"" help:"Rotate this host's WireGuard key: the next key is announced first, so peers switch without dropping flows. Refused (the key stays) while the registry is not connected or does not confirm the announcement within 3s.\n\nExample:\n  meshctl key rotate"`
}

type keyRotateCmd struct{}

func (keyRotateCmd) Run(g *globals) error {
	var r map[string]string
	if err := admin.Dial(g.Socket).Post(context.Background(), "/v1/key/rotate", &r); err != nil {
		return err
	}
	fmt.Printf("key rotated; new public key %s\n", r["public_key"])
	return nil
}

type versionCmd struct{}

func (versionCmd) Run() error {
	fmt.Println("meshctl", version.Version)
	return nil
}

func writeJSON(w io.Writer, v any) error {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return enc.Encode(v)
}

func main() {
	var c cli
	ctx := kong.Parse(&c,
		kong.Name("meshctl"),
		kong.Description("meshctl asks the local meshd about the mesh.\n\nExamples:\n  meshctl peers\n  meshctl status -o json\n  meshctl --socket /run/meshd/other.sock peers"),
		kong.UsageOnError(),
		kong.Bind(&c.globals),
		kong.Exit(func(code int) {
			if code != 0 {
				code = 2 // usage error, as CONTRACTS.md says
			}
			os.Exit(code)
		}),
	)
	if err := ctx.Run(); err != nil {
		fmt.Fprintf(os.Stderr, "meshctl: %v\n", err)
		os.Exit(1)
	}
}
