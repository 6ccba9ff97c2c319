package undofs

import (
	"sync"
	"time"

	"github.com/semundo/semundo/reader"
)

// scanner shares reader scans between requests. A request asks for a
// snapshot taken after some instant: an open asks for one that began after
// the open arrived (so a file or listing shows the state at open, as procfs does),
// a getattr accepts one up to listMaxAge old. Requests that
// arrive while a scan runs wait for the next one, which they all share, so
// at most one scan runs at a time and the scan rate is bounded by the scan
// time, however many files are opened at once.
type scanner struct {
	r *reader.Reader

	mu      sync.Mutex
	running *scanCall // the scan in progress, or nil
	last    *scanCall // the latest successful scan, or nil
}

type scanCall struct {
	start time.Time // taken before the scan began
	done  chan struct{}
	snap  *reader.Snapshot
	err   error
}

// listMaxAge is how old a snapshot a getattr may use: a size is a hint.
const listMaxAge = 100 * time.Millisecond

// since returns a snapshot from a scan that began at or after t.
func (s *scanner) since(t time.Time) (*reader.Snapshot, error) {
	s.mu.Lock()
	for {
		if c := s.last; c != nil && !c.start.Before(t) {
			s.mu.Unlock()
			return c.snap, nil
		}
		if c := s.running; c != nil {
			s.mu.Unlock()
			<-c.done
			if !c.start.Before(t) {
				return c.snap, c.err
			}
			s.mu.Lock()
			continue
		}
		c := &scanCall{start: time.Now(), done: make(chan struct{})}
		s.running = c
		s.mu.Unlock()

		c.snap, c.err = s.r.Scan()

		s.mu.Lock()
		s.running = nil
		if c.err == nil {
			s.last = c
		}
		s.mu.Unlock()
		close(c.done)
		return c.snap, c.err
	}
}

// fresh returns a snapshot taken after the call.
func (s *scanner) fresh() (*reader.Snapshot, error) { return s.since(time.Now()) }

// recent returns a snapshot at most listMaxAge old.
func (s *scanner) recent() (*reader.Snapshot, error) {
	return s.since(time.Now().Add(-listMaxAge))
}
