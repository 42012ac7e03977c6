package breaker

import (
	"context"
	"io"
	"net/http"
	"net/http/httptest"
	"testing"
	"time"
)

// TestClassifyNetHTTP pins what Classify's and ErrAttemptTimeout's docs say
// of the errors net/http returns: its own timeouts are the node's, the end of
// the request's context is the caller's, and a per-attempt context made with
// context.WithTimeoutCause(ctx, d, ErrAttemptTimeout) is the node's, because
// net/http returns the context's cause. A net/http that stopped returning
// the cause would make a hung node invisible to callers that follow the doc.
func TestClassifyNetHTTP(t *testing.T) {
	hang := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/body" {
			w.WriteHeader(http.StatusOK)
			w.(http.Flusher).Flush()
		}
		<-r.Context().Done()
	}))
	defer hang.Close()
	tr := &http.Transport{}
	defer tr.CloseIdleConnections()
	rht := &http.Transport{ResponseHeaderTimeout: 20 * time.Millisecond}
	defer rht.CloseIdleConnections()

	const d = 20 * time.Millisecond
	get := func(c *http.Client, ctx context.Context, path string) error {
		req, err := http.NewRequestWithContext(ctx, http.MethodGet, hang.URL+path, nil)
		if err != nil {
			t.Fatal(err)
		}
		res, err := c.Do(req)
		if err != nil {
			return err
		}
		defer res.Body.Close()
		_, err = io.ReadAll(res.Body)
		if err == nil {
			t.Fatalf("GET %s succeeded", path)
		}
		return err
	}
	plain := &http.Client{Transport: tr}
	timed := &http.Client{Transport: tr, Timeout: d}
	tests := []struct {
		name string
		run  func(path string) error
		want Outcome
	}{
		{"Client.Timeout", func(p string) error { return get(timed, context.Background(), p) }, Failure},
		{"ResponseHeaderTimeout", func(p string) error {
			if p == "/body" {
				p = "/headers" // it bounds the wait for headers only
			}
			return get(&http.Client{Transport: rht}, context.Background(), p)
		}, Failure},
		// The caller's deadline and a per-attempt context.WithTimeout end
		// the same way: Classify cannot tell them apart.
		{"caller's deadline, or a per-attempt context.WithTimeout", func(p string) error {
			ctx, cancel := context.WithTimeout(context.Background(), d)
			defer cancel()
			return get(plain, ctx, p)
		}, Excluded},
		{"caller's deadline before Client.Timeout", func(p string) error {
			ctx, cancel := context.WithTimeout(context.Background(), d)
			defer cancel()
			return get(&http.Client{Transport: tr, Timeout: time.Minute}, ctx, p)
		}, Excluded},
		{"caller's cancellation", func(p string) error {
			ctx, cancel := context.WithCancel(context.Background())
			time.AfterFunc(d, cancel)
			return get(plain, ctx, p)
		}, Excluded},
		{"per-attempt context.WithTimeoutCause", func(p string) error {
			ctx, cancel := context.WithTimeoutCause(context.Background(), d, ErrAttemptTimeout)
			defer cancel()
			return get(plain, ctx, p)
		}, Failure},
		{"caller's cancellation under a per-attempt cause", func(p string) error {
			parent, cancelParent := context.WithCancel(context.Background())
			defer cancelParent()
			ctx, cancel := context.WithTimeoutCause(parent, time.Minute, ErrAttemptTimeout)
			defer cancel()
			time.AfterFunc(d, cancelParent)
			return get(plain, ctx, p)
		}, Excluded},
	}
	for _, tt := range tests {
		for _, path := range []string{"/headers", "/body"} {
			t.Run(tt.name+path, func(t *testing.T) {
				err := tt.run(path)
				if got := Classify(err); got != tt.want {
					t.Errorf("Classify(%v) = %v, want %v", err, got, tt.want)
				}
			})
		}
	}
}
