package etcd

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"
	clientv3 "go.etcd.io/etcd/client/v3"
	"google.golang.org/grpc/metadata"

	"github.com/dialtone-go/dialtone/discovery"
)

// explainTimeout bounds the look for the reason of a list that timed out
// (a TLS handshake per endpoint), so a blackholed etcd does not delay the
// retries much.
const explainTimeout = time.Second

// Errors that end a watch and make the Watcher list again.
var (
	errWatchClosed = errors.New("etcd: watch channel closed")
	errStalled     = errors.New("etcd: watch stalled: no response or progress notification")
)

// Watcher publishes the endpoints registered under one etcd key prefix. It
// implements discovery.Watcher. One goroutine, started by New and stopped by
// Close, lists the prefix, publishes the full set, and watches from the next
// revision; see the package documentation for how it recovers.
type Watcher struct {
	client    *clientv3.Client
	ownClient bool   // the builder made the client; Close closes it
	release   func() // if set, called by Close after closing the client
	dir       string // the key prefix with one trailing "/"
	opts      options

	pub     discovery.Publisher
	resolve chan struct{} // ResolveNow's signal; capacity 1, so calls coalesce
	cancel  context.CancelFunc
	done    chan struct{} // closed when run returns

	closeOnce sync.Once
	closeErr  error

	streamID int           // this Watcher's watch stream (see streamKey); given back by Close
	lists    atomic.Uint64 // list requests sent
	dropped  atomic.Uint64 // entries dropped as invalid

	// Owned by the run goroutine.
	rejected map[string]string // ID -> reason of the last publication's rejections, to log each once
	badKeys  map[string]string // key -> parse error of the last publication's unparsable values, likewise
}

// streamKey is the metadata key that gives each Watcher's watch a gRPC
// stream of its own (see watch). Its values are small numbers, taken by New
// and given back by Close, so that the values in use stay as few as the
// Watchers open at once: a stream the client made for a value whose watch
// never started (a Close that raced the watch's start) is then taken up by
// a later Watcher on the same client instead of staying open for good.
const streamKey = "dialtone-watcher"

var streamIDs struct {
	sync.Mutex
	free []int // given back, in no order
	next int   // the next never-used value
}

func takeStreamID() int {
	streamIDs.Lock()
	defer streamIDs.Unlock()
	if n := len(streamIDs.free); n > 0 {
		id := streamIDs.free[n-1]
		streamIDs.free = streamIDs.free[:n-1]
		return id
	}
	streamIDs.next++
	return streamIDs.next
}

func giveStreamID(id int) {
	streamIDs.Lock()
	streamIDs.free = append(streamIDs.free, id)
	streamIDs.Unlock()
}

// New starts a Watcher on the keys under prefix + "/" and returns at once;
// the first State arrives through Next. A trailing "/" on prefix is ignored,
// and a prefix with nothing but slashes is refused. The caller owns client
// and closes it after the Watcher. New starts one goroutine, which Close
// stops.
func New(client *clientv3.Client, prefix string, opts ...Option) (*Watcher, error) {
	if client == nil {
		return nil, errors.New("etcd: New with a nil client")
	}
	if strings.Trim(prefix, "/") == "" {
		return nil, fmt.Errorf("etcd: empty key prefix %q", prefix)
	}
	return start(client, false, prefix, opts), nil
}

func start(client *clientv3.Client, own bool, prefix string, opts []Option) *Watcher {
	o := defaultOptions()
	for _, opt := range opts {
		opt(&o)
	}
	ctx, cancel := context.WithCancel(context.Background())
	w := &Watcher{
		client:    client,
		ownClient: own,
		dir:       keyPrefix(prefix),
		opts:      o,
		resolve:   make(chan struct{}, 1),
		cancel:    cancel,
		done:      make(chan struct{}),
		streamID:  takeStreamID(),
	}
	go w.run(ctx)
	return w
}

