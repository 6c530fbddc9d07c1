// Package daemon assembles one meshd host: identity, key, registry, device,
// firewall and reconciler, in that order, and takes them down in reverse. It
// also answers the admin API from what those components report, so that
// cmd/meshd only parses flags and signals.
package daemon
