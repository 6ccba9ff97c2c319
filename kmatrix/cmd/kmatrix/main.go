// Command kmatrix runs semundo's integration tests on the kernels of the
// matrix (Debian's 6.1 and 6.12 cloud kernels for amd64 or, with -arch
// arm64, for arm64; bullseye's 5.10 for amd64) under QEMU and prints a
// table kernel x (pass, fail, skip, time). It exits 1 when a test fails,
// a kernel does not boot or a VM times out, and 2 on a usage or host error.
//
//	go run ./kmatrix/cmd/kmatrix [flags] [PKG...] [-- TESTFLAGS...]
//
// See kmatrix/README.md.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"time"

	"github.com/semundo/semundo/kmatrix"
)

// DefaultPackages are the packages tested when none is named.
var DefaultPackages = []string{
	"github.com/semundo/semundo/kmatrix/sample",
	"github.com/semundo/semundo/reader",
	"github.com/semundo/semundo/sysvsem",
	"github.com/semundo/semundo/undo",
	"github.com/semundo/semundo/plan",
	"github.com/semundo/semundo/writer",
	"github.com/semundo/semundo/checkpoint",
}

func defaultCache() string {
	if os.Geteuid() == 0 {
		return "/var/cache/semundo-kmatrix"
	}
	if d, err := os.UserCacheDir(); err == nil {
		return d + "/semundo-kmatrix"
	}
	return os.TempDir() + "/semundo-kmatrix"
}

func main() {
	os.Exit(run())
}

// command is a parsed command line.
type command struct {
	opts    kmatrix.Options // without WorkDir, Env, Stream and Log
	keep    bool
	verbose bool
}

// errUsage is returned by parse after it printed the usage (or the flag
// package printed the error and the usage).
var errUsage = errors.New("usage")

// parse reads the command line (without the program name); usage and flag
// errors go to out.
func parse(args []string, out io.Writer) (*command, error) {
	fs := flag.NewFlagSet("kmatrix", flag.ContinueOnError)
	fs.SetOutput(out)
	arch := fs.String("arch", "amd64", "guest architecture: amd64 or arm64 (both emulated)")
	kernels := fs.String("kernels", "", "comma-separated kernels: series (6.1, 6.12, and 5.10 on amd64) or linux-image-*-cloud-ARCH package names; default 6.1,6.12")
	runRE := fs.String("run", "", "run only tests matching `regexp` (-test.run)")
	skipRE := fs.String("skip", "", "do not run tests matching `regexp` (-test.skip), e.g. tests that cannot work in the VM")
	timeout := fs.Duration("timeout", 3*time.Minute, "per test binary (-test.timeout)")
	vmTimeout := fs.Duration("vmtimeout", 0, "per VM; 0 means 2 minutes plus each binary's -timeout and 40s of slack")
	keep := fs.Bool("keep", false, "keep the work directory (binaries, initramfs, console logs)")
	verbose := fs.Bool("v", false, "stream the guest's output")
	cache := fs.String("cache", defaultCache(), "kernel cache `dir`")
	qemu := fs.String("qemu", "", "QEMU binary (default qemu-system-x86_64 or qemu-system-aarch64 by -arch)")
	mem := fs.String("m", "2G", "guest memory")
	smp := fs.Int("smp", 2, "guest CPUs")
	short := fs.Bool("short", false, "pass -test.short to every binary (shorter soak tests)")
	appendArgs := fs.String("append", "", "extra kernel command line parameters, e.g. loglevel=7")
	commands := fs.String("cmd", "", "comma-separated main packages built into the VM's PATH for tests that run them, e.g. ./cmd/semundo")
	files := fs.String("files", "", "host `dir` whose tree is packed at the guest's / (e.g. criu/testdata/install-criu-arm64.sh's output)")
	modules := fs.String("modules", "", "comma-separated extra kernel modules to load in the guests (kmatrix.ExtraModules: nfnetlink, for CRIU)")
	fs.Usage = func() {
		fmt.Fprintf(out, "usage: kmatrix [flags] [PKG...] [-- TESTFLAGS...]\n\nPackages default to %s.\n\n", strings.Join(DefaultPackages, " "))
		fs.PrintDefaults()
	}
	if err := fs.Parse(args); err != nil {
		return nil, errUsage // the flag package printed why, and the usage
	}

	pkgs, extra := fs.Args(), []string(nil)
	for i, a := range pkgs {
		if a == "--" {
			pkgs, extra = pkgs[:i], pkgs[i+1:]
			break
		}
	}
	if len(pkgs) == 0 {
		pkgs = DefaultPackages
	}
	if *short {
		extra = append(extra, "-test.short")
	}
	a, err := kmatrix.LookupArch(*arch)
	if err != nil {
		return nil, err
	}
	if *kernels == "" {
		*kernels = strings.Join(a.DefaultKernels, ",")
	}
	names := splitList(*kernels)
	if len(names) == 0 || *timeout <= 0 || *vmTimeout < 0 || *smp <= 0 {
		fs.Usage()
		return nil, errUsage
	}
	return &command{
		opts: kmatrix.Options{
			Arch:      a.Name,
			Kernels:   names,
			Packages:  pkgs,
			Commands:  splitList(*commands),
			Files:     *files,
			Modules:   splitList(*modules),
			Run:       *runRE,
			Skip:      *skipRE,
			TestArgs:  extra,
			Timeout:   *timeout,
			VMTimeout: *vmTimeout,
			CacheDir:  *cache,
			QEMU:      *qemu,
			Memory:    *mem,
			SMP:       *smp,
			Append:    strings.Fields(*appendArgs),
		},
		keep:    *keep,
		verbose: *verbose,
	}, nil
}

// splitList splits a comma-separated flag value, dropping empty items.
func splitList(s string) []string {
	var out []string
	for _, k := range strings.Split(s, ",") {
		if k = strings.TrimSpace(k); k != "" {
			out = append(out, k)
		}
	}
	return out
}

func run() int {
	cmd, err := parse(os.Args[1:], os.Stderr)
	if err != nil {
		if !errors.Is(err, errUsage) {
			fmt.Fprintln(os.Stderr, err)
		}
		return 2
	}

	work, err := os.MkdirTemp("", "kmatrix-")
	if err != nil {
		fmt.Fprintln(os.Stderr, "kmatrix:", err)
		return 2
	}
	if cmd.keep {
		fmt.Fprintln(os.Stderr, "kmatrix: keeping work directory", work)
	} else {
		defer os.RemoveAll(work)
	}

	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	opts := cmd.opts
	opts.WorkDir = work
	opts.Log = os.Stderr
	if v, ok := os.LookupEnv("CI"); ok {
		opts.Env = append(opts.Env, "CI="+v)
	}
	if cmd.verbose {
		opts.Stream = os.Stdout
	}
	rep, err := kmatrix.Run(ctx, opts)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 2
	}
	fmt.Println()
	rep.Print(os.Stdout, !cmd.verbose)
	fmt.Printf("\nkernels %.1fs, build %.1fs, total %.1fs\n", rep.Fetch.Seconds(), rep.Build.Seconds(), rep.Total.Seconds())
	if !rep.OK() {
		return 1
	}
	return 0
}
