package criu

import (
	"bufio"
	"bytes"
	_ "embed"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/semundo/semundo/internal/procfs"
	"github.com/semundo/semundo/internal/testenv"
	"github.com/semundo/semundo/internal/testreader"
	"github.com/semundo/semundo/reader"
	"golang.org/x/sys/unix"
)

// live is the host's /proc, where the tests' trees run.
var live = procfs.NewDefaultFS()

//go:embed testdata/tree.c
var treeSrc string

// defaultCRIUCache is testdata/install-criu.sh's default cache directory;
// SEMUNDO_CRIU_CACHE names another (the script's CACHE argument). The
// script puts its wrapper there as criu, or, when no candidate passed its
// preflight on this host, says why in criu.refused.
const defaultCRIUCache = "/var/cache/semundo-criu"

// rig is what an end-to-end test needs: CRIU, the C test program, the
// semundo command and the action script that runs it.
type rig struct {
	criu    string
	semundo string // cmd/semundo, built
	tree    string // testdata/tree.c, built
	script  string // the wrapper that runs semundo criu-script
	state   string // SEMUNDO_CRIU_STATE_DIR for CRIU's runs
	dir     string // scratch: image directories, logs
	quiet   bool   // CRIU's default log level instead of -v4 (benchmarks)
	// dumpEnv is added to the environment of criu dump.
	dumpEnv []string
}

// newRig checks for root and CRIU and builds the programs.
func newRig(tb testing.TB) *rig {
	tb.Helper()
	testenv.RequireRoot(tb)
	c := findCRIU(tb)
	if testenv.InVM() {
		loopbackUp(tb)
	}
	rg := &rig{criu: c, dir: tb.TempDir()}
	rg.tree = buildTree(tb)
	semundo := testenv.BuildGo(tb, "github.com/semundo/semundo/cmd/semundo")
	rg.semundo = semundo
	// semundo-criu-action runs semundo from its own directory when the
	// helper does not take the work, as docs/criu.md installs them.
	action := testenv.BuildGo(tb, "github.com/semundo/semundo/cmd/semundo-criu-action")
	if beside := filepath.Join(filepath.Dir(semundo), filepath.Base(action)); beside != action {
		b, err := os.ReadFile(action)
		if err == nil {
			err = os.WriteFile(beside, b, 0o755)
		}
		if err != nil {
			tb.Fatalf("put semundo-criu-action beside semundo: %v", err)
		}
		action = beside
	}
	// Helpers still alive at the end are killed (a test that checks
	// for them has failed by then).
	tb.Cleanup(func() {
		for _, pid := range rg.helpers() {
			unix.Kill(pid, unix.SIGKILL)
		}
	})
	rg.script = filepath.Join(rg.dir, "criu-script")
	// docs/criu.md's wrapper: semundo runs only for the actions it acts
	// on, semundo-criu-action for the two that hold the tree.
	script := "#!/bin/sh\ncase \"$CRTOOLS_SCRIPT_ACTION\" in\npre-dump|pre-restore) exec " + semundo + " criu-script ;;\n" +
		"post-dump|post-resume) exec " + action + " ;;\nesac\n"
	if err := os.WriteFile(rg.script, []byte(script), 0o755); err != nil {
		tb.Fatal(err)
	}
	rg.state = filepath.Join(rg.dir, "state")
	return rg
}

// vmTree is where kmatrix's guests hold tree.c, built for their
// architecture by testdata/install-criu-arm64.sh (packed with kmatrix
// -files), since they have no compiler.
const vmTree = defaultCRIUCache + "/tree"

// buildTree returns tree.c built: by gcc on the host, the prebuilt vmTree
// in kmatrix's guests.
func buildTree(tb testing.TB) string {
	tb.Helper()
	if !testenv.InVM() {
		return testenv.BuildC(tb, "tree", treeSrc)
	}
	if _, err := os.Stat(vmTree); err != nil {
		testenv.Missing(tb, "tree.c built for this guest at "+vmTree, "pack criu/testdata/install-criu-arm64.sh's output with kmatrix -files")
	}
	return vmTree
}

