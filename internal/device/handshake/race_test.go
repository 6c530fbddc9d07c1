//go:build race

package handshake

// raceEnabled: sync.Pool drops items at random under the race detector.
const raceEnabled = true
