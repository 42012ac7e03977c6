package rpcclient

import (
	"bufio"
	"context"
	"encoding/gob"
	"errors"
	"fmt"
	"io"
	"net"
	"net/rpc"
	"reflect"
	"sync/atomic"
	"time"
)

// codec is the client side of net/rpc's gob wire format, the one
// rpc.Server speaks by default: a gob stream of rpc.Request, body, ... one
// way and rpc.Response, body, ... the other. It differs from net/rpc's own
// client codec in one respect: every incoming gob message is checked against
// a size cap before gob allocates a buffer for it, so a hostile or broken
// peer cannot make us buffer more than the cap; and the type definitions,
// which gob keeps for the stream's life and would read one after another
// for ever, are capped at the same size together. It does not bound what gob
// allocates while decoding a message under the cap: a map in the reply type
// is sized from the count the peer sends (golang/go#79539; see the README's
// WithMaxMessageSize row), and a slice too, up to gob's 10 MiB.
type codec struct {
	rwc  io.ReadWriteCloser
	dec  *gob.Decoder
	enc  *gob.Encoder
	wbuf *bufio.Writer
	out  *countingWriter
	in   *countingReader
	fr   *framedReader
	wt   reflect.Value // dec's table of type definitions received; invalid if not found
}

func newCodec(rwc io.ReadWriteCloser, maxMsg int) *codec {
	cw := &countingWriter{w: rwc}
	cw.nc, _ = rwc.(net.Conn)
	cr := &countingReader{r: rwc}
	w := bufio.NewWriter(cw)
	fr := &framedReader{r: bufio.NewReader(cr), max: maxMsg}
	dec := gob.NewDecoder(fr)
	c := &codec{
		rwc:  rwc,
		fr:   fr,
		dec:  dec,
		enc:  gob.NewEncoder(w),
		wbuf: w,
		out:  cw,
		in:   cr,
	}
	if wireTypeField >= 0 {
		// NewDecoder makes the table, and nothing replaces it: its
		// Value, found once here, serves every decode.
		c.wt = reflect.ValueOf(dec).Elem().Field(wireTypeField)
		fr.recount = c.defsSize
	}
	return c
}

// countingWriter counts the bytes the connection accepted, so that a failed
// write can tell "nothing of this request left" (safe to retry anywhere)
// from "some of it may have" (not, unless idempotent). Write is called under
// the connection's write lock; n may be read from any goroutine: the
// heartbeat watches it move while a large request holds the connection.
// Writes go to the connection in pieces of at most writeChunk bytes, so
// that n moves while a large request drains into a slow peer.
//
// A write larger than writeChunk, which may block on a peer that reads
// slowly or not at all, is cut short when the request's ctx is cancelled:
// a watch sets the connection's write deadline in the past. (The ctx's
// deadline is already the connection's write deadline.) Smaller writes
// are not watched, so the common request pays nothing for it; one stuck
// behind a full socket waits for its deadline or the heartbeat.
type countingWriter struct {
	w   io.Writer
	nc  net.Conn        // w, when it is one: the watch sets its deadline
	ctx context.Context // the request being written; set by codec.write
	n   atomic.Int64
	err error // the connection's first write error
	// writing is set while a Write is in the connection's hands (it may
	// wait there for a peer that does not read). A request that holds
	// the write slot without it is being encoded: gob builds a whole
	// message before it writes a byte of it, and that takes this process
	// as long as the value takes, however well the peer reads (see
	// conn.encoding).
	writing atomic.Bool
	base    int64 // n when the request being written began; set by codec.write
	// flushing is set while codec.encode flushes the bufio.Writer in
	// front: a request's first write made then is its whole (it fitted
	// the buffer, up to exactly its size); one made before is bufio's
	// full buffer or a direct write of a request that outgrew it.
	flushing bool
}

// errEncodedLate is a request's first write to the connection when its
// deadline (the connection's write deadline) passed while it was being
// encoded: the write would time out at once with nothing of it sent. It
// is not attempted (see countingWriter.Write and conn.start).
// errEncodedCancelled is the same for a request larger than the write
// buffer whose ctx was cancelled meanwhile: one larger than writeChunk had
// its first bytes (what bufio held) sent and the rest cut at once by the
// cancellation watch, a truncated frame that closed the connection under
// its other calls. (A request that fits the buffer is sent whole, as
// before: not sending it would cost its connection.)
var (
	errEncodedLate      = fmt.Errorf("rpcclient: the request's deadline passed while it was being encoded: %w", context.DeadlineExceeded)
	errEncodedCancelled = fmt.Errorf("rpcclient: the request was cancelled while it was being encoded: %w", context.Canceled)
)

