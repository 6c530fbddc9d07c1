// Command demo brings up the namespace testbed with ZooKeeper and one meshd
// host in each of classic, vpc and dc, shows `meshctl peers` from one of
// them and leaves it running; `demo down` removes it all. Run by `make demo`
// and `make demo-down`.
package main

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"time"

	"github.com/meshd/meshd/internal/testbed"
)

const dir = "/run/meshd-demo"

func main() {
	if len(os.Args) > 1 && os.Args[1] == "down" {
		if err := down(); err != nil {
			fmt.Fprintln(os.Stderr, "demo down:", err)
			os.Exit(1)
		}
		return
	}
	if err := up(); err != nil {
		fmt.Fprintln(os.Stderr, "demo:", err)
		os.Exit(1)
	}
}

func down() error {
	state := filepath.Join(dir, "testbed.json")
	if _, err := os.Stat(state); os.IsNotExist(err) {
		fmt.Println("no demo is running")
		return nil
	}
	if err := testbed.TeardownFile(state); err != nil {
		return err
	}
	fmt.Println("demo removed")
	return os.RemoveAll(dir)
}

func up() error {
	if _, err := os.Stat(filepath.Join(dir, "testbed.json")); err == nil {
		return fmt.Errorf("a demo is already running (state in %s); remove it first with `make demo-down`", dir)
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	bin, _ := filepath.Abs("bin")
	fmt.Println("building the testbed: networks classic, vpc, dc behind NAT gateways; ZooKeeper at 198.19.0.2;")
	fmt.Println("a fleet CA in " + dir + "/ca certifies every host (trust strict) ...")
	tb, err := testbed.New(context.Background(), testbed.Options{Dir: dir, ZooKeeper: true})
	if err != nil {
		return err
	}
	var hosts []*testbed.Meshd
	for _, n := range []string{"classic", "vpc", "dc"} {
		h, err := tb.AddHost(n)
		if err != nil {
			tb.Close()
			return err
		}
		m, err := tb.StartMeshd(h, testbed.MeshdOptions{Bin: bin, Links: [][]string{{"vpc", "dc"}}, Groups: []string{n}, LogLevel: "info",
			Trust: "strict"}) // the testbed's CA (in the demo dir) certifies each host
		if err != nil {
			tb.Close()
			return err
		}
		fmt.Printf("  %s in %-7s private %s public %s  meshd pid %d\n", h.Name, n, h.PrivateIP, h.PublicIP, m.Proc.PID())
		hosts = append(hosts, m)
	}
	// Wait until the vpc host sees both others up. Lazy peers are on by
	// default: a known peer stays idle, out of the WireGuard device, until
	// traffic, so it pings each one it lists that is not up yet.
	v := hosts[1]
	deadline := time.Now().Add(30 * time.Second)
	for time.Now().Before(deadline) {
		ps, _ := v.Peers()
		up := 0
		for _, p := range ps {
			if p.State == "up" {
				up++
			} else {
				v.Host.Run(context.Background(), "ping", "-c", "1", "-W", "1", p.OverlayIP)
			}
		}
		if up == 2 {
			break
		}
		time.Sleep(200 * time.Millisecond)
	}
	fmt.Printf("\n$ meshctl --socket %s peers    # on %s (vpc)\n", v.Socket, v.Host.Name)
	out, _ := exec.Command(filepath.Join(bin, "meshctl"), "--socket", v.Socket, "peers").CombinedOutput()
	fmt.Print(string(out))
	st, _ := hosts[0].Status()
	fmt.Printf(`
The demo keeps running. Poke around:
  ip netns exec %[1]s ping -c 3 %[2]s                  # vpc host -> classic host over the overlay
  ip netns exec %[1]s wg show %[3]s                        # the WireGuard interface: peers with recent traffic (lazy peers)
  bin/meshctl --socket %[4]s status                   # trust: ca, strict; certificate, refusals
  bin/meshctl --socket %[4]s fleet                    # which hosts sign their records
  bin/meshctl --socket %[4]s peers -o json
  less %[5]s                        # a meshd log
Remove it all with: make demo-down
`, v.Host.Netns, st.OverlayIP, v.Iface, v.Socket, v.Log)
	return nil
}
