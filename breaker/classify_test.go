package breaker

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/rpc"
	"os"
	"syscall"
	"testing"
	"time"

	"github.com/sony/gobreaker/v2"
)

func TestClassify(t *testing.T) {
	opErr := &net.OpError{Op: "dial", Net: "tcp", Err: syscall.ECONNREFUSED}
	// A real dial timeout: net's timeout error answers errors.Is for
	// context.DeadlineExceeded although no context ended.
	_, dialTimeout := (&net.Dialer{Timeout: time.Nanosecond}).Dial("tcp", "127.0.0.1:1")
	if !errors.Is(dialTimeout, context.DeadlineExceeded) {
		t.Fatalf("dial with a 1 ns timeout: %v; the case below needs a timeout that matches context.DeadlineExceeded", dialTimeout)
	}
	tests := []struct {
		name string
		err  error
		want Outcome
	}{
		{"nil", nil, Success},
		{"server error", rpc.ServerError("x"), Success},
		{"wrapped server error", fmt.Errorf("call Svc.M: %w", rpc.ServerError("x")), Success},
		{"canceled", context.Canceled, Excluded},
		{"deadline exceeded", context.DeadlineExceeded, Excluded},
		{"wrapped canceled", fmt.Errorf("call: %w", context.Canceled), Excluded},
		{"attempt timeout", ErrAttemptTimeout, Failure},
		{"wrapped attempt timeout", fmt.Errorf("attempt 2: %w", ErrAttemptTimeout), Failure},
		{"attempt timeout and deadline", fmt.Errorf("%w: %w", ErrAttemptTimeout, context.DeadlineExceeded), Failure},
		{"deadline and attempt timeout", fmt.Errorf("%w: %w", context.DeadlineExceeded, ErrAttemptTimeout), Failure},
		{"EOF", io.EOF, Failure},
		{"unexpected EOF", io.ErrUnexpectedEOF, Failure},
		{"net.OpError", opErr, Failure},
		{"wrapped net.OpError", fmt.Errorf("dial: %w", opErr), Failure},
		{"ECONNREFUSED", syscall.ECONNREFUSED, Failure},
		{"i/o timeout", os.ErrDeadlineExceeded, Failure},
		{"dial timeout", dialTimeout, Failure},
		{"wrapped dial timeout", fmt.Errorf("attempt: %w", dialTimeout), Failure},
		{"joined canceled", errors.Join(io.EOF, context.Canceled), Excluded},
		{"rpc shutdown", rpc.ErrShutdown, Failure},
		{"other", errors.New("boom"), Failure},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := Classify(tt.err); got != tt.want {
				t.Errorf("Classify(%v) = %v, want %v", tt.err, got, tt.want)
			}
		})
	}
}

func TestErrors(t *testing.T) {
	for _, tt := range []struct {
		err, gb error
		msg     string
	}{
		{ErrOpen, gobreaker.ErrOpenState, "breaker: circuit breaker is open"},
		{ErrTooManyRequests, gobreaker.ErrTooManyRequests, "breaker: half-open: too many requests"},
	} {
		if !errors.Is(tt.err, tt.gb) {
			t.Errorf("errors.Is(%v, %v) = false", tt.err, tt.gb)
		}
		if got := tt.err.Error(); got != tt.msg {
			t.Errorf("message %q, want %q", got, tt.msg)
		}
	}
	if got, want := ErrAttemptTimeout.Error(), "breaker: attempt timed out"; got != want {
		t.Errorf("message %q, want %q", got, want)
	}
	for _, o := range []Outcome{Success, Failure, Excluded} {
		if o.String() == "unknown" {
			t.Errorf("Outcome(%d) has no name", o)
		}
	}
	for st, want := range map[State]string{Closed: "closed", HalfOpen: "half-open", Open: "open"} {
		if st.String() != want {
			t.Errorf("%d.String() = %q, want %q", st, st.String(), want)
		}
	}
}
