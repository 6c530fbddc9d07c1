// Package e2e holds the end-to-end tests: the built meshd binary on several
// hosts of the namespace testbed, with a real ZooKeeper, checked with ping,
// wg show and the admin API, as an operator would.
package e2e
