package checkpoint_test

import (
	"errors"
	"fmt"
	"os"
	"strconv"
	"strings"
	"testing"

	"github.com/semundo/semundo/checkpoint"
	"github.com/semundo/semundo/image"
	"github.com/semundo/semundo/internal/holder"
	"github.com/semundo/semundo/internal/testenv"
	"github.com/semundo/semundo/writer"
)

// TestCaptureLeaderExited: a process whose main thread called
// pthread_exit (a zombie leader, its threads running on) is captured by
// its pid or by a thread's id, as one process holding the list
// (docs/image.md's example has such a process).
func TestCaptureLeaderExited(t *testing.T) {
	rd := openReader(t)
	s := holder.NewSet(t, 2)
	h := holder.Start(t, "leaderexit", []holder.Op{{Semid: s, Num: 1, Val: 3, Undo: true}}, nil)
	testenv.Eventually(t, fmt.Sprintf("the main thread of %d to exit (state Z)", h.PID), func() bool {
		st, err := procState(h.PID)
		return err == nil && st == 'Z'
	})
	ents, err := os.ReadDir(fmt.Sprintf("/proc/%d/task", h.PID))
	if err != nil {
		t.Fatal(err)
	}
	tid := 0
	for _, e := range ents {
		if n, _ := strconv.Atoi(e.Name()); n != h.PID {
			tid = n
			break
		}
	}
	if tid == 0 {
		t.Fatalf("pid %d has no thread but its leader", h.PID)
	}
	for _, pid := range []int{h.PID, tid} {
		img, err := capture(t, rd, checkpoint.CaptureOptions{PIDs: []int{pid}})
		if err != nil {
			t.Fatalf("Capture(%d): %v", pid, err)
		}
		var found bool
		for _, l := range img.Lists {
			if len(l.Processes) != 1 || l.Processes[0].PID != int32(h.PID) {
				continue
			}
			for _, e := range l.Entries {
				if int(e.Semid) == s && fmt.Sprint(e.Adj) == "[0 -3]" {
					found = true
				}
			}
		}
		if !found {
			t.Errorf("Capture(%d): no list of process %d with set %d at [0 -3]: %+v", pid, h.PID, s, img.Lists)
		}
	}
	requireRunning(t, tid)
}

// TestCaptureRefuses: what has no undo list to capture is refused at once,
// naming it: a kernel thread, and a zombie.
func TestCaptureRefuses(t *testing.T) {
	rd := openReader(t)
	if _, err := capture(t, rd, checkpoint.CaptureOptions{PIDs: []int{2}}); err == nil || !strings.Contains(err.Error(), "kernel thread") {
		t.Errorf("Capture of kthreadd (pid 2): %v, want a kernel thread error", err)
	}
	// A child that has exited and is not reaped yet.
	pid := testenv.Zombie(t)
	_, err := capture(t, rd, checkpoint.CaptureOptions{PIDs: []int{pid}})
	if !errors.Is(err, checkpoint.ErrNoProcess) || !strings.Contains(err.Error(), "zombie") {
		t.Errorf("Capture of zombie %d: %v, want ErrNoProcess saying zombie", pid, err)
	}
}

// undoImage is a minimal image: set id of nsems semaphores with key, and
// one list of process pid (comm) with adj on it.
func undoImage(id, key, nsems, pid int, comm string, adj []int16) *image.Image {
	return &image.Image{
		Sets: []image.Set{{ID: int32(id), Key: int32(key), Mode: 0o600, Nsems: nsems, Values: make([]uint16, nsems)}},
		Lists: []image.List{{
			Processes: []image.Process{{PID: int32(pid), Comm: comm, TIDs: []int32{int32(pid)}}},
			Entries:   []image.Entry{{Semid: int32(id), Adj: adj}},
		}},
	}
}

