// Package kmatrix runs semundo's compiled Go tests on other kernels: it
// fetches Debian's cloud kernels with APT (cached), builds the test binaries
// and a static /init (kmatrix/cmd/init) into an initramfs, boots each kernel
// under qemu-system-x86_64 or qemu-system-aarch64 with software emulation
// (see Arches), and turns what /init
// reports over the serial console into a pass/fail/skip table per kernel.
// The command is kmatrix/cmd/kmatrix.
package kmatrix

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/semundo/semundo/kmatrix/gotest"
	"github.com/semundo/semundo/kmatrix/guest"
)

// Per-binary allowances: /init kills a binary initGrace after its own
// -test.timeout should have fired, and the VM gets bootAllowance on top of
// the sum of its binaries' budgets.
const (
	initGrace     = 20 * time.Second
	binarySlack   = 20 * time.Second // init's SIGQUIT-to-SIGKILL grace and drain wait
	bootAllowance = 2 * time.Minute
)

// Options configure a matrix run.
type Options struct {
	Arch     string   // the guests' architecture, a key of Arches; empty means amd64
	Kernels  []string // series names (see Series, ArchiveSeries) or package names
	Packages []string // go list patterns of the packages whose tests run
	// Commands are main packages built into /kmatrix/bin, on the tests'
	// PATH, for tests that run a command (testenv.BuildGo finds it there).
	Commands []string
	// Files is a host directory whose tree is packed at the guest's /,
	// for tests that need programs the initramfs lacks (the arm64 CRIU,
	// a shell and a C target from criu/testdata/install-criu-arm64.sh);
	// empty packs none, so runs that do not ask for it stay small.
	Files string
	// Modules names modules of ExtraModules to load besides Modules.
	Modules  []string
	Run      string        // -test.run regexp; empty runs all
	Skip     string        // -test.skip regexp; empty skips none
	TestArgs []string      // more arguments for every test binary
	Timeout  time.Duration // per test binary (its -test.timeout)
	// VMTimeout bounds each VM; zero means bootAllowance plus each
	// binary's Timeout and slack.
	VMTimeout time.Duration
	CacheDir  string    // kernel cache
	WorkDir   string    // where binaries and the initramfs are built
	QEMU      string    // QEMU binary; empty means the Arch's
	Memory    string    // guest memory (-m)
	SMP       int       // guest CPUs (-smp)
	Append    []string  // extra kernel command line parameters
	Env       []string  // environment for the tests in the VM (KEY=VALUE)
	Stream    io.Writer // when set, guest output as it comes
	Log       io.Writer // progress messages
}

// Report is a finished matrix run.
type Report struct {
	Runs   []*KernelRun
	Strict bool          // CI: a skipped test fails its kernel
	Fetch  time.Duration // finding and downloading kernels
	Build  time.Duration // building binaries and the initramfs
	Total  time.Duration
}

func logf(w io.Writer, format string, args ...any) {
	if w != nil {
		fmt.Fprintf(w, format+"\n", args...)
	}
}

// TestArgs returns the arguments every test binary gets: test2json framing
// (so output that looks like a result line is never taken for one), one
// run, the timeout, the -run and -skip filters and extra.
func TestArgs(run, skip string, timeout time.Duration, extra []string) []string {
	args := []string{"-test.v=test2json", "-test.count=1", "-test.timeout=" + timeout.String()}
	if run != "" {
		args = append(args, "-test.run="+run)
	}
	if skip != "" {
		args = append(args, "-test.skip="+skip)
	}
	return append(args, extra...)
}

