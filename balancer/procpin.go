package balancer

import _ "unsafe" // for go:linkname

// procPin pins the goroutine to its P and returns the P's id; procUnpin
// undoes it. The round-robin cursor uses them to give each P its own
// counter, so that concurrent picks on different cores never write the same
// cache line (grpc-go's single shared cursor costs a cache miss per pick on
// a busy multi-core client). The runtime keeps these two symbols for
// linkname users on purpose and promises not to change their signature
// (go.dev/issue/67401).
//
//go:linkname procPin runtime.procPin
func procPin() int

//go:linkname procUnpin runtime.procUnpin
func procUnpin()

// cheaprand64 is two draws of the runtime's per-thread wyrand generator
// (runtime.cheaprand, the one its scheduler uses), 63 bits, in one call:
// not cryptographic, but a few times cheaper than math/rand/v2's ChaCha8
// (which refills a block every 32 values), and P2C takes both of its
// indexes from one. Like procPin, the runtime keeps it for linkname users
// (go.dev/issue/67401).
//
//go:linkname cheaprand64 runtime.cheaprand64
func cheaprand64() int64