// isEncodedLate reports whether err is errEncodedLate or errEncodedCancelled:
// a request whose ctx ended while it was encoded, of which nothing was sent.
func isEncodedLate(err error) bool {
	return errors.Is(err, errEncodedLate) || errors.Is(err, errEncodedCancelled)
}

// writeChunk bounds each write to the connection: 64 KiB take 50 ms at
// 10 Mbit/s, well inside the default heartbeat timeout, and cost one
// system call per 64 KiB of a large request.
const writeChunk = 64 << 10

func (c *countingWriter) Write(p []byte) (int, error) {
	if len(p) > writeChunk && c.nc != nil && c.ctx != nil && c.ctx.Done() != nil {
		defer c.watchCancel(c.ctx)()
	}
	if c.ctx != nil && c.n.Load() == c.base {
		// The request's first write: gob encodes a whole message
		// before it writes it, and a deadline that passed meanwhile
		// would time the write out before a byte left; a cancellation
		// would cut a large one after its first bytes (see
		// errEncodedCancelled).
		var late error
		if dl, ok := c.ctx.Deadline(); ok && !time.Now().Before(dl) {
			late = errEncodedLate
		} else if !c.flushing && c.ctx.Err() != nil {
			// Only for a request that outgrew the write buffer (this
			// write is not its last): one that fits is written whole
			// here, cut by nothing, and sent as it always was, rather
			// than cost its connection.
			late = errEncodedCancelled
		}
		if late != nil {
			if c.err == nil {
				c.err = late
			}
			return 0, late
		}
	}
	c.writing.Store(true)
	total := 0
	for len(p) > 0 {
		n, err := c.w.Write(p[:min(len(p), writeChunk)])
		total += n
		c.n.Add(int64(n))
		if err != nil {
			if c.err == nil {
				c.err = err
			}
			c.writing.Store(false)
			return total, err
		}
		p = p[n:]
	}
	c.writing.Store(false)
	return total, nil
}

// watchCancel cuts the connection's write short when ctx is cancelled,
// until the returned function is called. That function waits for a watch
// that has started and, if the write outlived it, restores the write
// deadline the watch moved, so that the next request is not cut short.
func (c *countingWriter) watchCancel(ctx context.Context) func() {
	fired := make(chan struct{})
	stop := context.AfterFunc(ctx, func() {
		defer close(fired)
		c.nc.SetWriteDeadline(aLongTimeAgo)
	})
	return func() {
		if stop() {
			return
		}
		<-fired
		dl, _ := ctx.Deadline() // the deadline the caller set (zero: none)
		c.nc.SetWriteDeadline(dl)
	}
}

// aLongTimeAgo is a write deadline that has passed: it ends a blocked
// write at once.
var aLongTimeAgo = time.Unix(1, 0)

// countingReader counts the bytes read from the connection, for the
// heartbeat: a ping that times out while a large reply is still coming in
// is behind that reply, not lost to a hung peer. Read is called by the
// reader goroutine; n may be read from any goroutine.
//
// waiting is set while the reader goroutine waits in the connection's Read:
// the decoder wants bytes that have not arrived (the buffered reader in
// front asks only when its buffer is empty).
type countingReader struct {
	r       io.Reader
	n       atomic.Int64
	waiting atomic.Bool
}

func (c *countingReader) Read(p []byte) (int, error) {
	c.waiting.Store(true)
	n, err := c.r.Read(p)
	c.waiting.Store(false)
	c.n.Add(int64(n))
	return n, err
}

// write sends one request. It is called under the connection's write lock.
// sent reports whether any byte of it reached the connection. ctx's
// cancellation cuts a large write short (see countingWriter); its deadline
// is the connection's write deadline, which the caller sets.
func (c *codec) write(ctx context.Context, r *rpc.Request, body any) (sent bool, err error) {
	before := c.out.n.Load()
	c.out.ctx, c.out.base = ctx, before
	err = c.encode(r, body)
	c.out.ctx = nil
	return c.out.n.Load() != before, err
}

