package undofs

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/semundo/semundo/internal/holder"
	"github.com/semundo/semundo/internal/testenv"
	"github.com/semundo/semundo/sysvsem"
	"golang.org/x/sys/unix"
)

// The security tests run real writers (this test binary as the helpers
// below) under real credentials: users, user and PID namespaces, set-user-ID
// and file-capability programs, descriptors passed between processes. Each
// compares what the file system let the writer do with what the kernel lets
// the same credentials do directly: PTRACE_SEIZE of the target.

// judgeReport is what the secjudge helper prints: the kernel's answer to a
// direct PTRACE_SEIZE with the opener's credentials, and what the open,
// the write and a read back of the file did ("ok" or the errno's name).
type judgeReport struct {
	Target      int
	Attach      string // PTRACE_SEIZE before the open
	AttachAfter string `json:",omitempty"` // the same after a change of credentials
	Open        string
	Write       string
	Read        string // an open for reading, after the write
	After       string `json:",omitempty"` // the file read back (child targets)
}

func errName(err error) string {
	if err == nil {
		return "ok"
	}
	var en syscall.Errno
	if errors.As(err, &en) {
		return unix.ErrnoName(en)
	}
	return err.Error()
}

// attach asks the kernel directly whether this process may ptrace pid:
// PTRACE_SEIZE, then (when it worked) interrupt, wait and detach, so that
// the target is left as it was and free for later tracers.
func attach(pid int) string {
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	if err := unix.PtraceSeize(pid); err != nil {
		return errName(err)
	}
	if err := unix.PtraceInterrupt(pid); err != nil {
		return "interrupt: " + errName(err)
	}
	var ws unix.WaitStatus
	if _, err := unix.Wait4(pid, &ws, unix.WALL, nil); err != nil {
		return "wait: " + errName(err)
	}
	if err := unix.PtraceDetach(pid); err != nil {
		return "detach: " + errName(err)
	}
	return "ok"
}

// secJudgeMain is the writer: secjudge MODE TARGET FILE LINE, where TARGET
// is a pid or "child:SEMID" (start a sechold child on that set and write
// into it), FILE has %d for the pid. Modes:
//
//	write  attach, open for writing, write LINE and a newline, close
//	pass   open, write LINE without a newline, send the descriptor over
//	       fd 3 (a unix socket), report, and keep it open until stdin ends
//	drop   (run as root) open, drop to uid and gid 65534, write LINE\n
func secJudgeMain(args []string) int {
	if len(args) != 4 {
		fmt.Fprintln(os.Stderr, "secjudge: want MODE TARGET FILE LINE")
		return 2
	}
	mode, target, file, line := args[0], args[1], args[2], args[3]
	var rep judgeReport
	if set, ok := strings.CutPrefix(target, "child:"); ok {
		exe, _ := os.Executable()
		cmd := exec.Command(exe, set)
		cmd.Env = append(os.Environ(), testenv.HelperEnv+"=sechold")
		cmd.Stderr = os.Stderr
		in, _ := cmd.StdinPipe()
		out, _ := cmd.StdoutPipe()
		if err := cmd.Start(); err != nil {
			fmt.Fprintln(os.Stderr, "secjudge: start child:", err)
			return 2
		}
		defer func() {
			in.Close()
			cmd.Wait()
		}()
		if s, _ := bufio.NewReader(out).ReadString('\n'); s != "ready\n" {
			fmt.Fprintf(os.Stderr, "secjudge: child said %q\n", s)
			return 2
		}
		rep.Target = cmd.Process.Pid
	} else {
		rep.Target, _ = strconv.Atoi(target)
	}
	path := fmt.Sprintf(file, rep.Target)
	rep.Attach = attach(rep.Target)
	f, err := os.OpenFile(path, os.O_WRONLY, 0)
	rep.Open = errName(err)
	if err == nil {
		switch mode {
		case "write":
			_, err = f.Write([]byte(line + "\n"))
			rep.Write = errName(err)
			f.Close()
		case "pass":
			_, err = f.Write([]byte(line))
			rep.Write = errName(err)
			sock := os.NewFile(3, "socket")
			if err := unix.Sendmsg(int(sock.Fd()), []byte("fd"), unix.UnixRights(int(f.Fd())), nil, 0); err != nil {
				rep.Write = "send: " + errName(err)
			}
		case "drop":
			err := syscall.Setgroups(nil)
			if err == nil {
				err = syscall.Setresgid(65534, 65534, 65534)
			}
			if err == nil {
				err = syscall.Setresuid(65534, 65534, 65534)
			}
			if err != nil {
				rep.Write = "drop: " + errName(err)
				break
			}
			rep.AttachAfter = attach(rep.Target)
			_, err = f.Write([]byte(line + "\n"))
			rep.Write = errName(err)
			f.Close()
		}
	}
	if mode != "pass" && mode != "drop" {
		_, err := os.ReadFile(path)
		rep.Read = errName(err)
	}
	if strings.HasPrefix(target, "child:") {
		b, err := os.ReadFile(path)
		rep.After = string(b)
		if err != nil {
			rep.After = "read: " + errName(err)
		}
	}
	j, _ := json.Marshal(rep)
	fmt.Printf("%s\n", j)
	if mode == "pass" {
		io.Copy(io.Discard, os.Stdin)
	}
	return 0
}

