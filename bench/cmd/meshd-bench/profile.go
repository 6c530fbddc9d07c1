package main

import (
	"bufio"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/meshd/meshd/internal/admin"
	"github.com/meshd/meshd/internal/testbed"
)

// saveProfiles fetches a CPU profile (secs long) and a heap profile from a
// running meshd's admin socket into dir, named after what was measured.
func saveProfiles(m *testbed.Meshd, dir, name string, secs int) error {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	c := adminClient(m, time.Duration(secs+30)*time.Second)
	for _, p := range []struct{ file, path string }{
		{name + ".cpu.pprof", fmt.Sprintf("/debug/pprof/profile?seconds=%d", secs)},
		{name + ".heap.pprof", "/debug/pprof/heap?gc=1"},
		// The same heap in words, whose tail is the runtime's MemStats:
		// where resident memory goes beside the live heap (stacks, GC
		// metadata, freed spans not yet returned to the system).
		{name + ".heap.txt", "/debug/pprof/heap?debug=1"},
	} {
		resp, err := c.Get("http://meshd" + p.path)
		if err != nil {
			return fmt.Errorf("profile %s: %w", p.path, err)
		}
		data, err := io.ReadAll(resp.Body)
		resp.Body.Close()
		if err != nil || resp.StatusCode != 200 {
			return fmt.Errorf("profile %s: status %d %v", p.path, resp.StatusCode, err)
		}
		if err := os.WriteFile(filepath.Join(dir, p.file), data, 0o644); err != nil {
			return err
		}
	}
	// The kernel's side of the same moment: anonymous against file-backed
	// resident memory (the binary's text counts in VmRSS too).
	for _, f := range []string{"status", "smaps_rollup"} {
		data, err := os.ReadFile(fmt.Sprintf("/proc/%d/%s", m.Proc.PID(), f))
		if err != nil {
			return err
		}
		if err := os.WriteFile(filepath.Join(dir, name+"."+f), data, 0o644); err != nil {
			return err
		}
	}
	fmt.Fprintf(os.Stderr, "profiles of %s in %s (go tool pprof bin/meshd %s/%s.cpu.pprof)\n", name, dir, dir, name)
	return nil
}

func adminClient(m *testbed.Meshd, timeout time.Duration) *http.Client {
	return &http.Client{Transport: admin.UnixTransport(m.Socket), Timeout: timeout}
}

// heapInuse is the Go heap a running meshd holds after a collection, in
// bytes: unlike its resident size it falls when memory is freed.
func heapInuse(m *testbed.Meshd) (int, error) {
	resp, err := adminClient(m, 30*time.Second).Get("http://meshd/debug/pprof/heap?gc=1&debug=1")
	if err != nil {
		return 0, err
	}
	defer resp.Body.Close()
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for sc.Scan() {
		if v, ok := strings.CutPrefix(sc.Text(), "# HeapInuse = "); ok {
			return strconv.Atoi(v)
		}
	}
	return 0, fmt.Errorf("no HeapInuse in meshd's heap profile: %v", sc.Err())
}
