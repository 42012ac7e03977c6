package etcdtest

import (
	"bufio"
	"bytes"
	"io"
	"net"
	"net/http"
	"strconv"
	"sync"
	"time"
)

// headerTimeout bounds how long a peer proxy waits for the first request on
// a new connection, to learn which member sent it.
const headerTimeout = 5 * time.Second

// network is the loopback fabric of a Cluster: a TCP proxy in front of every
// member's client URL and every member's peer URL, the addresses clients and
// peers are told to use. It injects two faults, per member:
//
//   - down (Cluster member Stop): every connection to or from the member is
//     closed, and new ones are closed at once, as when its process dies.
//   - cut (Isolate): traffic between the member and its peers is held back,
//     silently, with the connections left open, as in a network partition;
//     its clients still reach it. Rejoin delivers what was held.
//
// A peer proxy tells which member opened a connection from the
// X-Server-From header of the first request on it, which etcd's raft
// transport (streams, pipeline, snapshots) always sends. Other peer requests
// (version and membership probes, lease forwarding) carry no such header;
// while the member they go to is not cut, they pass.
type network struct {
	mu     sync.Mutex
	cond   *sync.Cond // broadcast when cut changes or the network closes
	down   []bool
	cut    []bool
	ids    map[uint64]int // member ID -> index, filled once the members run
	links  map[*link]struct{}
	lns    []net.Listener
	closed bool
	wg     sync.WaitGroup
}

// link is one proxied connection: in from the dialer, out to the member.
type link struct {
	in, out net.Conn
	dest    int    // the member the connection goes to
	from    uint64 // for peer links, the ID of the member that opened it; 0 if unknown
	peer    bool   // a peer link (else a client link)
}

// conns appends l's open connections to cs. The network's mutex is held.
func (l *link) conns(cs []net.Conn) []net.Conn {
	cs = append(cs, l.in)
	if l.out != nil {
		cs = append(cs, l.out)
	}
	return cs
}

func newNetwork(n int) *network {
	nw := &network{
		down:  make([]bool, n),
		cut:   make([]bool, n),
		ids:   make(map[uint64]int, n),
		links: map[*link]struct{}{},
	}
	nw.cond = sync.NewCond(&nw.mu)
	return nw
}

// listen opens a proxy for member dest on a free loopback port. upstream
// returns the member's real address at the time of each new connection.
func (nw *network) listen(dest int, peer bool, upstream func() string) (string, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "", err
	}
	nw.mu.Lock()
	nw.lns = append(nw.lns, ln)
	nw.wg.Add(1)
	nw.mu.Unlock()
	go nw.accept(ln, dest, peer, upstream)
	return ln.Addr().String(), nil
}

func (nw *network) accept(ln net.Listener, dest int, peer bool, upstream func() string) {
	defer nw.wg.Done()
	for {
		c, err := ln.Accept()
		if err != nil {
			return
		}
		nw.mu.Lock()
		refuse := nw.closed || nw.down[dest]
		if !refuse {
			nw.wg.Add(1)
		}
		nw.mu.Unlock()
		if refuse {
			c.Close()
			continue
		}
		go nw.serve(c, dest, peer, upstream())
	}
}

// serve proxies one connection until either side closes it or a fault
// closes it.
func (nw *network) serve(in net.Conn, dest int, peer bool, upstream string) {
	defer nw.wg.Done()
	l := &link{in: in, dest: dest, peer: peer}
	nw.mu.Lock()
	if nw.closed {
		nw.mu.Unlock()
		in.Close()
		return
	}
	nw.links[l] = struct{}{} // from now on, close and setDown close in
	nw.mu.Unlock()
	drop := func() {
		nw.mu.Lock()
		delete(nw.links, l)
		nw.mu.Unlock()
		in.Close()
	}
	var first []byte // bytes read from in while looking for the sender
	if peer {
		var from uint64
		first, from = identify(in)
		nw.mu.Lock()
		l.from = from
		nw.mu.Unlock()
	}
	out, err := net.DialTimeout("tcp", upstream, time.Second)
	if err != nil {
		drop()
		return
	}
	nw.mu.Lock()
	if nw.closed || nw.dead(l) {
		nw.mu.Unlock()
		out.Close()
		drop()
		return
	}
	l.out = out
	nw.wg.Add(2)
	nw.mu.Unlock()
	go nw.pipe(l, out, in, first)
	go nw.pipe(l, in, out, nil)
}