// secHoldMain holds an adjustment: sechold SEMID takes -1 on semaphore 0
// (unless SEC_HELD is set: the list survived an execve), says "ready", and
// then reads commands: "exec PATH" executes PATH as sechold again (a
// set-user-ID copy of this binary: the process becomes root's); stdin's end
// ends it.
func secHoldMain(args []string) int {
	if len(args) != 1 {
		fmt.Fprintln(os.Stderr, "sechold: want SEMID")
		return 2
	}
	semid, _ := strconv.Atoi(args[0])
	if os.Getenv("SEC_HELD") == "" {
		if err := sysvsem.Op(semid, []sysvsem.Sembuf{{Num: 0, Op: 1, Flg: sysvsem.Undo | sysvsem.NoWait}}); err != nil {
			fmt.Fprintln(os.Stderr, "sechold:", err)
			return 2
		}
	}
	fmt.Println("ready")
	sc := bufio.NewScanner(os.Stdin)
	for sc.Scan() {
		if p, ok := strings.CutPrefix(sc.Text(), "exec "); ok {
			env := append(os.Environ(), "SEC_HELD=1", testenv.HelperEnv+"=sechold")
			err := syscall.Exec(p, []string{p, args[0]}, env)
			fmt.Fprintln(os.Stderr, "sechold: exec:", err)
			return 2
		}
	}
	return 0
}

// secEnv is what the security tests share: a mount whose writes go
// through the real semundo helper, and a copy of this test binary that
// every user may run.
type secEnv struct {
	f   *FS
	bin string // the test binary, world-executable
	dir string // where it lives (no nosuid: set-id copies go here too)
}

func newSecEnv(t *testing.T) *secEnv {
	t.Helper()
	bin := realSemundo(t)
	f := mountT(t, &Options{AllowOther: true, Injector: &ExecInjector{Path: bin}})
	dir := t.TempDir()
	os.Chmod(filepath.Dir(dir), 0o755)
	os.Chmod(dir, 0o755)
	self, err := os.ReadFile(os.Args[0])
	if err != nil {
		t.Fatal(err)
	}
	exe := filepath.Join(dir, "undofs.test")
	if err := os.WriteFile(exe, self, 0o755); err != nil {
		t.Fatal(err)
	}
	return &secEnv{f: f, bin: exe, dir: dir}
}

// copyBin makes a copy of the test binary named name, owned by root, with
// mode (04755 for set-user-ID), for set-id and file-capability programs.
func (e *secEnv) copyBin(t *testing.T, name string, mode uint32) string {
	t.Helper()
	p := filepath.Join(e.dir, name)
	b, err := os.ReadFile(e.bin)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(p, b, 0o755); err != nil {
		t.Fatal(err)
	}
	// WriteFile's mode passes through the umask, and os.FileMode spells
	// set-id bits its own way.
	if err := syscall.Chmod(p, mode); err != nil {
		t.Fatal(err)
	}
	return p
}

func (e *secEnv) file() string { return filepath.Join(e.f.Dir(), "%d", FileName) }

