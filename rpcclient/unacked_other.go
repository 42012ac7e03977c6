//go:build !linux

package rpcclient

import "net"

// unacked is not known on this platform: see the Linux version.
func unacked(net.Conn) (int64, bool) { return 0, false }
