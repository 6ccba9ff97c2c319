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
		{"semundo_wait", waitSize, binary.Size(iterSemundoWait{})},
	} {
		if c.got != c.want {
			t.Errorf("%s: decoder uses %d bytes, C layout has %d", c.name, c.got, c.want)
		}
	}
}
