// Package scripts holds the test of scripts/gotest.sh, the wrapper that
// make test, make faults and .ci/run run go test through: it must never turn
// a red run green.
package scripts

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// runWrapper writes a throwaway module with the given test file and runs
// gotest.sh on it, returning its output and exit status.
func runWrapper(t *testing.T, testFile string, env ...string) (string, int) {
	t.Helper()
	dir := t.TempDir()
	write := func(name, body string) {
		if err := os.WriteFile(filepath.Join(dir, name), []byte(body), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	write("go.mod", "module throwaway\n\ngo 1.22\n")
	write("x_test.go", testFile)
	wrapper, err := filepath.Abs("gotest.sh")
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command("bash", wrapper, "-count=1", "./...")
	cmd.Dir = dir
	cmd.Env = append(os.Environ(), env...)
	out, err := cmd.CombinedOutput()
	code := 0
	if ee, ok := err.(*exec.ExitError); ok {
		code = ee.ExitCode()
	} else if err != nil {
		t.Fatal(err)
	}
	return string(out), code
}

// lastLine is the wrapper's closing line, the one CI reads.
func lastLine(out string) string {
	lines := strings.Split(strings.TrimRight(out, "\n"), "\n")
	return lines[len(lines)-1]
}

func TestWrapperKeepsVerdict(t *testing.T) {
	cases := []struct {
		name     string
		src      string
		env      []string
		wantCode bool // true: non-zero exit wanted
		closing  string
		mention  string // a name the output must show
	}{
		{
			name: "one failing one passing",
			src: `package x
import "testing"
func TestPasses(t *testing.T) {}
func TestBreaks(t *testing.T) { t.Fatal("x") }
`,
			wantCode: true, closing: "1 passed, 1 failed, 0 skipped", mention: "TestBreaks",
		},
		{
			name: "panic",
			src: `package x
import "testing"
func TestPanics(t *testing.T) { panic("boom") }
`,
			wantCode: true, closing: "0 passed, 1 failed, 0 skipped", mention: "TestPanics",
		},
		{
			name: "build error",
			src: `package x
import "testing"
func TestX(t *testing.T) { undefinedThing() }
`,
			wantCode: true, closing: "0 passed, 1 failed, 0 skipped", mention: "throwaway",
		},
		{
			name: "timeout",
			src: `package x
import ("testing"; "time")
func TestHangs(t *testing.T) { time.Sleep(time.Minute) }
`,
			env:      []string{"GOFLAGS=-timeout=2s"},
			wantCode: true, closing: "0 passed, 1 failed, 0 skipped", mention: "TestHangs",
		},
		{
			name: "integration skipped where required",
			src: `package x
import "testing"
func TestNeedsRoot(t *testing.T) { t.Skip("SKIP-ROOT: needs root") }
`,
			env:      []string{"MESHD_REQUIRE_INTEGRATION=1"},
			wantCode: true, closing: "0 passed, 0 failed, 1 skipped", mention: "SKIP-ROOT",
		},
		{
			name: "all pass",
			src: `package x
import "testing"
func TestA(t *testing.T) {}
func TestB(t *testing.T) { t.Skip("not here") }
`,
			wantCode: false, closing: "1 passed, 0 failed, 1 skipped",
		},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			out, code := runWrapper(t, c.src, c.env...)
			if (code != 0) != c.wantCode {
				t.Errorf("exit status %d, want non-zero: %v\n%s", code, c.wantCode, out)
			}
			if got := lastLine(out); got != c.closing {
				t.Errorf("closing line %q, want %q\n%s", got, c.closing, out)
			}
			if c.mention != "" && !strings.Contains(out, c.mention) {
				t.Errorf("output does not name %q\n%s", c.mention, out)
			}
		})
	}
}