// judge runs the secjudge helper through prefix (a command that sets up
// the credentials, then runs what follows it; env(1) then selects the
// helper, whatever the prefix does to the environment) and returns its
// report. Without a prefix it runs bin itself (the kernel-matrix VM has no
// env(1)).
func (e *secEnv) judge(t *testing.T, cred *syscall.Credential, prefix []string, bin, mode, target, line string) judgeReport {
	t.Helper()
	args := []string{bin, mode, target, e.file(), line}
	if len(prefix) > 0 {
		args = append(append(append([]string{}, prefix...), "env", testenv.HelperEnv+"=secjudge"), args...)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, args[0], args[1:]...)
	if len(prefix) == 0 {
		cmd.Env = append(os.Environ(), testenv.HelperEnv+"=secjudge")
	}
	cmd.SysProcAttr = &syscall.SysProcAttr{Credential: cred}
	cmd.Dir = "/"
	var errb strings.Builder
	cmd.Stderr = &errb
	out, err := cmd.Output()
	if ctx.Err() != nil {
		t.Fatalf("%q: still running after 2 minutes, killed; stderr %q", args, errb.String())
	}
	var rep judgeReport
	if jerr := json.Unmarshal(out, &rep); jerr != nil {
		t.Fatalf("%q: %v, stdout %q, stderr %q", args, err, out, errb.String())
	}
	t.Logf("%s: %+v", strings.Join(prefix, " "), rep)
	return rep
}

// rootTarget starts a root process holding -1 on a root-owned set of mode
// 0600, and returns it with the set.
func rootTarget(t *testing.T) (*holder.Helper, int) {
	t.Helper()
	a := holder.NewSet(t, 1)
	return holder.Start(t, "wait", []holder.Op{{Semid: a, Num: 0, Val: 1, Undo: true}}, nil), a
}

// openSet creates a set of one semaphore that every user may alter.
func openSet(t *testing.T) int {
	t.Helper()
	a := holder.NewSet(t, 1)
	if err := sysvsem.SetPerm(a, 0, 0, 0o666); err != nil {
		t.Fatal(err)
	}
	return a
}

// refused checks that a write was refused at open with EACCES, as the
// kernel refuses the same credentials a PTRACE_SEIZE, and that the list is
// unchanged.
func refused(t *testing.T, e *secEnv, rep judgeReport, pid int, before string) {
	t.Helper()
	if rep.Attach == "ok" {
		t.Errorf("the kernel lets these credentials attach pid %d: the case does not test a refusal", pid)
	}
	if rep.Open != "EACCES" {
		t.Errorf("open for writing: %s, want EACCES (the kernel refuses PTRACE_SEIZE: %s)", rep.Open, rep.Attach)
	}
	// Reading needs less (PTRACE_MODE_READ), but none of the refused
	// cases has it: no capability over the target's namespace, another
	// user, or a target outside the PID namespace.
	if rep.Read != "EACCES" {
		t.Errorf("open for reading: %s, want EACCES", rep.Read)
	}
	if after := listText(t, e.f, pid); after != before {
		t.Errorf("pid %d's list changed: %q -> %q", pid, before, after)
	}
}

func requireUserNS(t *testing.T) {
	t.Helper()
	testenv.RequireTool(t, "unshare")
	testenv.RequireTool(t, "runuser")
	if _, err := os.Stat("/proc/self/ns/user"); err != nil {
		testenv.Missing(t, "user namespaces", "a kernel with CONFIG_USER_NS")
	}
}

// Root of a user namespace of its own holds every capability there, and
// none over the initial namespace's processes: a write into root's process
// is refused at open, as PTRACE_SEIZE is, in every form of unshare.
func TestSecurityUserNamespaceRoot(t *testing.T) {
	requireUserNS(t)
	e := newSecEnv(t)
	h, a := rootTarget(t)
	before := listText(t, e.f, h.PID)
	for _, prefix := range [][]string{
		{"runuser", "-u", "nobody", "--", "unshare", "-r"},
		{"runuser", "-u", "nobody", "--", "unshare", "-Ur", "--keep-caps"},
		// Unmapped ids, every capability of the namespace as ambient ones.
		{"runuser", "-u", "nobody", "--", "unshare", "-U", "--keep-caps"},
	} {
		t.Run(strings.Join(prefix[4:], " "), func(t *testing.T) {
			rep := e.judge(t, nil, prefix, e.bin, "write", strconv.Itoa(h.PID), fmt.Sprintf("%d 7", a))
			refused(t, e, rep, h.PID, before)
		})
	}
}