// Run builds, fetches and boots the matrix. It returns an error for
// failures on the host (missing QEMU, build errors, downloads); failures in
// a VM are in the Report.
func Run(ctx context.Context, o Options) (*Report, error) {
	start := time.Now()
	if o.Arch == "" {
		o.Arch = "amd64"
	}
	arch, err := LookupArch(o.Arch)
	if err != nil {
		return nil, err
	}
	if o.QEMU == "" {
		o.QEMU = arch.QEMU
	}
	qemu, err := exec.LookPath(o.QEMU)
	if err != nil {
		return nil, noQEMU(arch, o.QEMU)
	}
	rep := &Report{Strict: InCI()}
	for _, name := range o.Kernels {
		if err := checkName(arch.Name, name); err != nil {
			return nil, err
		}
	}

	t0 := time.Now()
	f := &Fetcher{CacheDir: o.CacheDir, Arch: arch, Archive: HostArchive(), Log: o.Log}
	if f.Extra, err = LookupModules(o.Modules); err != nil {
		return nil, err
	}
	var kernels []Kernel
	for _, name := range o.Kernels {
		k, err := f.Get(ctx, name)
		if err != nil {
			return nil, err
		}
		kernels = append(kernels, k)
	}
	rep.Fetch = time.Since(t0)

	t0 = time.Now()
	pkgs, err := ListPackages(ctx, o.Packages)
	if err != nil {
		return nil, err
	}
	logf(o.Log, "kmatrix: building %d test binaries and /init in %s", len(pkgs), o.WorkDir)
	binDir := filepath.Join(o.WorkDir, "bin")
	if err := os.MkdirAll(binDir, 0o755); err != nil {
		return nil, err
	}
	if err := BuildTests(ctx, arch.Name, binDir, pkgs); err != nil {
		return nil, err
	}
	cmdDir := filepath.Join(o.WorkDir, "cmd")
	if err := os.MkdirAll(cmdDir, 0o755); err != nil {
		return nil, err
	}
	commands, err := BuildCommands(ctx, arch.Name, cmdDir, o.Commands)
	if err != nil {
		return nil, err
	}
	initBin := filepath.Join(o.WorkDir, "init")
	if err := BuildInit(ctx, arch.Name, initBin); err != nil {
		return nil, err
	}
	cfg := guestConfig(pkgs, kernels, TestArgs(o.Run, o.Skip, o.Timeout, o.TestArgs), o.Env, o.Timeout+initGrace)
	initrd := filepath.Join(o.WorkDir, "initramfs.cpio")
	if err := WriteInitramfs(initrd, initBin, pkgs, commands, o.Files, kernels, cfg); err != nil {
		return nil, err
	}
	rep.Build = time.Since(t0)

	vmTimeout := o.VMTimeout
	if vmTimeout == 0 {
		vmTimeout = bootAllowance + time.Duration(len(pkgs))*(o.Timeout+initGrace+binarySlack)
	}
	vm := VM{
		Arch:    arch,
		QEMU:    qemu,
		Memory:  o.Memory,
		SMP:     o.SMP,
		Append:  o.Append,
		Timeout: vmTimeout,
		Stream:  o.Stream,
	}
	for _, k := range kernels {
		logf(o.Log, "kmatrix: booting %s (%s)", k.Name, k.Package)
		vm.Log = filepath.Join(o.WorkDir, fileName(k.Name)+".console.log")
		run, err := vm.Boot(ctx, k, initrd)
		if err != nil {
			return nil, err
		}
		if bad, err := CheckConfig(k.Config, arch); err != nil {
			run.Errors = append(run.Errors, err.Error())
		} else {
			run.ConfigBad = bad
		}
		rep.Runs = append(rep.Runs, run)
		if ctx.Err() != nil {
			return nil, ctx.Err()
		}
	}
	rep.Total = time.Since(start)
	return rep, nil
}

// InCI reports whether CI is set and not "false" or "0", the same rule as
// internal/testenv.
func InCI() bool {
	v, ok := os.LookupEnv("CI")
	return ok && v != "" && v != "false" && v != "0"
}

func jsonConfig(cfg guest.Config) ([]byte, error) {
	b, err := json.MarshalIndent(cfg, "", "  ")
	if err != nil {
		return nil, fmt.Errorf("encode guest config: %w", err)
	}
	return b, nil
}

// counts sums a run's tests.
func counts(run *KernelRun) (pass, fail, skip int) {
	for _, b := range run.Binaries {
		pass += b.Result.Count(gotest.Pass)
		fail += b.Result.Count(gotest.Fail) + b.Result.Count(gotest.Unfinished)
		skip += b.Result.Count(gotest.Skip)
	}
	return
}

