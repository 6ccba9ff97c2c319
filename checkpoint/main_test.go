package checkpoint_test

import (
	"bufio"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/semundo/semundo/checkpoint"
	"github.com/semundo/semundo/image"
	"github.com/semundo/semundo/internal/holder"
	"github.com/semundo/semundo/internal/testenv"
	"github.com/semundo/semundo/sysvsem"
	"golang.org/x/sys/unix"
)

// The helper roles of these tests, re-executions of the test binary (no
// compiler needed, so they also run in the kernel-matrix VM):
//
//   - runnerRole: started in a new IPC namespace; creates sets there, starts
//     workers (its children, so they share the namespace), relays semops to
//     them, reads the sets, restores an image's sets. Speaks a line protocol
//     on stdin/stdout (see runnerMain).
//   - workerRole: runs the semops it is told, one at a time, blocking ones
//     included; a worker that gets no op is a plain stand-in.
const (
	runnerRole = "cr-runner"
	workerRole = "cr-worker"
)

func TestMain(m *testing.M) {
	testenv.RunHelper(testenv.Helpers{runnerRole: runnerMain, workerRole: workerMain})
	holder.Main(m)
}

// reply is the runner's answer to one command, one JSON object per line.
type reply struct {
	Err   string     `json:",omitempty"`
	Taken bool       `json:",omitempty"` // Err wraps checkpoint.ErrTaken
	ID    int        `json:",omitempty"` // a set's id (create, createat)
	PIDs  []int      `json:",omitempty"` // started processes (spawn, spawnexec, fork)
	Sets  []setState `json:",omitempty"` // every set of the namespace (getall)
	Sem   string     `json:",omitempty"` // /proc/sys/kernel/sem (limits)
}

// setState is one set as the runner reads it.
type setState struct {
	ID     int
	Key    int32
	Mode   uint32 // permission bits
	UID    uint32
	GID    uint32
	Values []uint16
}

// runnerProc is the runner's view of one child.
type runnerProc struct {
	cmd     *exec.Cmd
	stdin   io.WriteCloser
	replies chan string // the child's reply lines; closed at EOF
	forked  []int       // its own children (fork), which the runner reaps
}

// runnerMain serves one command per stdin line until EOF, then kills its
// children. Commands:
//
//	create NSEMS KEY MODE V,V,...   a set (IPC_CREAT|IPC_EXCL) with these values
//	createat ID NSEMS KEY           a set with the id asked for (sem_next_id)
//	spawn N                         N workers; reply PIDs
//	spawnexec SEMUNDO FILE...       `SEMUNDO exec --undo FILE -- worker` for each FILE; reply PIDs
//	op I SEMID NUM VAL FLG          worker I runs the semop; reply when it completed
//	opbg I SEMID NUM VAL FLG        the same, reply once it blocks (GETNCNT > 0)
//	wait I                          reply when worker I's blocked op completed
//	fork I                          worker I clones a child sharing its undo list
//	getall                          every set of the namespace
//	kill                            SIGKILL every child, wait for them (their lists are applied)
//	nextid                          /proc/sys/kernel/sem_next_id of the namespace
//	restore FILE                    checkpoint.RestoreSets of the image in FILE
func runnerMain(args []string) int {
	// Children forked by workers come back here when their parent dies.
	unix.Prctl(unix.PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0)
	var procs []*runnerProc
	defer func() { killAll(procs) }()
	out := bufio.NewWriter(os.Stdout)
	in := bufio.NewScanner(os.Stdin)
	for in.Scan() {
		f := strings.Fields(in.Text())
		if len(f) == 0 {
			continue
		}
		var rep reply
		var err error
		switch f[0] {
		case "create":
			rep.ID, err = runnerCreate(f[1:])
		case "createat":
			rep.ID, err = runnerCreateAt(f[1:])
		case "spawn":
			var n int
			if n, err = strconv.Atoi(arg(f, 1)); err == nil {
				for range n {
					var p *runnerProc
					if p, err = spawnWorker(nil); err != nil {
						break
					}
					procs = append(procs, p)
					rep.PIDs = append(rep.PIDs, p.cmd.Process.Pid)
				}
			}
		case "spawnexec":
			// In parallel: each semundo exec loads the BPF reader.
			ps := make([]*runnerProc, len(f)-2)
			errs := make([]error, len(ps))
			var wg sync.WaitGroup
			for i := range ps {
				wg.Go(func() { ps[i], errs[i] = spawnWorker([]string{f[1], "exec", "--undo", f[2+i], "--"}) })
			}
			wg.Wait()
			for i, p := range ps {
				if p != nil {
					procs = append(procs, p)
					rep.PIDs = append(rep.PIDs, p.cmd.Process.Pid)
				} else if err == nil {
					err = errs[i]
				}
			}
		case "op", "opbg", "wait", "fork":
			var p *runnerProc
			if p, err = worker(procs, arg(f, 1)); err == nil {
				rep, err = runnerWorkerCmd(p, f)
			}
		case "getall":
			rep.Sets, err = readSets()
		case "kill":
			killAll(procs)
			procs = nil
		case "nextid":
			var b []byte
			if b, err = os.ReadFile("/proc/sys/kernel/sem_next_id"); err == nil {
				rep.ID, err = strconv.Atoi(strings.TrimSpace(string(b)))
			}
		case "limits":
			// "limits" reads the namespace's kernel.sem, "limits A B C D"
			// writes it first.
			if len(f) == 5 {
				err = os.WriteFile("/proc/sys/kernel/sem", []byte(strings.Join(f[1:], " ")), 0)
			}
			if err == nil {
				var b []byte
				b, err = os.ReadFile("/proc/sys/kernel/sem")
				rep.Sem = strings.Join(strings.Fields(string(b)), " ")
			}
		case "restore":
			var img *image.Image
			if img, err = image.ReadFile(arg(f, 1)); err == nil {
				err = checkpoint.RestoreSets(img)
			}
			rep.Taken = errors.Is(err, checkpoint.ErrTaken)
		default:
			err = fmt.Errorf("unknown command %q", f[0])
		}
		if err != nil {
			rep.Err = err.Error()
		}
		b, _ := json.Marshal(rep)
		out.Write(append(b, '\n'))
		out.Flush()
	}
	return 0
}

