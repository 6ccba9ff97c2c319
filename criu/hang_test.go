package criu

import (
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"github.com/semundo/semundo/internal/testenv"
)

// hungTests are the tests TestHungCRIU runs with a CRIU that hangs, and
// what each must say it waited for: CRIU directly, and runc and Podman,
// which run CRIU themselves.
var hungTests = []struct{ name, waited string }{
	{"TestRestoredLockReleased", `criu dump of pid \d+`},
	{"TestRunc", `runc checkpoint semundo-test-\d+-\d+`},
	{"TestPodman", `podman container checkpoint --keep semundo-test-\d+-\d+`},
}

// hungWait is the wait limit of the tests TestHungCRIU runs: short, but
// long enough that the steps before CRIU (podman run on a busy machine)
// finish within it.
const hungWait = "10s"

// TestHungCRIU proves that the CRIU tests fail in time, rather than at go
// test's global timeout, when CRIU hangs (as trixie's 4.1.1 did on an AMD
// EPYC with AVX-512): it runs hungTests again in a child test binary whose
// criu is a script that starts a child and sleeps forever, with the wait
// limit shortened to hungWait. Each test must fail, saying what did not
// finish and that it was killed. Only their first subtest runs (the
// controls would hang the same way). The child binary runs under tree.c's reaper,
// which exits only once every process below it is gone: its exit shows
// that nothing the tests started, the hung CRIU included, was left
// running.
func TestHungCRIU(t *testing.T) {
	testenv.RequireRoot(t)
	dir := t.TempDir()
	started := filepath.Join(dir, "started")
	fake := filepath.Join(dir, "criu")
	script := fmt.Sprintf("#!/bin/sh\necho \"$$ $*\" >>%s\nsleep 100000 &\nwait\n", shellQuote(started))
	if err := os.WriteFile(fake, []byte(script), 0o755); err != nil {
		t.Fatal(err)
	}
	tree := testenv.BuildC(t, "tree", treeSrc)
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, h := range hungTests {
		names = append(names, h.name)
	}
	out := filepath.Join(dir, "out")
	args := []string{"reaper", out, exe, "-test.run=^(" + strings.Join(names, "|") + ")$/^semundo$", "-test.v", "-test.count=1"}
	reaper, status := startReaper(t, tree, args, "SEMUNDO_CRIU="+fake, testenv.WaitEnv+"="+hungWait)
	code, err := reaperStatus(status, reaper, "the CRIU tests with a hung criu")
	if err != nil {
		t.Fatal(err)
	}
	waitReaper(t, reaper)
	text := readLog(out)
	if code == 0 {
		t.Fatalf("the CRIU tests passed with a criu that hangs:\n%s", tail(text, 40))
	}
	ran := 0
	for _, h := range hungTests {
		if strings.Contains(text, "--- SKIP: "+h.name) {
			t.Logf("%s skipped in the child: %s", h.name, skipReason(text, h.name))
			continue
		}
		ran++
		if !strings.Contains(text, "--- FAIL: "+h.name) {
			t.Errorf("%s did not fail with a hung criu:\n%s", h.name, tail(text, 40))
			continue
		}
		re := regexp.MustCompile(h.waited + ` did not finish in ` + hungWait + `; killed it`)
		if m := re.FindString(text); m == "" {
			t.Errorf("%s failed without saying that %s did not finish in %s:\n%s", h.name, h.waited, hungWait, tail(text, 40))
		} else {
			t.Logf("%s: %s", h.name, m)
		}
	}
	if ran == 0 {
		t.Skipf("every test skipped in the child binary:\n%s", tail(text, 20))
	}
	calls, _ := os.ReadFile(started)
	if len(calls) == 0 {
		t.Errorf("the tests never ran the fake criu:\n%s", tail(text, 40))
	}
	t.Logf("the fake criu was started %d times", strings.Count(string(calls), "\n"))
}

// skipReason returns the line after name's skip line in go test -v's
// output: the reason it gave.
func skipReason(text, name string) string {
	lines := strings.Split(text, "\n")
	for i, l := range lines {
		if strings.Contains(l, "--- SKIP: "+name) && i+1 < len(lines) {
			return strings.TrimSpace(lines[i+1])
		}
	}
	return "(no reason shown)"
}
