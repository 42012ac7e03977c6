package consul

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"strconv"
	"strings"
	"unsafe"

	"github.com/hashicorp/consul/api"
)

// ErrResponseTooLarge is returned when a registry answer exceeds the cap set
// by WithMaxResponse.
var ErrResponseTooLarge = errors.New("consul: response too large")

// ErrRedirect is returned when the agent answers with an HTTP redirect, which
// is refused so the ACL token is never sent elsewhere.
var ErrRedirect = errors.New("consul: redirect refused")

// errInsecureSkipVerify is returned when CONSUL_HTTP_SSL_VERIFY asks to skip
// verification of the agent's certificate, which is never done.
var errInsecureSkipVerify = errors.New("consul: " + api.HTTPSSLVerifyEnvName + " is refused: the agent's certificate is always verified; set " +
	api.HTTPCAFile + " (or " + api.HTTPCAPath + ") to the CA that signed it")

// checkSSLVerifyEnv refuses CONSUL_HTTP_SSL_VERIFY set to false, or to
// anything that is not a boolean: api.DefaultConfig turns either into
// InsecureSkipVerify without a word (an unparsable value only logs a
// warning). The etcd package refuses ETCDCTL_INSECURE_SKIP_TLS_VERIFY so.
//
// It also refuses CONSUL_HTTP_SSL set to anything that is not a boolean
// ("yes", "on"): api.DefaultConfig only logs a warning for it and keeps
// plain HTTP, sending the token in clear to an agent the operator asked to
// reach over TLS.
func checkSSLVerifyEnv(getenv func(string) string) error {
	if v := getenv(api.HTTPSSLEnvName); v != "" {
		if _, err := strconv.ParseBool(v); err != nil {
			if len(v) > 16 {
				v = v[:16] + "..."
			}
			return fmt.Errorf("consul: %s=%q is not a boolean (want true or false); Consul's client would use plain HTTP", api.HTTPSSLEnvName, v)
		}
	}
	v := getenv(api.HTTPSSLVerifyEnvName)
	if v == "" {
		return nil
	}
	verify, err := strconv.ParseBool(v)
	if err != nil {
		if len(v) > 16 {
			v = v[:16] + "..."
		}
		return fmt.Errorf("consul: %s=%q is not a boolean", api.HTTPSSLVerifyEnvName, v)
	}
	if !verify {
		return errInsecureSkipVerify
	}
	return nil
}

// newClient builds a Consul API client from the environment and the options.
// Its HTTP client refuses redirects and caps response bodies at maxBody bytes,
// whether the agent is reached over TCP or through a unix socket (unix://).
// CONSUL_HTTP_SSL_VERIFY=false is refused (errInsecureSkipVerify). The HTTP
// client is returned too, so that its owner can close its idle connections
// on Close.
func newClient(o *options, maxBody int64) (*api.Client, *http.Client, error) {
	if err := checkSSLVerifyEnv(os.Getenv); err != nil {
		return nil, nil, err
	}
	cfg := api.DefaultConfig()
	ours := cfg.Transport // a new one, this client's own
	if o.apiConfig != nil {
		o.apiConfig(cfg)
	}
	if o.address != "" {
		cfg.Address = o.address
	}
	if o.token != "" {
		cfg.Token = o.token
		cfg.TokenFile = ""
	}
	if addressHasCredentials(cfg.Address) {
		// Not echoed: it holds a password. Consul's client would take
		// user:password@host whole as the host, fail every request and
		// quote it in each error.
		from := api.HTTPAddrEnvName
		if o.address != "" {
			from = "WithAddress"
		} else if os.Getenv(api.HTTPAddrEnvName) != cfg.Address {
			from = "WithAPIConfig's Address"
		}
		return nil, nil, fmt.Errorf("consul: the agent address in %s holds credentials (\"@\"); set the token (%s or WithToken), or %s for HTTP basic authentication", from, api.HTTPTokenEnvName, api.HTTPAuthEnvName)
	}
	o.anonymous = cfg.Token == "" && cfg.TokenFile == ""
	if cfg.Transport == nil {
		cfg.Transport = api.DefaultConfig().Transport
		ours = cfg.Transport
	}
	transport := cfg.Transport
	if transport == ours {
		// HTTP/1.1. A watcher or a registrar has a request or two out
		// at a time, so HTTP/2's multiplexing gains little, and Go's HTTP/2
		// client reports the agent's TLS alert (a client certificate
		// required, or refused) as "http2: client conn could not be
		// established", without the alert. A transport set through
		// WithAPIConfig is left as it is.
		transport.ForceAttemptHTTP2 = false
	}
	if path, ok := strings.CutPrefix(cfg.Address, "unix://"); ok {
		// For a unix:// address api.NewClient would replace our HTTP
		// client with its own, which follows redirects and has no cap.
		// Dial the socket ourselves instead, and hand api.NewClient a
		// plain address, which becomes the Host header ("localhost",
		// which api.NewClient would send too).
		if path == "" {
			return nil, nil, fmt.Errorf("consul: address %q: no socket path (want unix:///path/to/agent.sock)", cfg.Address)
		}
		transport = transport.Clone()
		transport.Proxy = nil // the socket is the agent: no proxy in between
		var d net.Dialer
		transport.DialContext = func(ctx context.Context, _, _ string) (net.Conn, error) {
			return d.DialContext(ctx, "unix", path)
		}
		cfg.Address = "localhost"
	}
	hc, err := api.NewHttpClient(transport, cfg.TLSConfig)
	if err != nil {
		return nil, nil, fmt.Errorf("consul: TLS configuration: %w", err)
	}
	hc.CheckRedirect = func(req *http.Request, _ []*http.Request) error {
		return fmt.Errorf("%w to %s://%s%s", ErrRedirect, req.URL.Scheme, req.URL.Host, req.URL.Path)
	}
	if maxBody > 0 {
		hc.Transport = &cappedTransport{base: hc.Transport, max: maxBody, maxEntries: o.maxEntries}
	}
	cfg.HttpClient = hc
	c, err := api.NewClient(cfg)
	if err != nil {
		return nil, nil, fmt.Errorf("consul: client: %w", err)
	}
	return c, hc, nil
}

