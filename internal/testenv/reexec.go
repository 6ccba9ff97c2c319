package testenv

import (
	"fmt"
	"os"
	"os/exec"
	"strings"
	"sync"
	"testing"
)

// HelperEnv names the environment variable that puts a re-executed test
// binary into helper mode; its value names the helper. It is the one way
// the project's tests re-run their own binary as a helper process.
const HelperEnv = "SEMUNDO_TEST_HELPER"

// VMEnv is set to 1 by the kernel-matrix VM's /init (kmatrix), where tests
// run from an initramfs with no compiler and no go tool.
const VMEnv = "SEMUNDO_VM"

// Helpers maps a helper name to the code that runs in the re-executed
// binary; it gets the arguments after the program name and returns the
// exit status.
type Helpers map[string]func(args []string) int

var (
	registryMu sync.Mutex
	registry   = Helpers{}
)

// Register adds a helper that every test binary linking the caller knows,
// without its TestMain naming it: shared test packages (internal/holder)
// register theirs from init. A name registered twice is a programming
// error and panics at init, before any test runs.
func Register(name string, fn func(args []string) int) {
	registryMu.Lock()
	defer registryMu.Unlock()
	if _, dup := registry[name]; dup {
		panic("testenv: helper " + name + " registered twice")
	}
	registry[name] = fn
}

// HelperName returns the name of the helper this process runs as, or ""
// when it is not a helper.
func HelperName() string { return os.Getenv(HelperEnv) }

// RunHelper belongs first in a package's TestMain. When the binary was
// started as a helper (HelperCommand, HelperEnviron) it runs the named
// helper, from h or from those registered, and exits with its status;
// otherwise it returns and the tests run. Helpers replace small C targets
// where no compiler exists (the kernel-matrix VM).
func RunHelper(h Helpers) {
	name, ok := os.LookupEnv(HelperEnv)
	if !ok {
		return
	}
	fn := h[name]
	if fn == nil {
		registryMu.Lock()
		fn = registry[name]
		registryMu.Unlock()
	}
	if fn == nil {
		fmt.Fprintf(os.Stderr, "testenv: no helper %q in this test binary; register it in TestMain's RunHelper\n", name)
		os.Exit(2)
	}
	os.Exit(fn(os.Args[1:]))
}

// HelperEnviron returns this process's environment, without any helper
// selection of its own, plus the selection of helper name and extra
// (KEY=VALUE). A helper that starts another helper needs the first removed:
// exec takes the first of duplicate variables.
func HelperEnviron(name string, extra ...string) []string {
	var env []string
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, HelperEnv+"=") {
			env = append(env, kv)
		}
	}
	return append(append(env, HelperEnv+"="+name), extra...)
}

// HelperCommand returns an unstarted command that runs this test binary again
// as helper name with args. If the test starts it and has not waited for it
// by the time the test ends, cleanup kills and waits for it; a test that
// waits itself must do so before it returns.
func HelperCommand(tb testing.TB, name string, args ...string) *exec.Cmd {
	tb.Helper()
	exe, err := os.Executable()
	if err != nil {
		tb.Fatalf("find own executable to re-run as helper %s: %v", name, err)
	}
	cmd := exec.Command(exe, args...)
	cmd.Env = HelperEnviron(name)
	tb.Cleanup(func() {
		if cmd.Process != nil && cmd.ProcessState == nil {
			_ = cmd.Process.Kill()
			_ = cmd.Wait()
		}
	})
	return cmd
}

// InVM reports whether the test runs inside the kernel-matrix VM.
func InVM() bool { return os.Getenv(VMEnv) == "1" }
