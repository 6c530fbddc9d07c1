package e2e

import (
	"encoding/json"
	"fmt"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/go-zookeeper/zk"

	"github.com/meshd/meshd/internal/testbed"
)

// A second ZooKeeper client with full access, as an attacker (or a careless
// operator) would have: the test binary runs itself inside the testbed's
// internet namespace, where ZooKeeper listens, and applies a list of
// operations.

const zkHelperEnv = "MESHD_E2E_ZK_OPS"

// zkOp is one operation of the helper; Get and Children fill Data/Names.
type zkOp struct {
	Op    string   `json:"op"` // create (sequential when Seq), set, get, children, delete
	Path  string   `json:"path"`
	Data  []byte   `json:"data,omitempty"`
	Seq   bool     `json:"seq,omitempty"`
	Names []string `json:"names,omitempty"`
	Err   string   `json:"err,omitempty"`
}

// TestMain turns the test binary into a helper when it runs inside a
// testbed host: a ZooKeeper client (MESHD_E2E_ZK_OPS) or the DNS flood
// generator of TestDNSUnderAbuse (MESHD_DNS_FLOOD).
func TestMain(m *testing.M) {
	if spec := os.Getenv("MESHD_DNS_FLOOD"); spec != "" {
		runFlood(spec)
		return
	}
	if ops := os.Getenv(zkHelperEnv); ops != "" {
		if err := runZKOps(ops); err != nil {
			fmt.Fprintln(os.Stderr, "zk helper:", err)
			os.Exit(1)
		}
		os.Exit(0)
	}
	os.Exit(m.Run())
}

func runZKOps(file string) error {
	data, err := os.ReadFile(file)
	if err != nil {
		return err
	}
	var ops []zkOp
	if err := json.Unmarshal(data, &ops); err != nil {
		return err
	}
	c, _, err := zk.Connect([]string{testbed.ZooKeeperIP + ":2181"}, 5*time.Second, zk.WithLogInfo(false))
	if err != nil {
		return err
	}
	defer c.Close()
	for i := range ops {
		o := &ops[i]
		switch o.Op {
		case "create":
			flags := int32(0)
			if o.Seq {
				flags = zk.FlagSequence
			}
			o.Path, err = c.Create(o.Path, o.Data, flags, zk.WorldACL(zk.PermAll))
		case "set":
			_, err = c.Set(o.Path, o.Data, -1)
		case "get":
			o.Data, _, err = c.Get(o.Path)
		case "children":
			o.Names, _, err = c.Children(o.Path)
		case "delete":
			err = c.Delete(o.Path, -1)
		default:
			err = fmt.Errorf("unknown op %q", o.Op)
		}
		if err != nil {
			o.Err = err.Error()
		}
	}
	out, _ := json.Marshal(ops)
	return os.WriteFile(file, out, 0o600)
}

// zkDo runs ops as the second client and returns them with results; an
// operation that failed fails the test.
func zkDo(t *testing.T, tb *testbed.Testbed, ops ...zkOp) []zkOp {
	t.Helper()
	f, err := os.CreateTemp(t.TempDir(), "zkops-*.json")
	if err != nil {
		t.Fatal(err)
	}
	data, _ := json.Marshal(ops)
	f.Write(data)
	f.Close()
	inet := &testbed.Host{Name: "inet", Netns: tb.Prefix + "-inet"}
	cmd := inet.Command(t.Context(), os.Args[0], "-test.run=^$")
	cmd.Env = append(os.Environ(), zkHelperEnv+"="+f.Name())
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("zk helper: %v\n%s", err, out)
	}
	data, _ = os.ReadFile(f.Name())
	var res []zkOp
	if err := json.Unmarshal(data, &res); err != nil {
		t.Fatal(err)
	}
	var errs []string
	for _, o := range res {
		if o.Err != "" {
			errs = append(errs, o.Op+" "+o.Path+": "+o.Err)
		}
	}
	if len(errs) > 0 {
		t.Fatalf("zk helper: %s", strings.Join(errs, "; "))
	}
	return res
}
