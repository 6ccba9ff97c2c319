//go:build amd64 || arm64

package writer_test

import (
	"errors"
	"fmt"
	"os"
	"strconv"
	"strings"
	"testing"

	"github.com/semundo/semundo/internal/holder"
	"github.com/semundo/semundo/internal/procfs"
	"github.com/semundo/semundo/internal/testenv"
	"github.com/semundo/semundo/undo"
	"github.com/semundo/semundo/writer"
)

// TestRefusesOwnList: the calling process, each of its threads, and (for
// a helper) the process that asked for the write are refused with
// ErrOwnList before anything changes, by CheckTarget, Set and Inject; the
// message is one line pointing to semundo exec --undo.
func TestRefusesOwnList(t *testing.T) {
	testenv.RequireRoot(t)
	r := openReader(t)
	s := holder.NewSet(t, 1)
	want := mustParse(t, fmt.Sprintf("%d 5\n", s))
	tids, err := procfs.NewDefaultFS().Tasks(os.Getpid())
	if err != nil || len(tids) < 2 {
		t.Fatalf("threads of the test: %v, %v", tids, err)
	}
	for _, tid := range tids {
		for name, write := range map[string]func() error{
			"CheckTarget": func() error { return writer.CheckTarget(tid) },
			"Set":         func() error { return writer.WriteProcess(r, tid, want, nil) },
			"Inject":      func() error { return writer.Inject(tid, nil, want, nil) },
		} {
			err := write()
			if !errors.Is(err, writer.ErrOwnList) || !strings.Contains(err.Error(), "semundo exec --undo") || strings.Contains(err.Error(), "\n") {
				t.Errorf("%s into thread %d of the caller: %v; want ErrOwnList, one line naming exec --undo", name, tid, err)
			}
		}
	}
	if l := listOf(t, r, os.Getpid(), s); l != nil {
		t.Errorf("the caller's list holds %v for set %d after the refusals", l, s)
	}
	// A helper names the process it writes for: that one is refused too.
	h := holder.Start(t, "wait", nil, nil)
	err = writer.Inject(h.PID, nil, want, &writer.Options{Callers: []int{h.PID}})
	if !errors.Is(err, writer.ErrOwnList) {
		t.Errorf("Inject into the process named in Callers: %v, want ErrOwnList", err)
	}
	if l := listOf(t, r, h.PID, s); l != nil {
		t.Errorf("pid %d holds %v after the refusal", h.PID, l)
	}
	// Any other process passes.
	if err := writer.CheckTarget(h.PID); err != nil {
		t.Errorf("CheckTarget of an unrelated process: %v", err)
	}
}

// TestVerifyShortErrors: the check after a write says in one short line
// that a target which exited meanwhile exited (its exit applied the list),
// and names only the first differing semaphore of a large set, never its
// 1,000 values.
func TestVerifyShortErrors(t *testing.T) {
	testenv.RequireRoot(t)
	r := openReader(t)
	s := holder.NewSet(t, 1000)
	adj := make([]string, 1000)
	for i := range adj {
		adj[i] = strconv.Itoa(i%7 - 3)
	}
	want := mustParse(t, fmt.Sprintf("%d %s\n", s, strings.Join(adj, " ")))

	pid := testenv.Zombie(t)
	err := writer.Verify(r, pid, want)
	if !errors.Is(err, writer.ErrExited) || !strings.Contains(err.Error(), "exited") || !strings.Contains(err.Error(), "applied") || len(err.Error()) > 160 {
		t.Errorf("Verify of a process that exited: %v (%d bytes); want ErrExited in one short line", err, len(err.Error()))
	}
	// A live process without the entry, then with other values.
	h := holder.Start(t, "wait", nil, nil)
	err = writer.Verify(r, h.PID, want)
	if !errors.Is(err, writer.ErrMismatch) || !strings.Contains(err.Error(), "has no entry") || len(err.Error()) > 160 {
		t.Errorf("Verify of a process without the entry: %v; want ErrMismatch saying it has no entry, short", err)
	}
	if err := writer.WriteProcess(r, h.PID, mustParse(t, fmt.Sprintf("%d%s\n", s, strings.Repeat(" 0", 1000))), nil); err != nil {
		t.Fatal(err)
	}
	err = writer.Verify(r, h.PID, want)
	if !errors.Is(err, writer.ErrMismatch) || !strings.Contains(err.Error(), "semaphore 0 holds 0, not -3, and 856 more differ") || len(err.Error()) > 160 {
		t.Errorf("Verify of other values: %v; want ErrMismatch naming semaphore 0 and counting the rest, short", err)
	}
}

// TestZeroEntry: a listed set of zeros creates the entry (the reader
// shows it) without moving a value, at 0, in between and at 32767.
func TestZeroEntry(t *testing.T) {
	testenv.RequireRoot(t)
	r := openReader(t)
	for _, v := range []uint16{0, 9, 32767} {
		st := newSet(t, v, v)
		h := holder.Start(t, "wait", nil, nil)
		if err := writer.WriteProcess(r, h.PID, undo.List{{Semid: int32(st.id), Adj: []int16{0, 0}}}, nil); err != nil {
			t.Fatalf("Set of zeros (value %d): %v", v, err)
		}
		if l := listOf(t, r, h.PID, st.id); len(l) != 2 || l[0] != 0 || l[1] != 0 {
			t.Errorf("entry after Set of zeros (value %d): %v, want [0 0]", v, l)
		}
		st.unchanged(t)
	}
}
