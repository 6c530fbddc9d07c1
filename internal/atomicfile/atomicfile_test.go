package atomicfile

import (
	"os"
	"path/filepath"
	"testing"
)

func TestWriteReplacesWholeFile(t *testing.T) {
	p := filepath.Join(t.TempDir(), "sub", "f")
	if err := Write(p, []byte("one"), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := Write(p, []byte("two"), 0o600); err != nil {
		t.Fatal(err)
	}
	data, _ := os.ReadFile(p)
	fi, _ := os.Stat(p)
	entries, _ := os.ReadDir(filepath.Dir(p))
	if string(data) != "two" || fi.Mode().Perm() != 0o600 || len(entries) != 1 {
		t.Errorf("content %q mode %v files %d", data, fi.Mode().Perm(), len(entries))
	}
}
