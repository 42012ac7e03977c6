package rpcclient

import (
	"bufio"
	"bytes"
	"context"
	"encoding/gob"
	"errors"
	"net"
	"net/rpc"
	"reflect"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/dialtone-go/dialtone/balancer"
	"github.com/dialtone-go/dialtone/breaker"
	"github.com/dialtone-go/dialtone/internal/rpctest"
)

// FAULTS.md row 23: a backend answers with a huge gob message. The client
// caps the message size before it buffers the message, closes the
// connection and counts a failure against the node; the figure is the heap
// growth, bounded by the cap (plus 1 MiB of slack for the call itself, as
// row 22 allows). TestHugeReplyClosesConnection checks the error only: a
// cap checked after gob had read the whole message would pass it.
//
// The backend is a real net/rpc server in a child process, so that the 64
// MiB reply it builds and encodes is not counted in this process's heap.
// TotalAlloc only grows, so the bound holds for the peak too.
func TestHostileReplyHeapGrowthIsBoundedByTheCap(t *testing.T) {
	const msgCap = 1 << 20
	kid := rpctest.StartChild(t)
	c, _ := newTestClient(t, []string{kid.Addr()}, WithMaxMessageSize(msgCap), WithHeartbeat(0, 0),
		WithBalancer(balancer.WithBreakers(breaker.Config{ConsecutiveFailures: 1, OpenTimeout: time.Hour}),
			balancer.WithOutlierDetection(balancer.OutlierConfig{Disabled: true})))
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	var r rpctest.EchoReply
	if err := c.Call(ctx, "Echo.Echo", &rpctest.EchoArgs{Msg: "warm"}, &r); err != nil {
		t.Fatal(err)
	}
	var before, after runtime.MemStats
	runtime.ReadMemStats(&before)
	err := c.Call(ctx, "Echo.Echo", &rpctest.EchoArgs{ReplyBytes: 64 << 20}, &r, Idempotent())
	runtime.ReadMemStats(&after)
	if grew := after.TotalAlloc - before.TotalAlloc; grew > msgCap+1<<20 {
		t.Fatalf("%d KiB allocated for a 64 MiB reply with a %d KiB cap; want at most the cap + 1 MiB (err %v)",
			grew>>10, msgCap>>10, err)
	} else {
		t.Logf("%d KiB allocated for a 64 MiB reply with a %d KiB cap", grew>>10, msgCap>>10)
	}
	var e *Error
	if !errors.As(err, &e) || !errors.Is(err, ErrMessageTooLarge) || e.Attempts != 1 {
		t.Fatalf("64 MiB reply with a 1 MiB cap: %v; want ErrMessageTooLarge after one attempt (not retried)", err)
	}
	// The connection is closed (its other calls would get ErrConnClosed,
	// with the cause as text only: see conn.go).
	deadline := time.Now().Add(5 * time.Second)
	for st := endpointStatus(c, kid.Addr()); !errors.Is(st.LastClose, ErrConnClosed); st = endpointStatus(c, kid.Addr()) {
		if time.Now().After(deadline) {
			t.Fatalf("endpoint %+v: want its connection closed", st)
		}
		time.Sleep(time.Millisecond)
	}
	// And the node's breaker counted the failure (one opens it here).
	for _, s := range c.Balancer().Status() {
		if s.Endpoint.Addr == kid.Addr() && s.Breaker != breaker.Open {
			t.Fatalf("node %+v: want its breaker open after one oversized reply (a failure)", s)
		}
	}
}

// gobUint appends x in gob's unsigned encoding.
func gobUint(b []byte, x uint64) []byte {
	if x < 0x80 {
		return append(b, byte(x))
	}
	var buf [8]byte
	n := 0
	for v := x; v > 0; v >>= 8 {
		n++
	}
	for i := 0; i < n; i++ {
		buf[n-1-i] = byte(x >> (8 * i))
	}
	b = append(b, byte(-int8(n)))
	return append(b, buf[:n]...)
}