func arg(f []string, i int) string {
	if i < len(f) {
		return f[i]
	}
	return ""
}

func atoi(s string) int {
	n, err := strconv.Atoi(s)
	if err != nil {
		return -1
	}
	return n
}

func runnerCreate(f []string) (int, error) {
	if len(f) != 4 {
		return 0, fmt.Errorf("create wants NSEMS KEY MODE VALUES")
	}
	nsems, key := atoi(f[0]), atoi(f[1])
	mode, err := strconv.ParseUint(f[2], 8, 32)
	if err != nil {
		return 0, err
	}
	var vals []uint16
	for v := range strings.SplitSeq(f[3], ",") {
		vals = append(vals, uint16(atoi(v)))
	}
	id, err := sysvsem.Get(key, nsems, unix.IPC_CREAT|unix.IPC_EXCL|int(mode))
	if err != nil {
		return 0, err
	}
	return id, sysvsem.SetAll(id, vals)
}

func runnerCreateAt(f []string) (int, error) {
	if len(f) != 3 {
		return 0, fmt.Errorf("createat wants ID NSEMS KEY")
	}
	if err := os.WriteFile("/proc/sys/kernel/sem_next_id", []byte(f[0]), 0); err != nil {
		return 0, err
	}
	return sysvsem.Get(atoi(f[2]), atoi(f[1]), unix.IPC_CREAT|unix.IPC_EXCL|0o600)
}

// spawnWorker starts a worker, through the command prefix when given
// (semundo exec), and waits for its "ready".
func spawnWorker(prefix []string) (*runnerProc, error) {
	exe, err := os.Executable()
	if err != nil {
		return nil, err
	}
	argv := append(slices.Clone(prefix), exe, "-test.run=^$")
	cmd := exec.Command(argv[0], argv[1:]...)
	cmd.Env = append(os.Environ(), testenv.HelperEnv+"="+workerRole)
	cmd.Stderr = os.Stderr
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	stdin, err := cmd.StdinPipe()
	if err != nil {
		return nil, err
	}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		return nil, err
	}
	if err := cmd.Start(); err != nil {
		return nil, err
	}
	p := &runnerProc{cmd: cmd, stdin: stdin, replies: make(chan string, 4)}
	go func() {
		sc := bufio.NewScanner(stdout)
		for sc.Scan() {
			p.replies <- sc.Text()
		}
		close(p.replies)
	}()
	select {
	case line, ok := <-p.replies:
		if ok && line == "ready" {
			return p, nil
		}
		killAll([]*runnerProc{p})
		return nil, fmt.Errorf("%q did not get ready (said %q, exit %v)", argv, line, cmd.ProcessState)
	case <-time.After(testenv.Patience):
		killAll([]*runnerProc{p})
		return nil, fmt.Errorf("%q not ready after %v", argv, testenv.Patience)
	}
}

func worker(procs []*runnerProc, s string) (*runnerProc, error) {
	i := atoi(s)
	if i < 0 || i >= len(procs) {
		return nil, fmt.Errorf("no worker %q", s)
	}
	return procs[i], nil
}

// workerReply waits for the worker's next reply line.
func workerReply(p *runnerProc) (string, error) {
	select {
	case line, ok := <-p.replies:
		if !ok {
			return "", fmt.Errorf("worker %d died", p.cmd.Process.Pid)
		}
		return line, nil
	case <-time.After(testenv.Patience):
		return "", fmt.Errorf("worker %d: no reply within %v (blocked for good?)", p.cmd.Process.Pid, testenv.Patience)
	}
}

