package checkpoint_test

import (
	"bytes"
	"errors"
	"math/rand/v2"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/semundo/semundo/checkpoint"
	"github.com/semundo/semundo/image"
	"github.com/semundo/semundo/internal/holder"
)

// TestCaptureChurn: checkpoints of processes that are exiting, while sets
// are being removed. Each capture either fails with a clear error or gives
// an image that is valid and right: every churn set in it and every entry
// for one has the size its key encodes.
func TestCaptureChurn(t *testing.T) {
	r := openReader(t)
	run := 5 * time.Second
	if testing.Short() {
		run = time.Second
	}
	base := 0x5f000000 + rand.IntN(1<<8)<<18
	var mu sync.Mutex
	live := map[int]bool{}
	stop := make(chan struct{})
	var procs sync.WaitGroup
	go func() {
		sem := make(chan struct{}, 40)
		for seq := 0; ; seq++ {
			select {
			case <-stop:
				return
			case sem <- struct{}{}:
			}
			nsems := 1 + seq%63
			var pid int
			wait, err := holder.StartChurnPID(holder.ChurnKey(base, seq, nsems), nsems, func(int) {}, func(p int) {
				pid = p
				mu.Lock()
				live[p] = true
				mu.Unlock()
			})
			if err != nil {
				<-sem
				t.Errorf("start churn process: %v", err)
				return
			}
			procs.Add(1)
			go func() {
				defer procs.Done()
				defer func() { <-sem }()
				wait()
				mu.Lock()
				delete(live, pid)
				mu.Unlock()
			}()
		}
	}()
	defer func() { close(stop); procs.Wait() }()

	images, failed := 0, map[string]int{}
	for deadline := time.Now().Add(run); time.Now().Before(deadline); {
		mu.Lock()
		var pids []int
		for p := range live {
			pids = append(pids, p)
			if len(pids) == 3 {
				break
			}
		}
		mu.Unlock()
		if len(pids) == 0 {
			time.Sleep(time.Millisecond)
			continue
		}
		img, err := checkpoint.Capture(r, checkpoint.CaptureOptions{PIDs: pids, Version: "test"})
		if err != nil {
			// The clear errors a vanishing process gives.
			msg := err.Error()
			switch {
			case errors.Is(err, checkpoint.ErrNoProcess), strings.Contains(msg, "no such process"), strings.Contains(msg, "IPC namespace of pid"):
				failed["process gone"]++
			default:
				t.Fatalf("capture of %v: unexpected error: %v", pids, err)
			}
			continue
		}
		images++
		var b bytes.Buffer
		if err := image.Encode(&b, img); err != nil {
			t.Fatalf("capture of %v gave an invalid image: %v", pids, err)
		}
		for _, s := range img.Sets {
			if int(s.Key)&^(1<<18-1) == base && s.Nsems != int(s.Key)&63 {
				t.Fatalf("set %d (key %#x) captured with %d semaphores, want %d", s.ID, s.Key, s.Nsems, int(s.Key)&63)
			}
		}
		for _, l := range img.Lists {
			for _, e := range l.Entries {
				s := img.Set(e.Semid)
				if len(e.Adj) != s.Nsems {
					t.Fatalf("list of %v: entry for set %d has %d values, the set %d", l.PIDs(), e.Semid, len(e.Adj), s.Nsems)
				}
			}
		}
	}
	t.Logf("%d images, failures: %v", images, failed)
	if images == 0 {
		t.Fatal("no capture succeeded")
	}
}
