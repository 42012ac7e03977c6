package rpcclient

import (
	"bytes"
	"context"
	"net/rpc"
	"testing"
)

type bufRWC struct{ bytes.Buffer }

func (*bufRWC) Close() error { return nil }

// A request that fits the write buffer exactly (4096 bytes with its header)
// is written whole by its one write, bufio's Flush: errEncodedCancelled's
// doc and Write's comment say such a request "is sent whole, as before",
// only one that outgrew the buffer is refused. The test len(p) >= bufSize
// refused it, and its connection was retired.
func TestCancelledRequestOfExactlyTheBufferSizeIsSent(t *testing.T) {
	size := func(k int, ctx context.Context) (int, error) {
		var b bufRWC
		c := newCodec(&b, 1<<20)
		_, err := c.write(ctx, &rpc.Request{ServiceMethod: "S.M", Seq: 1}, make([]byte, k))
		return b.Len(), err
	}
	k := -1
	for i := 3900; i < 4096; i++ {
		if n, _ := size(i, context.Background()); n == 4096 {
			k = i
			break
		}
	}
	if k < 0 {
		t.Skip("no args size makes a request of exactly 4096 bytes")
	}
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	n, err := size(k, ctx)
	if err != nil || n != 4096 {
		t.Fatalf("a cancelled request of exactly 4096 bytes (it fits the buffer): %d bytes sent, %v; want it sent whole, as one of 4095 is", n, err)
	}
	if n, err := size(k-1, ctx); err != nil || n != 4095 {
		t.Fatalf("4095 bytes: %d sent, %v", n, err)
	}
}
