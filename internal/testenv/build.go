package testenv

import (
	"os"
	"path/filepath"
	"testing"
)

// BuildC compiles the C program src with gcc into a temporary directory and
// returns the executable's path. Tests use small C targets because their
// behaviour under ptrace and SEM_UNDO is exactly what the source says, with no
// runtime threads of their own.
func BuildC(tb testing.TB, name, src string, flags ...string) string {
	tb.Helper()
	gcc := RequireTool(tb, "gcc")
	dir := tb.TempDir()
	cfile := filepath.Join(dir, name+".c")
	if err := os.WriteFile(cfile, []byte(src), 0o644); err != nil {
		tb.Fatal(err)
	}
	out := filepath.Join(dir, name)
	args := append([]string{"-O1", "-Wall", "-pthread", "-o", out, cfile}, flags...)
	if b, err := Command(tb, "gcc "+name, gcc, args...).CombinedOutput(); err != nil {
		tb.Fatalf("gcc %s: %v\n%s", name, err, b)
	}
	return out
}

// VMBinDir is where the kernel-matrix VM holds the test binaries and the
// commands kmatrix was asked to build (its -cmd flag).
const VMBinDir = "/kmatrix/bin"

// BuildGo builds the Go main package at pkg (an import path or a directory)
// into a temporary directory and returns the executable's path. In the
// kernel-matrix VM, which has no go tool, it returns the copy kmatrix built
// into VMBinDir (named after pkg's last element), if any.
func BuildGo(tb testing.TB, pkg string) string {
	tb.Helper()
	if InVM() {
		p := filepath.Join(VMBinDir, filepath.Base(pkg))
		if _, err := os.Stat(p); err != nil {
			Missing(tb, "go tool", "the VM cannot build "+pkg+": have kmatrix build it (-cmd "+pkg+")")
		}
		return p
	}
	goTool := RequireTool(tb, "go")
	out := filepath.Join(tb.TempDir(), filepath.Base(pkg))
	cmd := Command(tb, "go build "+pkg, goTool, "build", "-o", out, pkg)
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
	if b, err := cmd.CombinedOutput(); err != nil {
		tb.Fatalf("go build %s: %v\n%s", pkg, err, b)
	}
	return out
}