// A process in a PID namespace cannot name a process outside it: the write
// is refused at open (EACCES), for root too, which could ptrace the
// target by its credentials if it could name it.
func TestSecurityPIDNamespace(t *testing.T) {
	requireUserNS(t)
	e := newSecEnv(t)
	h, a := rootTarget(t)
	before := listText(t, e.f, h.PID)
	for _, prefix := range [][]string{
		{"runuser", "-u", "nobody", "--", "unshare", "-r", "-p", "-f"},
		{"unshare", "-p", "-f"},
	} {
		t.Run(strings.Join(prefix, " "), func(t *testing.T) {
			rep := e.judge(t, nil, prefix, e.bin, "write", strconv.Itoa(h.PID), fmt.Sprintf("%d 7", a))
			// In the new namespace the target's number names nothing (or
			// another process of the namespace, which the file system
			// never writes).
			refused(t, e, rep, h.PID, before)
		})
	}
}

// Root of a user namespace writes a process of that namespace, which it may
// ptrace: the write succeeds, and reading the file back shows it.
func TestSecurityUserNamespaceOwnProcess(t *testing.T) {
	requireUserNS(t)
	e := newSecEnv(t)
	a := openSet(t)
	rep := e.judge(t, nil, []string{"runuser", "-u", "nobody", "--", "unshare", "-r"}, e.bin, "write", fmt.Sprintf("child:%d", a), fmt.Sprintf("%d 5", a))
	if rep.Attach != "ok" {
		t.Fatalf("the kernel refuses the namespace's root its own child: %s", rep.Attach)
	}
	if rep.Open != "ok" || rep.Write != "ok" || rep.After != fmt.Sprintf("%d 5\n", a) {
		t.Errorf("open %s, write %s, file then %q; want ok, ok, %q", rep.Open, rep.Write, rep.After, fmt.Sprintf("%d 5\n", a))
	}
}

// A set-user-ID-root program and a program with file capabilities write as
// what they are: the kernel's verdict on PTRACE_SEIZE decides each way.
func TestSecurityPrivilegedPrograms(t *testing.T) {
	e := newSecEnv(t)
	setcap := testenv.RequireTool(t, "setcap")
	h, a := rootTarget(t)
	suid := e.copyBin(t, "suid.test", 0o4755)
	ptraceCap := e.copyBin(t, "capptrace.test", 0o755)
	otherCap := e.copyBin(t, "capkill.test", 0o755)
	for p, c := range map[string]string{ptraceCap: "cap_sys_ptrace+ep", otherCap: "cap_kill,cap_dac_override+ep"} {
		if out, err := exec.Command(setcap, c, p).CombinedOutput(); err != nil {
			t.Fatalf("setcap %s %s: %v, %s", c, p, err, out)
		}
	}
	for _, tt := range []struct {
		name, bin string
		allowed   bool
	}{
		{"set-user-ID root", suid, true},
		{"cap_sys_ptrace", ptraceCap, true},
		{"cap_kill and cap_dac_override", otherCap, false},
		{"plain", e.bin, false},
	} {
		t.Run(tt.name, func(t *testing.T) {
			before := listText(t, e.f, h.PID)
			line := fmt.Sprintf("%d %d", a, len(tt.name))
			rep := e.judge(t, nobody, nil, tt.bin, "write", strconv.Itoa(h.PID), line)
			if (rep.Attach == "ok") != tt.allowed {
				t.Fatalf("the kernel's PTRACE_SEIZE says %s; this case expects allowed=%v", rep.Attach, tt.allowed)
			}
			if !tt.allowed {
				refused(t, e, rep, h.PID, before)
				return
			}
			if rep.Open != "ok" || rep.Write != "ok" || rep.Read != "ok" {
				t.Errorf("open %s, write %s, read %s; want all ok, as PTRACE_SEIZE is", rep.Open, rep.Write, rep.Read)
			}
			if after := listText(t, e.f, h.PID); after != line+"\n" {
				t.Errorf("list %q, want %q", after, line+"\n")
			}
		})
	}
}