// Problems returns why a kernel's run failed; none means it passed.
func (r *Report) Problems(run *KernelRun) []string {
	var p []string
	p = append(p, run.Errors...)
	for _, o := range run.Oops {
		p = append(p, "kernel: "+o)
	}
	pass, fail, skip := counts(run)
	for _, b := range run.Binaries {
		switch {
		case !b.Exited:
			p = append(p, b.Name+": no exit report")
		case b.Code != 0 && b.Result.Count(gotest.Fail)+b.Result.Count(gotest.Unfinished) == 0:
			why := b.Reason
			if b.Result.Panic != "" {
				why = strings.TrimSpace(why + " " + b.Result.Panic)
			}
			p = append(p, fmt.Sprintf("%s: exit status %d with no failed test %s", b.Name, b.Code, why))
		case b.Reason != "":
			p = append(p, b.Name+": "+b.Reason)
		}
	}
	if fail > 0 {
		p = append(p, fmt.Sprintf("%d failed", fail))
	}
	if r.Strict && skip > 0 {
		p = append(p, fmt.Sprintf("%d skipped (a skip fails under CI)", skip))
	}
	if run.Done && pass+fail+skip == 0 {
		p = append(p, "no test ran (check the packages and -run)")
	}
	return p
}

// OK reports whether every kernel passed.
func (r *Report) OK() bool {
	for _, run := range r.Runs {
		if len(r.Problems(run)) > 0 {
			return false
		}
	}
	return len(r.Runs) > 0
}

// Print writes the table and, below it, every failed, unfinished or (under
// CI) skipped test with its output, and the console tail of kernels that
// did not finish. withOutput adds the tests' output (leave it out when the
// output was streamed already).
func (r *Report) Print(w io.Writer, withOutput bool) {
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "KERNEL\tARCH\tRELEASE\tBOOT\tPASS\tFAIL\tSKIP\tTIME\tRESULT")
	for _, run := range r.Runs {
		pass, fail, skip := counts(run)
		rel := run.Release
		if rel == "" {
			rel = "(" + run.Kernel.Release + ")"
		}
		boot := "-"
		if run.Release != "" {
			boot = fmt.Sprintf("%.1fs", run.Boot.Seconds())
		}
		result := "ok"
		if p := r.Problems(run); len(p) > 0 {
			result = "FAIL: " + strings.Join(p, "; ")
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%d\t%d\t%d\t%.1fs\t%s\n", run.Kernel.Name, run.Kernel.Arch, rel, boot, pass, fail, skip, run.Wall.Seconds(), result)
	}
	tw.Flush()

	for _, run := range r.Runs {
		for _, b := range run.Binaries {
			for _, t := range b.Result.Tests {
				if t.Bench != "" {
					fmt.Fprintf(w, "\nBENCH %s %s %s\n", run.Kernel.Name, b.Name, strings.Join(strings.Fields(t.Bench), " "))
				}
			}
		}
	}
	for _, run := range r.Runs {
		if len(run.ConfigBad) > 0 {
			fmt.Fprintf(w, "\n%s: kernel config lacks built-in %s\n", run.Kernel.Name, strings.Join(run.ConfigBad, " "))
		}
		for _, b := range run.Binaries {
			for _, t := range b.Result.Tests {
				if t.Status == gotest.Pass || (t.Status == gotest.Skip && !r.Strict) {
					continue
				}
				fmt.Fprintf(w, "\n%s %s %s %s (%.2fs)\n", t.Status, run.Kernel.Name, b.Name, t.Name, t.Elapsed.Seconds())
				if withOutput {
					for _, l := range t.Output {
						fmt.Fprintf(w, "    %s\n", strings.ReplaceAll(l, "\x16", ""))
					}
					if t.Dropped > 0 {
						fmt.Fprintf(w, "    (%d more lines)\n", t.Dropped)
					}
				}
			}
		}
		if (!run.Done || len(run.Oops) > 0) && len(run.Console) > 0 {
			fmt.Fprintf(w, "\n%s: last console lines:\n", run.Kernel.Name)
			for _, l := range run.Console {
				fmt.Fprintf(w, "    %s\n", l)
			}
		}
	}
}
