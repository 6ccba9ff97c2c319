// Command init is PID 1 of the kernel-matrix VM. It mounts the file systems
// semundo's tests need, runs the test binaries that the host listed in
// guest.ConfigPath one after the other, reports every output line to the
// host over the serial console in guest's framing, and powers the VM off,
// also when a binary hangs (it kills it after the configured timeout) or
// when /init itself fails.
//
// It must be built statically (CGO_ENABLED=0): the initramfs holds no
// libraries.
package main

import (
	"bufio"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"golang.org/x/sys/unix"

	"github.com/semundo/semundo/kmatrix/guest"
)

// killGrace is how long a binary gets between SIGQUIT (a Go binary prints
// every goroutine's stack) and SIGKILL.
const killGrace = 10 * time.Second

// drainWait bounds the wait for a binary's output once every process is
// killed, and the reaping of those processes.
const drainWait = 5 * time.Second

// reporter writes framed lines to the console, one whole line per write so
// that lines from concurrent writers never mix.
type reporter struct {
	mu sync.Mutex
	w  io.Writer
}

func (r *reporter) send(e guest.Event) {
	r.mu.Lock()
	defer r.mu.Unlock()
	_, _ = io.WriteString(r.w, guest.Format(e)+"\n")
}

func (r *reporter) errorf(format string, args ...any) {
	r.send(guest.Event{Kind: guest.KindError, Text: fmt.Sprintf(format, args...)})
}

type mount struct {
	source, target, fstype string
	flags                  uintptr
	data                   string
	required               bool
}

// /tmp allows set-user-ID programs, as a root file system's /tmp does:
// undofs's security tests run set-user-ID copies of their binary from
// t.TempDir().
var mounts = []mount{
	{"devtmpfs", "/dev", "devtmpfs", unix.MS_NOSUID, "mode=0755", true},
	{"proc", "/proc", "proc", unix.MS_NOSUID | unix.MS_NODEV | unix.MS_NOEXEC, "", true},
	{"sysfs", "/sys", "sysfs", unix.MS_NOSUID | unix.MS_NODEV | unix.MS_NOEXEC, "", true},
	{"devpts", "/dev/pts", "devpts", unix.MS_NOSUID | unix.MS_NOEXEC, "ptmxmode=0666,mode=0620", false},
	{"tmpfs", "/dev/shm", "tmpfs", unix.MS_NOSUID | unix.MS_NODEV, "mode=1777", false},
	{"tmpfs", "/tmp", "tmpfs", unix.MS_NODEV, "mode=1777", true},
	{"tmpfs", "/run", "tmpfs", unix.MS_NOSUID | unix.MS_NODEV, "mode=0755", true},
	{"bpf", "/sys/fs/bpf", "bpf", unix.MS_NOSUID | unix.MS_NODEV | unix.MS_NOEXEC, "mode=0700", true},
	{"cgroup2", "/sys/fs/cgroup", "cgroup2", unix.MS_NOSUID | unix.MS_NODEV | unix.MS_NOEXEC, "", true},
	{"debugfs", "/sys/kernel/debug", "debugfs", unix.MS_NOSUID | unix.MS_NODEV | unix.MS_NOEXEC, "", false},
	{"tracefs", "/sys/kernel/tracing", "tracefs", unix.MS_NOSUID | unix.MS_NODEV | unix.MS_NOEXEC, "", false},
}

// mountAll returns the failures of required mounts; optional ones (for
// features a kernel may lack) are silently left out.
func mountAll() []error {
	var errs []error
	for _, m := range mounts {
		err := os.MkdirAll(m.target, 0o755)
		if err == nil {
			err = unix.Mount(m.source, m.target, m.fstype, m.flags, m.data)
		}
		if err != nil && m.required {
			errs = append(errs, fmt.Errorf("mount %s on %s: %w", m.fstype, m.target, err))
		}
	}
	return errs
}

