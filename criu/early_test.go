package criu

import (
	"fmt"
	"maps"
	"os"
	"path/filepath"
	"slices"
	"testing"
	"time"

	"github.com/semundo/semundo/image"
	"github.com/semundo/semundo/internal/holder"
	"github.com/semundo/semundo/sysvsem"
)

// TestDumpEarly: post-dump saves the helper's early capture only while it
// holds (the same pstree.img, the same lists in a scan now), and reads
// the tree again otherwise.
func TestDumpEarly(t *testing.T) {
	r := openReader(t)
	set := holder.NewSet(t, 2)
	a := holder.Start(t, "wait", []holder.Op{{Semid: set, Num: 0, Val: 1, Undo: true}}, nil)
	b := holder.Start(t, "wait", []holder.Op{{Semid: set, Num: 1, Val: 2, Undo: true}}, nil)
	dir := t.TempDir()
	write := func(name string, data []byte) {
		t.Helper()
		if err := os.WriteFile(filepath.Join(dir, name), data, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	write(pstreeFile, pstreeImage(a.PID, b.PID))
	write(fmt.Sprintf("core-%d.img", a.PID), coreImage(1))
	write(fmt.Sprintf("core-%d.img", b.PID), coreImage(taskStopped))
	// adjs returns each holder's adjustments in the saved image.
	adjs := func() map[int][]int16 {
		t.Helper()
		img, err := image.ReadFile(filepath.Join(dir, ImageFile))
		if err != nil {
			t.Fatal(err)
		}
		got := map[int][]int16{}
		for _, l := range img.Lists {
			if len(l.Processes) != 1 || len(l.Entries) != 1 || l.Entries[0].Semid != int32(set) {
				t.Fatalf("saved list %+v, want one process and one entry on set %d", l, set)
			}
			got[int(l.Processes[0].PID)] = l.Entries[0].Adj
		}
		return got
	}
	capture := func() *dumpCapture {
		t.Helper()
		c, err := captureDump(r, a.PID, dir, nil)
		if err != nil {
			t.Fatal(err)
		}
		if c.pstree == nil {
			t.Fatal("the capture walked the tree instead of reading pstree.img")
		}
		return c
	}

	early := capture()
	opts := &Options{early: early}
	if opts.earlyDump(b.PID, dir) != nil || opts.earlyDump(a.PID, dir+"/") != nil || opts.earlyDump(a.PID, dir) != early {
		t.Error("the early capture was offered for another root or directory, or not for its own")
	}
	res, err := Dump(r, a.PID, dir, opts)
	if err != nil {
		t.Fatal(err)
	}
	if !res.Early || res.Lists != 2 || res.Tasks != 2 {
		t.Errorf("unchanged tree: %+v, want the early capture's 2 lists of 2 tasks", res)
	}
	if got, want := adjs(), map[int][]int16{a.PID: {-1, 0}, b.PID: {0, -2}}; !maps.EqualFunc(got, want, slices.Equal[[]int16]) {
		t.Errorf("saved %v, want %v", got, want)
	}
	if tr := readTreeFile(t, dir); len(tr.Tasks) != 2 || tr.Tasks[0].Stopped || !tr.Tasks[1].Stopped {
		t.Errorf("tree file %+v, want %d running and %d stopped", tr, a.PID, b.PID)
	}

	// A process outside the tree sets semaphore 1: the kernel clears
	// every adjustment of it, b's too, after the early capture.
	if err := sysvsem.SetVal(set, 1, 5); err != nil {
		t.Fatal(err)
	}
	res, err = Dump(r, a.PID, dir, opts)
	if err != nil {
		t.Fatal(err)
	}
	if res.Early {
		t.Error("a list changed since the early capture, and post-dump saved that capture")
	}
	if got, want := adjs(), map[int][]int16{a.PID: {-1, 0}, b.PID: {0, 0}}; !maps.EqualFunc(got, want, slices.Equal[[]int16]) {
		t.Errorf("after SETVAL: saved %v, want %v", got, want)
	}

	// CRIU's pstree.img is not the one the capture read.
	early = capture()
	write(pstreeFile, pstreeImage(a.PID))
	res, err = Dump(r, a.PID, dir, &Options{early: early})
	if err != nil {
		t.Fatal(err)
	}
	if res.Early || res.Tasks != 1 {
		t.Errorf("another pstree.img: %+v, want a new capture of 1 task", res)
	}
}

// TestWatchClose: the helper hears of pstree.img when it is closed after
// writing, in a directory named as CRIU names its images directory
// (/proc/PID/fd/N), and not of other files or before the close.
func TestWatchClose(t *testing.T) {
	dir := t.TempDir()
	d, err := os.Open(dir)
	if err != nil {
		t.Fatal(err)
	}
	defer d.Close()
	closed := watchClose(fmt.Sprintf("/proc/%d/fd/%d", os.Getpid(), d.Fd()), pstreeFile)
	if closed == nil {
		t.Fatal("no watch")
	}
	if err := os.WriteFile(filepath.Join(dir, "core-1.img"), []byte("x"), 0o600); err != nil {
		t.Fatal(err)
	}
	f, err := os.Create(filepath.Join(dir, pstreeFile))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := f.Write([]byte("x")); err != nil {
		t.Fatal(err)
	}
	select {
	case <-closed:
		t.Fatal("heard of pstree.img before it was closed")
	case <-time.After(100 * time.Millisecond):
	}
	f.Close()
	select {
	case <-closed:
	case <-time.After(10 * time.Second):
		t.Fatal("did not hear of pstree.img closed")
	}
	if watchClose(filepath.Join(dir, "core-1.img"), pstreeFile) != nil {
		t.Error("watched a file as a directory")
	}
}