// Next implements discovery.Watcher: it blocks until a State newer than the
// last one it returned is published, or ctx is done, or the Watcher is closed
// (discovery.ErrClosed). Call it from one consumer goroutine.
func (w *Watcher) Next(ctx context.Context) (discovery.State, error) { return w.pub.Next(ctx) }

// ResolveNow implements discovery.Watcher. It never blocks. It asks the
// watcher goroutine for a fresh linearizable list of the prefix, done at once
// (the current watch is dropped, the prefix listed and published, and a new
// watch started). Calls are coalesced, and forced lists are at least the
// resolve interval apart (WithResolveInterval, default 500 ms): a call inside
// the interval is served at its end. During the backoff after a failure, a
// call waits for the backoff to end and is served by the list made then.
func (w *Watcher) ResolveNow() {
	select {
	case w.resolve <- struct{}{}:
	default:
	}
}

// Close implements discovery.Watcher: it stops the watcher goroutine, waits
// for it, makes Next return discovery.ErrClosed, and closes the etcd client
// if the Watcher was built from a target. It is idempotent and returns the
// first call's result.
func (w *Watcher) Close() error {
	w.closeOnce.Do(func() {
		w.cancel()
		<-w.done
		giveStreamID(w.streamID) // the run goroutine, which watches, is gone
		w.pub.Close()
		if w.ownClient {
			if err := w.client.Close(); err != nil && !errors.Is(err, context.Canceled) {
				w.closeErr = fmt.Errorf("etcd: closing client: %w", err)
			}
		}
		if w.release != nil {
			w.release()
		}
	})
	return w.closeErr
}

// Dropped returns how many registry entries have been dropped as invalid
// since the Watcher started: unparsable values, invalid addresses, oversized
// fields, duplicate addresses. Each is also logged. Safe from any goroutine.
func (w *Watcher) Dropped() uint64 { return w.dropped.Load() }

// snapshot is the watcher goroutine's view of the prefix: the entries that
// parsed, and the keys whose current value did not.
type snapshot struct {
	good map[string]discovery.Endpoint
	bad  map[string]error
	// keys are those of good and bad, sorted: publish hands Sanitize the
	// endpoints in ID order (an ID is its key less the prefix), so that an
	// event on a large prefix does not sort the whole set again (at
	// 10,000 keys, half of the 9 ms each event cost).
	keys []string
}

// add records key in keys if it is new; has reports whether it was there.
func (s *snapshot) add(key string, has bool) {
	if has {
		return
	}
	if n := len(s.keys); n == 0 || s.keys[n-1] < key {
		s.keys = append(s.keys, key) // a list, in key order
		return
	}
	i, _ := slices.BinarySearch(s.keys, key)
	s.keys = slices.Insert(s.keys, i, key)
}

// remove deletes key from the snapshot.
func (s *snapshot) remove(key string) {
	_, g := s.good[key]
	_, b := s.bad[key]
	if !g && !b {
		return
	}
	delete(s.good, key)
	delete(s.bad, key)
	if i, ok := slices.BinarySearch(s.keys, key); ok {
		s.keys = slices.Delete(s.keys, i, i+1)
	}
}

func (s *snapshot) size() int { return len(s.good) + len(s.bad) }

// published is the outcome of the last publication, reused when a progress
// notification only confirms it.
type published struct {
	valid []discovery.Endpoint
	err   error
}

// watchEnd says why a watch ended.
type watchEnd struct {
	forced    bool  // ResolveNow asked for a fresh list
	delivered bool  // the watch delivered at least one response
	err       error // why it failed, if it did
}

