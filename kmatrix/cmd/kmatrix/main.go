// Command kmatrix runs semundo's integration tests on the kernels of the
// matrix (Debian's 6.1 and 6.12 cloud kernels) under QEMU and prints a
// table kernel x (pass, fail, skip, time). It exits 1 when a test fails,
// a kernel does not boot or a VM times out, and 2 on a usage or host error.
//
//	go run ./kmatrix/cmd/kmatrix [flags] [PKG...] [-- TESTFLAGS...]
//
// See kmatrix/README.md.
package main

import (
	"context"
	"flag"
	"fmt"
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

func run() int {
	kernels := flag.String("kernels", strings.Join(kmatrix.DefaultKernels, ","), "comma-separated kernels: series (6.1, 6.12) or linux-image-*-cloud-amd64 package names")
	runRE := flag.String("run", "", "run only tests matching `regexp` (-test.run)")
	skipRE := flag.String("skip", "", "do not run tests matching `regexp` (-test.skip), e.g. tests that cannot work in the VM")
	timeout := flag.Duration("timeout", 3*time.Minute, "per test binary (-test.timeout)")
	vmTimeout := flag.Duration("vmtimeout", 0, "per VM; 0 means 2 minutes plus each binary's -timeout and 40s of slack")
	keep := flag.Bool("keep", false, "keep the work directory (binaries, initramfs, console logs)")
	verbose := flag.Bool("v", false, "stream the guest's output")
	cache := flag.String("cache", defaultCache(), "kernel cache `dir`")
	qemu := flag.String("qemu", "qemu-system-x86_64", "QEMU binary")
	mem := flag.String("m", "2G", "guest memory")
	smp := flag.Int("smp", 2, "guest CPUs")
	short := flag.Bool("short", false, "pass -test.short to every binary (shorter soak tests)")
	appendArgs := flag.String("append", "", "extra kernel command line parameters, e.g. loglevel=7")
	flag.Usage = func() {
		fmt.Fprintf(flag.CommandLine.Output(), "usage: kmatrix [flags] [PKG...] [-- TESTFLAGS...]\n\nPackages default to %s.\n\n", strings.Join(DefaultPackages, " "))
		flag.PrintDefaults()
	}
	flag.Parse()

	pkgs, extra := flag.Args(), []string(nil)
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
	var names []string
	for _, k := range strings.Split(*kernels, ",") {
		if k = strings.TrimSpace(k); k != "" {
			names = append(names, k)
		}
	}
	if len(names) == 0 || *timeout <= 0 || *vmTimeout < 0 || *smp <= 0 {
		flag.Usage()
		return 2
	}

	work, err := os.MkdirTemp("", "kmatrix-")
	if err != nil {
		fmt.Fprintln(os.Stderr, "kmatrix:", err)
		return 2
	}
	if *keep {
		fmt.Fprintln(os.Stderr, "kmatrix: keeping work directory", work)
	} else {
		defer os.RemoveAll(work)
	}

	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	opts := kmatrix.Options{
		Kernels:   names,
		Packages:  pkgs,
		Run:       *runRE,
		Skip:      *skipRE,
		TestArgs:  extra,
		Timeout:   *timeout,
		VMTimeout: *vmTimeout,
		CacheDir:  *cache,
		WorkDir:   work,
		QEMU:      *qemu,
		Memory:    *mem,
		SMP:       *smp,
		Append:    strings.Fields(*appendArgs),
		Log:       os.Stderr,
	}
	if v, ok := os.LookupEnv("CI"); ok {
		opts.Env = append(opts.Env, "CI="+v)
	}
	if *verbose {
		opts.Stream = os.Stdout
	}
	rep, err := kmatrix.Run(ctx, opts)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 2
	}
	fmt.Println()
	rep.Print(os.Stdout, !*verbose)
	fmt.Printf("\nkernels %.1fs, build %.1fs, total %.1fs\n", rep.Fetch.Seconds(), rep.Build.Seconds(), rep.Total.Seconds())
	if !rep.OK() {
		return 1
	}
	return 0
}
