package rpcclient

import (
	"net"
	"syscall"
	"unsafe"
)

// unacked returns the bytes written to nc's socket that the peer has not
// acknowledged yet (SIOCOUTQ, which is TIOCOUTQ on Linux), for sockets that
// expose their descriptor; ok is false otherwise.
func unacked(nc net.Conn) (n int64, ok bool) {
	sc, isSys := nc.(syscall.Conn)
	if !isSys {
		return 0, false
	}
	rc, err := sc.SyscallConn()
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
