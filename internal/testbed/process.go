package testbed

import (
	"fmt"
	"os"
	"os/exec"
	"syscall"
	"time"
)

// Process is a command the testbed started inside a host.
type Process struct {
	cmd    *exec.Cmd
	exited chan struct{}
	err    error
}

// StartProcess runs name in h's namespace with output to logfile, tracked
// for teardown by PID (its own process group).
func (tb *Testbed) StartProcess(h *Host, logfile, name string, args ...string) (*Process, error) {
	return tb.startProcess(h, nil, logfile, name, args...)
}

// startProcess is StartProcess with env added to the testbed's environment.
func (tb *Testbed) startProcess(h *Host, env []string, logfile, name string, args ...string) (*Process, error) {
	log, err := os.OpenFile(logfile, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return nil, err
	}
	defer log.Close()
	cmd := exec.Command("ip", append([]string{"netns", "exec", h.Netns, name}, args...)...)
	cmd.Stdout, cmd.Stderr = log, log
	if len(env) > 0 {
		cmd.Env = append(os.Environ(), env...)
	}
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("start %s in %s: %w", name, h.Name, err)
	}
	p := &Process{cmd: cmd, exited: make(chan struct{})}
	go func() { p.err = cmd.Wait(); close(p.exited) }()
	tb.mu.Lock()
	tb.procs = append(tb.procs, p)
	tb.mu.Unlock()
	tb.trackPID(cmd.Process.Pid)
	return p, nil
}

// PID is the process id.
func (p *Process) PID() int { return p.cmd.Process.Pid }

// Exited is closed when the process has exited.
func (p *Process) Exited() <-chan struct{} { return p.exited }

// Err is the exit status, once exited.
func (p *Process) Err() error { return p.err }

// Stop sends SIGTERM and waits up to limit, then SIGKILL. It reports
// whether the process ended on SIGTERM.
func (p *Process) Stop(limit time.Duration) bool {
	select {
	case <-p.exited:
		return true
	default:
	}
	syscall.Kill(p.cmd.Process.Pid, syscall.SIGTERM)
	select {
	case <-p.exited:
		return true
	case <-time.After(limit):
		p.Kill()
		return false
	}
}

// Kill ends the process group at once, as a crash would.
func (p *Process) Kill() {
	syscall.Kill(-p.cmd.Process.Pid, syscall.SIGKILL)
	<-p.exited
}