// run is the watcher goroutine: list, publish, watch, and again.
func (w *Watcher) run(ctx context.Context) {
	defer close(w.done)
	attempt := 0             // consecutive failures; a failure after a healthy period relists at once
	var lastForced time.Time // when the last list forced by ResolveNow started
	for {
		// A ResolveNow that arrived before this list is served by it.
		select {
		case <-w.resolve:
		default:
		}
		snap, rev, err := w.list(ctx)
		if err != nil {
			if ctx.Err() != nil {
				return
			}
			if w.opts.explain != nil && errors.Is(err, context.DeadlineExceeded) {
				// etcd's client waits for a connection until the request
				// times out, and says no more: find out why.
				ectx, cancel := context.WithTimeout(ctx, explainTimeout)
				if why := w.opts.explain(ectx); why != nil {
					err = fmt.Errorf("%w (%w)", why, err)
				}
				cancel()
				if ctx.Err() != nil {
					return
				}
			}
			w.pub.SetError(err)
			w.opts.logger.Warn("etcd: list failed; keeping the last known good set", "prefix", w.dir, "attempt", attempt+1, "err", err)
			if !sleep(ctx, w.opts.backoff.Delay(attempt, nil)) {
				return
			}
			redialNow(w.client)
			attempt++
			continue
		}
		cur := w.publish(snap, time.Now())
		end := w.watch(ctx, rev, snap, cur, lastForced)
		if ctx.Err() != nil {
			return
		}
		if end.forced {
			lastForced = time.Now()
		}
		if end.err != nil {
			w.opts.logger.Info("etcd: watch ended; listing again", "prefix", w.dir, "err", end.err)
			// The member we watched has lost its leader: what it serves may
			// be stale. Say so at once, with the last known good set; a list
			// through another member clears it.
			if errors.Is(end.err, rpctypes.ErrNoLeader) {
				w.pub.SetError(end.err)
			}
		}
		if end.delivered {
			attempt = 0
		}
		if end.forced || end.delivered {
			continue
		}
		attempt++
		if attempt > 1 && !sleep(ctx, w.opts.backoff.Delay(attempt-2, nil)) {
			return
		}
	}
}

// list reads the whole prefix with a linearizable Get and returns the
// entries and the revision they were read at. It requires a leader: a
// member without one refuses at once (ErrNoLeader), and the client tries
// another, instead of holding the read until the request timeout.
func (w *Watcher) list(ctx context.Context) (*snapshot, int64, error) {
	w.lists.Add(1)
	lctx, cancel := context.WithTimeout(clientv3.WithRequireLeader(ctx), w.opts.requestTimeout)
	defer cancel()
	limit := w.opts.maxEntries
	resp, err := w.client.Get(lctx, w.dir, clientv3.WithPrefix(), clientv3.WithLimit(int64(limit)+1))
	if err != nil {
		return nil, 0, fmt.Errorf("etcd: list %q at %s: %w", w.dir, endpointsText(w.client.Endpoints()), err)
	}
	if resp.More || len(resp.Kvs) > limit {
		return nil, 0, fmt.Errorf("etcd: list %q: %d keys, more than the limit of %d (WithMaxEntries)", w.dir, resp.Count, limit)
	}
	snap := &snapshot{good: make(map[string]discovery.Endpoint, len(resp.Kvs)), bad: map[string]error{},
		keys: make([]string, 0, len(resp.Kvs))}
	for _, kv := range resp.Kvs {
		w.put(snap, string(kv.Key), kv.Value)
	}
	if w.opts.onList != nil {
		w.opts.onList(resp.Header.Revision)
	}
	return snap, resp.Header.Revision, nil
}

// put records one key's value in snap: in snap.good, or in snap.bad when
// it does not parse (publish counts and logs those).
func (w *Watcher) put(snap *snapshot, key string, value []byte) {
	_, g := snap.good[key]
	_, b := snap.bad[key]
	snap.add(key, g || b)
	e, err := ParseValue(key, w.dir, value)
	if err != nil {
		delete(snap.good, key)
		snap.bad[key] = err
		if errors.Is(err, errCritical) {
			w.opts.logger.Debug("etcd: endpoint is critical; not published", "key", clip(key))
		}
		return // counted and logged by publish, once per key and reason
	}
	delete(snap.bad, key)
	snap.good[key] = e
}