// identify reads the first request on a peer connection and returns the
// bytes it read and the member ID in its X-Server-From header, or 0.
func identify(in net.Conn) ([]byte, uint64) {
	var seen bytes.Buffer
	in.SetReadDeadline(time.Now().Add(headerTimeout))
	req, err := http.ReadRequest(bufio.NewReader(io.TeeReader(in, &seen)))
	in.SetReadDeadline(time.Time{})
	if err != nil {
		return seen.Bytes(), 0
	}
	id, err := strconv.ParseUint(req.Header.Get("X-Server-From"), 16, 64)
	if err != nil {
		return seen.Bytes(), 0
	}
	return seen.Bytes(), id
}

// sender returns the index of the member that opened l, or -1 if unknown.
// The IDs of the members are learnt once they run, so links opened while
// the cluster formed are named as soon as it has. nw.mu is held.
func (nw *network) sender(l *link) int {
	if i, ok := nw.ids[l.from]; ok && l.from != 0 {
		return i
	}
	return -1
}

// dead reports whether l touches a stopped member. nw.mu is held.
func (nw *network) dead(l *link) bool {
	s := nw.sender(l)
	return nw.down[l.dest] || (s >= 0 && nw.down[s])
}

// held reports whether l's traffic is held back by a cut. nw.mu is held.
func (nw *network) held(l *link) bool {
	s := nw.sender(l)
	return l.peer && (nw.cut[l.dest] || (s >= 0 && nw.cut[s]))
}

// pipe copies first, then src, to dst, waiting before each write while the
// link is held. It closes both ends when done, which ends the other pipe.
func (nw *network) pipe(l *link, dst, src net.Conn, first []byte) {
	defer nw.wg.Done()
	defer func() {
		nw.mu.Lock()
		delete(nw.links, l)
		nw.mu.Unlock()
		dst.Close()
		src.Close()
	}()
	buf := make([]byte, 32<<10)
	for {
		var n int
		var err error
		if len(first) > 0 {
			n = copy(buf, first)
			first = first[n:]
		} else {
			n, err = src.Read(buf)
		}
		if n > 0 {
			nw.mu.Lock()
			for nw.held(l) && !nw.closed && !nw.dead(l) {
				nw.cond.Wait()
			}
			stop := nw.closed || nw.dead(l)
			nw.mu.Unlock()
			if stop {
				return
			}
			if _, werr := dst.Write(buf[:n]); werr != nil {
				return
			}
		}
		if err != nil {
			return
		}
	}
}

// setIDs records the member IDs, so peer proxies can name senders.
func (nw *network) setIDs(ids map[uint64]int) {
	nw.mu.Lock()
	defer nw.mu.Unlock()
	for id, i := range ids {
		nw.ids[id] = i
	}
}

// setDown marks member i stopped (closing its connections) or running.
func (nw *network) setDown(i int, down bool) {
	nw.mu.Lock()
	nw.down[i] = down
	var kill []net.Conn
	if down {
		for l := range nw.links {
			if nw.dead(l) {
				kill = l.conns(kill)
			}
		}
	}
	nw.mu.Unlock()
	nw.cond.Broadcast()
	for _, c := range kill {
		c.Close()
	}
}

// setCut holds (true) or releases (false) the peer traffic of member i.
func (nw *network) setCut(i int, cut bool) {
	nw.mu.Lock()
	nw.cut[i] = cut
	nw.mu.Unlock()
	nw.cond.Broadcast()
}

// close stops every proxy and connection and waits for their goroutines.
func (nw *network) close() {
	nw.mu.Lock()
	nw.closed = true
	lns := nw.lns
	var conns []net.Conn
	for l := range nw.links {
		conns = l.conns(conns)
	}
	nw.mu.Unlock()
	nw.cond.Broadcast()
	for _, ln := range lns {
		ln.Close()
	}
	for _, c := range conns {
		c.Close()
	}
	nw.wg.Wait()
}