// addressHasCredentials reports whether an agent address (host:port, or a
// URL) has user information before its host: "user:password@host:port".
// A unix:// socket path may hold any byte.
func addressHasCredentials(addr string) bool {
	if strings.HasPrefix(addr, "unix://") {
		return false
	}
	if _, rest, ok := strings.Cut(addr, "://"); ok {
		addr = rest
	}
	authority, _, _ := strings.Cut(addr, "/")
	return strings.Contains(authority, "@")
}

// maxErrorBody is how much of an error answer's body is read: Consul's
// client puts the whole body in its error's text, which the watcher logs
// and publishes in State.Err; a proxy's 8 MiB error page must not be.
const maxErrorBody = 1024

// cappedTransport fails a response whose body is longer than max bytes, and
// a health answer that lists more than maxEntries entries as soon as the
// body has, before Consul's client decodes any: decoded, a small entry
// takes 20 times its bytes. It cuts the body of an error answer (any
// status but 2xx) to maxErrorBody.
type cappedTransport struct {
	base       http.RoundTripper
	max        int64
	maxEntries int // 0: no limit
}

func (t *cappedTransport) RoundTrip(req *http.Request) (*http.Response, error) {
	resp, err := t.base.RoundTrip(req)
	if err != nil {
		return nil, err
	}
	if resp.StatusCode/100 != 2 {
		resp.Body = &cappedBody{rc: resp.Body, left: maxErrorBody, cut: true}
		resp.ContentLength = -1
		return resp, nil
	}
	if resp.ContentLength > t.max {
		resp.Body.Close()
		return nil, fmt.Errorf("%w: %d bytes announced, cap %d", ErrResponseTooLarge, resp.ContentLength, t.max)
	}
	resp.Body = &cappedBody{rc: resp.Body, left: t.max}
	if t.maxEntries > 0 && strings.HasPrefix(req.URL.Path, "/v1/health/service/") {
		resp.Body = &entryCounter{rc: resp.Body, max: t.maxEntries, budget: t.max}
	}
	if resp.ContentLength < 0 {
		// No length announced (a chunked answer, as an agent sends any
		// large one): read it here, in blocks, before Consul's client
		// decodes it. Its json.Decoder doubles its buffer as the body
		// arrives, so a body cut at the cap would have cost up to four
		// times the cap (64 MiB allocated for a 16 MiB cap) before the cut
		// was seen; the blocks cost the cap and one block at most.
		body, err := readBlocks(resp.Body, t.max)
		resp.Body.Close()
		if err != nil {
			return nil, err
		}
		resp.Body = body
	}
	return resp, nil
}

// The blocks readBlocks reads a body into start at firstBlockSize bytes and
// double up to readBlockSize: a small answer costs a small block.
const (
	firstBlockSize = 4 << 10
	readBlockSize  = 256 << 10
)

// readBlocks reads rc, which fails past max bytes (a cappedBody), to its
// end into blocks of at most readBlockSize bytes, none of them larger than
// what is left of max and one byte: at most max + readBlockSize bytes in
// all, whatever the body's length.
func readBlocks(rc io.Reader, max int64) (*blocksBody, error) {
	b := &blocksBody{}
	size := int64(firstBlockSize)
	for left := max + 1; ; size = min(2*size, readBlockSize) {
		blk := make([]byte, min(size, left))
		n, err := io.ReadFull(rc, blk)
		if n > 0 {
			b.blocks = append(b.blocks, blk[:n])
			left -= int64(n)
		}
		switch {
		case err == io.EOF || err == io.ErrUnexpectedEOF:
			return b, nil
		case err != nil:
			return nil, err
		case left <= 0: // cappedBody lets no more than max + 1 bytes through
			return nil, fmt.Errorf("%w: body exceeds the cap", ErrResponseTooLarge)
		}
	}
}