func (c *codec) encode(r *rpc.Request, body any) (err error) {
	// A panic in the caller's own encoding (a GobEncode or MarshalBinary
	// method of args) is an encoding error like any other: unwinding
	// through start instead would leave the write slot held and the call
	// pending on the connection, and the pick's Done never called. What
	// gob had buffered of the request makes the stream unusable, as for
	// any ErrCodec (start retires the connection).
	defer func() {
		if p := recover(); p != nil {
			err = fmt.Errorf("%w: encoding the arguments: panic: %v", ErrCodec, p)
		}
	}()
	if err := c.enc.Encode(r); err != nil {
		return err
	}
	if err := c.enc.Encode(body); err != nil {
		if c.out.err != nil {
			return c.out.err // gob passes the connection's write errors on
		}
		return fmt.Errorf("%w: encoding the arguments: %w", ErrCodec, err)
	}
	c.out.flushing = true
	err = c.wbuf.Flush()
	c.out.flushing = false
	return err
}

// readHeader and readBody are called by the connection's reader goroutine.
func (c *codec) readHeader(r *rpc.Response) error { return c.decode(r) }

// readBody decodes the reply into body; a nil body discards it. A panic in
// the caller's decoding (a GobDecode or UnmarshalBinary method of the reply)
// is recovered by the reader goroutine (conn.read), once for its whole life
// rather than once per reply.
func (c *codec) readBody(body any) error { return c.decode(body) }

// decode decodes the next value into v (nil: discards it). The type
// definitions gob keeps for the stream's life come in messages of their
// own, which framedReader counts, or inside a value, in an interface's
// concrete type: a message that brought definitions of the latter kind
// counts whole against the same cap (a peer may hide them in any reply,
// one for a call abandoned or never made included, whose type it chooses).
func (c *codec) decode(v any) error {
	f := c.fr
	types, defs := c.wireTypes(), f.defs
	f.values = 0
	err := c.dec.Decode(v)
	if err == nil && c.wireTypes()-types > f.defs-defs {
		// The message's bytes are charged, payload included: more than
		// its definitions took, which charge recounts when it matters.
		if err := f.charge(f.values, true); err != nil {
			return err
		}
	}
	return err
}

// defsSize estimates the bytes the type definitions c's decoder holds took
// on the wire: their names, and a byte for every number and field. It walks
// them all: framedReader.charge calls it only once the bytes charged since
// the last call reach half the cap.
func (c *codec) defsSize() int {
	n := 0
	for it := c.wt.MapRange(); it.Next(); {
		n += 1 + wireSize(it.Value(), 0)
	}
	return n
}

// wireSize estimates what v, a part of a gob type definition, takes on the
// wire.
func wireSize(v reflect.Value, depth int) int {
	if depth > 8 { // a definition is a few levels deep; guards a change in gob
		return 1
	}
	switch v.Kind() {
	case reflect.Pointer, reflect.Interface:
		if v.IsNil() {
			return 0
		}
		return wireSize(v.Elem(), depth+1)
	case reflect.Struct:
		n := 1
		for i := range v.NumField() {
			n += wireSize(v.Field(i), depth+1)
		}
		return n
	case reflect.Slice, reflect.Array:
		n := 1
		for i := range v.Len() {
			n += wireSize(v.Index(i), depth+1)
		}
		return n
	case reflect.String:
		return 1 + v.Len()
	}
	return 1
}

// wireTypeField is the index of gob.Decoder's table of the type
// definitions received, or -1 if this Go's gob has none by that name
// (the definitions inside values then go uncounted).
var wireTypeField = func() int {
	f, ok := reflect.TypeFor[gob.Decoder]().FieldByName("wireType")
	if !ok || len(f.Index) != 1 || f.Type.Kind() != reflect.Map {
		return -1
	}
	return f.Index[0]
}()

// wireTypes returns how many type definitions c's decoder has received.
// Call it from the goroutine that decodes.
func (c *codec) wireTypes() int {
	if !c.wt.IsValid() {
		return 0
	}
	return c.wt.Len()
}

