package daemon

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"time"

	"golang.zx2c4.com/wireguard/wgctrl/wgtypes"

	"github.com/meshd/meshd/internal/keys"
	"github.com/meshd/meshd/registry"
)

const (
	// confirmWait bounds the wait for the registry to show a record this
	// host published. A healthy ensemble takes milliseconds; the whole
	// rotation must fit the admin client's 10 s.
	confirmWait = 3 * time.Second
	// announceGrace is how long a confirmed next key is published before it
	// takes effect: peers watch the same records and add it within
	// milliseconds of the registry having it.
	announceGrace = 500 * time.Millisecond
	// retryRotation is how soon a scheduled rotation that failed (registry
	// unreachable) is tried again.
	retryRotation = time.Minute
)

// ErrNotAnnounced refuses a rotation: peers learn the new key only from the
// registry, so switching to it before they can would cut this host off.
var ErrNotAnnounced = errors.New("peers could not learn the new key from the registry, so the key was not changed; retry when `meshctl status` shows registry connected")

// RotateKey replaces this host's WireGuard key without dropping flows:
// the next key is saved, published in the record (peers add it without
// traffic), switched to on the device once the registry shows the record,
// published as the key, and made the host's key on disk once the registry
// shows that record too; peers move the overlay address to it in one delta.
//
// It refuses to start while the registry is not connected, and rolls back
// (the old key stays, on the device and on disk) when the registry does not
// confirm a step in time: a key peers never saw would cut this host off.
func (d *Daemon) RotateKey(ctx context.Context) (string, error) {
	d.rotateMu.Lock()
	defer d.rotateMu.Unlock()
	if st, _ := d.reg.State(); st != registry.Connected {
		return "", fmt.Errorf("rotate key: registry %s: %w", st, ErrNotAnnounced)
	}
	next, err := wgtypes.GeneratePrivateKey()
	if err != nil {
		return "", err
	}
	if err := keys.SaveNext(d.cfg.StateDir, next); err != nil {
		return "", fmt.Errorf("rotate key: save next key: %w", err)
	}
	pub := next.PublicKey()
	d.mu.Lock()
	old := d.self
	d.mu.Unlock()
	announced := old
	announced.NextPublicKey = &pub
	abandon := func(why error) (string, error) {
		d.mu.Lock()
		d.self = old
		d.mu.Unlock()
		d.reg.UpdateSelf(old) // withdraw the announcement when the registry is back
		if err := keys.DiscardNext(d.cfg.StateDir); err != nil {
			d.log.Error("rotate key: discard the next key", "err", err)
		}
		return "", why
	}
	d.reg.UpdateSelf(announced)
	if err := d.awaitRecord(ctx, announced); err != nil {
		return abandon(fmt.Errorf("rotate key: announce next key %s: %w", pub, err))
	}
	select {
	case <-ctx.Done():
		return abandon(ctx.Err())
	case <-time.After(announceGrace):
	}
	oldKey := d.dev.PrivateKey()
	if err := d.setDeviceKey(next); err != nil {
		return abandon(err)
	}
	rotated := old
	rotated.PublicKey, rotated.NextPublicKey = pub, nil
	d.mu.Lock()
	d.self = rotated
	d.mu.Unlock()
	d.reg.UpdateSelf(rotated)
	if err := d.awaitRecord(ctx, rotated); err != nil {
		// Peers never learnt that the new key is the key: back to the old
		// one, which they still route to.
		if err2 := d.setDeviceKey(oldKey); err2 != nil {
			d.log.Error("rotate key: restore the old key on the device", "err", err2)
		}
		d.rec.HandshakeAll()
		return abandon(fmt.Errorf("rotate key: publish new key %s: %w; the old key is back", pub, err))
	}
	if err := keys.PromoteNext(d.cfg.StateDir); err != nil {
		return "", fmt.Errorf("rotate key: the device uses the new key but it could not be saved: %w", err)
	}
	d.rec.HandshakeAll()
	d.log.Info("key rotated", "public_key", pub)
	return pub.String(), nil
}

// awaitRecord waits until the registry's view, which the watch reads back
// from ZooKeeper as peers' watches do, holds want as this host's record.
func (d *Daemon) awaitRecord(ctx context.Context, want registry.Host) error {
	ctx, cancel := context.WithTimeout(ctx, confirmWait)
	defer cancel()
	for {
		st, _ := d.reg.State()
		if st != registry.Connected {
			return fmt.Errorf("registry %s: %w", st, ErrNotAnnounced)
		}
		for _, h := range d.reg.Hosts() {
			if h.InstanceID == want.InstanceID && h.PublicKey == want.PublicKey && sameKey(h.NextPublicKey, want.NextPublicKey) {
				return nil
			}
		}
		select {
		case <-ctx.Done():
			if errors.Is(ctx.Err(), context.DeadlineExceeded) {
				return fmt.Errorf("the registry did not show the record within %s: %w", confirmWait, ErrNotAnnounced)
			}
			return ctx.Err()
		case <-time.After(20 * time.Millisecond):
		}
	}
}

func sameKey(a, b *wgtypes.Key) bool {
	if a == nil || b == nil {
		return a == b
	}
	return *a == *b
}

// rotateOnSchedule rotates every tuning.key_rotation, with up to 10%
// jitter so a fleet started together does not rotate together. A rotation
// the registry cannot confirm is deferred, not skipped: tried again every
// retryRotation until it succeeds.
func (d *Daemon) rotateOnSchedule(ctx context.Context, every time.Duration) {
	wait := every + time.Duration(rand.Int64N(int64(every/10)+1))
	for {
		select {
		case <-ctx.Done():
			return
		case <-time.After(wait):
		}
		wait = every + time.Duration(rand.Int64N(int64(every/10)+1))
		if _, err := d.RotateKey(ctx); err != nil {
			d.log.Error("scheduled key rotation deferred", "retry_in", min(retryRotation, every), "err", err)
			wait = min(retryRotation, every)
		}
	}
}

// setDeviceKey changes the device's private key, and the key lazy peers'
// identifier opens initiations with: initiations are addressed to the
// device's key.
func (d *Daemon) setDeviceKey(k wgtypes.Key) error {
	if err := d.dev.SetPrivateKey(k); err != nil {
		return err
	}
	if d.ident != nil {
		d.ident.SetPrivateKey(k)
	}
	return nil
}