func main() {
	// The kernel opened /dev/console (packed into the initramfs) as fds 0-2;
	// reopen it after devtmpfs in case the node was missing.
	errs := mountAll()
	out := io.Writer(os.Stdout)
	if _, err := os.Stdout.Stat(); err != nil {
		if f, err := os.OpenFile("/dev/console", os.O_WRONLY|unix.O_NOCTTY, 0); err == nil {
			out = f
		}
	}
	rep := &reporter{w: out}
	defer poweroff(rep)
	defer func() {
		if r := recover(); r != nil {
			rep.errorf("init panicked: %v", r)
		}
	}()

	var uts unix.Utsname
	_ = unix.Uname(&uts)
	rep.send(guest.Event{Kind: guest.KindBoot, Release: unix.ByteSliceToString(uts.Release[:]), Uptime: uptime()})
	for _, err := range errs {
		rep.errorf("%v", err)
	}

	cfg, err := readConfig()
	if err != nil {
		rep.errorf("%v", err)
		return
	}
	env := append([]string{
		"PATH=/kmatrix/bin:/usr/sbin:/usr/bin:/sbin:/bin",
		"HOME=/root",
		"TMPDIR=/tmp",
		"SEMUNDO_VM=1",
	}, cfg.Env...)
	_ = os.MkdirAll("/root", 0o700)
	for _, m := range cfg.Modules[unix.ByteSliceToString(uts.Release[:])] {
		if err := loadModule(m); err != nil {
			rep.errorf("%v", err)
		}
	}
	for _, b := range cfg.Binaries {
		runBinary(rep, b, env, cfg.Timeout)
	}
	rep.send(guest.Event{Kind: guest.KindDone})
}

// loadModule inserts a kernel module file (there is no modprobe in the
// VM); one already loaded is fine.
func loadModule(path string) error {
	f, err := os.Open(path)
	if err != nil {
		return fmt.Errorf("load module: %w", err)
	}
	defer f.Close()
	if err := unix.FinitModule(int(f.Fd()), "", 0); err != nil && !errors.Is(err, unix.EEXIST) {
		return fmt.Errorf("load module %s: finit_module: %w", path, err)
	}
	return nil
}

func uptime() time.Duration {
	b, err := os.ReadFile("/proc/uptime")
	if err != nil {
		return 0
	}
	var s float64
	if _, err := fmt.Sscanf(string(b), "%f", &s); err != nil {
		return 0
	}
	return time.Duration(s * float64(time.Second))
}

func readConfig() (guest.Config, error) {
	var cfg guest.Config
	b, err := os.ReadFile(guest.ConfigPath)
	if err != nil {
		return cfg, fmt.Errorf("read config: %w (the host packs it into the initramfs)", err)
	}
	if err := json.Unmarshal(b, &cfg); err != nil {
		return cfg, fmt.Errorf("decode config %s: %w", guest.ConfigPath, err)
	}
	if cfg.Timeout <= 0 {
		cfg.Timeout = 10 * time.Minute
	}
	return cfg, nil
}

