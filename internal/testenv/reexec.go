package testenv

import (
	"fmt"
	"os"
	"os/exec"
	"testing"
)

// HelperEnv names the environment variable that puts a re-executed test
// binary into helper mode; its value names the helper.
const HelperEnv = "SEMUNDO_TEST_HELPER"

// VMEnv is set to 1 by the kernel-matrix VM's /init (kmatrix), where tests
// run from an initramfs with no compiler and no go tool.
const VMEnv = "SEMUNDO_VM"

// Helpers maps a helper name to the code that runs in the re-executed
// binary; it gets the arguments after the program name and returns the
// exit status.
type Helpers map[string]func(args []string) int

// RunHelper belongs first in a package's TestMain. When the binary was
// started by HelperCommand it runs the named helper and exits with its
// status; otherwise it returns and the tests run. Helpers replace small C
// targets where no compiler exists (the kernel-matrix VM).
func RunHelper(h Helpers) {
	name, ok := os.LookupEnv(HelperEnv)
	if !ok {
		return
	}
	fn := h[name]
	if fn == nil {
		fmt.Fprintf(os.Stderr, "testenv: no helper %q in this test binary; register it in TestMain's RunHelper\n", name)
		os.Exit(2)
	}
	os.Exit(fn(os.Args[1:]))
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
	cmd.Env = append(os.Environ(), HelperEnv+"="+name)
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
