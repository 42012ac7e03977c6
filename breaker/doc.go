// Package breaker keeps one circuit breaker per backend address, built on
// the two-step breaker of github.com/sony/gobreaker/v2.
//
// # Use
//
// A [Set] owns the breakers of one client. The balancer calls [Set.Get] on a
// node's first pick (a node never picked has no breaker),
// [Set.RetainFunc] after a discovery update that removed addresses (or
// when the Set holds breakers of addresses no longer listed, which a pick
// on an older snapshot can make), and [Set.Close] when it shuts down. Per
// request the caller asks the node's [Breaker]:
//
//	t, err := b.Begin()
//	if err != nil {
//		// ErrOpen or ErrTooManyRequests: pick another node.
//	}
//	err = attempt()
//	b.End(t, err) // exactly once
//
// [Breaker.Allow] is the same in gobreaker's two-step form (a done function
// instead of a Ticket), at the cost of one small allocation per request.
//
// The error given to End is sorted by [Classify]: nil and application
// errors ([net/rpc.ServerError]) are successes, the caller's own
// cancellation or deadline is not counted at all, and everything else
// (transport errors, per-attempt timeouts wrapped with [ErrAttemptTimeout])
// is a failure of the node.
//
// # States
//
// A breaker is Closed, Open or HalfOpen. Closed, it counts outcomes over a
// rolling window (gobreaker's Interval and BucketPeriod) and trips to Open
// after Config.ConsecutiveFailures failures in a row, or when the failure
// ratio over the window reaches Config.FailureRatio with at least
// Config.MinRequests outcomes. Open, it refuses every request with [ErrOpen].
// When the open period ends it turns HalfOpen and lets
// Config.HalfOpenMaxRequests probes through; that many successes close it,
// one failure opens it again.
//
// # Who owns the open period
//
// gobreaker's Timeout is fixed per breaker, and gobreaker only leaves the
// open state lazily, when somebody calls it. Both are wrong for a fleet: the
// open period must grow with each consecutive trip (OpenTimeout x n, capped
// at MaxOpenTimeout, then +-Jitter), and an idle open breaker must still
// turn half-open on time so that observers (the balancer) see it.
//
// So this package keeps its own open state in front of gobreaker, rather
// than recreating gobreakers (a new gobreaker cannot start half-open).
// gobreaker counts, decides when to trip, admits half-open probes and
// closes; it is built with a 1 ns Timeout so that it is always ready to go
// half-open. The Breaker holds the public state in an atomic word. When
// gobreaker trips, its OnStateChange hook (run under gobreaker's lock) only
// records: it stores Open and the deadline in atomics, queues the event and
// files the deadline with the Set's timer goroutine. While the public state
// is Open, Allow refuses without calling gobreaker. At the deadline the
// Set's timer goroutine (or an earlier Allow or State, whichever comes
// first) switches the public state to HalfOpen; the next Allow reaches
// gobreaker, which then goes half-open itself and admits the probe. A
// request that raced past the public check just as the breaker tripped is
// reported to gobreaker as excluded and refused, so it can never act as an
// early probe.
//
// # The closed state
//
// A closed breaker sees almost every request, and gobreaker takes its lock
// and reads the clock twice per request. So the closed state is counted in
// front of gobreaker, by the same rules: a rolling window of Window in 10
// buckets, counted from the moment the breaker last closed; each outcome
// filed in the bucket where its request began, and dropped if that bucket
// has aged out or the breaker changed state since; the consecutive-failure
// run trimmed as buckets age out exactly as gobreaker's rollingCounts trims
// it; Config's trip rule asked after every failure of the current
// generation, with the counts gobreaker would have, including a failure
// too old to be counted (gobreaker asks then too, and trips if successes
// have brought the counts to the rule meanwhile). A success is one compare-and-swap on its bucket and
// no lock while the window is in use (on a quiet one it rolls the window by
// the clock first, as a failure does); Begin reads the current bucket from an atomic. A failure takes
// the window's short lock, rolls the window by the clock and asks the trip
// rule. When the rule says trip, the breaker reports one failure to
// gobreaker, whose ReadyToTrip is then always true, and gobreaker trips as
// usual. Open and half-open are gobreaker's, as above. TestTripsLikeGobreaker
// checks that random outcome sequences, with time passing and requests
// ending out of order, trip a Breaker and a bare gobreaker at the same
// request.
//
// Two differences remain, both outside a trip decision made on time: the
// window is rolled at bucket boundaries by the Set's timer goroutine, so a
// request that begins while that goroutine is late is filed in the previous
// bucket; and a success reported more than Window after its request began,
// while that goroutine is late, is counted until the roll (gobreaker drops
// it at once) and ends the failure run. (A window that went quiet is not
// rolled by the timer goroutine; a success reported then rolls it by the
// clock first, as failures do.)
//
// # Goroutines
//
// A Set runs one timer goroutine (a heap of deadlines: the end of each open
// period, and the next bucket boundary of each closed breaker that had a
// request in its last bucket; a single time.Timer) and, when
// [WithOnStateChange] is given, one goroutine that delivers [Event] values
// in order. Nothing else is started. The closed-state success path, Begin
// and End, takes no lock and allocates nothing. Close stops both goroutines
// and waits for them.
package breaker