// socketpair returns a connected pair of unix sockets, closed at cleanup.
func socketpair(t *testing.T) (*os.File, *os.File) {
	t.Helper()
	fds, err := unix.Socketpair(unix.AF_UNIX, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	a, b := os.NewFile(uintptr(fds[0]), "sock0"), os.NewFile(uintptr(fds[1]), "sock1")
	t.Cleanup(func() {
		a.Close()
		b.Close()
	})
	return a, b
}

// recvFD receives one descriptor sent with SCM_RIGHTS.
func recvFD(t *testing.T, sock *os.File) *os.File {
	t.Helper()
	buf, oob := make([]byte, 8), make([]byte, unix.CmsgSpace(4))
	_, oobn, _, _, err := unix.Recvmsg(int(sock.Fd()), buf, oob, unix.MSG_CMSG_CLOEXEC)
	if err != nil {
		t.Fatal(err)
	}
	msgs, err := unix.ParseSocketControlMessage(oob[:oobn])
	if err != nil || len(msgs) != 1 {
		t.Fatalf("control messages %v: %v", msgs, err)
	}
	fds, err := unix.ParseUnixRights(&msgs[0])
	if err != nil || len(fds) != 1 {
		t.Fatalf("rights %v: %v", fds, err)
	}
	f := os.NewFile(uintptr(fds[0]), "passed")
	t.Cleanup(func() { f.Close() })
	return f
}

// A user's descriptor passed to root: the bytes the user left without a
// newline are applied with the user's credentials when root ends the line.
// The target is the user's own process when the user opens the file, and
// becomes root's (it executes a set-user-ID-root program) before root
// writes: root could ptrace it, the user no longer can, and the write is
// refused. Passing a descriptor of root's process is impossible: the user
// cannot open one.
func TestSecurityPassedDescriptorUserToRoot(t *testing.T) {
	e := newSecEnv(t)
	a := openSet(t)
	suid := e.copyBin(t, "suid.test", 0o4755)
	// The target: nobody's process holding -1, which can become root's.
	tcmd := exec.Command(e.bin, strconv.Itoa(a))
	tcmd.Env = append(os.Environ(), testenv.HelperEnv+"=sechold")
	tcmd.SysProcAttr = &syscall.SysProcAttr{Credential: nobody}
	tcmd.Stderr = os.Stderr
	tin, err := tcmd.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	tout, err := tcmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := tcmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		tin.Close()
		tcmd.Process.Kill()
		tcmd.Wait()
	})
	tr := bufio.NewReader(tout)
	if s, _ := tr.ReadString('\n'); s != "ready\n" {
		t.Fatalf("target said %q", s)
	}
	target := tcmd.Process.Pid

	// The user opens the target's file and writes without a newline.
	mine, theirs := socketpair(t)
	ucmd := exec.Command(e.bin, "pass", strconv.Itoa(target), e.file(), fmt.Sprintf("%d 5", a))
	ucmd.Env = append(os.Environ(), testenv.HelperEnv+"=secjudge")
	ucmd.SysProcAttr = &syscall.SysProcAttr{Credential: nobody}
	ucmd.ExtraFiles = []*os.File{theirs}
	ucmd.Stderr = os.Stderr
	uin, err := ucmd.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	uout, err := ucmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := ucmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		uin.Close()
		ucmd.Process.Kill()
		ucmd.Wait()
	})
	var rep judgeReport
	line, _ := bufio.NewReader(uout).ReadString('\n')
	if err := json.Unmarshal([]byte(line), &rep); err != nil || rep.Attach != "ok" || rep.Open != "ok" || rep.Write != "ok" {
		t.Fatalf("the user's open and partial write of its own process's file: %q (%v)", line, err)
	}

	// The target becomes root's.
	fmt.Fprintf(tin, "exec %s\n", suid)
	if s, _ := tr.ReadString('\n'); s != "ready\n" {
		t.Fatalf("target after exec said %q", s)
	}
	before := listText(t, e.f, target)
	if st, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", target)); err != nil || !strings.Contains(string(st), "Uid:\t65534\t0\t0\t0") {
		t.Fatalf("target not set-user-ID root after exec: %v", err)
	}
	// The kernel's verdict for the user's credentials now.
	jrep := e.judge(t, nobody, nil, e.bin, "write", strconv.Itoa(target), fmt.Sprintf("%d 6", a))
	if jrep.Attach == "ok" {
		t.Fatalf("the kernel still lets the user attach the set-user-ID target")
	}
	// Received only now: every close of a copy of the descriptor (a child
	// of this process executing another program) would apply the line.
	passed := recvFD(t, mine)
	_, err = passed.Write([]byte("\n"))
	if !errors.Is(err, syscall.EACCES) {
		t.Errorf("root ending the user's line: %v, want EACCES (the opener may not ptrace the target any more)", err)
	}
	if after := listText(t, e.f, target); after != before {
		t.Errorf("the target's list changed: %q -> %q", before, after)
	}
	// Root's own open of the same file writes it: root may.
	if errs, code := echo(t, nil, e.f, target, fmt.Sprintf("%d 9", a)); code != 0 {
		t.Errorf("root's own write: exit %d, %s", code, errs)
	}
	if after := listText(t, e.f, target); after != fmt.Sprintf("%d 9\n", a) {
		t.Errorf("after root's own write: %q", after)
	}
}

