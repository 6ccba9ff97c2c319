package undofs

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/semundo/semundo/internal/testenv"
	"github.com/semundo/semundo/undo"
)

// probe runs the probe helper for caller and returns what it reported.
func probe(t *testing.T, caller Caller) probeReport {
	t.Helper()
	x := probeInjector(t, probeExitEnv+"=9")
	cur := undo.List{{Semid: 7, Adj: []int16{1, -2}}}
	want := undo.List{{Semid: 3, Adj: []int16{4}}}
	err := x.Inject(context.Background(), caller, 4242, cur, want)
	var ie *InjectError
	if !errors.As(err, &ie) || ie.Status != 9 {
		t.Fatalf("probe run: %v", err)
	}
	var rep probeReport
	if err := json.Unmarshal([]byte(ie.Msg), &rep); err != nil {
		t.Fatalf("probe said %q: %v", ie.Msg, err)
	}
	if rep.Request != (InjectRequest{PID: 4242, Current: "7 1 -2\n", Want: "3 4\n"}) {
		t.Errorf("request %+v", rep.Request)
	}
	return rep
}

func hexCaps(c uint64) string { return fmt.Sprintf("%016x", c) }

// ownCaps returns this process's effective and bounding sets.
func ownCaps(t *testing.T, file string) (eff, bnd uint64, nnp string) {
	b, err := os.ReadFile(file)
	if err != nil {
		t.Fatal(err)
	}
	for line := range strings.SplitSeq(string(b), "\n") {
		k, v, _ := strings.Cut(line, ":")
		v = strings.TrimSpace(v)
		switch k {
		case "CapEff":
			eff, _ = strconv.ParseUint(v, 16, 64)
		case "CapBnd":
			bnd, _ = strconv.ParseUint(v, 16, 64)
		case "NoNewPrivs":
			nnp = v
		}
	}
	return eff, bnd, nnp
}

func TestExecInjectorCredentials(t *testing.T) {
	testenv.RequireRoot(t)
	eff, bnd, nnp := ownCaps(t, "/proc/self/status")
	const ptrace, kill = 1 << 19, 1 << 5
	tests := []struct {
		name                string
		caller              Caller
		uid, gid, groups    string
		capEff, capBnd, amb uint64
	}{
		{"nobody", Caller{UID: 65534, GID: 65534, Groups: []uint32{65534, 100}},
			"65534 65534 65534 65534", "65534 65534 65534 65534", "100 65534", 0, 0, 0},
		// A non-root caller's capabilities come along as ambient ones.
		{"user with CAP_SYS_PTRACE", Caller{UID: 1000, GID: 1000, CapEff: ptrace | kill},
			"1000 1000 1000 1000", "1000 1000 1000 1000", "", ptrace | kill, ptrace | kill, ptrace | kill},
		{"root", Caller{UID: 0, GID: 0, CapEff: eff},
			"0 0 0 0", "0 0 0 0", "", eff, bnd & eff, 0},
		// Root that dropped capabilities does not get them back.
		{"root without most capabilities", Caller{UID: 0, GID: 5, Groups: []uint32{5}, CapEff: ptrace},
			"0 0 0 0", "5 5 5 5", "5", ptrace, ptrace, 0},
		// A caller claiming more than the daemon holds gets what it holds.
		{"more than the daemon", Caller{UID: 0, CapEff: ^uint64(0)},
			"0 0 0 0", "0 0 0 0", "", eff, bnd, 0},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			rep := probe(t, tt.caller)
			s := rep.Status
			if s["Uid"] != tt.uid || s["Gid"] != tt.gid || s["Groups"] != tt.groups {
				t.Errorf("ids: Uid %q Gid %q Groups %q; want %q, %q, %q", s["Uid"], s["Gid"], s["Groups"], tt.uid, tt.gid, tt.groups)
			}
			if s["CapEff"] != hexCaps(tt.capEff) || s["CapPrm"] != hexCaps(tt.capEff) ||
				s["CapBnd"] != hexCaps(tt.capBnd) || s["CapAmb"] != hexCaps(tt.amb) || s["NoNewPrivs"] != "1" {
				t.Errorf("capabilities %v; want effective and permitted %s, bounding %s, ambient %s, no_new_privs",
					s, hexCaps(tt.capEff), hexCaps(tt.capBnd), hexCaps(tt.amb))
			}
		})
	}
	// The threads that forked the helpers were narrowed and must go (they
	// exit just after their goroutine ends): in the end no thread of this
	// process may have a smaller bounding set or no_new_privs.
	var narrowed []string
	if testenv.Until(testenv.Patience, func() bool {
		narrowed = narrowed[:0]
		ents, err := os.ReadDir("/proc/self/task")
		if err != nil {
			t.Fatal(err)
		}
		for _, e := range ents {
			teff, tbnd, tnnp := ownCaps(t, filepath.Join("/proc/self/task", e.Name(), "status"))
			if teff != eff || tbnd != bnd || tnnp != nnp {
				narrowed = append(narrowed, fmt.Sprintf("%s (effective %x bounding %x no_new_privs %s)", e.Name(), teff, tbnd, tnnp))
			}
		}
		return len(narrowed) == 0
	}) {
		return
	}
	t.Errorf("threads with narrowed credentials stay: %v; the process has effective %x, bounding %x, no_new_privs %s", narrowed, eff, bnd, nnp)
}

func TestExecInjectorStatus(t *testing.T) {
	testenv.RequireRoot(t)
	caller := Caller{UID: 65534, GID: 65534}
	for _, tt := range []struct {
		env  []string
		kind error
	}{
		{[]string{probeExitEnv + "=0"}, nil},
		{[]string{probeExitEnv + "=3"}, ErrPermission},
		{[]string{probeExitEnv + "=5"}, ErrInvalid},
		{[]string{probeExitEnv + "=6"}, ErrNoProcess},
		{[]string{probeExitEnv + "=1"}, nil},
		{[]string{probeSleep + "=1h"}, ErrTimeout},
	} {
		x := probeInjector(t, tt.env...)
		if tt.kind == ErrTimeout {
			x.Timeout = 300 * time.Millisecond
		}
		err := x.Inject(context.Background(), caller, 1, nil, undo.List{{Semid: 1, Adj: []int16{1}}})
		switch {
		case tt.env[0] == probeExitEnv+"=0":
			if err != nil {
				t.Errorf("%v: %v, want success", tt.env, err)
			}
		case tt.kind == nil:
			var ie *InjectError
			if !errors.As(err, &ie) || ie.Status != 1 || errnoOf(err).Error() != "input/output error" {
				t.Errorf("%v: %v, want a failure with status 1, mapped to EIO", tt.env, err)
			}
		case !errors.Is(err, tt.kind):
			t.Errorf("%v: %v, want %v", tt.env, err, tt.kind)
		}
	}
	// A helper that does not exist or cannot be run.
	x := &ExecInjector{Path: filepath.Join(t.TempDir(), "none")}
	if err := x.Inject(context.Background(), caller, 1, nil, nil); err == nil || errnoOf(err).Error() != "input/output error" {
		t.Errorf("missing helper: %v", err)
	}
}
