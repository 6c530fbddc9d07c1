package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/signal"
	"syscall"

	"github.com/coreos/go-systemd/v22/daemon"

	"github.com/meshd/meshd/internal/admin"
	"github.com/meshd/meshd/internal/config"
	meshd "github.com/meshd/meshd/internal/daemon"
)

type runCmd struct {
	Config string `short:"c" default:"/etc/meshd/meshd.yaml" type:"path" help:"Config file."`
}

// Run is the daemon's life: start, tell systemd it is ready, serve until
// SIGTERM/SIGINT (deregister, remove the interface), re-read the config on
// SIGHUP.
func (r *runCmd) Run() error {
	cfg, err := config.Load(r.Config)
	if err != nil {
		return err
	}
	log, level := meshd.NewLogger(os.Stderr, cfg.LogLevel)
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
	defer stop()

	d, err := meshd.Start(ctx, cfg, log, level)
	if err != nil {
		return err
	}
	defer d.Close()

	adminErr := make(chan error, 1)
	go func() { adminErr <- admin.Serve(ctx, cfg.AdminSocket, d, log) }()
	runErr := make(chan error, 1)
	go func() { runErr <- d.Run(ctx) }()
	daemon.SdNotify(false, daemon.SdNotifyReady)

	hup := make(chan os.Signal, 1)
	signal.Notify(hup, syscall.SIGHUP)
	for {
		select {
		case <-ctx.Done():
			daemon.SdNotify(false, daemon.SdNotifyStopping)
			log.Info("shutting down: deregistering and removing the interface")
			return nil
		case err := <-adminErr:
			if err != nil {
				return fmt.Errorf("admin API: %w", err)
			}
		case err := <-runErr:
			if err != nil && !errors.Is(err, context.Canceled) {
				return err
			}
			return nil
		case <-hup:
			daemon.SdNotify(false, daemon.SdNotifyReloading)
			if next, err := config.Load(r.Config); err != nil {
				log.Error("reload: config rejected; keeping the running one", "err", err)
			} else {
				d.Reload(next)
			}
			daemon.SdNotify(false, daemon.SdNotifyReady)
		}
	}
}
