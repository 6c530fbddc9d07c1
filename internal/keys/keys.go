// Package keys owns this host's WireGuard private key on disk: generated
// once, kept 0600 in the state directory, and refused when it could have
// been read by anyone else.
package keys

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"

	"golang.zx2c4.com/wireguard/wgctrl/wgtypes"

	"github.com/meshd/meshd/internal/atomicfile"
)

// FileName is the key's file name inside the state directory.
const FileName = "private.key"

// LoadOrCreate returns the private key kept in stateDir, creating it on
// first start. A key file that is group- or world-accessible, or that does
// not hold a base64 WireGuard key, is an error: meshd must not run with a
// key that may have leaked or been damaged, and must never replace one.
func LoadOrCreate(stateDir string) (wgtypes.Key, error) {
	path := filepath.Join(stateDir, FileName)
	key, err := Load(path)
	if err == nil || !errors.Is(err, fs.ErrNotExist) {
		return key, err
	}
	key, err = wgtypes.GeneratePrivateKey()
	if err != nil {
		return wgtypes.Key{}, fmt.Errorf("generate private key: %w", err)
	}
	if err := atomicfile.Write(path, []byte(key.String()+"\n"), 0o600); err != nil {
		return wgtypes.Key{}, fmt.Errorf("save private key %s: %w", path, err)
	}
	return key, nil
}

// Load reads a private key file, checking its permissions first.
func Load(path string) (wgtypes.Key, error) {
	fi, err := os.Stat(path)
	if err != nil {
		return wgtypes.Key{}, err
	}
	if perm := fi.Mode().Perm(); perm&0o077 != 0 {
		return wgtypes.Key{}, fmt.Errorf("private key %s has mode %04o: it must not be readable by group or others; fix with chmod 600 %s", path, perm, path)
	}
	data, err := os.ReadFile(path)
	if err != nil {
		return wgtypes.Key{}, err
	}
	text := strings.TrimSpace(string(data))
	if text == "" {
		return wgtypes.Key{}, fmt.Errorf("private key %s is empty; restore it from backup, or remove it to give this host a new identity", path)
	}
	key, err := wgtypes.ParseKey(text)
	if err != nil {
		return wgtypes.Key{}, fmt.Errorf("private key %s is malformed (want 32 bytes of base64, as wg genkey writes): %v", path, err)
	}
	return key, nil
}

// NextFileName holds the key a rotation is about to switch to.
const NextFileName = "private.key.next"

// SaveNext stores the key a rotation will switch to, before it is
// announced, so a crash cannot lose a key peers have heard of.
func SaveNext(stateDir string, k wgtypes.Key) error {
	return atomicfile.Write(filepath.Join(stateDir, NextFileName), []byte(k.String()+"\n"), 0o600)
}

// PromoteNext makes the next key the host's key (an atomic rename).
func PromoteNext(stateDir string) error {
	return os.Rename(filepath.Join(stateDir, NextFileName), filepath.Join(stateDir, FileName))
}

// DiscardNext drops a rotation a crash interrupted: the host keeps its
// current key and peers drop the announced one with the next record.
func DiscardNext(stateDir string) error {
	err := os.Remove(filepath.Join(stateDir, NextFileName))
	if errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	return err
}