// framedReader passes a gob stream through while checking each message's
// length prefix against max. gob frames every message as an unsigned count
// followed by count bytes; the count is one byte when below 128, otherwise a
// byte holding minus the number of big-endian count bytes that follow.
// The type definitions of the whole stream, which gob keeps, are capped
// at max together.
type framedReader struct {
	r    *bufio.Reader
	max  int
	left int // bytes of the current frame (prefix included) still to pass
	// types is the bytes of type definitions passed: gob keeps them all
	// for the stream's life, so together they get the cap of one message.
	// defs counts the messages that were definitions, and values the bytes
	// of the others since codec.decode last reset it.
	types, defs, values int
	// recount, when set, returns the size of the definitions received,
	// for charge: types overcounts the definitions that came inside
	// values (it charges their whole message).
	recount func() int
}

// charge adds n bytes of type definitions (inline: that came inside a
// value, and are in the decoder's table already) to types, and fails once
// the definitions exceed the cap. types may overcount them (see decode):
// when it passes the cap, the definitions are recounted, and the charge
// fails only if they take more than half the cap (the charges up to the
// next recount then come to half the cap at least, so that a recount, which
// walks every definition, costs a few steps per byte received).
func (f *framedReader) charge(n int, inline bool) error {
	if f.types += n; f.types <= f.max {
		return nil
	}
	if f.recount != nil {
		p := f.recount()
		if !inline {
			p += n // the definition still to come
		}
		if p <= f.max/2 {
			f.types = p
			return nil
		}
		f.types = p
	}
	return fmt.Errorf("%w: %d bytes of gob type definitions, cap %d", ErrMessageTooLarge, f.types, f.max)
}

// errBadFraming is a message whose length prefix no gob encoder writes: the
// peer's stream is broken (not a reply of the caller's wrong type, which
// replyError is).
var errBadFraming = fmt.Errorf("%w: bad gob length prefix", ErrCodec)

func (f *framedReader) startFrame() error {
	b, err := f.r.Peek(1)
	if err != nil {
		return err
	}
	prefix, count := 1, uint64(b[0])
	if b[0] > 0x7f {
		n := int(-int8(b[0]))
		if n < 1 || n > 8 {
			return errBadFraming
		}
		hdr, err := f.r.Peek(1 + n)
		if err != nil {
			return err
		}
		count = 0
		for _, c := range hdr[1:] {
			count = count<<8 | uint64(c)
		}
		prefix = 1 + n
	}
	if count > uint64(f.max) {
		return fmt.Errorf("%w: %d-byte message, cap %d", ErrMessageTooLarge, count, f.max)
	}
	if count > 0 {
		// A message opens with a type id; a negative one is a type
		// definition, which gob keeps for the stream's life, and gob
		// reads definitions until a value comes: a peer could send
		// them, each under the cap, until this side runs out of memory.
		// All of a stream's definitions together get the cap.
		def, err := f.definesType(prefix, count)
		if err != nil {
			return err
		}
		if !def {
			f.values += int(count)
		} else {
			f.defs++
			if err := f.charge(int(count), false); err != nil {
				return err
			}
		}
	}
	f.left = prefix + int(count)
	return nil
}

// definesType reports whether the message of count bytes whose length
// prefix takes prefix bytes is a type definition: whether its leading
// type id, a signed gob integer, is negative (its lowest bit set).
func (f *framedReader) definesType(prefix int, count uint64) (bool, error) {
	b, err := f.r.Peek(prefix + 1)
	if err != nil {
		return false, err
	}
	last := prefix // the id's last byte
	if c := b[prefix]; c > 0x7f {
		n := int(-int8(c))
		if n < 1 || n > 8 || uint64(1+n) > count {
			return false, nil // not an id gob reads: gob's error, not ours
		}
		if b, err = f.r.Peek(prefix + 1 + n); err != nil {
			return false, err
		}
		last = prefix + n
	}
	return b[last]&1 == 1, nil
}

func (f *framedReader) Read(p []byte) (int, error) {
	if f.left == 0 {
		if err := f.startFrame(); err != nil {
			return 0, err
		}
	}
	if len(p) > f.left {
		p = p[:f.left]
	}
	n, err := f.r.Read(p)
	f.left -= n
	return n, err
}

// ReadByte makes framedReader an io.ByteReader, so gob reads it directly
// instead of wrapping it in another buffer.
func (f *framedReader) ReadByte() (byte, error) {
	if f.left == 0 {
		if err := f.startFrame(); err != nil {
			return 0, err
		}
	}
	b, err := f.r.ReadByte()
	if err == nil {
		f.left--
	}
	return b, err
}