// blocksBody is a body read ahead by readBlocks.
type blocksBody struct{ blocks [][]byte }

func (b *blocksBody) Read(p []byte) (int, error) {
	n := 0
	for n < len(p) && len(b.blocks) > 0 {
		k := copy(p[n:], b.blocks[0])
		n += k
		if b.blocks[0] = b.blocks[0][k:]; len(b.blocks[0]) == 0 {
			b.blocks[0] = nil
			b.blocks = b.blocks[1:]
		}
	}
	if n == 0 && len(p) > 0 {
		return 0, io.EOF
	}
	return n, nil
}

func (b *blocksBody) Close() error { b.blocks = nil; return nil }

// CloseIdleConnections forwards to the base transport, so that the owner's
// http.Client.CloseIdleConnections on Close reaches the pooled connections.
func (t *cappedTransport) CloseIdleConnections() {
	if c, ok := t.base.(interface{ CloseIdleConnections() }); ok {
		c.CloseIdleConnections()
	}
}

type cappedBody struct {
	rc   io.ReadCloser
	left int64
	cut  bool // at the cap, end the body (io.EOF) instead of failing it
}

func (b *cappedBody) Read(p []byte) (int, error) {
	if b.left <= 0 && b.cut {
		return 0, io.EOF
	}
	if b.left <= 0 {
		// Read one more byte to tell "exactly at the cap" from "over it".
		var one [1]byte
		if n, _ := b.rc.Read(one[:]); n > 0 {
			return 0, fmt.Errorf("%w: body exceeds the cap", ErrResponseTooLarge)
		}
		return 0, io.EOF
	}
	if int64(len(p)) > b.left {
		p = p[:b.left]
	}
	n, err := b.rc.Read(p)
	b.left -= int64(n)
	return n, err
}

func (b *cappedBody) Close() error { return b.rc.Close() }

// entryCounter fails a JSON array body once it holds more than max
// elements. It follows strings and nesting, and counts the commas between
// the array's own elements.
//
// It also fails the body once the elements of the arrays inside the
// entries (checks, tags, upstreams...) would decode to more than budget
// bytes: one entry may list millions of them, which the entry count does
// not see, and "{}," is 3 bytes of JSON but a 464-byte api.HealthCheck.
// An element that is an object costs nestedObjectCost, any other
// nestedValueCost.
type entryCounter struct {
	rc         io.ReadCloser
	max        int
	depth      int
	inStr, esc bool
	commas     int
	budget     int64  // 0: no limit
	cost       int64  // of the nested arrays' elements so far
	arrays     uint64 // bit d: the container at depth d+1 is an array (depths up to 64)
	expect     bool   // an element of a nested array may start at the next value byte
}

// The decoded cost of an element of an array inside an entry: an object is
// at most an api.HealthCheck (the largest struct in a ServiceEntry's
// arrays) and its pointer; anything else a string header and its slot.
var (
	nestedObjectCost = int64(unsafe.Sizeof(api.HealthCheck{})) + 8
	nestedValueCost  = int64(unsafe.Sizeof("")) + 8
)

// inArray reports whether the container at the current depth is an array
// inside an entry (depth 3 or more); deeper than 64, it says yes.
func (c *entryCounter) inArray() bool {
	if c.depth < 3 {
		return false
	}
	return c.depth > 64 || c.arrays&(1<<(c.depth-1)) != 0
}

func (c *entryCounter) Read(p []byte) (int, error) {
	n, err := c.rc.Read(p)
	for _, b := range p[:n] {
		if c.inStr {
			switch {
			case c.esc:
				c.esc = false
			case b == '\\':
				c.esc = true
			case b == '"':
				c.inStr = false
			}
			continue
		}
		if c.expect && b != ' ' && b != '\t' && b != '\r' && b != '\n' {
			c.expect = false
			if b != ']' {
				cost := nestedValueCost
				if b == '{' {
					cost = nestedObjectCost
				}
				if c.cost += cost; c.budget > 0 && c.cost > c.budget {
					return 0, fmt.Errorf("%w: the entries' nested elements would decode to more than %d bytes", ErrResponseTooLarge, c.budget)
				}
			}
		}
		switch b {
		case '"':
			c.inStr = true
		case '[', '{':
			c.depth++
			if c.depth >= 1 && c.depth <= 64 { // a hostile body may close more than it opened
				if b == '[' {
					c.arrays |= 1 << (c.depth - 1)
				} else {
					c.arrays &^= 1 << (c.depth - 1)
				}
			}
			c.expect = b == '[' && c.inArray()
		case ']', '}':
			c.depth--
		case ',':
			if c.depth == 1 {
				if c.commas++; c.commas >= c.max {
					return 0, fmt.Errorf("%w: more than %d entries", ErrResponseTooLarge, c.max)
				}
			}
			c.expect = c.inArray()
		}
	}
	return n, err
}

func (c *entryCounter) Close() error { return c.rc.Close() }