// loopbackUp brings the loopback interface up, as kmatrix's /init leaves
// it down: CRIU's start-up probes (kerndat_tcp_repair) connect a TCP
// socket over it, and every criu command fails without it ("Unable to
// connect a socket: Network is unreachable"). Cleanup puts it down again.
func loopbackUp(tb testing.TB) {
	tb.Helper()
	fd, err := unix.Socket(unix.AF_INET, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		tb.Fatalf("socket to bring lo up: %v", err)
	}
	defer unix.Close(fd)
	ifr, err := unix.NewIfreq("lo")
	if err != nil {
		tb.Fatal(err)
	}
	if err := unix.IoctlIfreq(fd, unix.SIOCGIFFLAGS, ifr); err != nil {
		tb.Fatalf("read the flags of lo: %v", err)
	}
	flags := ifr.Uint16()
	if flags&unix.IFF_UP != 0 {
		return
	}
	ifr.SetUint16(flags | unix.IFF_UP)
	if err := unix.IoctlIfreq(fd, unix.SIOCSIFFLAGS, ifr); err != nil {
		tb.Fatalf("bring lo up: %v", err)
	}
	tb.Cleanup(func() {
		fd, err := unix.Socket(unix.AF_INET, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC, 0)
		if err != nil {
			tb.Errorf("socket to put lo down again: %v", err)
			return
		}
		defer unix.Close(fd)
		ifr.SetUint16(flags)
		if err := unix.IoctlIfreq(fd, unix.SIOCSIFFLAGS, ifr); err != nil {
			tb.Errorf("put lo down again: %v", err)
		}
	})
}

// findCRIU returns the CRIU to test with: $SEMUNDO_CRIU, or the wrapper
// of install-criu.sh. When the script refused every CRIU it tried, the
// test stops at once quoting why, rather than running a CRIU that hangs.
func findCRIU(tb testing.TB) string {
	tb.Helper()
	c := os.Getenv("SEMUNDO_CRIU")
	if c == "" {
		cache := os.Getenv("SEMUNDO_CRIU_CACHE")
		if cache == "" {
			cache = defaultCRIUCache
		}
		c = filepath.Join(cache, "criu")
		if _, err := os.Stat(c); err != nil {
			refused := filepath.Join(cache, "criu.refused")
			if why, err := os.ReadFile(refused); err == nil {
				testenv.Missing(tb, "a CRIU that works on this host", strings.TrimSpace(string(why))+" (from "+refused+")")
			}
		}
	}
	if st, err := os.Stat(c); err != nil || st.Mode()&0o111 == 0 {
		testenv.Missing(tb, "CRIU >= 4.1 at "+c, "run criu/testdata/install-criu.sh, or point SEMUNDO_CRIU at a criu binary")
	}
	return c
}

// openReader returns the reader shared by the tests.
func openReader(tb testing.TB) *reader.Reader { return testreader.Open(tb) }

// treeSpec describes a tree for tree.c.
type treeSpec struct {
	pidns   bool     // the root is pid 1 of a new PID namespace
	shared  bool     // the root shares its list with a process outside the tree
	sizes   string   // set sizes, "1,5"
	rootOps string   // "-" or ops
	kids    []string // THREADS/OPS per child
}

// liveTree is a running tree started by tree.c under its reaper.
type liveTree struct {
	reaper *exec.Cmd
	root   int         // host pid of the root
	kids   []int       // host pids of the children, in spec order
	sets   []int       // semids, in the tree's IPC namespace
	vpid   map[int]int // host pid -> pid in the root's PID namespace
	out    string      // the tree's stderr
	killed bool
}

