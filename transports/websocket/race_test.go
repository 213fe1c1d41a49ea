//go:build race

package websocket

// raceEnabled is true when the tests run under the race detector.
const raceEnabled = true
