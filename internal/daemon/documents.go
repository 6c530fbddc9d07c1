package daemon

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"path"
	"time"

	"github.com/meshd/meshd/internal/admin"
	"github.com/meshd/meshd/internal/trust"
	"github.com/meshd/meshd/registry"
)

// Fleet documents (policy, links, revocations) with trust on must be
// signed by an operator; anything else in ZooKeeper is ignored, counted,
// named, and the last good document stays.

// errKeep says: nothing to apply, keep what is in force.
var errKeep = errors.New("keep the last good document")

// openDocument returns the document to apply from a registry document's
// bytes. Without trust a sealed document is unwrapped unchecked. With
// trust, an unsigned, wrongly signed or deleted document is refused
// (errKeep after counting it) once a good one was seen; before any, a
// missing document means the default.
func (d *Daemon) openDocument(name string, data []byte) ([]byte, error) {
	if d.tr() == nil {
		doc, _ := trust.Unseal(data)
		return doc, nil
	}
	d.mu.Lock()
	hadGood := d.docGood[name]
	d.mu.Unlock()
	if len(data) == 0 {
		if !hadGood {
			return nil, nil
		}
		d.refuseDocument(name, "deleted", fmt.Errorf("%s deleted from ZooKeeper; only an operator-signed document replaces it", name))
		return nil, errKeep
	}
	doc, who, err := d.tr().pool.OpenDocument(name, data)
	if err != nil {
		reason := "signature"
		var r *trust.Refusal
		if errors.As(err, &r) {
			reason = r.Reason
		}
		d.refuseDocument(name, reason, err)
		return nil, errKeep
	}
	d.mu.Lock()
	d.docGood[name] = true
	d.mu.Unlock()
	d.log.Info("signed document accepted", "document", name, "operator", who.InstanceID, "cert", who.Serial)
	return doc, nil
}

func (d *Daemon) refuseDocument(name, reason string, err error) {
	d.mu.Lock()
	d.docRefused[reason]++
	d.docRefusals = append(d.docRefusals, admin.Refusal{At: time.Now().UTC().Format(time.RFC3339),
		Node: path.Join("/meshd", d.cfg.Mesh, name), Reason: reason, Detail: err.Error()})
	if n := len(d.docRefusals); n > 16 {
		d.docRefusals = d.docRefusals[n-16:]
	}
	d.mu.Unlock()
	d.log.Warn("fleet document refused; keeping the last good one", "document", name, "reason", reason, "err", err)
}

// storeDocument stores what an operator sent: with trust it must be sealed
// by an operator the fleet CA vouches for; doc is the content inside.
func (d *Daemon) storeDocument(name string, sent []byte) (doc []byte, err error) {
	inner, sealed := trust.Unseal(sent)
	if d.tr() != nil {
		if !sealed {
			return nil, badInput(fmt.Errorf("trust is on: sign the %s with --sign-key KEY --sign-cert CERT (an operator certificate)", name))
		}
		if _, _, err := d.tr().pool.OpenDocument(name, sent); err != nil {
			return nil, badInput(fmt.Errorf("%s: %w", name, err))
		}
	}
	return inner, nil
}

// SetRevoked stores an operator-signed revocation list.
func (d *Daemon) SetRevoked(ctx context.Context, sealed []byte) error {
	if d.tr() == nil {
		return badInput(errors.New("trust is off on this host (no trust.ca_file): there are no certificates to revoke"))
	}
	doc, err := d.storeDocument(registry.DocRevoked, sealed)
	if err != nil {
		return err
	}
	if _, err := parseRevoked(doc); err != nil {
		return badInput(err)
	}
	return d.reg.SetDocument(registry.DocRevoked, sealed)
}

// Revoked is the revocation document as stored ("" when none).
func (d *Daemon) Revoked(ctx context.Context) ([]byte, error) {
	data, err := d.reg.Document(registry.DocRevoked)
	doc, _ := trust.Unseal(data)
	return doc, err
}

// RevokedList is the revocation document's content.
type RevokedList struct {
	Serials []string `json:"serials"`
}

func parseRevoked(doc []byte) (RevokedList, error) {
	var l RevokedList
	if err := json.Unmarshal(doc, &l); err != nil {
		return l, fmt.Errorf("revocation list: want {\"serials\": [...]}: %v", err)
	}
	return l, nil
}

// onRevoked applies a signed revocation list: revoked hosts leave at once.
func (d *Daemon) onRevoked(data []byte) {
	if d.tr() == nil {
		return
	}
	doc, err := d.openDocument(registry.DocRevoked, data)
	if err != nil || doc == nil {
		return
	}
	l, err := parseRevoked(doc)
	if err != nil {
		d.refuseDocument(registry.DocRevoked, "decode", err)
		return
	}
	d.tr().pool.SetRevoked(l.Serials)
	if gone := d.reg.DropRevoked(d.tr().pool.Revoked); len(gone) > 0 {
		d.log.Warn("hosts removed: certificate revoked", "hosts", gone)
	}
	if d.tr().pool.Revoked(d.tr().signer.Identity().Serial) {
		d.log.Error("this host's own certificate is revoked: peers refuse its record until it has a new one")
	}
}
