package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// container is a Debian rootfs booted with systemd as PID 1 under
// systemd-nspawn, inside a testbed namespace. Its root is an overlay on
// the cached rootfs, so every run starts from the same clean tree and the
// cache is never written.
type container struct {
	root   string // the overlay's merged tree, the container's /
	work   string // upper and work dirs of the overlay
	nspawn *exec.Cmd
	exited chan struct{}
	leader int // the container's PID 1, as the host sees it
	log    string
}

// boot mounts the overlay and starts nspawn with the given network
// namespace; it returns once systemd inside has finished booting.
func boot(ctx context.Context, rootfs, scratch, netnsPath string) (*container, error) {
	c := &container{work: scratch, root: filepath.Join(scratch, "merged"), log: filepath.Join(scratch, "nspawn.log"), exited: make(chan struct{})}
	for _, d := range []string{"upper", "ovl-work", "merged"} {
		if err := os.MkdirAll(filepath.Join(scratch, d), 0o755); err != nil {
			return nil, err
		}
	}
	opts := fmt.Sprintf("lowerdir=%s,upperdir=%s,workdir=%s", rootfs, filepath.Join(scratch, "upper"), filepath.Join(scratch, "ovl-work"))
	if out, err := exec.Command("mount", "-t", "overlay", "overlay", "-o", opts, c.root).CombinedOutput(); err != nil {
		return nil, fmt.Errorf("overlay on %s: %v: %s", rootfs, err, out)
	}
	logf, err := os.Create(c.log)
	if err != nil {
		c.unmount()
		return nil, err
	}
	defer logf.Close()
	// The command line: no machined to register with, no systemd on
	// this machine to give the container its own scope, /dev/net/tun for
	// meshd's device, and the testbed host's network namespace as its own.
	// nspawn keeps CAP_NET_ADMIN only with --private-network, which cannot
	// be combined with a namespace path; without it even a unit with no
	// hardening at all gets EPERM from TUNSETIFF, where a host's systemd
	// has the capability to hand meshd.
	c.nspawn = exec.Command("systemd-nspawn", "-D", c.root, "-b", "--register=no", "--keep-unit",
		"--bind=/dev/net/tun", "--network-namespace-path="+netnsPath, "--capability=CAP_NET_ADMIN", "--console=pipe")
	c.nspawn.Stdout, c.nspawn.Stderr = logf, logf
	c.nspawn.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := c.nspawn.Start(); err != nil {
		c.unmount()
		return nil, fmt.Errorf("systemd-nspawn: %w", err)
	}
	go func() { c.nspawn.Wait(); close(c.exited) }()
	deadline := time.Now().Add(3 * time.Minute)
	for c.leader == 0 {
		c.leader = findInit(c.nspawn.Process.Pid)
		if c.leader != 0 {
			break
		}
		if err := c.waitTick(deadline, "PID 1"); err != nil {
			return c, err
		}
	}
	for {
		// "degraded" is a booted system with a failed unit; which one is
		// printed, and meshd's own unit is judged on its own later.
		out, _ := c.run(ctx, "systemctl", "is-system-running")
		state := strings.TrimSpace(out)
		if state == "running" || state == "degraded" {
			if state == "degraded" {
				failed, _ := c.run(ctx, "systemctl", "--failed", "--no-legend", "--plain")
				fmt.Fprintf(os.Stderr, "boottest: container booted degraded; failed units:\n%s", failed)
			}
			return c, nil
		}
		if err := c.waitTick(deadline, "boot (systemctl is-system-running: "+state+")"); err != nil {
			return c, err
		}
	}
}

func (c *container) waitTick(deadline time.Time, what string) error {
	select {
	case <-c.exited:
		return fmt.Errorf("systemd-nspawn exited while waiting for %s:\n%s", what, tail(c.log, 30))
	case <-time.After(200 * time.Millisecond):
	}
	if time.Now().After(deadline) {
		return fmt.Errorf("container: no %s after 3 min:\n%s", what, tail(c.log, 30))
	}
	return nil
}

// findInit finds the container's PID 1: the systemd whose ancestor is
// nspawn (nspawn forks once or twice before exec'ing it).
func findInit(nspawn int) int {
	ents, _ := os.ReadDir("/proc")
	for _, e := range ents {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		comm, _ := os.ReadFile(fmt.Sprintf("/proc/%d/comm", pid))
		if strings.TrimSpace(string(comm)) != "systemd" {
			continue
		}
		for p, hops := parent(pid), 0; p > 1 && hops < 4; p, hops = parent(p), hops+1 {
			if p == nspawn {
				return pid
			}
		}
	}
	return 0
}

func parent(pid int) int {
	data, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0
	}
	// pid (comm) state ppid ...: comm may hold spaces, so split after ")".
	s := string(data)
	f := strings.Fields(s[strings.LastIndexByte(s, ')')+1:])
	if len(f) < 2 {
		return 0
	}
	ppid, _ := strconv.Atoi(f[1])
	return ppid
}

// command runs name inside the container: all of PID 1's namespaces, its
// root, a clean root environment.
func (c *container) command(ctx context.Context, name string, args ...string) *exec.Cmd {
	a := append([]string{"-t", strconv.Itoa(c.leader), "-m", "-u", "-i", "-n", "-p", "-C", "-r", "-w", "--",
		"env", "-i", "PATH=/usr/sbin:/usr/bin:/sbin:/bin", "HOME=/root", "LANG=C.UTF-8", "DEBIAN_FRONTEND=noninteractive", "SYSTEMD_PAGER=", "SYSTEMD_COLORS=0",
		name}, args...)
	return exec.CommandContext(ctx, "nsenter", a...)
}

// run runs a command inside; the error names it and carries its output.
func (c *container) run(ctx context.Context, name string, args ...string) (string, error) {
	ctx, cancel := context.WithTimeout(ctx, 3*time.Minute)
	defer cancel()
	out, err := c.command(ctx, name, args...).CombinedOutput()
	if err != nil {
		return string(out), fmt.Errorf("in the container: %s %s: %v: %s", name, strings.Join(args, " "), err, strings.TrimSpace(string(out)))
	}
	return string(out), nil
}

// copyIn puts a host file into the container's tree.
func (c *container) copyIn(src, dst string) error {
	data, err := os.ReadFile(src)
	if err != nil {
		return err
	}
	return os.WriteFile(filepath.Join(c.root, dst), data, 0o644)
}

// shutdown powers the container off (nspawn turns SIGTERM into an orderly
// poweroff of PID 1), kills it if that takes too long, and unmounts.
func (c *container) shutdown() error {
	if c.nspawn != nil && c.nspawn.Process != nil {
		c.nspawn.Process.Signal(syscall.SIGTERM)
		select {
		case <-c.exited:
		case <-time.After(60 * time.Second):
			syscall.Kill(-c.nspawn.Process.Pid, syscall.SIGKILL)
			<-c.exited
		}
	}
	return c.unmount()
}

func (c *container) unmount() error {
	var errs []error
	if out, err := exec.Command("umount", c.root).CombinedOutput(); err != nil {
		errs = append(errs, fmt.Errorf("umount %s: %v: %s", c.root, err, out))
	}
	errs = append(errs, os.RemoveAll(c.work))
	return errors.Join(errs...)
}

func tail(path string, n int) string {
	data, _ := os.ReadFile(path)
	lines := strings.Split(strings.TrimRight(string(data), "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}