// Root's descriptor passed to a user: the user's write is applied with
// root's credentials, the opener's, as /proc/<pid>/mem does. Whoever holds
// a descriptor opened for writing holds the opener's right to write.
func TestSecurityPassedDescriptorRootToUser(t *testing.T) {
	e := newSecEnv(t)
	h, a := rootTarget(t)
	f, err := os.OpenFile(path(e.f, h.PID), os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	mine, theirs := socketpair(t)
	if err := unix.Sendmsg(int(mine.Fd()), []byte("fd"), unix.UnixRights(int(f.Fd())), nil, 0); err != nil {
		t.Fatal(err)
	}
	f.Close()
	// The user receives it and writes a line; it cannot attach the target
	// itself.
	ucmd := exec.Command(e.bin)
	ucmd.Env = append(os.Environ(), testenv.HelperEnv+"=secrecv", "SEC_LINE="+fmt.Sprintf("%d 4", a), fmt.Sprintf("SEC_TARGET=%d", h.PID))
	ucmd.SysProcAttr = &syscall.SysProcAttr{Credential: nobody}
	ucmd.ExtraFiles = []*os.File{theirs}
	out, err := ucmd.CombinedOutput()
	if err != nil {
		t.Fatalf("receiver: %v, %s", err, out)
	}
	var rep judgeReport
	if err := json.Unmarshal(out, &rep); err != nil {
		t.Fatalf("receiver said %q", out)
	}
	if rep.Attach == "ok" {
		t.Fatalf("the kernel lets nobody attach root's process")
	}
	if rep.Write != "ok" {
		t.Errorf("the user's write through root's descriptor: %s, want ok (the opener may ptrace the target)", rep.Write)
	}
	if after := listText(t, e.f, h.PID); after != fmt.Sprintf("%d 4\n", a) {
		t.Errorf("list %q, want %q", after, fmt.Sprintf("%d 4\n", a))
	}
}

// secRecvMain receives a descriptor on fd 3, checks whether it may attach
// SEC_TARGET itself, and writes SEC_LINE and a newline through the
// descriptor.
func secRecvMain(args []string) int {
	sock := os.NewFile(3, "socket")
	buf, oob := make([]byte, 8), make([]byte, unix.CmsgSpace(4))
	_, oobn, _, _, err := unix.Recvmsg(int(sock.Fd()), buf, oob, 0)
	if err != nil {
		fmt.Fprintln(os.Stderr, "secrecv:", err)
		return 2
	}
	msgs, err := unix.ParseSocketControlMessage(oob[:oobn])
	if err != nil || len(msgs) != 1 {
		fmt.Fprintln(os.Stderr, "secrecv: no descriptor")
		return 2
	}
	fds, err := unix.ParseUnixRights(&msgs[0])
	if err != nil || len(fds) != 1 {
		fmt.Fprintln(os.Stderr, "secrecv: no descriptor")
		return 2
	}
	var rep judgeReport
	rep.Target, _ = strconv.Atoi(os.Getenv("SEC_TARGET"))
	rep.Attach = attach(rep.Target)
	rep.Open = "received"
	_, err = unix.Write(fds[0], []byte(os.Getenv("SEC_LINE")+"\n"))
	rep.Write = errName(err)
	unix.Close(fds[0])
	j, _ := json.Marshal(rep)
	fmt.Printf("%s\n", j)
	return 0
}

// A writer that changes its credentials after the open writes with those
// it opened with: root opens, drops to nobody (who may not attach the
// target), and its write still succeeds.
func TestSecurityCredentialChange(t *testing.T) {
	e := newSecEnv(t)
	h, a := rootTarget(t)
	rep := e.judge(t, nil, nil, e.bin, "drop", strconv.Itoa(h.PID), fmt.Sprintf("%d 3", a))
	if rep.Attach != "ok" || rep.AttachAfter == "ok" {
		t.Fatalf("the kernel's verdicts: %s as root, %s after the drop; want ok, then a refusal", rep.Attach, rep.AttachAfter)
	}
	if rep.Open != "ok" || rep.Write != "ok" {
		t.Errorf("open %s, write %s; want ok, ok (the opener was root)", rep.Open, rep.Write)
	}
	if after := listText(t, e.f, h.PID); after != fmt.Sprintf("%d 3\n", a) {
		t.Errorf("list %q, want %q", after, fmt.Sprintf("%d 3\n", a))
	}
}
