package undofs

import (
	"errors"
	"fmt"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/semundo/semundo/internal/holder"
	"github.com/semundo/semundo/internal/testenv"
	"github.com/semundo/semundo/sysvsem"
	"github.com/semundo/semundo/undo"
)

// echo writes line to pid's file with a shell's echo builtin (bash, which
// names the errno; dash says "I/O error" for every write error). The
// kernel-matrix VM has no shell: there this test binary's echo helper
// (echoMain) makes the same system calls.
func echo(t *testing.T, cred *syscall.Credential, f *FS, pid int, line string) (string, int) {
	t.Helper()
	if testenv.InVM() {
		exe, err := os.Executable()
		if err != nil {
			t.Fatal(err)
		}
		_, errs, code := runEnv(t, cred, []string{testenv.HelperEnv + "=echo"}, "", exe, line, path(f, pid))
		return errs, code
	}
	bash := testenv.RequireTool(t, "bash")
	_, errs, code := run(t, cred, "", bash, "-c", fmt.Sprintf("echo %q > %s", line, path(f, pid)))
	return errs, code
}

// echoMain is `echo LINE > FILE` as bash runs it: open(O_WRONLY|O_CREAT|
// O_TRUNC), one write(2) of the line and its newline, close(2), each
// error reported with its errno as bash words it.
func echoMain(args []string) int {
	if len(args) != 2 {
		fmt.Fprintln(os.Stderr, "usage: echo LINE FILE")
		return 2
	}
	say := func(what string, err error) int {
		var errno syscall.Errno
		if errors.As(err, &errno) {
			// bash prints strerror(3): a capital first letter.
			s := errno.Error()
			err = errors.New(strings.ToUpper(s[:1]) + s[1:])
		}
		fmt.Fprintf(os.Stderr, "echo: %s: %v\n", what, err)
		return 1
	}
	fd, err := syscall.Open(args[1], syscall.O_WRONLY|syscall.O_CREAT|syscall.O_TRUNC|syscall.O_CLOEXEC, 0o666)
	if err != nil {
		return say(args[1], err)
	}
	if _, err := syscall.Write(fd, []byte(args[0]+"\n")); err != nil {
		syscall.Close(fd)
		return say("write error", err)
	}
	if err := syscall.Close(fd); err != nil {
		return say("close", err)
	}
	return 0
}

