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
	"syscall"
	"testing"
	"time"

	"github.com/semundo/semundo/internal/holder"
	"github.com/semundo/semundo/internal/testenv"
	"github.com/semundo/semundo/undo"
)

// probe runs the probe helper for caller, into target, and returns what it
// reported.
func probe(t *testing.T, caller *Caller, target int) probeReport {
	t.Helper()
	x := probeInjector(t, probeExitEnv+"=9")
	cur := undo.List{{Semid: 7, Adj: []int16{1, -2}}}
	want := undo.List{{Semid: 3, Adj: []int16{4}}}
	err := x.Inject(context.Background(), caller, target, cur, want)
	var ie *InjectError
	if !errors.As(err, &ie) || ie.Status != 9 {
		t.Fatalf("probe run: %v", err)
	}
	var rep probeReport
	if err := json.Unmarshal([]byte(ie.Msg), &rep); err != nil {
		t.Fatalf("probe said %q: %v", ie.Msg, err)
	}
	if rep.Request != (InjectRequest{PID: target, Current: "7 1 -2\n", Want: "3 4\n"}) {
		t.Errorf("request %+v", rep.Request)
	}
	return rep
}

// sleeper starts a process with cred (nil: as this process) that only
// waits, killed and reaped at cleanup: a holder helper (the test binary
// itself, as the kernel-matrix VM has no sleep(1)).
func sleeper(t *testing.T, cred *syscall.Credential) int {
	t.Helper()
	var attr *syscall.SysProcAttr
	if cred != nil {
		attr = &syscall.SysProcAttr{Credential: cred}
	}
	return holder.Start(t, "wait", nil, attr).PID
}

// ids is the same id four times: real, effective, saved, filesystem.
func ids(id uint32) [4]uint32 { return [4]uint32{id, id, id, id} }

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

// The helper runs with the caller's ids and groups, its permitted
// capabilities (no more than the daemon holds, for a caller in the daemon's
// user namespace) as its effective, permitted, bounding and ambient sets,
// and no_new_privs; the target is one the caller may ptrace, so that the
// kernel's check before the helper lets it run.
func TestExecInjectorCredentials(t *testing.T) {
	testenv.RequireRoot(t)
	// A mount makes this process hold the FUSE device, which go-fuse
	// opens without O_CLOEXEC: the helpers must not get it.
	mountT(t, &Options{Injector: &fakeInjector{}})
	if !strings.Contains(strings.Join(testenv.OwnFDs(t), " "), "/dev/fuse") {
		t.Fatal("the mount left this process no descriptor of /dev/fuse")
	}
	eff, _, _ := ownCaps(t, "/proc/self/status")
	const ptrace, kill = 1 << 19, 1 << 5
	tests := []struct {
		name                string
		caller              Caller
		target              *syscall.Credential
		uid, gid, groups    string
		capEff, capBnd, amb uint64
	}{
		{"nobody", Caller{UID: ids(65534), GID: ids(65534), Groups: []uint32{65534, 100}}, nobody,
			"65534 65534 65534 65534", "65534 65534 65534 65534", "100 65534", 0, 0, 0},
		// A non-root caller's capabilities come along as ambient ones.
		{"user with CAP_SYS_PTRACE", Caller{UID: ids(1000), GID: ids(1000), CapEff: ptrace | kill, CapPrm: ptrace | kill}, nil,
			"1000 1000 1000 1000", "1000 1000 1000 1000", "", ptrace | kill, ptrace | kill, ptrace | kill},
		// Only permitted capabilities can be raised.
		{"effective without permitted", Caller{UID: ids(1000), GID: ids(1000), CapEff: ptrace}, &syscall.Credential{Uid: 1000, Gid: 1000},
			"1000 1000 1000 1000", "1000 1000 1000 1000", "", 0, 0, 0},
		{"root", Caller{UID: ids(0), GID: ids(0), CapEff: eff, CapPrm: eff}, nil,
			"0 0 0 0", "0 0 0 0", "", eff, eff, eff},
		// Root that dropped capabilities does not get them back.
		{"root without most capabilities", Caller{UID: ids(0), GID: ids(5), Groups: []uint32{5}, CapEff: ptrace, CapPrm: ptrace}, nil,
			"0 0 0 0", "5 5 5 5", "5", ptrace, ptrace, ptrace},
		// A caller claiming more than the daemon holds gets what it holds.
		{"more than the daemon", Caller{UID: ids(0), CapEff: ^uint64(0), CapPrm: ^uint64(0)}, nil,
			"0 0 0 0", "0 0 0 0", "", eff, eff, eff},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			rep := probe(t, &tt.caller, sleeper(t, tt.target))
			s := rep.Status
			if s["Uid"] != tt.uid || s["Gid"] != tt.gid || s["Groups"] != tt.groups {
				t.Errorf("ids: Uid %q Gid %q Groups %q; want %q, %q, %q", s["Uid"], s["Gid"], s["Groups"], tt.uid, tt.gid, tt.groups)
			}
			// Descriptors 0 to 3 and the Go runtime's own: nothing of the
			// daemon's, the FUSE device above all, reaches the helper.
			if strings.Contains(strings.Join(rep.FDs, " "), "/dev/fuse") {
				t.Errorf("the helper has descriptors %q: the FUSE device leaked", rep.FDs)
			}
			if s["CapEff"] != hexCaps(tt.capEff) || s["CapPrm"] != hexCaps(tt.capEff) ||
				s["CapBnd"] != hexCaps(tt.capBnd) || s["CapAmb"] != hexCaps(tt.amb) || s["NoNewPrivs"] != "1" {
				t.Errorf("capabilities %v; want effective and permitted %s, bounding %s, ambient %s, no_new_privs",
					s, hexCaps(tt.capEff), hexCaps(tt.capBnd), hexCaps(tt.amb))
			}
		})
	}
}

func TestExecInjectorStatus(t *testing.T) {
	testenv.RequireRoot(t)
	caller := &Caller{UID: ids(65534), GID: ids(65534)}
	target := sleeper(t, nobody)
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
		err := x.Inject(context.Background(), caller, target, nil, undo.List{{Semid: 1, Adj: []int16{1}}})
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
	if err := x.Inject(context.Background(), caller, target, nil, nil); err == nil || errnoOf(err).Error() != "input/output error" {
		t.Errorf("missing helper: %v", err)
	}
}

// TestMountWithoutInit: a program that did not call Init cannot mount with
// the default injector, which would run it as the helper.
func TestMountWithoutInit(t *testing.T) {
	requireFUSE(t)
	cmd := testenv.HelperCommand(t, "noinit")
	if out, err := testenv.CombinedOutput(t, cmd, "helper noinit"); err != nil {
		t.Errorf("%v: %s", err, out)
	}
}