// idleSince reports whether the store is still at revision rev, the one our
// watch started after: then nothing can have been missed. It is a
// count-only, linearizable read. A store behind rev is not idle but another
// store (restored from a snapshot, or wiped and restarted): the client
// resumed the watch on it from rev+1, which it will never reach, so idleSince
// returns an error, and the watcher lists again.
func (w *Watcher) idleSince(ctx context.Context, rev int64) (bool, error) {
	gctx, cancel := context.WithTimeout(ctx, w.opts.progressInterval)
	defer cancel()
	resp, err := w.client.Get(gctx, w.dir, clientv3.WithPrefix(), clientv3.WithCountOnly())
	if err != nil {
		return false, err
	}
	if r := resp.Header.Revision; r < rev {
		return false, fmt.Errorf("etcd: the store's revision went back from %d to %d (restored or replaced)", rev, r)
	}
	return resp.Header.Revision == rev, nil
}

// watch follows the prefix from rev+1, applying events to snap and
// publishing the full set after each response, until the watch fails, stalls,
// or ResolveNow forces a new list. lastForced is when the last forced list
// started, for ResolveNow's rate limit.
func (w *Watcher) watch(ctx context.Context, rev int64, snap *snapshot, cur published, lastForced time.Time) (end watchEnd) {
	if ctx.Err() != nil {
		// Closed during the list or its publication. The client makes a
		// stream for a context's metadata before it looks at the context,
		// and a stream no watch ever joins stays open; don't make one.
		return end
	}
	// The client puts watches whose contexts carry the same gRPC metadata
	// on one stream, and etcd answers a progress request for a whole
	// stream, and only when every watch on it is in step. Watchers sharing
	// a client would answer for each other: one whose watch starts past
	// the store's revision (nothing written since its list) would silence
	// the progress another one asked for, which would then list again for
	// nothing. Each Watcher's watch gets a stream of its own.
	wctx, cancel := context.WithCancel(metadata.AppendToOutgoingContext(
		clientv3.WithRequireLeader(ctx), streamKey, strconv.Itoa(w.streamID)))
	defer cancel()
	// Watch blocks until etcd confirms the watch, and the client retries
	// forever while etcd is unreachable: bound it like a stall.
	createTimeout := 2 * w.opts.progressInterval
	created := time.AfterFunc(createTimeout, cancel)
	wch := w.client.Watch(wctx, w.dir, clientv3.WithPrefix(), clientv3.WithRev(rev+1),
		clientv3.WithProgressNotify(), clientv3.WithCreatedNotify())
	if !created.Stop() {
		end.err = fmt.Errorf("%w: watch not created within %v", errStalled, createTimeout)
		return end
	}

	stall := time.NewTimer(w.opts.progressInterval)
	defer stall.Stop()
	probed := false // a progress request is outstanding
	// quiet: the store was at rev when last seen, by the list or by
	// idleSince; a response past rev clears it.
	quiet := true

	var resolveAt <-chan time.Time // set while a rate-limited ResolveNow waits
	var resolveTimer *time.Timer
	defer func() {
		if resolveTimer != nil {
			resolveTimer.Stop()
		}
	}()

	for {
		select {
		case <-ctx.Done():
			return end
		case <-w.resolve:
			if resolveAt != nil {
				continue // already scheduled
			}
			wait := w.opts.resolveInterval - time.Since(lastForced)
			if wait <= 0 {
				end.forced = true
				return end
			}
			resolveTimer = time.NewTimer(wait)
			resolveAt = resolveTimer.C
		case <-resolveAt:
			end.forced = true
			return end
		case <-stall.C:
			if probed {
				// No answer to the progress request. etcd sends none to a
				// watch that starts past the store's revision (an idle
				// registry since our list), so ask for the revision before
				// calling it a stall.
				idle, err := w.idleSince(wctx, rev)
				if err != nil {
					end.err = fmt.Errorf("%w: %w", errStalled, err)
					return end
				}
				switch {
				case idle:
					if cur.err == nil {
						w.pub.Update(cur.valid, time.Now())
					}
					quiet, probed = true, false
					stall.Reset(w.opts.progressInterval)
					continue
				case quiet:
					// The store was idle at the last look (the list, or
					// idleSince) and has moved on since: a write
					// elsewhere, after the request went out unanswered
					// because the store was idle. Ask once more; the
					// watch is past its start now, so an answer is due
					// (one interval more to find a stall at this turn,
					// and no list for nothing).
					quiet = false
				default:
					end.err = errStalled
					return end
				}
			}
			// Ask etcd to confirm the watch is alive. The request goes on
			// the stream of wctx (same metadata), and is bounded: while the
			// client reconnects, nobody reads it.
			if ctx.Err() != nil {
				return end // as before Watch: no stream for a closed Watcher
			}
			pctx, pcancel := context.WithTimeout(wctx, w.opts.progressInterval)
			err := w.client.RequestProgress(pctx)
			pcancel()
			if err != nil {
				end.err = fmt.Errorf("%w: progress request: %w", errStalled, err)
				return end
			}
			probed = true
			stall.Reset(w.opts.progressInterval)
		case resp, ok := <-wch:
			if !ok {
				end.err = errWatchClosed
				return end
			}
			if err := resp.Err(); err != nil {
				end.err = fmt.Errorf("etcd: watch %q from revision %d: %w", w.dir, rev+1, err)
				return end
			}
			if resp.Canceled {
				end.err = fmt.Errorf("etcd: watch %q canceled", w.dir)
				return end
			}
			end.delivered = true
			probed = false
			if resp.Header.Revision > rev {
				quiet = false
			}
			stall.Reset(w.opts.progressInterval)
			now := time.Now()
			if len(resp.Events) == 0 {
				// Created or progress notification: the set is confirmed.
				if cur.err == nil {
					w.pub.Update(cur.valid, now)
				}
				continue
			}
			for _, ev := range resp.Events {
				key := string(ev.Kv.Key)
				switch ev.Type {
				case clientv3.EventTypePut:
					w.put(snap, key, ev.Kv.Value)
				case clientv3.EventTypeDelete:
					snap.remove(key)
				}
			}
			if snap.size() > w.opts.maxEntries {
				err := fmt.Errorf("etcd: prefix %q: %d keys, more than the limit of %d (WithMaxEntries)", w.dir, snap.size(), w.opts.maxEntries)
				w.pub.SetError(err)
				end.err = err
				return end
			}
			cur = w.publish(snap, now)
		}
	}
}

