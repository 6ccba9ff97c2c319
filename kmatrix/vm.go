package kmatrix

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"os"
	"os/exec"
	"regexp"
	"strconv"
	"strings"
	"time"

	"github.com/semundo/semundo/kmatrix/gotest"
	"github.com/semundo/semundo/kmatrix/guest"
)

// consoleTail is how many unframed console lines a run keeps to explain a
// boot failure or a kernel oops.
const consoleTail = 40

// VM describes how to start QEMU.
type VM struct {
	Arch    Arch          // the guest's architecture (machine, console)
	QEMU    string        // QEMU binary for Arch
	Memory  string        // -m, e.g. 2G
	SMP     int           // -smp
	Timeout time.Duration // whole VM; QEMU is killed after it
	Append  []string      // extra kernel command line parameters
	Stream  io.Writer     // when set, the guest's output, line by line, prefixed with the kernel name
	Log     string        // when set, the raw console output is written there
}

// BinaryRun is one test binary's run in one VM.
type BinaryRun struct {
	Name    string
	Result  gotest.Result
	Exited  bool          // an exit report came back
	Code    int           // exit status (-1: killed by a signal)
	Reason  string        // why it did not exit normally (timeout, signal)
	Elapsed time.Duration // as /init measured it
}

// KernelRun is the outcome of booting one kernel.
type KernelRun struct {
	Kernel    Kernel
	Release   string        // uname -r reported by /init
	Boot      time.Duration // from starting QEMU to /init's first report
	Uptime    time.Duration // guest uptime when /init started
	Wall      time.Duration // whole VM, QEMU start to exit
	Binaries  []*BinaryRun
	Errors    []string // /init's error reports and host-side failures
	Done      bool     // /init reported that all binaries ran
	TimedOut  bool     // the VM was killed after VM.Timeout
	Console   []string // the last unframed console lines (kernel messages)
	Oops      []string // kernel warnings, oopses and panics printed after /init started
	ConfigBad []string // required options not built in
}

// Args returns QEMU's command line for a kernel and an initramfs: software
// emulation only (the KVM here cannot run these kernels), serial console on
// stdio, no network, and no reboot so that a kernel panic ends QEMU.
func (vm VM) Args(k Kernel, initrd string) []string {
	cmdline := append([]string{"console=" + vm.Arch.Console, "panic=-1", "quiet"}, vm.Append...)
	return append(append([]string(nil), vm.Arch.Machine...),
		"-smp", strconv.Itoa(vm.SMP),
		"-m", vm.Memory,
		"-nographic", "-no-reboot", "-no-user-config",
		"-nic", "none",
		"-kernel", k.Vmlinuz,
		"-initrd", initrd,
		"-append", strings.Join(cmdline, " "),
	)
}

// Boot runs one kernel with the initramfs and collects what /init reports.
// It returns an error only when QEMU cannot be started; everything that
// goes wrong inside the VM is in the KernelRun.
func (vm VM) Boot(ctx context.Context, k Kernel, initrd string) (*KernelRun, error) {
	run := &KernelRun{Kernel: k}
	ctx, cancel := context.WithTimeout(ctx, vm.Timeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, vm.QEMU, vm.Args(k, initrd)...)
	cmd.WaitDelay = 5 * time.Second
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		return nil, err
	}
	var stderr strings.Builder
	cmd.Stderr = &stderr
	var logw io.Writer = io.Discard
	if vm.Log != "" {
		f, err := os.Create(vm.Log)
		if err != nil {
			return nil, fmt.Errorf("create console log: %w", err)
		}
		defer f.Close()
		logw = f
	}
	start := time.Now()
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("start %s: %w", vm.QEMU, err)
	}

	c := collector{run: run, start: start, stream: vm.Stream, prefix: "[" + k.Name + "] "}
	c.read(io.TeeReader(stdout, logw))
	werr := cmd.Wait()
	run.Wall = time.Since(start)
	if ctx.Err() == context.DeadlineExceeded {
		run.TimedOut = true
		run.Errors = append(run.Errors, fmt.Sprintf("VM timed out after %v and was killed", vm.Timeout))
	} else if werr != nil {
		run.Errors = append(run.Errors, fmt.Sprintf("qemu: %v: %s", werr, strings.TrimSpace(stderr.String())))
	}
	if !run.Done && !run.TimedOut {
		switch {
		case run.Release == "":
			run.Errors = append(run.Errors, "kernel did not boot to /init")
		default:
			run.Errors = append(run.Errors, "VM stopped before /init reported done (init crashed or the kernel panicked)")
		}
	}
	return run, nil
}