// gobInt appends x in gob's signed encoding.
func gobInt(b []byte, x int64) []byte {
	var u uint64
	if x < 0 {
		u = uint64(^x<<1) | 1
	} else {
		u = uint64(x << 1)
	}
	return gobUint(b, u)
}

// gobUintLen returns the length of the gob unsigned integer b starts with.
func gobUintLen(b []byte) int {
	if b[0] <= 0x7f {
		return 1
	}
	return 1 + int(-int8(b[0]))
}

// gobMessages splits a gob stream into its messages' payloads.
func gobMessages(t *testing.T, stream []byte) [][]byte {
	t.Helper()
	var msgs [][]byte
	for len(stream) > 0 {
		n, w := uint64(stream[0]), 1
		if stream[0] > 0x7f {
			k := int(-int8(stream[0]))
			n = 0
			for _, c := range stream[1 : 1+k] {
				n = n<<8 | uint64(c)
			}
			w = 1 + k
		}
		msgs = append(msgs, stream[w:w+int(n)])
		stream = stream[w+int(n):]
	}
	return msgs
}

// typeDefBody returns the payload of a gob type definition, without its
// leading type id: a struct type with one field of a name nameLen bytes
// long, so that the definition, which a decoder keeps for the stream's
// life, holds about 2 x nameLen bytes.
func typeDefBody(t *testing.T, nameLen int) []byte {
	t.Helper()
	typ := reflect.StructOf([]reflect.StructField{{Name: "F" + strings.Repeat("x", nameLen), Type: reflect.TypeFor[int]()}})
	var buf bytes.Buffer
	if err := gob.NewEncoder(&buf).EncodeValue(reflect.New(typ).Elem()); err != nil {
		t.Fatal(err)
	}
	msgs := gobMessages(t, buf.Bytes())
	// The first message is the definition: a negative type id, then the
	// definition. Skip the id.
	def := msgs[0]
	if def[0] <= 0x7f {
		if def[0]&1 == 0 {
			t.Fatalf("type definition starts % x", def[:4])
		}
		return def[1:]
	}
	return def[1+int(-int8(def[0])):]
}

// hostileServer accepts connections on loopback, reads requests off each
// (a gob stream of rpc.Request and body, as net/rpc's client writes it), and
// answers the first call that is not a heartbeat with reply(w, seq).
func hostileServer(t *testing.T, reply func(w *bufio.Writer, seq uint64)) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	t.Cleanup(func() { ln.Close(); <-done })
	go func() {
		defer close(done)
		var conns []net.Conn
		defer func() {
			for _, c := range conns {
				c.Close()
			}
		}()
		for {
			nc, err := ln.Accept()
			if err != nil {
				return
			}
			conns = append(conns, nc)
			go func() {
				dec := gob.NewDecoder(bufio.NewReader(nc))
				w := bufio.NewWriter(nc)
				for {
					var req rpc.Request
					if dec.Decode(&req) != nil || dec.DecodeValue(reflect.Value{}) != nil {
						return
					}
					if req.ServiceMethod != HeartbeatMethod {
						reply(w, req.Seq)
						return
					}
				}
			}()
		}
	}()
	return ln.Addr().String()
}

// liveHeap returns the live heap after a collection.
func liveHeap() uint64 {
	var m runtime.MemStats
	runtime.GC()
	runtime.GC()
	runtime.ReadMemStats(&m)
	return m.HeapAlloc
}

