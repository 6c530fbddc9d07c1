package identity

import (
	"context"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/meshd/meshd/internal/config"
)

// mockBinary finds amazon-ec2-metadata-mock, installed by CI with
// go install github.com/aws/amazon-ec2-metadata-mock/cmd/ec2-metadata-mock@v1.13.0
func mockBinary(t *testing.T) string {
	if p, err := exec.LookPath("ec2-metadata-mock"); err == nil {
		return p
	}
	gopath, _ := exec.Command("go", "env", "GOPATH").Output()
	p := filepath.Join(strings.TrimSpace(string(gopath)), "bin", "ec2-metadata-mock")
	if _, err := os.Stat(p); err == nil {
		return p
	}
	t.Skip("SKIP-DEP: ec2-metadata-mock not installed (go install github.com/aws/amazon-ec2-metadata-mock/cmd/ec2-metadata-mock@v1.13.0)")
	return ""
}

// startMock runs the metadata mock on a loopback port, IMDSv2 only, with
// its values pinned by a config file.
func startMock(t *testing.T, cfgFile string) string {
	bin := mockBinary(t)
	l, _ := net.Listen("tcp", "127.0.0.1:0")
	port := l.Addr().(*net.TCPAddr).Port
	l.Close()
	cfg, _ := filepath.Abs(cfgFile)
	cmd := exec.Command(bin, "--imdsv2", "-n", "127.0.0.1", "-p", itoa(port), "-c", cfg)
	cmd.Env = append(os.Environ(), "HOME="+t.TempDir())
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cmd.Process.Kill(); cmd.Wait() })
	addr := "127.0.0.1:" + itoa(port)
	deadline := time.Now().Add(10 * time.Second)
	for {
		if c, err := net.Dial("tcp", addr); err == nil {
			c.Close()
			return "http://" + addr
		}
		if time.Now().After(deadline) {
			t.Fatal("metadata mock not listening")
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func itoa(n int) string { return strconv.Itoa(n) }

func TestEC2IdentityFromMetadata(t *testing.T) {
	ep := startMock(t, "testdata/aemm-vpc.json")
	id, err := Resolve(context.Background(), config.Identity{Source: "ec2", Groups: []string{"web"}}, Options{Endpoint: ep})
	if err != nil {
		t.Fatal(err)
	}
	want := config.Identity{Source: "ec2", InstanceID: "i-0meshd00000000001", Network: "vpc-0meshdtest",
		PrivateIP: netip.MustParseAddr("198.18.2.21"), PublicIP: netip.MustParseAddr("198.19.2.21"), Groups: []string{"web"}}
	if id.InstanceID != want.InstanceID || id.Network != want.Network || id.PrivateIP != want.PrivateIP || id.PublicIP != want.PublicIP || len(id.Groups) != 1 {
		t.Errorf("identity = %+v, want %+v", id.Identity, want)
	}
	if id.PrivateIP6 != netip.MustParseAddr("fd18:2::21") || id.PublicIP6.IsValid() {
		t.Errorf("IPv6: private %v public %v, want the interface's fd18:2::21 as private and no public", id.PrivateIP6, id.PublicIP6)
	}
	if id.Region != "us-east-1" && id.Region != "eu-west-1" {
		t.Errorf("region = %q", id.Region)
	}
	// Config values win over metadata.
	id, err = Resolve(context.Background(), config.Identity{Source: "ec2", Network: "dc-override", PublicIP: netip.MustParseAddr("198.19.9.9"),
		PrivateIP6: netip.MustParseAddr("fd18:2::99"), PublicIP6: netip.MustParseAddr("fd18:0:2::99")}, Options{Endpoint: ep})
	if err != nil || id.Network != "dc-override" || id.PublicIP.String() != "198.19.9.9" || id.InstanceID != "i-0meshd00000000001" ||
		id.PrivateIP6.String() != "fd18:2::99" || id.PublicIP6.String() != "fd18:0:2::99" {
		t.Errorf("overrides: %+v %v", id, err)
	}
}

func TestEC2ClassicWithoutPublicAddress(t *testing.T) {
	ep := startMock(t, "testdata/aemm-classic-no-public.json")
	id, err := Resolve(context.Background(), config.Identity{Source: "ec2"}, Options{Endpoint: ep})
	if err != nil {
		t.Fatal(err)
	}
	if id.Network != "classic" || id.PublicIP.IsValid() || id.PrivateIP.String() != "198.18.1.22" || id.PrivateIP6.IsValid() {
		t.Errorf("identity = %+v: want network classic and no public address", id.Identity)
	}
}

func TestOffEC2SaysWhatToDo(t *testing.T) {
	l, _ := net.Listen("tcp", "127.0.0.1:0")
	addr := l.Addr().String()
	l.Close() // nothing listens there now
	_, err := Resolve(context.Background(), config.Identity{Source: "ec2"}, Options{Endpoint: "http://" + addr, Timeout: 5 * time.Second})
	if err == nil || !strings.Contains(err.Error(), "instance metadata not reachable at http://"+addr) || !strings.Contains(err.Error(), "set identity.source: static") {
		t.Errorf("off EC2: %v", err)
	}
}

func TestStaticPassesThrough(t *testing.T) {
	in := config.Identity{Source: "static", InstanceID: "h1", Network: "vpc", PrivateIP: netip.MustParseAddr("198.18.2.11")}
	out, err := Resolve(context.Background(), in, Options{})
	if err != nil || out.InstanceID != "h1" || out.Region != "" {
		t.Errorf("static: %+v %v", out, err)
	}
}
