package main

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/meshd/meshd/internal/trust"
)

// caCmd is a fleet CA for fleets without a PKI: it works on files only and
// never talks to meshd.
type caCmd struct {
	Init     caInitCmd     `cmd:"" help:"Create a fleet CA (Ed25519): DIR/ca.crt (give it to every host as trust.ca_file) and DIR/ca.key (0600; keep it offline).\n\nExample:\n  meshctl ca init /secure/meshd-ca"`
	Sign     caSignCmd     `cmd:"" help:"Certify a host's request (meshd csr). The signer, not the request, decides groups and network.\n\nExample:\n  meshctl ca sign --ca /secure/meshd-ca --csr h1.csr --groups web,api --network vpc --out h1.crt"`
	Operator caOperatorCmd `cmd:"" help:"Make an operator key and certificate (URI SAN meshd:role:operator) that signs policy, links, decommission and revocations.\n\nExample:\n  meshctl ca operator --ca /secure/meshd-ca --name alice --out alice.crt --key-out alice.key"`
}

type caInitCmd struct {
	Dir  string `arg:"" help:"Directory for ca.crt and ca.key."`
	Name string `default:"meshd fleet CA" help:"The CA certificate's common name."`
}

func (c *caInitCmd) Run() error {
	if _, err := trust.InitCA(c.Dir, c.Name); err != nil {
		return err
	}
	fmt.Printf("fleet CA created: %s (trust.ca_file on every host), %s (keep it safe)\n",
		filepath.Join(c.Dir, trust.CACertFile), filepath.Join(c.Dir, trust.CAKeyFile))
	return nil
}

type caSignCmd struct {
	CA      string        `name:"ca" required:"" help:"CA directory (meshctl ca init)."`
	CSR     string        `name:"csr" required:"" type:"existingfile" help:"The host's request (meshd csr --config FILE)."`
	Groups  string        `help:"Comma-separated groups the host belongs to."`
	Network string        `help:"The host's network (VPC id, classic, or a data-centre name)."`
	Days    int           `default:"365" help:"Validity in days."`
	Out     string        `required:"" help:"Where to write the certificate (PEM): the host's trust.cert_file."`
	Valid   time.Duration `hidden:"" help:"Validity as a duration (tests); overrides --days."`
}

func (c *caSignCmd) Run() error {
	ca, err := trust.LoadCA(c.CA)
	if err != nil {
		return err
	}
	csr, err := os.ReadFile(c.CSR)
	if err != nil {
		return err
	}
	t := trust.Template{Network: c.Network, Groups: splitList(c.Groups)}
	if err := validity(&t, c.Days, c.Valid); err != nil {
		return err
	}
	cert, err := ca.SignCSR(csr, t)
	if err != nil {
		return fmt.Errorf("%s: %w", c.CSR, err)
	}
	if err := os.WriteFile(c.Out, cert, 0o644); err != nil {
		return err
	}
	fmt.Printf("%s: certificate until %s, network %q, groups %v\n", c.Out, t.NotAfter.UTC().Format(time.RFC3339), c.Network, t.Groups)
	return nil
}

type caOperatorCmd struct {
	CA     string `name:"ca" required:"" help:"CA directory (meshctl ca init)."`
	Name   string `required:"" help:"The operator's name (certificate CN)."`
	Days   int    `default:"90" help:"Validity in days."`
	Out    string `required:"" help:"Where to write the certificate (PEM)."`
	KeyOut string `required:"" name:"key-out" help:"Where to write the new key (PEM, 0600)."`
}

func (c *caOperatorCmd) Run() error {
	ca, err := trust.LoadCA(c.CA)
	if err != nil {
		return err
	}
	if _, err := os.Stat(c.KeyOut); err == nil {
		return fmt.Errorf("%s exists; refusing to replace a key", c.KeyOut)
	}
	key, keyPEM, err := trust.NewKey()
	if err != nil {
		return err
	}
	t := trust.Template{Operator: true}
	if err := validity(&t, c.Days, 0); err != nil {
		return err
	}
	cert, err := ca.Issue(key.Public(), c.Name, t)
	if err != nil {
		return err
	}
	if err := os.WriteFile(c.KeyOut, keyPEM, 0o600); err != nil {
		return err
	}
	if err := os.WriteFile(c.Out, cert, 0o644); err != nil {
		return err
	}
	fmt.Printf("operator %s: %s and %s, until %s\n", c.Name, c.Out, c.KeyOut, t.NotAfter.UTC().Format(time.RFC3339))
	return nil
}

func validity(t *trust.Template, days int, d time.Duration) error {
	if days < 1 && d <= 0 {
		return fmt.Errorf("--days %d: want at least 1", days)
	}
	t.NotBefore = time.Now().Add(-time.Hour)
	if d > 0 {
		t.NotAfter = time.Now().Add(d)
	} else {
		t.NotAfter = time.Now().AddDate(0, 0, days)
	}
	return nil
}

func splitList(s string) []string {
	var out []string
	for _, p := range strings.Split(s, ",") {
		if p = strings.TrimSpace(p); p != "" {
			out = append(out, p)
		}
	}
	return out
}