// startTree starts a tree and waits until every child has done its semops.
// Cleanup kills whatever is left of it and waits for its reaper.
func (rg *rig) startTree(tb testing.TB, spec treeSpec) *liveTree {
	tb.Helper()
	dir, err := os.MkdirTemp(rg.dir, "tree")
	if err != nil {
		tb.Fatal(err)
	}
	ready := filepath.Join(dir, "ready")
	lt := &liveTree{out: filepath.Join(dir, "out")}
	args := []string{"reaper"}
	if spec.pidns {
		args = append(args, "-p")
	}
	args = append(args, lt.out, rg.tree, "tree")
	if spec.shared {
		args = append(args, "-s")
	}
	rootOps := spec.rootOps
	if rootOps == "" {
		rootOps = "-"
	}
	args = append(args, ready, spec.sizes, rootOps)
	args = append(args, spec.kids...)
	// The reaper's report of the root's exit is not needed: CRIU kills it.
	lt.reaper, _ = startReaper(tb, rg.tree, args)
	tb.Cleanup(func() { lt.kill(tb) })

	var text []byte
	for i := 0; ; i++ {
		text, err = os.ReadFile(ready)
		if err == nil {
			break
		}
		if i == 2000 || !alive(lt.reaper.Process.Pid) {
			b, _ := os.ReadFile(lt.out)
			tb.Fatalf("tree did not get ready within 10 s: %s", b)
		}
		time.Sleep(5 * time.Millisecond)
	}
	var vroot int
	var vkids []int
	for line := range strings.SplitSeq(strings.TrimSpace(string(text)), "\n") {
		f := strings.Fields(line)
		for _, s := range f[1:] {
			n, err := strconv.Atoi(s)
			if err != nil {
				tb.Fatalf("ready file: %q", text)
			}
			switch f[0] {
			case "root":
				vroot = n
			case "child":
				vkids = append(vkids, n)
			case "sets":
				lt.sets = append(lt.sets, n)
			}
		}
	}
	// The file gives pids as the tree sees them; find them on the host.
	host := innermost(tb, lt.reaper.Process.Pid)
	lt.root = host[vroot]
	for _, v := range vkids {
		lt.kids = append(lt.kids, host[v])
	}
	if lt.root == 0 || len(lt.kids) != len(spec.kids) || slices.Contains(lt.kids, 0) {
		tb.Fatalf("could not find the tree's processes (%q) among the reaper's descendants %v", text, host)
	}
	procs, err := walkTree(live, lt.root)
	if err != nil {
		tb.Fatal(err)
	}
	lt.vpid = map[int]int{}
	for _, p := range procs {
		lt.vpid[p.pid] = p.vpid
	}
	return lt
}

// innermost maps the pid each descendant of pid has in its own PID
// namespace to its host pid.
func innermost(tb testing.TB, pid int) map[int]int {
	tb.Helper()
	procs, err := walkTree(live, pid)
	if err != nil {
		tb.Fatal(err)
	}
	out := map[int]int{}
	for _, p := range procs[1:] {
		ns, err := nspids(live, p.pid)
		if err != nil {
			continue
		}
		out[ns[len(ns)-1]] = p.pid
	}
	return out
}

// startReaper starts tree.c's reaper role and returns it with the read
// end of its stdout, where it reports its child's exit status. The pipe
// is closed at cleanup.
func startReaper(tb testing.TB, bin string, args []string, env ...string) (*exec.Cmd, *os.File) {
	tb.Helper()
	r, w, err := os.Pipe()
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { r.Close() })
	cmd := exec.Command(bin, args...)
	cmd.Stdout = w
	cmd.Env = append(os.Environ(), env...)
	err = cmd.Start()
	w.Close()
	if err != nil {
		tb.Fatal(err)
	}
	return cmd, r
}

