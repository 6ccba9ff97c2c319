package criu

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/semundo/semundo/internal/testenv"
)

// fakeLoader stands in for a debootstrapped tree's dynamic loader, which
// the wrapper runs as LOADER --library-path DIRS CRIU ARGS...: it answers
// --version and otherwise does what the candidate is made to do.
const fakeLoader = `#!/bin/sh
shift 3
case $1 in --version) echo "Version: 0.0-%s"; exit 0 ;; esac
%s
`

// crashSrc is a "criu" that dies of SIGSEGV, so that the kernel logs it
// by that name, as it logged trixie's CRIU crashing on an AMD EPYC.
const crashSrc = `int main(void) { return *(volatile int *)0; }`

// TestInstallRefusesBrokenCRIU runs install-criu.sh on cached candidate
// trees whose CRIU hangs, fails or crashes: each must be refused for its
// reason (the timeout, the exit status, the kernel's crash line), no
// wrapper installed, and criu.refused must say all that on one line. It
// runs under tree.c's reaper, whose exit shows that nothing the preflights
// started was left running.
func TestInstallRefusesBrokenCRIU(t *testing.T) {
	testenv.RequireRoot(t)
	bash := testenv.RequireTool(t, "bash")
	cache := t.TempDir()
	crash := testenv.BuildC(t, "criu", crashSrc)
	for suite, body := range map[string]string{
		"hang":  "sleep 100000 &\nwait",
		"fail":  `echo "Error (criu/cr-dump.c:1): made to fail" >"$5/dump.log"; exit 1`,
		"crash": `exec "$(dirname "$0")/../usr/sbin/criu"`,
	} {
		root := filepath.Join(cache, suite)
		for _, d := range []string{"lib64", "usr/sbin"} {
			if err := os.MkdirAll(filepath.Join(root, d), 0o755); err != nil {
				t.Fatal(err)
			}
		}
		loader := strings.Replace(strings.Replace(fakeLoader, "%s", suite, 1), "%s", body, 1)
		if err := os.WriteFile(filepath.Join(root, "lib64/ld-linux-x86-64.so.2"), []byte(loader), 0o755); err != nil {
			t.Fatal(err)
		}
		exe, err := os.ReadFile(crash)
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(root, "usr/sbin/criu"), exe, 0o755); err != nil {
			t.Fatal(err)
		}
	}

	tree := testenv.BuildC(t, "tree", treeSrc)
	out := filepath.Join(t.TempDir(), "out")
	script, err := filepath.Abs("testdata/install-criu.sh")
	if err != nil {
		t.Fatal(err)
	}
	reaper, status := startReaper(t, tree, []string{"reaper", out, bash, script, cache},
		"SEMUNDO_CRIU_SUITES=hang fail crash", "SEMUNDO_CRIU_STEP_TIMEOUT=2")
	code, err := reaperStatus(status, reaper, "install-criu.sh with broken candidates")
	if err != nil {
		t.Fatal(err)
	}
	waitReaper(t, reaper)
	text := readLog(out)
	if code != 1 {
		t.Errorf("install-criu.sh exited %d, want 1:\n%s", code, text)
	}
	if _, err := os.Stat(filepath.Join(cache, "criu")); err == nil {
		t.Errorf("install-criu.sh installed a wrapper although every candidate failed:\n%s", text)
	}
	refused, err := os.ReadFile(filepath.Join(cache, "criu.refused"))
	if err != nil {
		t.Fatalf("no criu.refused: %v\n%s", err, text)
	}
	line := strings.TrimSuffix(string(refused), "\n")
	if strings.Contains(line, "\n") {
		t.Errorf("criu.refused has more than one line: %q", refused)
	}
	for _, want := range []string{
		"no CRIU passed the preflight on this host (kernel ",
		"hang's CRIU 0.0-hang: criu dump of a sleeping process did not finish in 2s; killed it",
		"fail's CRIU 0.0-fail: criu dump of a sleeping process exited with status 1 (Error (criu/cr-dump.c:1): made to fail)",
		"crash's CRIU 0.0-crash: CRIU itself crashed: criu dump of a sleeping process exited with status 139",
		"; dmesg: ",
	} {
		if !strings.Contains(line, want) {
			t.Errorf("criu.refused lacks %q:\n%s", want, line)
		}
	}
	if strings.Contains(text, "chose ") {
		t.Errorf("install-criu.sh chose a candidate:\n%s", text)
	}
	t.Logf("criu.refused: %s", line)
	checkRefusalQuoted(t, cache, line)
}

// checkRefusalQuoted runs TestRestoredLockReleased in a child test binary
// with cache as install-criu.sh's cache: under CI it must fail at once, on
// one line quoting the refusal; elsewhere it must skip with that line.
func checkRefusalQuoted(t *testing.T, cache, refusal string) {
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	for _, ci := range []string{"true", ""} {
		cmd := testenv.Command(t, "TestRestoredLockReleased with CI="+ci, exe, "-test.run=^TestRestoredLockReleased$", "-test.v", "-test.count=1")
		cmd.Env = append(os.Environ(), "SEMUNDO_CRIU=", "SEMUNDO_CRIU_CACHE="+cache, "CI="+ci)
		out, err := cmd.CombinedOutput()
		if errors.Is(err, testenv.ErrDeadline) {
			t.Fatal(err)
		}
		verdict := "--- SKIP: TestRestoredLockReleased"
		if ci != "" {
			verdict = "--- FAIL: TestRestoredLockReleased"
		}
		want := "missing a CRIU that works on this host: " + refusal + " (from " + filepath.Join(cache, "criu.refused") + ")"
		if !strings.Contains(string(out), verdict) || !strings.Contains(string(out), want) {
			t.Errorf("CI=%q: the test did not stop with %q and the refusal:\n%s", ci, verdict, out)
		}
	}
}