// TestRestoreUndoRefuses: RestoreUndo writes nothing when the process or
// the set is not the image's: an unmapped pid now running another
// command, a set whose id is the image's but whose key or size is not, a
// process outside the caller's namespace (RestoreUndo without AnyNamespace). Each refusal
// names the object and leaves the target's list as it was.
func TestRestoreUndoRefuses(t *testing.T) {
	rd := openReader(t)
	s := holder.NewSet(t, 2)
	h := holder.Start(t, "wait", []holder.Op{{Semid: s, Num: 0, Val: 1, Undo: true}}, nil)
	comm, err := os.ReadFile(fmt.Sprintf("/proc/%d/comm", h.PID))
	if err != nil {
		t.Fatal(err)
	}
	self := strings.TrimSpace(string(comm))
	want := []int16{5, -5}
	ns := holder.StartNS(t, 7, 2, []holder.Op{{Semid: -1, Num: 1, Val: 2, Undo: true}})

	for _, tc := range []struct {
		name   string
		pid    int
		img    *image.Image
		pidMap map[int]int
		here   bool
		is     error
		say    string
	}{
		{"pid reused", h.PID, undoImage(s, 0, 2, h.PID, "postgres", want), nil, false, nil, `ran "postgres" at checkpoint`},
		{"another key", h.PID, undoImage(s, 0x5e3a0777, 2, 77777, "x", want), map[int]int{77777: h.PID}, false, checkpoint.ErrOtherSet, "the image's had key 0x5e3a0777 and 2 semaphores"},
		{"another size", h.PID, undoImage(s, 0, 3, h.PID, self, []int16{5, -5, 0}), nil, false, checkpoint.ErrOtherSet, "the image's had key 0x0 and 3 semaphores"},
		{"another namespace", ns.PID, undoImage(7, 0, 2, 77777, "x", want), map[int]int{77777: ns.PID}, true, checkpoint.ErrNamespaces, "not in this one"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			before, err := rd.Read(tc.pid)
			if err != nil {
				t.Fatal(err)
			}
			err = checkpoint.RestoreUndo(rd, tc.img, checkpoint.UndoOptions{PIDMap: tc.pidMap, AnyNamespace: !tc.here})
			if err == nil || (tc.is != nil && !errors.Is(err, tc.is)) || !strings.Contains(err.Error(), tc.say) || !strings.Contains(err.Error(), strconv.Itoa(tc.pid)) ||
				strings.HasSuffix(err.Error(), writer.ErrNoSet.Error()) {
				t.Errorf("RestoreUndo: %v; want an error naming pid %d, saying %q (is %v)", err, tc.pid, tc.say, tc.is)
			}
			after, err := rd.Read(tc.pid)
			if err != nil {
				t.Fatal(err)
			}
			if !after.Undo().Equal(before.Undo()) {
				t.Errorf("the refused restore changed pid %d's list from %v to %v", tc.pid, before.Undo(), after.Undo())
			}
		})
	}
	// The same images, right: the namespace's own process and set, mapped
	// explicitly or by an unchanged pid with its command, are written.
	if err := checkpoint.RestoreUndo(rd, undoImage(s, 0, 2, h.PID, self, want), checkpoint.UndoOptions{AnyNamespace: true}); err != nil {
		t.Fatalf("RestoreUndo into the holder itself: %v", err)
	}
	if err := checkpoint.RestoreUndo(rd, undoImage(7, 0, 2, 77777, "x", want), checkpoint.UndoOptions{PIDMap: map[int]int{77777: ns.PID}, AnyNamespace: true}); err != nil {
		t.Fatalf("RestoreUndo into a process of another namespace, not required here: %v", err)
	}
	for _, pid := range []int{h.PID, ns.PID} {
		l, err := rd.Read(pid)
		if err != nil {
			t.Fatal(err)
		}
		if got := fmt.Sprint(l.Undo()); !strings.Contains(got, "[5 -5]") {
			t.Errorf("pid %d's list after the restore: %s, want an entry [5 -5]", pid, got)
		}
	}
}

// TestRestoreSetsLimits: a restore into a fresh namespace gives it the
// image's limits (kernel.sem), also when they are below what the image's
// sets use (an administrator lowered them after creating the sets); a
// namespace that has sets keeps its own, and sets that do not fit them are
// refused, naming the limit, with nothing created.
func TestRestoreSetsLimits(t *testing.T) {
	rd := openReader(t)
	requireNextID(t)
	src := startRunner(t)
	src.must(t, "create 40 0 600 %s", strings.TrimSuffix(strings.Repeat("1,", 40), ","))
	workers := src.must(t, "spawn 1").PIDs
	// Lower SEMMSL below the set's size, and the others to old defaults.
	const lowered = "10 32000 32 128"
	if got := src.must(t, "limits %s", lowered).Sem; got != lowered {
		t.Fatalf("limits in the source namespace: %q, want %q", got, lowered)
	}
	img, err := capture(t, rd, checkpoint.CaptureOptions{PIDs: workers})
	if err != nil {
		t.Fatal(err)
	}
	path := t.TempDir() + "/image.json"
	if err := image.WriteFile(path, img); err != nil {
		t.Fatal(err)
	}

	fresh := startRunner(t)
	fresh.must(t, "restore %s", path)
	if got := fresh.must(t, "limits").Sem; got != lowered {
		t.Errorf("limits after a restore into a fresh namespace: %q, want the image's %q", got, lowered)
	}
	if sets := fresh.must(t, "getall").Sets; len(sets) != 1 || len(sets[0].Values) != 40 {
		t.Errorf("restored sets %+v, want one of 40 semaphores", sets)
	}

	busy := startRunner(t)
	busy.must(t, "createat 100 1 0")
	busy.must(t, "limits 10 32000 500 32000")
	before := busy.must(t, "getall").Sets
	rep, err := busy.call("restore %s", path)
	if err == nil || !strings.Contains(rep.Err, "SEMMSL") {
		t.Errorf("restore into a namespace with a set and SEMMSL 10: %v, want a refusal naming SEMMSL", err)
	}
	if after := busy.must(t, "getall").Sets; !equalSets(after, before) {
		t.Errorf("the refused restore changed the namespace: %+v, before %+v", after, before)
	}
	if got := busy.must(t, "limits").Sem; got != "10 32000 500 32000" {
		t.Errorf("the refused restore changed the limits to %q", got)
	}
}
