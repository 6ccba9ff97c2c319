//go:build linux

package sysvsem

import (
	"bytes"
	"errors"
	"fmt"
	"math/rand/v2"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/semundo/semundo/internal/testenv"
	"golang.org/x/sys/unix"
)

// Exit codes of the helpers (runChild), so the parent can assert on the
// errno the helper's OpError wrapped. Blocking in semop must happen in
// another process: GETNCNT counts waiting tasks, SEM_UNDO is applied at
// process exit, and unprivileged calls need other credentials.
const (
	childOK     = 0
	childOther  = 1
	childUsage  = 2
	childEIDRM  = 3
	childEACCES = 4
)

// helperName is the name this package's helper registers under
// testenv.RunHelper.
const helperName = "sysvsem"

func TestMain(m *testing.M) {
	testenv.RunHelper(testenv.Helpers{helperName: runChild})
	os.Exit(m.Run())
}

// runChild performs one action and reports on stdout:
//
//	op SEMID NUM OP FLG   one semop; exits childOK or by errno
//	drop-getval SEMID     as uid/gid 65534: GETVAL
//	drop-stat INDEX       as uid/gid 65534: SEM_STAT then SEM_STAT_ANY
func runChild(f []string) int {
	atoi := func(i int) int {
		if i >= len(f) {
			fmt.Println("missing argument", i)
			os.Exit(childUsage)
		}
		n, err := strconv.Atoi(f[i])
		if err != nil {
			fmt.Println(err)
			os.Exit(childUsage)
		}
		return n
	}
	if len(f) == 0 {
		return childUsage
	}
	switch f[0] {
	case "op":
		sop := Sembuf{Num: uint16(atoi(2)), Op: int16(atoi(3)), Flg: int16(atoi(4))}
		return report(Op(atoi(1), []Sembuf{sop}))
	case "drop-getval":
		if err := dropPrivileges(); err != nil {
			fmt.Println(err)
			return childUsage
		}
		_, err := GetVal(atoi(1), 0)
		return report(err)
	case "drop-stat":
		if err := dropPrivileges(); err != nil {
			fmt.Println(err)
			return childUsage
		}
		_, _, err := StatIndex(atoi(1))
		fmt.Printf("stat: %v\n", err)
		id, _, err := StatAnyIndex(atoi(1))
		fmt.Printf("any: %d %v\n", id, err)
		return childOK
	}
	fmt.Println("unknown child action", f[0])
	return childUsage
}

func report(err error) int {
	if err == nil {
		fmt.Println("ok")
		return childOK
	}
	fmt.Println(err)
	var oe *OpError
	switch {
	case !errors.As(err, &oe):
		return childOther
	case errors.Is(err, unix.EIDRM):
		return childEIDRM
	case errors.Is(err, unix.EACCES):
		return childEACCES
	}
	return childOther
}

// dropPrivileges makes the whole process (Go applies set*id to all
// threads) uid and gid 65534 with no supplementary groups and no
// capabilities.
func dropPrivileges() error {
	if err := syscall.Setgroups(nil); err != nil {
		return err
	}
	if err := syscall.Setresgid(65534, 65534, 65534); err != nil {
		return err
	}
	return syscall.Setresuid(65534, 65534, 65534)
}

type child struct {
	cmd  *exec.Cmd
	out  bytes.Buffer
	done chan struct{}
	err  error
}

// startChild runs the test binary as a helper (runChild) with the given
// action; the child is killed and reaped when the test ends.
func startChild(t *testing.T, action ...string) *child {
	t.Helper()
	c := &child{done: make(chan struct{})}
	c.cmd = testenv.HelperCommand(t, helperName, action...)
	// Under -race a Go process sleeps a second before exiting
	// (atexit_sleep_ms defaults to 1000); the helpers need no such grace.
	gorace := strings.TrimSpace(os.Getenv("GORACE") + " atexit_sleep_ms=0")
	c.cmd.Env = append(c.cmd.Env, "GORACE="+gorace)
	c.cmd.Stdout = &c.out
	c.cmd.Stderr = &c.out
	if err := c.cmd.Start(); err != nil {
		t.Fatalf("start helper process: %v", err)
	}
	go func() {
		c.err = c.cmd.Wait()
		close(c.done)
	}()
	// Registered after HelperCommand's cleanup, so it runs first and
	// HelperCommand finds the process already reaped.
	t.Cleanup(func() {
		select {
		case <-c.done:
		default:
			_ = c.cmd.Process.Kill()
			<-c.done
		}
	})
	return c
}

