package rpcclient

import (
	"net"
	"syscall"
	"unsafe"
)

// unacked returns the bytes written to nc's socket that the peer has not
// acknowledged yet (SIOCOUTQ, which is TIOCOUTQ on Linux), for a
// *net.TCPConn; ok is false for any other connection (WithDialer's: a
// TLS connection's bytes on the wire are not the bytes written to it).
func unacked(nc net.Conn) (n int64, ok bool) {
	tc, isTCP := nc.(*net.TCPConn)
	if !isTCP {
		return 0, false
	}
	rc, err := tc.SyscallConn()
	if err != nil {
		return 0, false
	}
	var q int32
	var errno syscall.Errno
	if err := rc.Control(func(fd uintptr) {
		_, _, errno = syscall.Syscall(syscall.SYS_IOCTL, fd, syscall.TIOCOUTQ, uintptr(unsafe.Pointer(&q)))
	}); err != nil || errno != 0 {
		return 0, false
	}
	return int64(q), true
}
