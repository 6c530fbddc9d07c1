package keys

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestCreateThenReuse(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "state")
	k1, err := LoadOrCreate(dir)
	if err != nil {
		t.Fatal(err)
	}
	fi, err := os.Stat(filepath.Join(dir, FileName))
	if err != nil {
		t.Fatal(err)
	}
	if fi.Mode().Perm() != 0o600 {
		t.Errorf("key file mode %04o, want 0600", fi.Mode().Perm())
	}
	k2, err := LoadOrCreate(dir)
	if err != nil {
		t.Fatal(err)
	}
	if k1 != k2 {
		t.Errorf("second start made a new key")
	}
	if entries, _ := os.ReadDir(dir); len(entries) != 1 {
		t.Errorf("state dir holds %d files, want only the key", len(entries))
	}
}

func TestRefusesBadKeyFiles(t *testing.T) {
	good, _ := LoadOrCreate(t.TempDir())
	cases := []struct {
		name    string
		content string
		mode    os.FileMode
		want    string
	}{
		{"world readable", good.String(), 0o644, "mode 0644: it must not be readable by group or others"},
		{"group readable", good.String(), 0o640, "mode 0640"},
		{"empty", "", 0o600, "is empty"},
		{"not base64", "not a key at all", 0o600, "malformed"},
		{"short key", "AAAA", 0o600, "malformed"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			dir := t.TempDir()
			path := filepath.Join(dir, FileName)
			if err := os.WriteFile(path, []byte(c.content), c.mode); err != nil {
				t.Fatal(err)
			}
			os.Chmod(path, c.mode) // WriteFile's mode is filtered by umask
			_, err := LoadOrCreate(dir)
			if err == nil || !strings.Contains(err.Error(), c.want) || !strings.Contains(err.Error(), path) {
				t.Fatalf("got %v, want error naming %s and %q", err, path, c.want)
			}
			// The bad file is never replaced.
			if data, _ := os.ReadFile(path); string(data) != c.content {
				t.Errorf("bad key file was overwritten")
			}
		})
	}
}