func TestWriteErrnoMapping(t *testing.T) {
	fake := &fakeInjector{}
	f := mountT(t, &Options{Injector: fake, AllowOther: true})
	h, a, _ := startHolder(t)
	line := fmt.Sprintf("%d 1 2 3 4", a)
	for _, tt := range []struct {
		err  error
		text string
	}{
		{nil, ""},
		{&InjectError{Err: ErrPermission}, "Permission denied"},
		{&InjectError{Err: ErrInvalid}, "Invalid argument"},
		{&InjectError{Err: ErrNoProcess}, "No such process"},
		{&InjectError{Err: ErrTimeout}, "Connection timed out"},
		{errors.New("helper crashed"), "Input/output error"},
	} {
		fake.mu.Lock()
		fake.err, fake.calls = tt.err, nil
		fake.mu.Unlock()
		errs, code := echo(t, nil, f, h.PID, line)
		if (code == 0) != (tt.err == nil) || !strings.Contains(errs, tt.text) {
			t.Errorf("injector error %v: echo exit %d, stderr %q; want %q", tt.err, code, errs, tt.text)
		}
		// dd reports write errors with the errno as well.
		_, errs, code = run(t, nil, line+"\n", "dd", "of="+path(f, h.PID), "bs=3", "status=none")
		if (code == 0) != (tt.err == nil) || !strings.Contains(errs, tt.text) {
			t.Errorf("injector error %v: dd exit %d, stderr %q; want %q", tt.err, code, errs, tt.text)
		}
		if n := len(fake.Calls()); n != 2 {
			t.Errorf("injector error %v: %d calls, want 2", tt.err, n)
		}
	}

	// What the injector is given: the target, its current list, the list
	// written, and the opener's credentials. The target is nobody's, so
	// that the kernel lets nobody open it for writing.
	fake.mu.Lock()
	fake.err, fake.calls = nil, nil
	fake.mu.Unlock()
	if err := sysvsem.SetPerm(a, 0, 0, 0o666); err != nil {
		t.Fatal(err)
	}
	h = holder.Start(t, "wait", []holder.Op{{Semid: a, Num: 1, Val: 1, Undo: true}}, &syscall.SysProcAttr{Credential: nobody})
	bash := testenv.RequireTool(t, "bash")
	cmd := exec.Command(bash, "-c", fmt.Sprintf("read x; echo %q > %s", line, path(f, h.PID)))
	cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: 65534, Gid: 65534, Groups: []uint32{100, 65534}}}
	cmd.Stdin = strings.NewReader("go\n")
	if out, err := testenv.CombinedOutput(t, cmd, "bash writing as nobody"); err != nil {
		t.Fatalf("echo as nobody: %v, %s", err, out)
	}
	calls := fake.Calls()
	if len(calls) != 1 {
		t.Fatalf("%d calls, want 1", len(calls))
	}
	c := calls[0]
	cur, err := undo.Parse([]byte(listText(t, f, h.PID)))
	if err != nil {
		t.Fatal(err)
	}
	want := undo.List{{Semid: int32(a), Adj: []int16{1, 2, 3, 4}}}
	if c.PID != h.PID || !c.Current.Equal(cur) || !c.Want.Equal(want) {
		t.Errorf("Inject(pid %d, current %v, want %v); want pid %d, current %v, want %v", c.PID, c.Current, c.Want, h.PID, cur, want)
	}
	if c.Caller.TGID != cmd.Process.Pid || c.Caller.UID != ids(65534) || c.Caller.GID != ids(65534) ||
		fmt.Sprint(c.Caller.Groups) != "[100 65534]" || c.Caller.CapEff != 0 {
		t.Errorf("caller %+v; want tgid %d, uid and gid 65534, groups [100 65534], no capabilities", c.Caller, cmd.Process.Pid)
	}
}

