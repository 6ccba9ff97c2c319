// Package testenv gates tests on what the machine offers: root, BPF, ptrace,
// tools. Outside CI a missing feature skips the test with a message naming it;
// when the CI environment variable is set the same condition fails the test,
// so CI can never turn green by skipping.
package testenv

import (
	"fmt"
	"os"
	"os/exec"
	"testing"

	"golang.org/x/sys/unix"
)

// InCI reports whether the tests run under CI (the CI variable is set and not
// "false" or "0").
func InCI() bool {
	v, ok := os.LookupEnv("CI")
	return ok && v != "" && v != "false" && v != "0"
}

// Missing stops the test because the feature named by what is unavailable:
// it fails under CI and skips elsewhere. why says what to do about it.
func Missing(tb testing.TB, what, why string) {
	tb.Helper()
	msg := "missing " + what
	if why != "" {
		msg += ": " + why
	}
	if InCI() {
		tb.Fatal(msg + " (CI requires it)")
	}
	tb.Skip(msg)
}

// RequireRoot stops the test unless it runs with effective uid 0.
func RequireRoot(tb testing.TB) {
	tb.Helper()
	if os.Geteuid() != 0 {
		Missing(tb, "root", "run the tests as root (sudo -E go test ./...)")
	}
}

// RequireTool stops the test unless the named program is on PATH and returns
// its path.
func RequireTool(tb testing.TB, name string) string {
	tb.Helper()
	p, err := exec.LookPath(name)
	if err != nil {
		Missing(tb, "program "+name, "install it (see .ci/run for the Debian package)")
	}
	return p
}

// SkipTestOnly skips the test because the machine lacks what, a feature
// that only the test needs, not semundo (32-bit executables, int $0x80 from
// a 64-bit process): unlike Missing it skips even under CI, where such
// tests run on the kernel matrix's guests, whose kernels have the feature.
// why says how its absence showed.
func SkipTestOnly(tb testing.TB, what, why string) {
	tb.Helper()
	tb.Skipf("this machine lacks %s, which only this test needs (semundo does not): %s", what, why)
}

// KernelAtLeast says whether the running kernel's release is at least
// major.minor.
func KernelAtLeast(tb testing.TB, major, minor int) bool {
	tb.Helper()
	var u unix.Utsname
	if err := unix.Uname(&u); err != nil {
		tb.Fatal(err)
	}
	var ma, mi int
	if _, err := fmt.Sscanf(unix.ByteSliceToString(u.Release[:]), "%d.%d", &ma, &mi); err != nil {
		tb.Fatalf("kernel release %q: %v", unix.ByteSliceToString(u.Release[:]), err)
	}
	return ma > major || ma == major && mi >= minor
}
