package daemon

import (
	"context"
	"fmt"
	"math/rand/v2"
	"time"

	"golang.zx2c4.com/wireguard/wgctrl/wgtypes"

	"github.com/meshd/meshd/internal/keys"
)

// announceGrace is how long a next key is published before it takes
// effect: long enough for every peer's watch (milliseconds) to add it.
const announceGrace = 1500 * time.Millisecond

// RotateKey replaces this host's WireGuard key without dropping flows:
// the next key is saved, published in the record (peers add it without
// traffic), switched to on the device, made the host's key on disk, and
// published as the key; peers move the overlay address to it in one delta.
func (d *Daemon) RotateKey(ctx context.Context) (string, error) {
	d.rotateMu.Lock()
	defer d.rotateMu.Unlock()
	next, err := wgtypes.GeneratePrivateKey()
	if err != nil {
		return "", err
	}
	if err := keys.SaveNext(d.cfg.StateDir, next); err != nil {
		return "", fmt.Errorf("rotate key: save next key: %w", err)
	}
	pub := next.PublicKey()
	d.mu.Lock()
	self := d.self
	self.NextPublicKey = &pub
	d.mu.Unlock()
	d.reg.UpdateSelf(self)
	select {
	case <-ctx.Done():
		keys.DiscardNext(d.cfg.StateDir)
		return "", ctx.Err()
	case <-time.After(announceGrace):
	}
	if err := d.dev.SetPrivateKey(next); err != nil {
		return "", err
	}
	if err := keys.PromoteNext(d.cfg.StateDir); err != nil {
		return "", fmt.Errorf("rotate key: the device uses the new key but it could not be saved: %w", err)
	}
	d.mu.Lock()
	d.self.PublicKey, d.self.NextPublicKey = pub, nil
	self = d.self
	d.mu.Unlock()
	d.reg.UpdateSelf(self)
	d.rec.HandshakeAll()
	d.log.Info("key rotated", "public_key", pub)
	return pub.String(), nil
}

// rotateOnSchedule rotates every tuning.key_rotation, with up to 10%
// jitter so a fleet started together does not rotate together.
func (d *Daemon) rotateOnSchedule(ctx context.Context, every time.Duration) {
	for {
		wait := every + time.Duration(rand.Int64N(int64(every/10)+1))
		select {
		case <-ctx.Done():
			return
		case <-time.After(wait):
		}
		if _, err := d.RotateKey(ctx); err != nil {
			d.log.Error("scheduled key rotation", "err", err)
		}
	}
}