func TestWriteBuffering(t *testing.T) {
	fake := &fakeInjector{}
	f := mountT(t, &Options{Injector: fake})
	h, a, b := startHolder(t)
	p := path(f, h.PID)
	reset := func(err error) {
		fake.mu.Lock()
		fake.err, fake.calls = err, nil
		fake.mu.Unlock()
	}
	two := undo.List{{Semid: int32(a), Adj: []int16{1, 2, 3, 4}}, {Semid: int32(b), Adj: []int16{-5}}}

	// dd in small blocks: lines arrive in pieces; the write that ends the
	// last line applies both, as one list.
	text := fmt.Sprintf("%d 1 2 3 4\n%d -5\n", a, b)
	if _, errs, code := run(t, nil, text, "dd", "of="+p, piecewise(text), "status=none"); code != 0 {
		t.Fatalf("dd %s: exit %d, %s", piecewise(text), code, errs)
	}
	if calls := fake.Calls(); len(calls) != 1 || !calls[0].Want.Equal(two) {
		t.Errorf("dd %s of two lines: calls %+v, want one with %v", piecewise(text), calls, two)
	}

	// A last line without a newline is applied at close, whose error dd
	// reports.
	reset(&InjectError{Err: ErrPermission})
	_, errs, code := run(t, nil, fmt.Sprintf("%d -5", b), "dd", "of="+p, "bs=3", "status=none")
	if code == 0 || !strings.Contains(errs, "Permission denied") {
		t.Errorf("dd of a line without newline, injector refusing: exit %d, %q; want Permission denied at close", code, errs)
	}
	if calls := fake.Calls(); len(calls) != 1 || !calls[0].Want.Equal(two[1:]) {
		t.Errorf("line without newline: calls %+v, want one with %v", calls, two[1:])
	}

	// The same, applied: close(2) succeeds.
	reset(nil)
	if _, errs, code := run(t, nil, fmt.Sprintf("%d -5", b), "dd", "of="+p, "bs=3", "status=none"); code != 0 {
		t.Errorf("dd of a line without newline: exit %d, %s", code, errs)
	}
	// Appending (O_APPEND writes at the size stat reported) is the same.
	bash := testenv.RequireTool(t, "bash")
	if _, errs, code := run(t, nil, "", bash, "-c", fmt.Sprintf("echo '%d -5' >> %s", b, p)); code != 0 {
		t.Errorf("echo >>: exit %d, %s", code, errs)
	}
	if calls := fake.Calls(); len(calls) != 2 || !calls[0].Want.Equal(two[1:]) || !calls[1].Want.Equal(two[1:]) {
		t.Errorf("line without newline, and echo >>: calls %+v, want two with %v", calls, two[1:])
	}

	// Not the format: EINVAL, and the injector is never called.
	reset(nil)
	for _, bad := range []string{"junk", fmt.Sprintf("%d 1 40000", a), fmt.Sprintf("%d 1\n%d 2", a, a), fmt.Sprintf("%d", a), "", fmt.Sprintf("%d  1", a)} {
		_, errs, code := run(t, nil, bad+"\n", "dd", "of="+p, piecewise(bad+"\n"), "status=none")
		if code == 0 || !strings.Contains(errs, "Invalid argument") {
			t.Errorf("dd of %q: exit %d, %q; want Invalid argument", bad, code, errs)
		}
	}
	if calls := fake.Calls(); len(calls) != 0 {
		t.Errorf("malformed writes reached the injector: %+v", calls)
	}

	// Truncation alone (": > file") writes nothing.
	if _, errs, code := run(t, nil, "", "sh", "-c", ": > "+p); code != 0 {
		t.Errorf(": > file: exit %d, %s", code, errs)
	}
	// Two echo commands into one redirection: two writes, two lists.
	script := fmt.Sprintf("{ echo '%d 1 2 3 4'; echo '%d -5'; } > %s", a, b, p)
	if _, errs, code := run(t, nil, "", bash, "-c", script); code != 0 {
		t.Errorf("two echos: exit %d, %s", code, errs)
	}
	if calls := fake.Calls(); len(calls) != 2 || !calls[0].Want.Equal(two[:1]) || !calls[1].Want.Equal(two[1:]) {
		t.Errorf("two echos: calls %+v", calls)
	}
}

// piecewise returns a dd block-size operand (bs=3 or more) that cuts text
// into pieces none of which ends at a newline but the last: the lines then
// all reach the file system in writes that end mid-line, so the one write
// that ends the text applies them together. A fixed bs=3 would depend on
// how many digits the semids have.
func piecewise(text string) string {
	for bs := 3; ; bs++ {
		ok := true
		for i, c := range text[:len(text)-1] {
			if c == '\n' && (i+1)%bs == 0 {
				ok = false
			}
		}
		if ok {
			return "bs=" + strconv.Itoa(bs)
		}
	}
}

func TestWriteOwnPID(t *testing.T) {
	fake := &fakeInjector{}
	f := mountT(t, &Options{Injector: fake})
	bash := testenv.RequireTool(t, "bash")
	// run fails the test if this hangs.
	_, errs, code := run(t, nil, "", bash, "-c", fmt.Sprintf(`echo "1 1" > %s/$$/%s`, f.Dir(), FileName))
	if code == 0 || !strings.Contains(errs, "Resource deadlock avoided") {
		t.Errorf("writing one's own pid: exit %d, %q; want EDEADLK", code, errs)
	}
	if calls := fake.Calls(); len(calls) != 0 {
		t.Errorf("own-pid write reached the injector: %+v", calls)
	}
}