// publish sanitizes the snapshot and publishes it as the full set. A prefix
// whose every key is invalid is reported as an error, keeping the last known
// good value of each key still listed: that is a broken registry, not an
// authoritative empty answer.
func (w *Watcher) publish(snap *snapshot, now time.Time) published {
	eps := make([]discovery.Endpoint, 0, len(snap.good))
	for _, key := range snap.keys { // in ID order: Sanitize need not sort
		if e, ok := snap.good[key]; ok {
			eps = append(eps, e)
		}
	}
	valid, rejected := discovery.Sanitize(eps)
	seen := make(map[string]string, len(rejected))
	for _, r := range rejected {
		msg := r.Err.Error()
		seen[r.Endpoint.ID] = msg
		if w.rejected[r.Endpoint.ID] != msg {
			w.dropped.Add(1)
			w.opts.logger.Warn("etcd: dropping invalid entry", "prefix", w.dir, "err", r.Err)
		}
	}
	w.rejected = seen
	// Values that did not parse, each counted and logged once, not again
	// on every list and event while the key keeps its value.
	seenBad := make(map[string]string, len(snap.bad))
	for key, err := range snap.bad {
		if errors.Is(err, errCritical) {
			continue
		}
		msg := err.Error()
		seenBad[key] = msg
		if w.badKeys[key] != msg {
			w.dropped.Add(1)
			w.opts.logger.Warn("etcd: dropping invalid entry", "prefix", w.dir, "err", err)
		}
	}
	w.badKeys = seenBad
	if len(valid) == 0 {
		if err := w.allInvalid(snap, rejected); err != nil {
			// Keep the last good value of each key whose value turned
			// invalid, but not of a key deleted, or now critical: the
			// registry says for certain that that node is gone.
			w.pub.SetErrorKeeping(err, func(e discovery.Endpoint) bool {
				key := w.dir + e.ID
				if _, ok := snap.good[key]; ok { // parsed, then rejected by Sanitize
					return true
				}
				berr, ok := snap.bad[key]
				return ok && !errors.Is(berr, errCritical)
			})
			return published{err: err}
		}
	}
	w.pub.Update(valid, now)
	return published{valid: valid}
}

