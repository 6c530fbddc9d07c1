package main

import (
	"context"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strings"

	"github.com/meshd/meshd/internal/admin"
	"github.com/meshd/meshd/internal/trust"
)

// signFlags sign a fleet document with an operator certificate (URI SAN
// meshd:role:operator) on the operator's machine; meshd only checks.
type signFlags struct {
	SignKey  string `name:"sign-key" type:"existingfile" help:"Operator key (PEM) to sign with; required when the fleet has trust on."`
	SignCert string `name:"sign-cert" type:"existingfile" help:"Operator certificate (PEM) for --sign-key."`
}

func (f signFlags) seal(name string, doc []byte) ([]byte, error) {
	if f.SignKey == "" && f.SignCert == "" {
		what := map[string]string{"revoked": "the revocation list", "policy": "the policy", "links": "the links"}[name]
		return nil, fmt.Errorf("%s is signed by an operator: give --sign-key and --sign-cert (meshctl ca operator makes them)", what)
	}
	if f.SignKey == "" || f.SignCert == "" {
		return nil, errors.New("--sign-key and --sign-cert go together")
	}
	s, err := trust.LoadSigner(f.SignKey, f.SignCert, nil)
	if err != nil {
		return nil, err
	}
	return trust.SealDocument(s, name, doc)
}

type revokeCmd struct {
	Serials []string `arg:"" optional:"" help:"Certificate serial numbers (hex, as meshctl status and openssl x509 -serial print them); none clears the list."`
	Replace bool     `help:"Allow the new list to leave out serials the list in force revokes (they are then trusted again)."`
	signFlags
}

func (c *revokeCmd) Run(g *globals) error {
	serials := []string{}
	for _, arg := range c.Serials {
		s := normalSerial(arg)
		if _, err := hex.DecodeString(strings.Repeat("0", len(s)%2) + s); err != nil || s == "" {
			// A typo would revoke nothing while the list says it did.
			return fmt.Errorf("revoke: %q is not a certificate serial (hex, as meshctl status prints it)", arg)
		}
		serials = append(serials, s)
	}
	doc, _ := json.Marshal(map[string][]string{"serials": serials})
	sealed, err := c.seal("revoked", doc)
	if err != nil {
		return err
	}
	client := admin.Dial(g.Socket)
	if !c.Replace {
		// The list is replaced whole: a serial left out is trusted again.
		// Revoking one more host by naming it alone would bring back every
		// host revoked before, so that takes --replace.
		cur, err := client.GetRaw(context.Background(), "/v1/revoked")
		if err != nil {
			return fmt.Errorf("revoke: read the list in force: %w", err)
		}
		var inForce struct {
			Serials []string `json:"serials"`
		}
		if err := json.Unmarshal(cur, &inForce); err != nil {
			return fmt.Errorf("revoke: the list in force: %w", err)
		}
		var dropped []string
		for _, s := range inForce.Serials {
			if !slices.Contains(serials, normalSerial(s)) {
				dropped = append(dropped, s)
			}
		}
		if len(dropped) > 0 {
			return fmt.Errorf("revoke: the list in force also revokes %s, which this list would trust again: name them too (the list is replaced whole), or pass --replace", strings.Join(dropped, " "))
		}
	}
	var r map[string]string
	if err := client.Send(context.Background(), "PUT", "/v1/revoked", sealed, &r); err != nil {
		return err
	}
	fmt.Printf("revocation list stored (%d serial(s)): every meshd drops those hosts at once\n", len(serials))
	return nil
}

// normalSerial is a serial as the list holds it: upper-case hex without
// colons, whether pasted from meshctl status or openssl x509 -serial.
func normalSerial(s string) string {
	s = strings.ToUpper(strings.TrimPrefix(strings.TrimPrefix(s, "serial="), "0x"))
	return strings.ReplaceAll(s, ":", "")
}
