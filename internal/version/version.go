// Package version carries the build's version string, set by the Makefile
// with -ldflags "-X github.com/meshd/meshd/internal/version.Version=...".
package version

// Version is the release this binary was built from.
var Version = "0.0.0-dev"
