//go:build linux

package sysvsem

import (
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestLimitsFixtures(t *testing.T) {
	for _, tc := range []struct {
		dir  string
		want Limits
	}{
		{"good", Limits{Semmsl: 32000, Semmns: 1024000000, Semopm: 500, Semmni: 32000}},
		// Old kernels' defaults, with irregular white space.
		{"spaces", Limits{Semmsl: 250, Semmns: 32000, Semopm: 32, Semmni: 128}},
	} {
		fsys, err := NewFS(filepath.Join("testdata", tc.dir))
		if err != nil {
			t.Fatal(err)
		}
		got, err := fsys.Limits()
		if err != nil {
			t.Fatalf("%s: %v", tc.dir, err)
		}
		if got != tc.want {
			t.Errorf("%s: got %+v, want %+v", tc.dir, got, tc.want)
		}
	}
}

func TestLimitsMalformed(t *testing.T) {
	for dir, detail := range map[string]string{
		"three-fields": "got 3 fields",
		"five-fields":  "got 5 fields",
		"empty":        "got 0 fields",
		"not-a-number": `SEMOPM "five"`,
		"overflow":     `SEMMNS "4294967296"`,
		"hex":          `SEMMSL "0x7d00"`,
	} {
		fsys, err := NewFS(filepath.Join("testdata", dir))
		if err != nil {
			t.Fatal(err)
		}
		l, err := fsys.Limits()
		if !errors.Is(err, ErrMalformed) {
			t.Errorf("%s: got %+v, %v; want ErrMalformed", dir, l, err)
			continue
		}
		msg := err.Error()
		if !strings.Contains(msg, detail) || !strings.Contains(msg, filepath.Join(dir, "sys", "kernel", "sem")) || strings.Contains(msg, "\n") {
			t.Errorf("%s: message %q should be one line naming the file and %s", dir, msg, detail)
		}
	}
}

func TestLimitsMissingFile(t *testing.T) {
	fsys, err := NewFS(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	if _, err := fsys.Limits(); !errors.Is(err, fs.ErrNotExist) {
		t.Fatalf("got %v, want fs.ErrNotExist", err)
	}
}

func TestNewFSRejectsNonDirectory(t *testing.T) {
	file := filepath.Join(t.TempDir(), "f")
	if err := os.WriteFile(file, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := NewFS(file); err == nil {
		t.Error("NewFS on a regular file succeeded")
	}
	if _, err := NewFS(filepath.Join(t.TempDir(), "missing")); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("NewFS on a missing path: %v, want fs.ErrNotExist", err)
	}
}

// The real file parses, and its values are the ones the kernel reports.
func TestReadLimitsFromProc(t *testing.T) {
	l, err := ReadLimits()
	if err != nil {
		t.Fatal(err)
	}
	si, _, err := Info()
	if err != nil {
		t.Fatal(err)
	}
	if l.Semmsl != int(si.Semmsl) || l.Semmns != int(si.Semmns) || l.Semopm != int(si.Semopm) || l.Semmni != int(si.Semmni) {
		t.Errorf("/proc/sys/kernel/sem %+v disagrees with IPC_INFO %+v", l, si)
	}
}

func TestIndexShiftFixtures(t *testing.T) {
	for dir, want := range map[string]int{
		"extend": ExtendedIndexShift,
		// After "--" the words are init's, not the kernel's.
		"good": DefaultIndexShift,
	} {
		fsys, err := NewFS(filepath.Join("testdata", dir))
		if err != nil {
			t.Fatal(err)
		}
		if got, err := fsys.IndexShift(); err != nil || got != want {
			t.Errorf("%s: IndexShift() = %d, %v; want %d", dir, got, err, want)
		}
	}
	fsys, err := NewFS(filepath.Join("testdata", "empty"))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := fsys.IndexShift(); err == nil {
		t.Error("IndexShift without a cmdline file: no error")
	}
}

// On the live kernel every set's id must carry its index in the low bits
// IndexShift names.
func TestIndexShiftLive(t *testing.T) {
	newSet(t, 1)
	fsys, err := NewDefaultFS()
	if err != nil {
		t.Fatal(err)
	}
	shift, err := fsys.IndexShift()
	if err != nil {
		t.Fatal(err)
	}
	sets, err := Enumerate()
	if err != nil {
		t.Fatal(err)
	}
	if len(sets) == 0 {
		t.Fatal("Enumerate found no set, not even this test's")
	}
	for _, e := range sets {
		if e.ID&(1<<shift-1) != e.Index {
			t.Errorf("set %d at index %d: the low %d bits of its id are %d", e.ID, e.Index, shift, e.ID&(1<<shift-1))
		}
	}
}
