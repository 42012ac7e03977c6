// Package logbuf is a log sink for tests that assert what was logged while
// the code under test may still be writing.
package logbuf

import (
	"bytes"
	"sync"
)

// Buffer is an io.Writer that keeps everything written to it. Write and
// String may be called from any goroutine. The zero value is ready to use.
type Buffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

// Write appends p.
func (b *Buffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

// String returns everything written so far.
func (b *Buffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}