// wait returns the child's exit code and output. The limit only keeps a
// broken kernel or test from hanging the suite; it is not a measurement.
func (c *child) wait(t *testing.T) (int, string) {
	t.Helper()
	select {
	case <-c.done:
	case <-time.After(testenv.Patience):
		_ = c.cmd.Process.Kill()
		<-c.done
		t.Fatalf("helper process %d did not exit within %v (killed); output: %s", c.cmd.Process.Pid, testenv.Patience, c.out.String())
	}
	code := c.cmd.ProcessState.ExitCode()
	return code, strings.TrimSpace(c.out.String())
}

func (c *child) exited() bool {
	select {
	case <-c.done:
		return true
	default:
		return false
	}
}

// newSet creates a private set of nsems semaphores with mode 0600 and
// removes it when the test ends. The returned function removes it earlier
// and keeps the cleanup from touching the id again (another test could
// have been given it by then).
func newSet(t testing.TB, nsems int) (int, func() error) {
	t.Helper()
	id, err := Get(Private, nsems, unix.IPC_CREAT|0o600)
	if err != nil {
		t.Fatalf("create set: %v", err)
	}
	removed := false
	t.Cleanup(func() {
		if !removed {
			if err := Remove(id); err != nil {
				t.Errorf("cleanup: %v", err)
			}
		}
	})
	return id, func() error {
		removed = true
		return Remove(id)
	}
}

// newKeyedSet creates a set under a random key with IPC_CREAT|IPC_EXCL so
// it never opens someone else's set.
func newKeyedSet(t *testing.T, nsems int, mode int) (int, int32) {
	t.Helper()
	for range 100 {
		key := int32(rand.Uint32())
		if key == 0 {
			continue
		}
		id, err := Get(int(key), nsems, unix.IPC_CREAT|unix.IPC_EXCL|mode)
		if errors.Is(err, unix.EEXIST) {
			continue
		}
		if err != nil {
			t.Fatalf("create keyed set: %v", err)
		}
		t.Cleanup(func() {
			if err := Remove(id); err != nil {
				t.Errorf("cleanup: %v", err)
			}
		})
		return id, key
	}
	t.Fatal("no free random key in 100 tries")
	return 0, 0
}

// unusedKey returns a random key no set has right now.
func unusedKey(t *testing.T) int32 {
	t.Helper()
	for range 100 {
		key := int32(rand.Uint32())
		if key == 0 {
			continue
		}
		if _, err := Get(int(key), 0, 0); errors.Is(err, unix.ENOENT) {
			return key
		}
	}
	t.Fatal("no unused random key in 100 tries")
	return 0
}

// indexOf finds the kernel table index of set id.
func indexOf(t *testing.T, id int) int {
	t.Helper()
	_, maxIdx, err := SemInfo()
	if err != nil {
		t.Fatal(err)
	}
	for i := 0; i <= maxIdx; i++ {
		got, _, err := StatAnyIndex(i)
		if err == nil && got == id {
			return i
		}
	}
	t.Fatalf("set %d not found at any index 0..%d", id, maxIdx)
	return -1
}

func requireErrno(t *testing.T, err error, errno unix.Errno, op string) *OpError {
	t.Helper()
	if err == nil {
		t.Fatalf("%s succeeded, want %v", op, errno)
	}
	if !errors.Is(err, errno) {
		t.Fatalf("%s: got %v, want errno %v", op, err, errno)
	}
	var oe *OpError
	if !errors.As(err, &oe) {
		t.Fatalf("%s: %T is not an *OpError: %v", op, err, err)
	}
	if oe.Op != op {
		t.Fatalf("OpError.Op = %q, want %q (%v)", oe.Op, op, err)
	}
	if !strings.Contains(err.Error(), op) || strings.Contains(err.Error(), "\n") {
		t.Fatalf("message %q should be one line naming %s", err.Error(), op)
	}
	return oe
}