// FAULTS.md row 23 (heap growth <= cap), for a reply that is not one huge
// message but a stream of small ones: gob type definitions, each far under
// the cap. gob keeps every definition for the life of the stream, and reads
// definitions until a value comes, so a peer that sends only definitions
// makes the client's heap grow for as long as it keeps sending, each
// message passing the size cap; the bytes coming in keep the heartbeat
// content too. The connection must close (a counted failure) once the
// definitions exceed what a message may hold, and the heap stay bounded.
func TestGobTypeDefinitionBombIsBounded(t *testing.T) {
	const (
		msgCap  = 1 << 20
		nameLen = 32 << 10
		defs    = 1000 // ~64 MiB of definitions, 64 KiB each
	)
	body := typeDefBody(t, nameLen)
	sent := make(chan struct{})
	addr := hostileServer(t, func(w *bufio.Writer, seq uint64) {
		defer close(sent)
		for i := range defs {
			payload := gobInt(nil, -int64(64+i)) // a new type id each time
			msg := gobUint(nil, uint64(len(payload)+len(body)))
			msg = append(msg, payload...)
			msg = append(msg, body...)
			if _, err := w.Write(msg); err != nil {
				return
			}
		}
		w.Flush()
	})
	c, grew, err := bombCall(t, addr, msgCap, sent)
	t.Logf("call: %v; live heap grew %d KiB after %d KiB of type definitions, each %d KiB (cap %d KiB)",
		err, grew>>10, defs*(2*nameLen)>>10, (2*nameLen)>>10, msgCap>>10)
	if grew > msgCap+1<<20 {
		t.Errorf("live heap grew %d KiB with a %d KiB message cap; want it bounded by the cap", grew>>10, msgCap>>10)
	}
	closedAndCounted(t, c, addr, err)
}

// bombCall makes one call through a client with message cap msgCap to the
// hostile server at addr, whose handler closes sent once it has sent all
// it sends, and returns the client, how much the live heap grew meanwhile,
// and the call's error. A failure of its node ends the node's breaker's
// closed state (ConsecutiveFailures 1), which closedAndCounted looks for.
func bombCall(t *testing.T, addr string, msgCap int, sent <-chan struct{}) (*Client, int64, error) {
	t.Helper()
	c, _ := newTestClient(t, []string{addr}, WithMaxMessageSize(msgCap), WithHeartbeat(0, 0),
		WithBalancer(balancer.WithBreakers(breaker.Config{ConsecutiveFailures: 1, OpenTimeout: time.Hour}),
			balancer.WithOutlierDetection(balancer.OutlierConfig{Disabled: true})))
	before := liveHeap()
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
	defer cancel()
	var r int
	callErr := make(chan error, 1)
	go func() { callErr <- c.Call(ctx, "Arith.Add", Pair{1, 2}, &r) }()
	select {
	case <-sent:
	case <-time.After(20 * time.Second):
		t.Fatal("the hostile server could not send all it sends")
	}
	time.Sleep(200 * time.Millisecond) // the client reads what is in flight
	grew := int64(liveHeap()) - int64(before)
	return c, grew, <-callErr
}

// closedAndCounted checks that the call failed (err) because the client
// closed the connection to addr, and that its node's breaker counted it.
func closedAndCounted(t *testing.T, c *Client, addr string, err error) {
	t.Helper()
	if err == nil || errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("call: %v; want the connection closed for the definitions, not the caller's deadline", err)
	}
	deadline := time.Now().Add(2 * time.Second)
	for st := endpointStatus(c, addr); !errors.Is(st.LastClose, ErrConnClosed); st = endpointStatus(c, addr) {
		if time.Now().After(deadline) {
			t.Fatalf("endpoint %+v: want its connection closed", st)
		}
		time.Sleep(time.Millisecond)
	}
	for _, s := range c.Balancer().Status() {
		if s.Endpoint.Addr == addr && s.Breaker != breaker.Open {
			t.Errorf("node %+v: want its breaker open (a counted failure)", s)
		}
	}
}

type bombWrapper struct{ X any }

