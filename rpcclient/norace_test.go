//go:build !race

package rpcclient

// raceBuild tells tests that measure time whether the race detector slows
// this process down (see TestReconnectStorm).
const raceBuild = false
