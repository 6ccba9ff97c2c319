package reader

import (
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
		"SEMUNDO_MAX_NSEMS":     iterSemundoMaxNsems,
		"SEMUNDO_TASK_OWNER":    iterSemundoTaskOwner,
		"SEMUNDO_REC_ENTRY":     iterSemundoRecEntry,
		"SEMUNDO_REC_END":       iterSemundoRecEnd,
		"SEMUNDO_ENTRY_NOSET":   iterSemundoEntryNoset,
		"SEMUNDO_ENTRY_TOOBIG":  iterSemundoEntryToobig,
		"SEMUNDO_END_TRUNCATED": iterSemundoEndTruncated,
		"SEMUNDO_END_UNSTABLE":  iterSemundoEndUnstable,
		"SEMUNDO_END_LOST":      iterSemundoEndLost,
	}
	re := regexp.MustCompile(`(?m)^#define (SEMUNDO_\w+) (\d+)\b`)
	seen := 0
	for _, m := range re.FindAllStringSubmatch(string(src), -1) {
		v, _ := strconv.Atoi(m[2])
		w, ok := want[m[1]]
		if !ok {
			continue
		}
		seen++
		if v != w {
			t.Errorf("%s is %d in records.h, %d in records.go", m[1], v, w)
		}
	}
	if seen != len(want) {
		t.Errorf("found %d of %d constants in records.h", seen, len(want))
	}
}