// Two processes writing each other's files: the second would wait on the
// first, which waits (in the injection) for the second to stop.
func TestWriteCycle(t *testing.T) {
	gate := make(chan struct{})
	fake := &fakeInjector{gate: gate, seen: make(chan int, 2)}
	f := mountT(t, &Options{Injector: fake})
	bash := testenv.RequireTool(t, "bash")
	start := func() (*exec.Cmd, *os.File, *strings.Builder) {
		cmd := exec.Command(bash, "-c", fmt.Sprintf(`read t; echo "1 1" > %s/$t/%s`, f.Dir(), FileName))
		r, w, err := os.Pipe()
		if err != nil {
			t.Fatal(err)
		}
		cmd.Stdin = r
		var errs strings.Builder
		cmd.Stderr = &errs
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		r.Close()
		t.Cleanup(func() {
			w.Close()
			cmd.Process.Kill()
			cmd.Wait()
		})
		return cmd, w, &errs
	}
	a, aw, aerr := start()
	b, bw, berr := start()
	fmt.Fprintf(aw, "%d\n", b.Process.Pid)
	select {
	case tgid := <-fake.seen:
		if tgid != a.Process.Pid {
			t.Fatalf("first injection for pid %d, want %d", tgid, a.Process.Pid)
		}
	case <-time.After(testenv.Patience):
		t.Fatalf("waited %v for bash (pid %d) to write b's file", testenv.Patience, a.Process.Pid)
	}
	// a now waits in the injection into b; b writing a's file is refused.
	fmt.Fprintf(bw, "%d\n", a.Process.Pid)
	if err := testenv.Wait(t, b, "bash writing a's file"); err == nil || !strings.Contains(berr.String(), "Resource deadlock avoided") {
		t.Errorf("b writing a's file while a injects into b: %v, %q; want EDEADLK", err, berr.String())
	}
	close(gate)
	if err := testenv.Wait(t, a, "bash writing b's file"); err != nil {
		t.Errorf("a: %v, %s", err, aerr.String())
	}
}

// With the probe as helper, the kernel's ptrace check decides: nobody
// opening root's process for writing is refused at open (the helper never
// runs), nobody writing its own is allowed (the probe's PTRACE_SEIZE
// succeeds; TestExecInjectorCredentials checks what it runs as).
func TestWriteKernelJudges(t *testing.T) {
	var logs testenv.SyncBuffer
	f := mountT(t, &Options{AllowOther: true, Injector: probeInjector(t, probePtrace+"=1"), Log: testLogger(t, &logs)})
	h, a, _ := startHolder(t)
	// nobody's process needs alter permission on the set.
	if err := sysvsem.SetPerm(a, 0, 0, 0o666); err != nil {
		t.Fatal(err)
	}
	mine := holder.Start(t, "wait", []holder.Op{{Semid: a, Num: 1, Val: 1, Undo: true}}, &syscall.SysProcAttr{Credential: nobody})
	line := fmt.Sprintf("%d 1 2 3 4", a)
	before := listText(t, f, h.PID)

	if errs, code := echo(t, nil, f, h.PID, line); code != 0 {
		t.Errorf("root writing root's process: exit %d, %q", code, errs)
	}
	errs, code := echo(t, nobody, f, h.PID, line)
	if code == 0 || !strings.Contains(errs, "Permission denied") {
		t.Errorf("nobody writing root's process: exit %d, %q; want Permission denied", code, errs)
	}
	if !strings.Contains(logs.String(), fmt.Sprintf("pid %d's file: open for write by pid", h.PID)) {
		t.Errorf("nobody's open for writing was not refused at open; log:\n%s", logs.String())
	}
	if errs, code := echo(t, nobody, f, mine.PID, line); code != 0 {
		t.Errorf("nobody writing nobody's process: exit %d, %q", code, errs)
	}
	if after := listText(t, f, h.PID); after != before {
		t.Errorf("the probe changed the target: %q -> %q", before, after)
	}
}

// realSemundo builds the semundo command and checks that it has the
// __inject helper.
func realSemundo(t *testing.T) string {
	t.Helper()
	bin := testenv.BuildGo(t, "github.com/semundo/semundo/cmd/semundo")
	cmd := exec.Command(bin, "__inject")
	cmd.Stdin = strings.NewReader("")
	out, _ := testenv.CombinedOutput(t, cmd, "semundo __inject")
	if strings.Contains(string(out), "unknown command") {
		testenv.Missing(t, "semundo __inject", "the semundo command has no __inject helper yet: "+strings.TrimSpace(string(out)))
	}
	return bin
}