// read feeds every console line of r to the collector until EOF.
func (c *collector) read(r io.Reader) {
	br := bufio.NewReaderSize(r, 256<<10)
	for {
		line, err := br.ReadString('\n')
		if line != "" {
			c.line(strings.TrimRight(line, "\r\n"))
		}
		if err != nil {
			c.finish()
			return
		}
	}
}

// collector turns console lines into a KernelRun.
type collector struct {
	run    *KernelRun
	start  time.Time
	stream io.Writer
	prefix string
	cur    *BinaryRun
	parser *gotest.Parser
}

func (c *collector) show(s string) {
	if c.stream != nil {
		fmt.Fprintf(c.stream, "%s%s\n", c.prefix, s)
	}
}

// oops matches the kernel messages that mean the kernel itself went wrong
// while the tests ran (quiet keeps only warnings and worse on the console).
var oops = regexp.MustCompile(`\] (BUG:|WARNING:|Oops|Kernel panic|general protection fault|kernel BUG|INFO: task .* blocked|watchdog: BUG)`)

// escapes matches terminal control sequences (the firmware clears the
// screen) so that logs and streams stay readable.
var escapes = regexp.MustCompile(`\x1b(\[[0-9;?]*[ -/]*[@-~]|.)`)

// printable drops escape sequences and control characters but tabs.
func printable(s string) string {
	s = escapes.ReplaceAllString(s, "")
	return strings.Map(func(r rune) rune {
		if r < ' ' && r != '\t' || r == 0x7f {
			return -1
		}
		return r
	}, s)
}

func (c *collector) line(s string) {
	e, err := guest.Parse(s)
	if err != nil {
		// Kernel messages, or a report the console broke up.
		s = printable(s)
		if c.run.Release != "" && oops.MatchString(s) {
			c.run.Oops = append(c.run.Oops, s)
		}
		if strings.TrimSpace(s) != "" {
			c.run.Console = append(c.run.Console, s)
			if len(c.run.Console) > consoleTail {
				c.run.Console = c.run.Console[1:]
			}
		}
		c.show(s)
		return
	}
	switch e.Kind {
	case guest.KindBoot:
		c.run.Release, c.run.Uptime, c.run.Boot = e.Release, e.Uptime, time.Since(c.start)
		c.show(fmt.Sprintf("booted %s in %.1fs (guest uptime %.1fs)", e.Release, c.run.Boot.Seconds(), e.Uptime.Seconds()))
	case guest.KindStart:
		c.finish()
		c.cur, c.parser = &BinaryRun{Name: e.Binary}, &gotest.Parser{}
		c.run.Binaries = append(c.run.Binaries, c.cur)
		c.show("run " + e.Binary)
	case guest.KindOut:
		if c.cur != nil && c.cur.Name == e.Binary {
			c.parser.Line(e.Text)
		}
		if t := printable(e.Text); strings.TrimSpace(t) != "=== NAME" {
			c.show(t)
		}
	case guest.KindExit:
		if c.cur != nil && c.cur.Name == e.Binary {
			c.cur.Exited, c.cur.Code, c.cur.Reason, c.cur.Elapsed = true, e.Code, e.Reason, e.Elapsed
		}
		c.show(fmt.Sprintf("%s exited %d in %.1fs %s", e.Binary, e.Code, e.Elapsed.Seconds(), e.Reason))
		c.finish()
	case guest.KindError:
		c.run.Errors = append(c.run.Errors, "init: "+e.Text)
		c.show("init error: " + e.Text)
	case guest.KindDone:
		c.finish()
		c.run.Done = true
	}
}

func (c *collector) finish() {
	if c.cur != nil {
		c.cur.Result = c.parser.Result()
		c.cur, c.parser = nil, nil
	}
}
