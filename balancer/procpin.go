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

// cheaprand is the runtime's per-thread wyrand generator, the one its
// scheduler draws from: not cryptographic, but a few times cheaper than
// math/rand/v2's ChaCha8 (which refills a block every 32 values), and P2C
// draws two per pick. Like procPin, the runtime keeps it for linkname users
// (go.dev/issue/67401).
//
//go:linkname cheaprand runtime.cheaprand
func cheaprand() uint32

// cheaprand64 is two cheaprand draws, 63 bits, in one call: P2C takes both
// of its indexes from one.
//
//go:linkname cheaprand64 runtime.cheaprand64
func cheaprand64() int64