// reaperStatus waits for the exit status that tree.c's reaper reports for
// the command it runs, within testenv.WaitLimit(). When the deadline passes
// it kills the reaper and all below it and returns an error naming what,
// the command it waited for.
func reaperStatus(status *os.File, reaper *exec.Cmd, what string) (int, error) {
	limit := testenv.WaitLimit()
	if err := status.SetReadDeadline(time.Now().Add(limit)); err != nil {
		return 0, fmt.Errorf("%s: set a deadline on the reaper's pipe: %w", what, err)
	}
	line, err := bufio.NewReader(status).ReadString('\n')
	if errors.Is(err, os.ErrDeadlineExceeded) {
		stuck := where(reaper.Process.Pid)
		killDescendants(reaper.Process.Pid)
		reaper.Process.Kill()
		return 0, fmt.Errorf("%s did not finish in %v; killed it (reaper %d and all below it, which were: %s): %w", what, limit, reaper.Process.Pid, stuck, testenv.ErrDeadline)
	}
	if err != nil {
		return 0, fmt.Errorf("%s: no exit status from the reaper: %w", what, err)
	}
	n, err := strconv.Atoi(strings.TrimSpace(line))
	if err != nil {
		return 0, fmt.Errorf("%s: the reaper reported %q", what, line)
	}
	return n, nil
}

// where describes the processes below pid: for each its pid, name, state,
// the kernel function it sleeps in and, when stopped, the signal it stopped
// for (the last field of /proc/PID/stat). That is what tells a hung CRIU
// from tasks it waits for: in an arm64 guest, trixie's CRIU 4.1.1 waited in
// futex_wait_queue while every restored task sat in ptrace_stop on SIGSEGV.
func where(pid int) string {
	procs, err := walkTree(live, pid)
	if err != nil || len(procs) < 2 {
		return "none"
	}
	var b strings.Builder
	for i, p := range procs[1:] {
		st, err := live.Stat(p.pid)
		if err != nil {
			continue
		}
		wchan, _ := os.ReadFile(fmt.Sprintf("/proc/%d/wchan", p.pid))
		if i > 0 {
			b.WriteString("; ")
		}
		fmt.Fprintf(&b, "%d %s %c in %s", p.pid, st.Comm, st.State, wchan)
		if st.State == 't' || st.State == 'T' {
			stat, _ := os.ReadFile(fmt.Sprintf("/proc/%d/stat", p.pid))
			f := strings.Fields(string(stat))
			fmt.Fprintf(&b, " (signal %s)", f[len(f)-1])
		}
	}
	return b.String()
}

// kill kills what is left of the tree (the tree CRIU dumped, if it still
// runs) and waits for the reaper, which exits when all are reaped.
func (lt *liveTree) kill(tb testing.TB) {
	if lt.killed {
		return
	}
	lt.killed = true
	killDescendants(lt.reaper.Process.Pid)
	waitReaper(tb, lt.reaper)
}

// killDescendants sends SIGKILL to every descendant of pid.
func killDescendants(pid int) {
	// A killed parent's children move to the reaper: walk until none is
	// left.
	for range 50 {
		procs, err := walkTree(live, pid)
		if err != nil || len(procs) <= 1 {
			return
		}
		for _, p := range procs[1:] {
			unix.Kill(p.pid, unix.SIGKILL)
		}
		time.Sleep(2 * time.Millisecond)
	}
}

func waitReaper(tb testing.TB, cmd *exec.Cmd) {
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	select {
	case <-done:
	case <-time.After(20 * time.Second):
		cmd.Process.Kill()
		<-done
		tb.Errorf("reaper %d still had children 20 s after they were killed", cmd.Process.Pid)
	}
}

func alive(pid int) bool {
	st, err := live.Stat(pid)
	return err == nil && st.State != 'Z'
}

// criuRun is one finished run of CRIU.
type criuRun struct {
	status int           // CRIU's exit status
	log    string        // its log file (the action script's output is in it)
	wall   time.Duration // from start to exit of the criu command
}

func (c criuRun) String() string { return fmt.Sprintf("exit %d, log:\n%s", c.status, tail(c.log, 60)) }

