package reader

import (
	"encoding/binary"
	"os"
	"regexp"
	"strconv"
	"testing"
)

// TestRecordConstants keeps records.go's mirrors equal to bpf/records.h.
func TestRecordConstants(t *testing.T) {
	src, err := os.ReadFile("bpf/records.h")
	if err != nil {
		t.Fatal(err)
	}
	want := map[string]int{
		"SEMUNDO_MAX_NSEMS":      iterSemundoMaxNsems,
		"SEMUNDO_INLINE_MAX":     iterSemundoInlineMax,
		"SEMUNDO_TASK_OWNER":     iterSemundoTaskOwner,
		"SEMUNDO_TASK_RING":      iterSemundoTaskRing,
		"SEMUNDO_TASK_TRUNCATED": iterSemundoTaskTrunc,
		"SEMUNDO_TASK_UNSTABLE":  iterSemundoTaskUnstab,
		"SEMUNDO_TASK_LOST":      iterSemundoTaskLost,
		"SEMUNDO_ENTRY_NOSET":    iterSemundoEntryNoset,
		"SEMUNDO_ENTRY_TOOBIG":   iterSemundoEntryToobig,
		"SEMUNDO_CHUNK_MAGIC":    iterSemundoChunkMagic,
		"SEMUNDO_BATCH_MAGIC":    iterSemundoBatchMagic,
		"SEMUNDO_TASK_WAITER":    iterSemundoTaskWaiter,
		"SEMUNDO_MAX_WAIT_OPS":   iterSemundoMaxWaitOps,
		"SEMUNDO_WAIT_TIMED":     iterSemundoWaitTimed,
		"SEMUNDO_WAIT_TRUNC":     iterSemundoWaitTrunc,
	}
	re := regexp.MustCompile(`(?m)^#define (SEMUNDO_\w+) (0x[0-9a-f]+|\d+)\b`)
	seen := 0
	for _, m := range re.FindAllStringSubmatch(string(src), -1) {
		v, _ := strconv.ParseInt(m[2], 0, 64)
		w, ok := want[m[1]]
		if !ok {
			continue
		}
		seen++
		if int(v) != w {
			t.Errorf("%s is %d in records.h, %d in records.go", m[1], v, w)
		}
	}
	if seen != len(want) {
		t.Errorf("found %d of %d constants in records.h", seen, len(want))
	}
}

// TestRecordSizes keeps the decoder's sizes equal to the C layouts.
func TestRecordSizes(t *testing.T) {
	for _, c := range []struct {
		name      string
		got, want int
	}{
		{"semundo_task", taskSize, binary.Size(iterSemundoTask{})},
		{"semundo_entry", entrySize, binary.Size(iterSemundoEntry{})},
		{"semundo_chunk", chunkSize, binary.Size(iterSemundoChunk{})},
		{"semundo_batch", batchSize, binary.Size(openiterSemundoBatch{})},
		{"semundo_wait", waitSize, binary.Size(iterSemundoWait{})},
	} {
		if c.got != c.want {
			t.Errorf("%s: decoder uses %d bytes, C layout has %d", c.name, c.got, c.want)
		}
	}
}