// runBinary runs one test binary in its own process group, forwards its
// output line by line, and kills the group when the timeout passes or the
// binary ends, so helpers it re-executed cannot outlive it.
func runBinary(rep *reporter, b guest.Binary, env []string, timeout time.Duration) {
	rep.send(guest.Event{Kind: guest.KindStart, Binary: b.Name})
	start := time.Now()
	exit := guest.Event{Kind: guest.KindExit, Binary: b.Name, Code: -1}
	defer func() {
		exit.Elapsed = time.Since(start)
		rep.send(exit)
	}()

	pr, pw, err := os.Pipe()
	if err != nil {
		exit.Reason = "pipe: " + err.Error()
		return
	}
	defer pr.Close()
	cmd := exec.Command(b.Path, b.Args...)
	cmd.Dir = b.Dir
	cmd.Env = env
	cmd.Stdout, cmd.Stderr = pw, pw
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	err = cmd.Start()
	pw.Close()
	if err != nil {
		exit.Reason = "start: " + err.Error()
		return
	}
	pgid := cmd.Process.Pid

	drained := make(chan struct{})
	go func() {
		defer close(drained)
		forward(rep, b.Name, pr)
	}()

	var mu sync.Mutex
	timedOut := false
	quit := time.AfterFunc(timeout, func() {
		mu.Lock()
		timedOut = true
		mu.Unlock()
		_ = unix.Kill(-pgid, unix.SIGQUIT)
	})
	kill := time.AfterFunc(timeout+killGrace, func() { _ = unix.Kill(-pgid, unix.SIGKILL) })
	werr := cmd.Wait()
	quit.Stop()
	kill.Stop()
	mu.Lock()
	expired := timedOut
	mu.Unlock()
	// A binary that passed must have ended its helpers too (tests clean up
	// after themselves); after a failure, leftovers are a consequence.
	if left := userProcesses(); len(left) > 0 && werr == nil && !expired {
		rep.errorf("%s left processes running after it exited: %s", b.Name, strings.Join(left, " "))
	}
	// As PID 1, kill(-1) reaches every other process: nothing a binary
	// started survives into the next one, and the output pipe closes.
	_ = unix.Kill(-1, unix.SIGKILL)
	select {
	case <-drained:
	case <-time.After(drainWait):
		rep.errorf("%s: output still open %v after every process was killed", b.Name, drainWait)
	}
	reap()

	exit.Code = cmd.ProcessState.ExitCode()
	var ee *exec.ExitError
	switch {
	case expired:
		exit.Reason = "timeout after " + timeout.String()
	case errors.As(werr, &ee) && exit.Code == -1:
		exit.Reason = ee.Error()
	case werr != nil && ee == nil:
		exit.Reason = werr.Error()
	}
}

// forward reports each line read from r; an overlong line goes out in
// pieces rather than being held back.
func forward(rep *reporter, name string, r io.Reader) {
	br := bufio.NewReaderSize(r, 64<<10)
	for {
		line, err := br.ReadSlice('\n')
		if len(line) > 0 {
			rep.send(guest.Event{Kind: guest.KindOut, Binary: name, Text: strings.TrimSuffix(string(line), "\n")})
		}
		if err != nil && !errors.Is(err, bufio.ErrBufferFull) {
			return
		}
	}
}

// reap collects the processes killed after a binary, which were
// re-parented to PID 1. It runs only between binaries, when no exec.Cmd is
// waiting for its own child, and gives up after a few seconds.
func reap() {
	deadline := time.Now().Add(drainWait)
	for time.Now().Before(deadline) {
		pid, err := unix.Wait4(-1, nil, unix.WNOHANG, nil)
		switch {
		case errors.Is(err, unix.ECHILD):
			return
		case pid <= 0:
			time.Sleep(10 * time.Millisecond)
		}
	}
}

// userProcesses lists "pid(comm)" for every live process but PID 1;
// kernel threads and zombies have an empty cmdline and are left out.
func userProcesses() []string {
	ents, _ := os.ReadDir("/proc")
	var out []string
	for _, e := range ents {
		pid, err := strconv.Atoi(e.Name())
		if err != nil || pid == 1 {
			continue
		}
		if cl, err := os.ReadFile("/proc/" + e.Name() + "/cmdline"); err != nil || len(cl) == 0 {
			continue
		}
		comm, _ := os.ReadFile("/proc/" + e.Name() + "/comm")
		out = append(out, fmt.Sprintf("%d(%s)", pid, strings.TrimSpace(string(comm))))
	}
	return out
}

// poweroff ends the VM; with qemu's -no-reboot even the kernel panic that
// follows a failed power-off (PID 1 exiting) stops it.
func poweroff(rep *reporter) {
	unix.Sync()
	err := unix.Reboot(unix.LINUX_REBOOT_CMD_POWER_OFF)
	rep.errorf("power off: %v", err)
	os.Exit(1)
}
