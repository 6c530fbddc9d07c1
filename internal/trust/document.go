package trust

import (
	"encoding/base64"
	"encoding/json"
	"fmt"
)

// Fleet documents (policy, links, revocations) signed by an operator:
//
//	{"signed_document": {"name": "policy", "doc": "<base64 of the exact bytes>",
//	                     "sig": "<base64>", "chain": ["<base64 DER>", ...]}}
//
// The signature covers the name and the bytes, so a document signed as
// links cannot be stored as the policy.

type sealedJSON struct {
	Doc *sealedDoc `json:"signed_document"`
}

type sealedDoc struct {
	Name  string   `json:"name"`
	Doc   string   `json:"doc"`
	Sig   string   `json:"sig"`
	Chain []string `json:"chain"`
}

func docPayload(name string, doc []byte) []byte {
	return append([]byte(name+"\n"), doc...)
}

// SealDocument signs doc as the fleet document name.
func SealDocument(s *Signer, name string, doc []byte) ([]byte, error) {
	if !s.Identity().Operator {
		return nil, fmt.Errorf("sign %s: certificate %s of %s is not an operator's (no meshd:role:operator)", name, s.Identity().Serial, s.Identity().InstanceID)
	}
	sig, chain, err := s.SignDocument(docPayload(name, doc))
	if err != nil {
		return nil, err
	}
	sd := &sealedDoc{Name: name, Doc: base64.StdEncoding.EncodeToString(doc), Sig: base64.StdEncoding.EncodeToString(sig)}
	for _, c := range chain {
		sd.Chain = append(sd.Chain, base64.StdEncoding.EncodeToString(c))
	}
	return json.Marshal(sealedJSON{sd})
}

// Unseal returns the document inside a sealed one without checking it
// (hosts without trust), or data itself when it is not sealed.
func Unseal(data []byte) (doc []byte, sealed bool) {
	var s sealedJSON
	if json.Unmarshal(data, &s) != nil || s.Doc == nil {
		return data, false
	}
	doc, err := base64.StdEncoding.DecodeString(s.Doc.Doc)
	if err != nil {
		return data, false
	}
	return doc, true
}

// Reasons a document is refused, beside the certificate's own.
const (
	ReasonUnsignedDoc = "unsigned"
	ReasonDocName     = "name"
)

// OpenDocument checks a sealed document named name: an operator's
// signature under the fleet CA over exactly these bytes. An unsigned
// document is refused.
func (p *Pool) OpenDocument(name string, data []byte) ([]byte, Identity, error) {
	var s sealedJSON
	if err := json.Unmarshal(data, &s); err != nil || s.Doc == nil {
		return nil, Identity{}, refuse(ReasonUnsignedDoc, "%s is not signed by an operator", name)
	}
	if s.Doc.Name != name {
		return nil, Identity{}, refuse(ReasonDocName, "a document signed as %q stored as %q", s.Doc.Name, name)
	}
	doc, err1 := base64.StdEncoding.DecodeString(s.Doc.Doc)
	sig, err2 := base64.StdEncoding.DecodeString(s.Doc.Sig)
	var chain [][]byte
	for _, c := range s.Doc.Chain {
		der, err := base64.StdEncoding.DecodeString(c)
		if err != nil {
			err2 = err
		}
		chain = append(chain, der)
	}
	if err1 != nil || err2 != nil {
		return nil, Identity{}, refuse(ReasonCertificate, "%s: signed document is not base64", name)
	}
	id, err := p.VerifyDocument(docPayload(name, doc), sig, chain)
	if err != nil {
		return nil, id, err
	}
	return doc, id, nil
}
