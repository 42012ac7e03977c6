package rpcclient

import (
	"bufio"
	"bytes"
	"context"
	"encoding/gob"
	"errors"
	"net/rpc"
	"runtime"
	"testing"
	"time"
)

// A slice header in a reply claims a billion elements in a message of a few
// bytes, far under the cap. gob sizes the slice from the count before it
// finds the message too short for it, up to its own 10 MiB: the cap does
// not bound that allocation, and the README's advice (slices, not maps, for
// replies from peers you do not trust) says so, with the figure checked here.
func TestGobSliceLengthClaimAllocation(t *testing.T) {
	const msgCap = 64 << 10
	addr := hostileServer(t, func(w *bufio.Writer, seq uint64) {
		var buf bytes.Buffer
		enc := gob.NewEncoder(&buf)
		if enc.Encode(rpc.Response{Seq: seq}) != nil {
			return
		}
		w.Write(buf.Bytes())
		buf.Reset()
		if enc.Encode([]string{"x"}) != nil {
			return
		}
		msgs := gobMessages(t, buf.Bytes())
		w.Write(buf.Bytes()[:len(buf.Bytes())-len(msgs[1])-1]) // the slice type's definition
		val := msgs[1][:gobUintLen(msgs[1])]                   // the slice type's id
		val = append(append([]byte{}, val...), 0)              // singleton
		val = gobUint(val, 1<<28)                              // 268 million strings (4 GiB of headers), none sent
		w.Write(gobUint(nil, uint64(len(val))))
		w.Write(val)
		w.Flush()
	})
	c, _ := newTestClient(t, []string{addr}, WithMaxMessageSize(msgCap), WithHeartbeat(0, 0), withoutNodeHealth())
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	var r []string
	var before, after runtime.MemStats
	runtime.ReadMemStats(&before)
	err := c.Call(ctx, "Arith.List", Pair{}, &r)
	runtime.ReadMemStats(&after)
	grew := after.TotalAlloc - before.TotalAlloc
	t.Logf("call: %v; %d KiB allocated for a %d-byte claim with a %d KiB cap", err, grew>>10, 8, msgCap>>10)
	if !errors.Is(err, ErrCodec) {
		t.Errorf("call: %v; want ErrCodec", err)
	}
	// The figure the README gives: gob's own 10 MiB, besides the cap.
	if grew > 10<<20+msgCap+1<<20 {
		t.Errorf("%d KiB allocated for a message under the %d KiB cap; want at most 10 MiB + the cap + 1 MiB", grew>>10, msgCap>>10)
	}
}