func tail(s string, n int) string {
	lines := strings.Split(s, "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}

// dump runs criu dump of the tree into a new image directory, with the
// action script when script is set.
func (rg *rig) dump(tb testing.TB, root int, script bool, extra ...string) (string, criuRun) {
	tb.Helper()
	dir, err := os.MkdirTemp(rg.dir, "img")
	if err != nil {
		tb.Fatal(err)
	}
	args := []string{"dump", "-t", strconv.Itoa(root), "-D", dir, "-o", "dump.log"}
	if !rg.quiet {
		args = append(args, "-v4")
	}
	if script {
		args = append(args, "--action-script", rg.script)
	}
	args = append(args, extra...)
	cmd := testenv.Command(tb, fmt.Sprintf("criu dump of pid %d", root), rg.criu, args...)
	cmd.Env = append(append(os.Environ(), EnvStateDir+"="+rg.state), rg.dumpEnv...)
	start := time.Now()
	out, err := cmd.CombinedOutput()
	run := criuRun{wall: time.Since(start)}
	var ee *exec.ExitError
	switch {
	case errors.Is(err, testenv.ErrDeadline):
		tb.Fatal(err)
	case errors.As(err, &ee):
		run.status = ee.ExitCode()
	case err != nil:
		tb.Fatalf("run criu: %v", err)
	}
	b, _ := os.ReadFile(filepath.Join(dir, "dump.log"))
	run.log = string(out) + string(b)
	return dir, run
}

// restored is a tree CRIU restored (with -d) under a reaper.
type restored struct {
	killed bool
	reaper *exec.Cmd
	run    criuRun
	root   int
	procs  []proc // the restored tree, root first
}

// restore runs criu restore -d from dir under a reaper. The restored tree
// is killed at cleanup.
func (rg *rig) restore(tb testing.TB, dir string, leaveStopped, script bool, env ...string) *restored {
	tb.Helper()
	logName := fmt.Sprintf("restore-%d.log", time.Now().UnixNano())
	pidfile := filepath.Join(dir, logName+".pid")
	args := []string{"reaper", filepath.Join(dir, logName+".out"), rg.criu, "restore", "-D", dir, "-o", logName, "-d", "--pidfile", pidfile}
	if !rg.quiet {
		args = append(args, "-v4")
	}
	if leaveStopped {
		args = append(args, "--leave-stopped")
	}
	if script {
		args = append(args, "--action-script", rg.script)
	}
	env = append(env, EnvStateDir+"="+rg.state)
	rs := &restored{}
	var status *os.File
	start := time.Now()
	rs.reaper, status = startReaper(tb, rg.tree, args, env...)
	tb.Cleanup(func() { rs.kill(tb) })
	n, err := reaperStatus(status, rs.reaper, "criu restore from "+dir)
	rs.run.wall = time.Since(start)
	out, _ := os.ReadFile(filepath.Join(dir, logName+".out"))
	b, _ := os.ReadFile(filepath.Join(dir, logName))
	rs.run.log = string(out) + string(b)
	if err != nil {
		// What CRIU logged tells where it stopped.
		tb.Fatalf("%v; its log:\n%s", err, tail(rs.run.log, 60))
	}
	rs.run.status = n
	if rs.run.status != 0 {
		return rs
	}
	p, err := os.ReadFile(pidfile)
	if err != nil {
		tb.Fatalf("criu restore wrote no pid file: %v\n%s", err, rs.run)
	}
	if rs.root, err = strconv.Atoi(strings.TrimSpace(string(p))); err != nil {
		tb.Fatalf("pid file: %q", p)
	}
	if rs.procs, err = walkTree(live, rs.root); err != nil {
		tb.Fatal(err)
	}
	return rs
}

// kill kills the restored tree and waits until it is reaped.
func (rs *restored) kill(tb testing.TB) {
	if rs.killed {
		return
	}
	rs.killed = true
	killDescendants(rs.reaper.Process.Pid)
	waitReaper(tb, rs.reaper)
}

// pidOf returns the restored process that had vpid in the dumped tree's
// PID namespace.
func (rs *restored) pidOf(tb testing.TB, vpid int) int {
	tb.Helper()
	for _, p := range rs.procs {
		if p.vpid == vpid {
			return p.pid
		}
	}
	tb.Fatalf("no restored process has pid %d in the tree's namespace (tree %+v)", vpid, rs.procs)
	return 0
}

// values reads set semid in pid's IPC namespace with tree.c's getall.
func (rg *rig) values(tb testing.TB, pid, semid int) string {
	tb.Helper()
	what := fmt.Sprintf("tree getall %d %d", pid, semid)
	out, err := testenv.Command(tb, what, rg.tree, "getall", strconv.Itoa(pid), strconv.Itoa(semid)).CombinedOutput()
	if err != nil {
		tb.Fatalf("getall %d %d: %v: %s", pid, semid, err, out)
	}
	return strings.TrimSpace(string(out))
}

// killAndWait kills pid and waits until it has exited (its undo list is
// applied at exit, before it is reaped).
func killAndWait(tb testing.TB, pid int) {
	tb.Helper()
	unix.Kill(pid, unix.SIGKILL)
	for i := 0; alive(pid); i++ {
		if i == 5000 {
			tb.Fatalf("pid %d still alive 5 s after SIGKILL", pid)
		}
		time.Sleep(time.Millisecond)
	}
}

// stopAndWait sends SIGSTOP and waits until every thread of pid stopped.
func stopAndWait(tb testing.TB, pid int) {
	tb.Helper()
	unix.Kill(pid, unix.SIGSTOP)
	waitState(tb, pid, stateStopped)
}

// waitState waits up to 5 s until pid is in state want: stateRunning once
// it has left group-stop (SIGCONT may still be on its way when a restore
// returns), stateStopped when every thread is in group-stop, stateGone
// once it has exited (a zombie counts).
func waitState(tb testing.TB, pid int, want runState) {
	tb.Helper()
	names := map[runState]string{stateRunning: "running", stateStopping: "stopping", stateStopped: "stopped", stateGone: "gone"}
	for i := 0; ; i++ {
		st, err := processState(live, pid)
		if err != nil {
			tb.Fatal(err)
		}
		if st == want {
			return
		}
		if i == 5000 {
			tb.Fatalf("pid %d is %s 5 s on, want %s", pid, names[st], names[want])
		}
		time.Sleep(time.Millisecond)
	}
}

// listOf returns pid's undo list in the seed's text format ("" for none).
func listOf(tb testing.TB, r *reader.Reader, pid int) string {
	tb.Helper()
	l, err := r.Read(pid)
	if err != nil {
		tb.Fatal(err)
	}
	var b bytes.Buffer
	if l == nil {
		return ""
	}
	for _, e := range l.Entries {
		fmt.Fprintf(&b, "%d", e.Semid)
		for _, a := range e.Adj {
			fmt.Fprintf(&b, " %d", a)
		}
		b.WriteByte('\n')
	}
	return b.String()
}

// handoffsLeft lists the state directory (post-resume must empty it).
func (rg *rig) handoffsLeft() []string {
	ents, _ := os.ReadDir(rg.state)
	var out []string
	for _, e := range ents {
		out = append(out, e.Name())
	}
	return out
}

// helpers lists the processes running this rig's semundo as CRIU's helper
// (criu.HelperArg), by pid.
func (rg *rig) helpers() []int {
	ents, _ := os.ReadDir("/proc")
	var out []int
	for _, e := range ents {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		exe, err := os.Readlink(filepath.Join("/proc", e.Name(), "exe"))
		if err != nil || exe != rg.semundo {
			continue
		}
		cmdline, _ := os.ReadFile(filepath.Join("/proc", e.Name(), "cmdline"))
		if args := strings.Split(string(cmdline), "\x00"); len(args) > 1 && args[1] == HelperArg && alive(pid) {
			out = append(out, pid)
		}
	}
	return out
}

// noHelpersLeft waits until no helper of the rig runs and its state
// directory is empty.
func (rg *rig) noHelpersLeft(tb testing.TB) {
	tb.Helper()
	if !testenv.Until(testenv.Patience, func() bool { return len(rg.helpers()) == 0 }) {
		tb.Errorf("helpers still running %v after CRIU ended: %v", testenv.Patience, rg.helpers())
	}
	if left := rg.handoffsLeft(); len(left) > 0 {
		tb.Errorf("state directory still holds %v", left)
	}
}
