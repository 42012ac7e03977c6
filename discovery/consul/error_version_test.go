package consul

import (
	"context"
	"net"
	"strings"
	"testing"
	"time"
)

// An agent that stays unreachable fails every read the same way. The
// Publisher publishes a repeated error without a new Version, so that the
// consumer is not woken on every attempt; the error must then read the
// same whether the read was plain, blocking or ResolveNow's consistent one.
// A client calls ResolveNow on failed dials, so during an outage both
// kinds of read alternate.
func TestUnreachableAgentIsOneErrorVersionWhateverTheRead(t *testing.T) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := l.Addr().String()
	l.Close() // nothing listens there: every read fails with "connection refused"
	w, err := New("web", WithAddress(addr), WithErrorBackoff(50*time.Millisecond, 50*time.Millisecond), WithResolveInterval(10*time.Millisecond))
	if err != nil {
		t.Fatal(err)
	}
	defer w.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	go func() {
		for i := 0; ctx.Err() == nil; i++ {
			if i%3 == 0 {
				w.ResolveNow() // some reads are forced, some are not
			}
			time.Sleep(35 * time.Millisecond)
		}
	}()
	var texts []string
	for {
		s, err := w.Next(ctx)
		if err != nil {
			break
		}
		texts = append(texts, s.Err.Error())
	}
	st := w.Stats()
	if st.ForcedReads < 3 || st.Errors-st.ForcedReads < 3 {
		t.Fatalf("stats %+v: want several forced and several plain reads", st)
	}
	if len(texts) > 1 {
		t.Fatalf("%d Versions for %d failed reads of one unreachable agent, want 1; the error text changed:\n%s",
			len(texts), st.Errors, strings.Join(texts[:min(len(texts), 3)], "\n"))
	}
	if !strings.Contains(texts[0], addr) || !strings.Contains(texts[0], "connection refused") {
		t.Fatalf("error %q does not name the agent and the cause", texts[0])
	}
}