// The real helper, end to end: semundo __inject with the writer's
// credentials.
func TestWriteRealInject(t *testing.T) {
	bin := realSemundo(t)
	f := mountT(t, &Options{AllowOther: true, Injector: &ExecInjector{Path: bin}})
	h, a, b := startHolder(t)
	gone := holder.NewSet(t, 1)
	if err := sysvsem.Remove(gone); err != nil {
		t.Fatal(err)
	}
	before := listText(t, f, h.PID)
	_, bLine, _ := strings.Cut(before, "\n")
	if a > b {
		bLine, _, _ = strings.Cut(before, "\n")
		bLine += "\n"
	}

	// Refused writes change nothing.
	for _, tt := range []struct {
		cred *syscall.Credential
		line string
		text string
	}{
		{nobody, fmt.Sprintf("%d 5 0 0 -3", a), "Permission denied"},
		{nil, fmt.Sprintf("%d 5", gone), "Invalid argument"},
		{nil, fmt.Sprintf("%d 5 0", a), "Invalid argument"},
	} {
		errs, code := echo(t, tt.cred, f, h.PID, tt.line)
		if code == 0 || !strings.Contains(errs, tt.text) {
			t.Errorf("echo %q as %v: exit %d, %q; want %s", tt.line, tt.cred, code, errs, tt.text)
		}
		if after := listText(t, f, h.PID); after != before {
			t.Errorf("refused write %q changed the list: %q -> %q", tt.line, before, after)
		}
	}

	// Add or update: set a's entry, b's stays.
	if errs, code := echo(t, nil, f, h.PID, fmt.Sprintf("%d 5 0 0 -3", a)); code != 0 {
		t.Fatalf("echo as root: exit %d, %s", code, errs)
	}
	got, err := os.ReadFile(path(f, h.PID))
	if err != nil {
		t.Fatal(err)
	}
	want := fmt.Sprintf("%d 5 0 0 -3\n", a)
	if a < b {
		want += bLine
	} else {
		want = bLine + want
	}
	if string(got) != want || listText(t, f, h.PID) != want {
		t.Errorf("after the write the file says %q, the reader %q; want %q", got, listText(t, f, h.PID), want)
	}

	// dd bs=3, two lines at once.
	text := fmt.Sprintf("%d 0 1 0 0\n%d 9\n", a, b)
	if _, errs, code := run(t, nil, text, "dd", "of="+path(f, h.PID), "bs=3", "status=none"); code != 0 {
		t.Fatalf("dd bs=3: exit %d, %s", code, errs)
	}
	wantList, _ := undo.Parse([]byte(text))
	wantText, _ := undo.Marshal(wantList)
	if got := listText(t, f, h.PID); got != string(wantText) {
		t.Errorf("after dd bs=3: %q, want %q", got, wantText)
	}
}

// A program that is not semundo but calls Init (this test binary, in
// TestMain) is its own helper: with the default injector its writes are
// made, with the writer's credentials, as semundo's would be.
func TestWriteDefaultInjector(t *testing.T) {
	f := mountT(t, &Options{AllowOther: true})
	h, a, _ := startHolder(t)
	before := listText(t, f, h.PID)
	line := fmt.Sprintf("%d 5 0 0 -3", a)
	if errs, code := echo(t, nobody, f, h.PID, line); code == 0 || !strings.Contains(errs, "Permission denied") {
		t.Errorf("nobody writing root's process: exit %d, %q; want Permission denied", code, errs)
	}
	if after := listText(t, f, h.PID); after != before {
		t.Errorf("a refused write changed the list: %q -> %q", before, after)
	}
	if errs, code := echo(t, nil, f, h.PID, line); code != 0 {
		t.Fatalf("echo as root: exit %d, %s", code, errs)
	}
	if after := listText(t, f, h.PID); !strings.Contains(after, line+"\n") || after == before {
		t.Errorf("after writing %q the list is %q (was %q)", line, after, before)
	}
}