// allInvalid returns the error for a prefix that has entries but none
// publishable, or nil when it holds none (or only critical ones): that is an
// authoritative empty answer.
func (w *Watcher) allInvalid(snap *snapshot, rejected []discovery.Rejected) error {
	// Sanitize sorts the rejected by ID: the reason quoted does not move
	// with the snapshot map's order from list to list.
	n := len(rejected)
	var first error
	if n > 0 {
		first = rejected[0].Err
	}
	for _, err := range snap.bad {
		if errors.Is(err, errCritical) {
			continue
		}
		n++
		if first == nil || err.Error() < first.Error() {
			first = err
		}
	}
	if n == 0 {
		return nil
	}
	return fmt.Errorf("etcd: prefix %q: all %d entries are invalid; keeping the entries of the last known good set still listed: %w", w.dir, n, first)
}

// redialNow asks client's gRPC connection to redial at once the members it
// cannot reach, and to start its redial backoff over. The Watcher calls it
// before each list it retries after a failed one, and the Registrar before
// each registration it retries, so that their own backoff (WithBackoff, at
// most 5 s by default) sets the pace at which an etcd that is back is
// found: gRPC's own backoff grows by 1.6 per failed redial up to 120 s, and
// after an outage of a minute or two its next redial can come a minute or
// two after etcd is back. A connection that is up is left as it is.
func redialNow(client *clientv3.Client) {
	if cc := client.ActiveConnection(); cc != nil {
		cc.ResetConnectBackoff()
	}
}

// sleep waits for d or until ctx is done, and reports whether d elapsed.
func sleep(ctx context.Context, d time.Duration) bool {
	if d <= 0 {
		return ctx.Err() == nil
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return false
	case <-t.C:
		return true
	}
}

// endpointsText lists a client's endpoints for an error: an unreachable or
// silent etcd otherwise shows only "context deadline exceeded", which
// names neither the servers tried nor where they came from. Userinfo
// (user:password@, which ConfigFromEnv refuses but a caller's own client
// may hold) is left out, and the list is clipped.
func endpointsText(eps []string) string {
	parts := make([]string, len(eps))
	for i, ep := range eps {
		scheme, rest, ok := strings.Cut(ep, "://")
		if !ok {
			scheme, rest = "", ep
		}
		// Userinfo sits in the authority, before the path: a socket
		// path may hold "@".
		authority, path := rest, ""
		if i := strings.IndexByte(rest, '/'); i >= 0 {
			authority, path = rest[:i], rest[i:]
		}
		if at := strings.LastIndex(authority, "@"); at >= 0 {
			authority = authority[at+1:]
		}
		rest = authority + path
		if ok {
			rest = scheme + "://" + rest
		}
		parts[i] = clip(rest)
	}
	text := strings.Join(parts, ",")
	if len(text) > 256 {
		text = text[:256] + "..."
	}
	return text
}
