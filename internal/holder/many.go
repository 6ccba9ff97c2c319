package holder

import (
	"bufio"
	"fmt"
	"io"
	"os"
	"os/exec"
	"strconv"
	"syscall"
	"testing"
	"time"
	"unsafe"

	"github.com/semundo/semundo/internal/testenv"
	"github.com/semundo/semundo/sysvsem"
	"golang.org/x/sys/unix"
)

// envCount carries the "many" helper's number of children.
const envCount = "SEMUNDO_HOLDER_COUNT"

func init() { testenv.Register(helperName("many"), func([]string) int { return manyMain() }) }

// manyOp is one op of a forked child: a set and its sembuf.
type manyOp struct {
	semid int
	buf   sysvsem.Sembuf
}

// manyMain is reader/testdata/holdmany.c where no compiler is: it forks
// SEMUNDO_HOLDER_COUNT children that each run the ops (with IPC_NOWAIT,
// and SEM_UNDO where asked) and sleep; it prints "ready" (or "failed"),
// then the children's pids one per line, and on EOF on stdin kills and
// reaps them. A forked child is one thread of a Go process: it runs raw
// system calls only, never back in the Go runtime (as mode "fork"), and
// sleeps in ppoll, where a C program's pause() sleeps on arm64.
func manyMain() int {
	ops, err := decodeOps(os.Getenv(envOps))
	n, nerr := strconv.Atoi(os.Getenv(envCount))
	if err != nil || nerr != nil || n <= 0 {
		fmt.Fprintf(os.Stderr, "helper: bad ops %q or count %q\n", os.Getenv(envOps), os.Getenv(envCount))
		return 2
	}
	mops := make([]manyOp, len(ops))
	for i, o := range ops {
		flg := int16(sysvsem.NoWait)
		if o.Undo {
			flg |= sysvsem.Undo
		}
		mops[i] = manyOp{o.Semid, sysvsem.Sembuf{Num: o.Num, Op: o.Val, Flg: flg}}
	}
	var ready [2]int
	if err := unix.Pipe2(ready[:], unix.O_CLOEXEC); err != nil {
		fmt.Fprintf(os.Stderr, "helper: pipe: %v\n", err)
		return 2
	}
	ok, bad := new(byte), new(byte)
	*ok = 1
	pids := make([]int, 0, n)
	defer func() {
		for _, pid := range pids {
			unix.Kill(pid, unix.SIGKILL)
		}
		for _, pid := range pids {
			unix.Wait4(pid, nil, 0, nil)
		}
	}()
	for range n {
		pid, _, errno := syscall.RawSyscall6(unix.SYS_CLONE, uintptr(unix.SIGCHLD), 0, 0, 0, 0, 0)
		if errno != 0 {
			fmt.Fprintf(os.Stderr, "helper: fork: %v\n", errno)
			return 2
		}
		if pid == 0 {
			// Die with the helper, even when it is killed.
			syscall.RawSyscall(unix.SYS_PRCTL, unix.PR_SET_PDEATHSIG, uintptr(unix.SIGKILL), 0)
			say := ok
			for i := range mops {
				if _, _, e := syscall.RawSyscall(unix.SYS_SEMOP, uintptr(mops[i].semid), uintptr(unsafe.Pointer(&mops[i].buf)), 1); e != 0 {
					say = bad
				}
			}
			syscall.RawSyscall(unix.SYS_WRITE, uintptr(ready[1]), uintptr(unsafe.Pointer(say)), 1)
			for {
				syscall.RawSyscall6(unix.SYS_PPOLL, 0, 0, 0, 0, 0, 0)
			}
		}
		pids = append(pids, int(pid))
	}
	unix.Close(ready[1])
	failed := 0
	var b [1]byte
	for range n {
		if k, err := unix.Read(ready[0], b[:]); k != 1 || err != nil || b[0] != 1 {
			failed++
		}
	}
	w := bufio.NewWriter(os.Stdout)
	if failed > 0 {
		fmt.Fprintf(os.Stderr, "helper: %d children failed their semops\n", failed)
		fmt.Fprintln(w, "failed")
	} else {
		fmt.Fprintln(w, "ready")
	}
	for _, pid := range pids {
		fmt.Fprintln(w, pid)
	}
	w.Flush()
	io.Copy(io.Discard, os.Stdin)
	if failed > 0 {
		return 1
	}
	return 0
}

// StartMany starts n processes that each ran ops and sleep, all children
// of one helper (mode "many", the Go twin of reader/testdata/holdmany.c,
// for where no C compiler is), and returns their pids. They are killed
// and reaped at cleanup.
func StartMany(tb testing.TB, n int, ops []Op) []int {
	tb.Helper()
	cmd := exec.Command(os.Args[0], "-test.run=^$")
	cmd.Env = testenv.HelperEnviron(helperName("many"), envOps+"="+encodeOps(ops), envCount+"="+strconv.Itoa(n))
	stdin, stdout := startPiped(tb, cmd)
	killed := false
	tb.Cleanup(func() {
		stdin.Close()
		if err := cmd.Wait(); err != nil && !killed {
			tb.Errorf("holder helper many (pid %d): %v", cmd.Process.Pid, err)
		}
	})
	type result struct {
		pids []int
		err  error
	}
	done := make(chan result, 1)
	go func() {
		sc := bufio.NewScanner(stdout)
		if !sc.Scan() || sc.Text() != "ready" {
			done <- result{err: fmt.Errorf("said %q, want ready", sc.Text())}
			return
		}
		var pids []int
		for len(pids) < n && sc.Scan() {
			pid, err := strconv.Atoi(sc.Text())
			if err != nil {
				done <- result{err: fmt.Errorf("said %q, want a pid", sc.Text())}
				return
			}
			pids = append(pids, pid)
		}
		if len(pids) < n {
			done <- result{err: fmt.Errorf("named %d children, want %d", len(pids), n)}
			return
		}
		done <- result{pids: pids}
	}()
	// Forking is slow under emulation: a minute per thousand children.
	patience := testenv.Patience + time.Duration(n)*60*time.Millisecond
	select {
	case r := <-done:
		if r.err != nil {
			killed = true
			cmd.Process.Kill()
			tb.Fatalf("holder helper many (pid %d): %v", cmd.Process.Pid, r.err)
		}
		return r.pids
	case <-time.After(patience):
		killed = true
		cmd.Process.Kill()
		tb.Fatalf("holder helper many (pid %d) did not name its %d children within %v (killed)", cmd.Process.Pid, n, patience)
	}
	return nil
}