// TestDecodeWait decodes a waiter record as the iterator lays it out, and
// refuses one cut short or claiming more operations than it may carry.
func TestDecodeWait(t *testing.T) {
	rec := make([]byte, waitSize+(2*sembufSize+3)&^3)
	ne.PutUint32(rec[0:], 101) // tid
	ne.PutUint32(rec[4:], 100) // tgid
	ne.PutUint32(rec[12:], 7)  // ipcns
	ne.PutUint32(rec[16:], iterSemundoTaskWaiter)
	ne.PutUint32(rec[20:], 42) // semid
	ne.PutUint32(rec[24:], 2)  // nsops
	ne.PutUint32(rec[28:], 2)  // ops that follow
	ne.PutUint32(rec[32:], iterSemundoWaitTimed)
	ne.PutUint32(rec[36:], 1) // blocking
	copy(rec[40:], "worker")
	for i, o := range [][3]uint16{{3, uint16(0xffff), 0x1000}, {0, 0, 0}} {
		for j, v := range o {
			ne.PutUint16(rec[waitSize+i*sembufSize+2*j:], v)
		}
	}
	var slab waitSlab
	w, n, err := decodeWait(rec, &slab)
	if err != nil || n != len(rec) {
		t.Fatalf("decodeWait: %v, used %d of %d bytes", err, n, len(rec))
	}
	if w.TID != 101 || w.PID != 100 || w.IPCNS != 7 || w.Semid != 42 || w.NOps != 2 || !w.Timed || w.Blocking != 1 || w.Comm != "worker" ||
		len(w.Ops) != 2 || w.Ops[0].Num != 3 || w.Ops[0].Op != -1 || w.Ops[0].Flg != 0x1000 || w.Ops[1].Op != 0 {
		t.Errorf("decoded %+v", w)
	}
	if _, _, err := decodeWait(rec[:len(rec)-1], &slab); err != errShort {
		t.Errorf("a record cut short: %v, want errShort", err)
	}
	ne.PutUint32(rec[28:], iterSemundoMaxWaitOps+1)
	if _, _, err := decodeWait(rec, &slab); err == nil || err == errShort {
		t.Errorf("a record claiming %d operations: %v", iterSemundoMaxWaitOps+1, err)
	}
}

// TestSortWaiters: waiters come in tid order, processes interleaved, and
// leave sorted by pid, then tid, whether or not each process's threads came
// in order.
func TestSortWaiters(t *testing.T) {
	for _, tc := range []struct {
		name string
		in   [][2]int // pid, tid
	}{
		{"empty", nil},
		{"sorted", [][2]int{{1, 1}, {1, 2}, {5, 5}}},
		{"interleaved", [][2]int{{10, 11}, {20, 21}, {10, 12}, {30, 31}, {20, 22}, {10, 13}, {2, 40}}},
		{"tids out of order", [][2]int{{10, 13}, {20, 21}, {10, 11}, {10, 12}, {3, 9}}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var ws []Waiter
			for _, p := range tc.in {
				ws = append(ws, Waiter{PID: p[0], TID: p[1], Comm: strconv.Itoa(p[1])})
			}
			sortWaiters(ws)
			out := ws
			if len(out) != len(tc.in) {
				t.Fatalf("%d waiters out of %d", len(out), len(tc.in))
			}
			seen := map[int]bool{}
			for i, w := range out {
				if w.Comm != strconv.Itoa(w.TID) {
					t.Errorf("waiter %d: tid %d carries the record of %s", i, w.TID, w.Comm)
				}
				seen[w.TID] = true
				if i > 0 && (out[i-1].PID > w.PID || out[i-1].PID == w.PID && out[i-1].TID >= w.TID) {
					t.Errorf("waiter %d (pid %d tid %d) after pid %d tid %d", i, w.PID, w.TID, out[i-1].PID, out[i-1].TID)
				}
			}
			if len(seen) != len(tc.in) {
				t.Errorf("%d distinct tids out of %d", len(seen), len(tc.in))
			}
		})
	}
}

// TestEntrySlab: neighbouring lists carved from one block never share
// room: appending past one's count moves it, and leaves the next alone.
func TestEntrySlab(t *testing.T) {
	var s entrySlab
	a, b := s.take(2), s.take(1)
	if len(a) != 0 || cap(a) != 2 || len(b) != 0 || cap(b) != 1 {
		t.Fatalf("take(2), take(1): len %d cap %d, len %d cap %d", len(a), cap(a), len(b), cap(b))
	}
	b = append(b, Entry{Semid: 7})
	a = append(a, Entry{Semid: 1}, Entry{Semid: 2}, Entry{Semid: 3})
	if b[0].Semid != 7 || len(a) != 3 || a[2].Semid != 3 {
		t.Errorf("after the appends: a %+v, b %+v", a, b)
	}
	if big := s.take(1 << 20); big != nil {
		t.Errorf("take of a count past any block gave cap %d, want nil", cap(big))
	}
	if z := s.take(0); z != nil {
		t.Errorf("take(0) = %v, want nil, as a list without entries had", z)
	}
}