func runnerWorkerCmd(p *runnerProc, f []string) (reply, error) {
	var rep reply
	switch f[0] {
	case "wait":
	case "fork":
		fmt.Fprintln(p.stdin, "fork")
	default:
		if len(f) != 6 {
			return rep, fmt.Errorf("%s wants I SEMID NUM VAL FLG", f[0])
		}
		fmt.Fprintln(p.stdin, "op", f[2], f[3], f[4], f[5])
	}
	if f[0] == "opbg" {
		// The op must block: wait until the kernel counts a waiter.
		semid, num := atoi(f[2]), atoi(f[3])
		var err error
		if !testenv.Until(testenv.Patience, func() bool {
			select {
			case line := <-p.replies:
				err = fmt.Errorf("op did not block: worker said %q", line)
				return true
			default:
			}
			var n int
			n, err = sysvsem.GetNcnt(semid, num)
			return err != nil || n > 0
		}) {
			err = fmt.Errorf("worker %d: op neither blocked nor completed within %v", p.cmd.Process.Pid, testenv.Patience)
		}
		return rep, err
	}
	line, err := workerReply(p)
	if err != nil {
		return rep, err
	}
	rest, ok := strings.CutPrefix(line, "ok")
	if !ok {
		return rep, fmt.Errorf("worker %d: %s", p.cmd.Process.Pid, line)
	}
	if f[0] == "fork" {
		child := atoi(strings.TrimSpace(rest))
		p.forked = append(p.forked, child)
		rep.PIDs = []int{child}
	}
	return rep, nil
}

// killAll kills the children (and theirs) and reaps them: when it returns,
// the kernel has applied their undo lists.
func killAll(procs []*runnerProc) {
	for _, p := range procs {
		for _, c := range p.forked {
			unix.Kill(c, unix.SIGKILL)
		}
		p.cmd.Process.Kill()
	}
	for _, p := range procs {
		p.stdin.Close()
		p.cmd.Wait()
		for _, c := range p.forked {
			// Reparented to the runner (a subreaper) when p died.
			var ws unix.WaitStatus
			unix.Wait4(c, &ws, 0, nil)
		}
	}
}

// readSets reads every set of the runner's namespace.
func readSets() ([]setState, error) {
	ents, err := sysvsem.Enumerate()
	if err != nil {
		return nil, err
	}
	out := []setState{}
	for _, e := range ents {
		vals, err := sysvsem.GetAll(e.ID)
		if err != nil {
			return nil, err
		}
		out = append(out, setState{ID: e.ID, Key: e.Stat.Perm.Key, Mode: e.Stat.Perm.Mode & 0o777,
			UID: e.Stat.Perm.UID, GID: e.Stat.Perm.GID, Values: vals})
	}
	return out, nil
}

// workerMain says "ready", then serves stdin lines until EOF:
//
//	op SEMID NUM VAL FLG   semop with one operation, waiting as long as it takes; reply "ok"
//	fork                   clone(CLONE_SYSVSEM|SIGCHLD): a child sharing this
//	                       process's undo list, which only sleeps; reply "ok PID"
func workerMain(args []string) int {
	say := func(format string, a ...any) { fmt.Printf(format+"\n", a...) }
	say("ready")
	in := bufio.NewScanner(os.Stdin)
	for in.Scan() {
		f := strings.Fields(in.Text())
		switch {
		case len(f) == 5 && f[0] == "op":
			err := sysvsem.Op(atoi(f[1]), []sysvsem.Sembuf{{Num: uint16(atoi(f[2])), Op: int16(atoi(f[3])), Flg: int16(atoi(f[4]))}})
			if err != nil {
				say("err %v", err)
			} else {
				say("ok")
			}
		case len(f) == 1 && f[0] == "fork":
			// The child runs only raw system calls, never the Go runtime
			// again (as holder's "fork" mode). clone's first argument is
			// the flags on every architecture.
			pid, _, errno := syscall.RawSyscall6(unix.SYS_CLONE, uintptr(unix.CLONE_SYSVSEM|unix.SIGCHLD), 0, 0, 0, 0, 0)
			if errno != 0 {
				say("err clone: %v", errno)
				continue
			}
			if pid == 0 {
				// Dies with this worker even if the runner cannot reap it.
				syscall.RawSyscall(unix.SYS_PRCTL, unix.PR_SET_PDEATHSIG, uintptr(unix.SIGKILL), 0)
				for {
					syscall.RawSyscall6(unix.SYS_PPOLL, 0, 0, 0, 0, 0, 0)
				}
			}
			say("ok %d", pid)
		default:
			say("err bad command %q", in.Text())
		}
	}
	return 0
}
