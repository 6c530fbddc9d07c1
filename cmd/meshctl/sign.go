package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
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
	signFlags
}

func (c *revokeCmd) Run(g *globals) error {
	serials := []string{}
	for _, s := range c.Serials {
		s = strings.ToUpper(strings.TrimPrefix(strings.TrimPrefix(s, "serial="), "0x"))
		serials = append(serials, strings.ReplaceAll(s, ":", ""))
	}
	doc, _ := json.Marshal(map[string][]string{"serials": serials})
	sealed, err := c.seal("revoked", doc)
	if err != nil {
		return err
	}
	var r map[string]string
	if err := admin.Dial(g.Socket).Send(context.Background(), "PUT", "/v1/revoked", sealed, &r); err != nil {
		return err
	}
	fmt.Printf("revocation list stored (%d serial(s)): every meshd drops those hosts at once\n", len(serials))
	return nil
}