// The same bound for definitions a peer puts inside a reply body, in an
// interface value, where gob reads them too (and keeps them), here in the
// bodies of replies to calls never made, which the client discards.
func TestGobInlineTypeDefinitionBombIsBounded(t *testing.T) {
	const (
		msgCap  = 1 << 20
		nameLen = 32 << 10
		defs    = 1000
	)
	body := typeDefBody(t, nameLen)
	sent := make(chan struct{})
	addr := hostileServer(t, func(w *bufio.Writer, seq uint64) {
		defer close(sent)
		var first bytes.Buffer
		enc := gob.NewEncoder(&first)
		if enc.Encode(rpc.Response{Seq: 1 << 40}) != nil || enc.Encode(bombWrapper{}) != nil {
			return
		}
		msgs := gobMessages(t, first.Bytes())
		wid := msgs[len(msgs)-1] // the wrapper's value: its type id first
		w.Write(first.Bytes())
		for i := range defs {
			first.Reset() // the encoder has sent rpc.Response's type: a value only now
			if enc.Encode(rpc.Response{Seq: 1<<40 + uint64(i)}) != nil {
				return
			}
			w.Write(first.Bytes())
			// Body: bombWrapper{X: a value of a type defined inline}.
			var b []byte
			b = append(b, wid[:gobUintLen(wid)]...) // the wrapper's type id
			b = gobUint(b, 1)                       // field 0, X
			b = gobUint(b, 1)                       // the concrete type's name: 1 byte
			b = append(b, 'T')
			b = gobInt(b, -int64(1000+i)) // an inline definition
			b = append(b, body...)
			b = gobUint(b, 0) // the count gob skips after an inline definition
			b = gobInt(b, 1)  // the value's type id (ignored)
			b = gobUint(b, 1) // the value: 1 byte, dropped
			b = append(b, 0)
			b = append(b, 0) // end of the wrapper
			w.Write(gobUint(nil, uint64(len(b))))
			w.Write(b)
		}
		w.Flush()
	})
	c, grew, err := bombCall(t, addr, msgCap, sent)
	t.Logf("call: %v; live heap grew %d KiB after %d inline definitions of %d KiB (cap %d KiB)",
		err, grew>>10, defs, len(body)>>10, msgCap>>10)
	if grew > msgCap+1<<20 {
		t.Errorf("live heap grew %d KiB with a %d KiB message cap; want it bounded by the cap", grew>>10, msgCap>>10)
	}
	closedAndCounted(t, c, addr, err)
}

// Replies for calls never made (unknown sequence numbers, with a body of
// any type, or an error and a body) are read and dropped, and the call's
// own reply that follows them is delivered: the stream stays in step.
func TestRepliesForUnknownCallsAreDropped(t *testing.T) {
	addr := hostileServer(t, func(w *bufio.Writer, seq uint64) {
		enc := gob.NewEncoder(w)
		enc.Encode(rpc.Response{Seq: seq + 1000})
		enc.Encode("a string body for a call never made")
		enc.Encode(rpc.Response{Seq: 0, Error: "boom"})
		enc.Encode(struct{ X []int }{[]int{1, 2, 3}})
		enc.Encode(rpc.Response{Seq: seq})
		enc.Encode(3)
		w.Flush()
	})
	c, _ := newTestClient(t, []string{addr}, WithHeartbeat(0, 0), withoutNodeHealth())
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	var r int
	if err := c.Call(ctx, "Arith.Add", Pair{1, 2}, &r); err != nil || r != 3 {
		t.Fatalf("Add = %d, %v; want 3 after the stray replies", r, err)
	}
}

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

// A legit reply type with an interface field: the server returns one of a
// few registered concrete types, each with a payload of its own.
type Envelope struct {
	Value any
}

type KindA struct{ Data string }
type KindB struct{ Data string }
type KindC struct{ Data string }
type KindD struct{ Data string }

type Store struct{}

// Get replies with a value of kind p.A, holding p.B bytes.
func (Store) Get(p Pair, r *Envelope) error {
	d := strings.Repeat("x", p.B)
	switch p.A {
	case 0:
		r.Value = KindA{d}
	case 1:
		r.Value = KindB{d}
	case 2:
		r.Value = KindC{d}
	default:
		r.Value = KindD{d}
	}
	return nil
}

func init() {
	gob.Register(KindA{})
	gob.Register(KindB{})
	gob.Register(KindC{})
	gob.Register(KindD{})
}

// The cap on gob type definitions counts what the definitions take, not the
// payloads of the replies that happen to carry a new interface type: replies
// each well under the cap, on a long-lived connection whose type
// definitions are a few hundred bytes in all, must all succeed.
func TestInterfaceRepliesUnderTheCapAreNotCountedAsDefinitions(t *testing.T) {
	const msgCap = 1 << 20
	addr := serveRPC(t, func(s *rpc.Server) error {
		if err := s.Register(Store{}); err != nil {
			return err
		}
		return RegisterHeartbeat(s)
	}, func() {})
	c, _ := newTestClient(t, []string{addr}, WithMaxMessageSize(msgCap), withoutNodeHealth())
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	for kind := range 4 {
		var r Envelope
		if err := c.Call(ctx, "Store.Get", Pair{A: kind, B: 300 << 10}, &r); err != nil {
			t.Fatalf("reply %d (kind %d, 300 KiB, cap %d KiB): %v", kind, kind, msgCap>>10, err)
		}
	}
}

// WithMaxMessageSize(n) refuses a reply message larger than n, not one of
// n bytes: the boundary, measured on the reply's own gob value message.
func TestMaxMessageSizeBoundaryIsExact(t *testing.T) {
	srv := rpctest.Start(t)
	want := rpctest.EchoReply{Msg: strings.Repeat("m", 2000), Server: srv.Name()}
	// The size of the value message gob sends for want, its type sent
	// already (the first Encode): what the codec checks against the cap.
	var buf bytes.Buffer
	enc := gob.NewEncoder(&buf)
	if err := enc.Encode(&want); err != nil {
		t.Fatal(err)
	}
	buf.Reset()
	if err := enc.Encode(&want); err != nil {
		t.Fatal(err)
	}
	b := buf.Bytes()
	n := int(-int8(b[0])) // 2000 bytes and more: a multi-byte count
	size := 0
	for _, x := range b[1 : 1+n] {
		size = size<<8 | int(x)
	}
	if size != len(b)-1-n {
		t.Fatalf("measured a %d-byte message in %d bytes", size, len(b))
	}
	for _, tc := range []struct {
		max int
		ok  bool
	}{{size, true}, {size - 1, false}} {
		c, _ := newTestClient(t, []string{srv.Addr()}, WithMaxMessageSize(tc.max), WithHeartbeat(0, 0), withoutNodeHealth())
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		var r rpctest.EchoReply
		err := c.Call(ctx, "Echo.Echo", &rpctest.EchoArgs{Msg: want.Msg}, &r)
		cancel()
		switch {
		case tc.ok && (err != nil || r != want):
			t.Errorf("a %d-byte reply message with WithMaxMessageSize(%d): %v; want it delivered", size, tc.max, err)
		case !tc.ok && !errors.Is(err, ErrMessageTooLarge):
			t.Errorf("a %d-byte reply message with WithMaxMessageSize(%d): %v; want ErrMessageTooLarge", size, tc.max, err)
		}
		c.Close()
	}
}

// A reply body whose gob framing is broken (a length prefix no gob encoder
// writes) is the peer's fault, not a reply that does not decode into the
// caller's value (see replyError): it counts against the node.
func TestBrokenReplyFramingCountsAgainstTheNode(t *testing.T) {
	addr := hostileServer(t, func(w *bufio.Writer, seq uint64) {
		gob.NewEncoder(w).Encode(&rpc.Response{ServiceMethod: "Echo.Echo", Seq: seq})
		w.Write([]byte{0xf0, 1, 2, 3}) // a 16-byte count: gob's is at most 8
		w.Flush()
	})
	c, _ := newTestClient(t, []string{addr}, WithHeartbeat(0, 0),
		WithBalancer(balancer.WithBreakers(breaker.Config{ConsecutiveFailures: 1, OpenTimeout: time.Hour}),
			balancer.WithOutlierDetection(balancer.OutlierConfig{Disabled: true})))
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	var r rpctest.EchoReply
	if err := c.Call(ctx, "Echo.Echo", &rpctest.EchoArgs{}, &r); !errors.Is(err, ErrCodec) {
		t.Fatalf("a reply with a broken length prefix: %v; want ErrCodec", err)
	}
	for _, s := range c.Balancer().Status() {
		if s.Breaker != breaker.Open {
			t.Fatalf("node %s: breaker %v after a reply with broken framing; want open (a failure, one trips)", s.Endpoint.Addr, s.Breaker)
		}
	}
}
