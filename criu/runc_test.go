package criu

import (
	_ "embed"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/semundo/semundo/internal/testenv"
	"github.com/semundo/semundo/reader"
)

// TestRunc checks the runc path of docs/criu.md for real: runc drives CRIU
// over RPC (criu swrk), so the action script and leave-stopped reach CRIU
// only through the CRIU configuration file named by the container's
// org.criu.config annotation. A container whose pid 1 made a set and whose
// child holds +1 on it with SEM_UNDO is checkpointed and restored with runc;
// killing the restored child must bring the value back to 0. The control,
// the same container with a configuration file that names no action script
// (runc and CRIU alone), leaves it at 1.
//
// The container is runc spec's, namespaces included, with three changes:
// terminal false and a payload that points its descriptors at the
// container's /dev/null (nothing leads outside the container), a writable
// rootfs for the payload's ready file, and the annotation. CRIU locks the
// container's network namespace during the dump with iptables-restore and
// ip6tables-restore, run from the host (Debian's iptables package); the
// nftables method cannot be chosen instead, since a network-lock line in
// the RPC configuration file crashes CRIU 4.1.1's swrk (SIGSEGV).
func TestRunc(t *testing.T) {
	rr := newRuncRig(t)
	r := openReader(t)
	for _, withSemundo := range []bool{true, false} {
		name, want := "semundo", "0"
		if !withSemundo {
			name, want = "runc alone (control)", "1"
		}
		t.Run(name, func(t *testing.T) {
			b := rr.bundle(t, withSemundo)
			ct := rr.run(t, b)
			set, vchild := rr.waitReady(t, b)
			init := ct.initPID(t)
			child := hostPID(t, init, vchild)
			rr.checkHolding(t, r, init, child, set)

			img := filepath.Join(b.dir, "img")
			out, err := rr.runc(t, "checkpoint", "--image-path", img, "--work-path", filepath.Join(b.dir, "work-dump"), ct.id).CombinedOutput()
			dumpLog := readLog(filepath.Join(b.dir, "work-dump", "dump.log"))
			if err != nil {
				t.Fatalf("runc checkpoint: %v\n%s\ndump.log:\n%s", err, out, tail(dumpLog, 40))
			}
			checkDumped(t, img, dumpLog, init, withSemundo)
			if withSemundo {
				// leave-stopped in the configuration file applies to the
				// dump too: CRIU leaves the tasks stopped instead of killing
				// them, and runc then keeps the container ("container still
				// running") until it is deleted.
				for _, p := range []int{init, child} {
					waitState(t, p, stateStopped)
				}
			} else {
				for _, p := range []int{init, child} {
					waitState(t, p, stateGone)
				}
			}
			ct.remove(t)

			rs := rr.restore(t, b, img)
			init = rs.initPID(t)
			restoreLog := readLog(filepath.Join(b.dir, "work-restore", "restore.log"))
			child = hostPID(t, init, vchild)
			rr.checkRestored(t, r, restoreLog, init, child, set, withSemundo, want)
		})
	}
}

// checkHolding checks the state the payload reaches before a checkpoint:
// the child holds -1 on semaphore 0 of the set, whose value is 1.
func (rr *runcRig) checkHolding(t *testing.T, r *reader.Reader, init, child, set int) {
	t.Helper()
	if got := listOf(t, r, child); got != "0 -1\n" {
		t.Fatalf("before the checkpoint the child holds %q, want %q", got, "0 -1\n")
	}
	if got := rr.values(t, init, set); got != "1" {
		t.Fatalf("value %q before the checkpoint, want 1", got)
	}
}

// checkDumped checks CRIU's images directory and dump log after a
// checkpoint: semundo's two files and its post-dump note are there exactly
// when the action script was configured.
func checkDumped(t *testing.T, img, dumpLog string, init int, withSemundo bool) {
	t.Helper()
	_, errImg := os.Stat(filepath.Join(img, ImageFile))
	_, errTree := os.Stat(filepath.Join(img, TreeFile))
	if !withSemundo {
		if errImg == nil || errTree == nil {
			t.Fatalf("a checkpoint without the action script wrote semundo files")
		}
		return
	}
	if errImg != nil || errTree != nil {
		t.Fatalf("no semundo files in the images: %v, %v\ndump.log:\n%s", errImg, errTree, tail(dumpLog, 40))
	}
	// Two lists: the child's, and pid 1's empty one, made when runc init
	// (Go, whose threads share one list) ran there.
	if !strings.Contains(dumpLog, "semundo: post-dump: saved 2 undo lists (1 entries) of the 2 processes of the tree of pid "+strconv.Itoa(init)) {
		t.Errorf("dump.log lacks semundo's post-dump note:\n%s", tail(dumpLog, 40))
	}
	t.Logf("CRIU ran the action script %d times at post-dump", countScriptRuns(dumpLog, "post-dump"))
}

// checkRestored checks a restored container: with the action script, its
// post-resume note, running tasks, the state directory used and left
// empty, and the child's list back; without, no list. Either way the value
// is 1, and after the child is killed it is want (0 when the list came
// back, 1 when it was lost).
func (rr *runcRig) checkRestored(t *testing.T, r *reader.Reader, restoreLog string, init, child, set int, withSemundo bool, want string) {
	t.Helper()
	wantList := ""
	if withSemundo {
		wantList = "0 -1\n"
		if !strings.Contains(restoreLog, "semundo: post-resume: wrote 1 undo lists into the stopped tasks, continued 2 of the 2 tasks") {
			t.Errorf("restore.log lacks semundo's post-resume note:\n%s", tail(restoreLog, 40))
		}
		t.Logf("CRIU ran the action script %d times at post-resume", countScriptRuns(restoreLog, "post-resume"))
		if _, err := os.Stat(rr.state); err != nil {
			t.Errorf("the action script did not use the state directory %s: %v", rr.state, err)
		}
		waitState(t, init, stateRunning)
		waitState(t, child, stateRunning)
	}
	if left := rr.handoffsLeft(); len(left) != 0 {
		t.Errorf("post-resume left %v in the state directory", left)
	}
	if got := listOf(t, r, child); got != wantList {
		t.Errorf("restored child %d holds %q, want %q", child, got, wantList)
	}
	if got := rr.values(t, init, set); got != "1" {
		t.Fatalf("restored value %q, want 1", got)
	}
	killAndWait(t, child)
	if got := rr.values(t, init, set); got != want {
		t.Errorf("after the restored child died the value is %s, want %s", got, want)
	}
}

//go:embed testdata/runc-payload.c
var runcPayloadSrc string

// runcRig is the CRIU rig plus runc, with a state directory of its own
// (runc --root) so no container is left in /run/runc.
type runcRig struct {
	*rig
	bin     string // runc
	root    string // runc --root
	payload string // testdata/runc-payload.c, static
	n       int    // containers made, for their ids
}

func newRuncRig(t *testing.T) *runcRig {
	t.Helper()
	testenv.RequireRoot(t)
	bin := testenv.RequireTool(t, "runc")
	// CRIU runs them to lock the container's network namespace.
	testenv.RequireTool(t, "iptables-restore")
	testenv.RequireTool(t, "ip6tables-restore")
	rr := &runcRig{rig: newRig(t), bin: bin}
	rr.root = filepath.Join(rr.dir, "runc")
	rr.payload = testenv.BuildC(t, "runc-payload", runcPayloadSrc, "-static")
	return rr
}

// runc returns a runc command with the rig's state directory and CRIU,
// to be run within testenv.WaitLimit(); the semundo state directory
// reaches the action script through runc's and CRIU's environments.
func (rr *runcRig) runc(tb testing.TB, args ...string) *testenv.Cmd {
	argv := rr.runcArgs(args...)
	cmd := testenv.Command(tb, "runc "+args[0]+" "+args[len(args)-1], argv[0], argv[1:]...)
	cmd.Env = append(os.Environ(), EnvStateDir+"="+rr.state)
	return cmd
}

// runcArgs returns runc's command line with the rig's state directory and
// CRIU.
func (rr *runcRig) runcArgs(args ...string) []string {
	return append([]string{rr.bin, "--root", rr.root, "--criu", rr.criu}, args...)
}

// bundle is an OCI bundle for the payload, with its CRIU configuration
// file.
type bundle struct {
	dir string // the bundle; also scratch for its images and logs
	id  string // the container's id (the restored one gets it again)
}

func (rr *runcRig) bundle(t *testing.T, semundo bool) *bundle {
	t.Helper()
	rr.n++
	b := &bundle{
		dir: filepath.Join(rr.dir, fmt.Sprintf("bundle%d", rr.n)),
		id:  fmt.Sprintf("semundo-test-%d-%d", os.Getpid(), rr.n),
	}
	rootfs := filepath.Join(b.dir, "rootfs")
	if err := os.MkdirAll(rootfs, 0o755); err != nil {
		t.Fatal(err)
	}
	exe, err := os.ReadFile(rr.payload)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(rootfs, "payload"), exe, 0o755); err != nil {
		t.Fatal(err)
	}
	if out, err := testenv.Command(t, "runc spec", rr.bin, "spec", "--bundle", b.dir).CombinedOutput(); err != nil {
		t.Fatalf("runc spec: %v\n%s", err, out)
	}
	// The control's file names no action script and no leave-stopped: runc
	// and CRIU as they are. An empty annotation would mean no file at all,
	// but a missing one would mean /etc/criu/runc.conf.
	conf := filepath.Join(b.dir, "criu.conf")
	text := "# runc and CRIU alone\n"
	if semundo {
		text = "action-script " + rr.script + "\nleave-stopped\n"
	}
	if err := os.WriteFile(conf, []byte(text), 0o644); err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(b.dir, "config.json")
	raw, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	var spec map[string]any
	if err := json.Unmarshal(raw, &spec); err != nil {
		t.Fatalf("runc spec's config.json: %v", err)
	}
	process, _ := spec["process"].(map[string]any)
	root, _ := spec["root"].(map[string]any)
	linux, _ := spec["linux"].(map[string]any)
	if process == nil || root == nil || linux == nil {
		t.Fatalf("runc spec's config.json lacks process, root or linux:\n%s", raw)
	}
	// The test relies on the container's own IPC and PID namespaces.
	nss, _ := linux["namespaces"].([]any)
	have := map[any]bool{}
	for _, ns := range nss {
		if m, ok := ns.(map[string]any); ok {
			have[m["type"]] = true
		}
	}
	if !have["ipc"] || !have["pid"] {
		t.Fatalf("runc spec's config.json has no ipc or pid namespace: %v", nss)
	}
	process["terminal"] = false
	process["args"] = []string{"/payload", "/ready"}
	root["readonly"] = false
	spec["annotations"] = map[string]string{"org.criu.config": conf}
	if raw, err = json.MarshalIndent(spec, "", "\t"); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, raw, 0o644); err != nil {
		t.Fatal(err)
	}
	return b
}

// container is a container started (or restored) detached by runc under
// tree.c's reaper, which reaps its processes once runc has exited.
type container struct {
	rr      *runcRig
	id      string
	reaper  *exec.Cmd
	removed bool
}

// run starts the bundle's container with runc run -d.
func (rr *runcRig) run(t *testing.T, b *bundle) *container {
	t.Helper()
	ct, status, out := rr.detached(t, b, "run", "-d", "--bundle", b.dir, b.id)
	if status != 0 {
		t.Fatalf("runc run: exit %d\n%s", status, out)
	}
	return ct
}

// restore restores the bundle's container from img with runc restore -d.
func (rr *runcRig) restore(t *testing.T, b *bundle, img string) *container {
	t.Helper()
	work := filepath.Join(b.dir, "work-restore")
	ct, status, out := rr.detached(t, b, "restore", "-d", "--image-path", img, "--work-path", work, "--bundle", b.dir, b.id)
	if status != 0 {
		t.Fatalf("runc restore: exit %d\n%s\nrestore.log:\n%s", status, out, tail(readLog(filepath.Join(work, "restore.log")), 40))
	}
	return ct
}

// detached runs runc with args under a reaper and returns runc's exit
// status and output. Cleanup deletes the container and waits for the
// reaper.
func (rr *runcRig) detached(t *testing.T, b *bundle, args ...string) (*container, int, string) {
	t.Helper()
	outFile := filepath.Join(b.dir, fmt.Sprintf("runc-%s-%d.out", args[0], time.Now().UnixNano()))
	reaperArgs := append([]string{"reaper", outFile}, rr.runcArgs(args...)...)
	reaper, status := startReaper(t, rr.tree, reaperArgs, EnvStateDir+"="+rr.state)
	ct := &container{rr: rr, id: b.id, reaper: reaper}
	t.Cleanup(func() { ct.remove(t) })
	n, err := reaperStatus(status, reaper, "runc "+args[0]+" "+b.id)
	out := readLog(outFile)
	if err != nil {
		t.Fatalf("%v\n%s", err, out)
	}
	return ct, n, out
}

// initPID returns the host pid of the container's pid 1.
func (ct *container) initPID(t *testing.T) int {
	t.Helper()
	out, err := ct.rr.runc(t, "state", ct.id).Output()
	if err != nil {
		t.Fatalf("runc state %s: %v", ct.id, err)
	}
	var st struct {
		PID    int    `json:"pid"`
		Status string `json:"status"`
	}
	if err := json.Unmarshal(out, &st); err != nil || st.PID <= 0 {
		t.Fatalf("runc state %s: %q (%v)", ct.id, out, err)
	}
	if st.Status != "running" {
		t.Fatalf("container %s is %s, want running", ct.id, st.Status)
	}
	return st.PID
}

// remove deletes the container (killing what is left of it) and waits
// until the reaper has reaped every process. runc delete fails harmlessly
// when runc already destroyed the container.
func (ct *container) remove(t *testing.T) {
	if ct.removed {
		return
	}
	ct.removed = true
	if err := ct.rr.runc(t, "delete", "-f", ct.id).Run(); errors.Is(err, testenv.ErrDeadline) {
		t.Error(err)
	}
	killDescendants(ct.reaper.Process.Pid)
	waitReaper(t, ct.reaper)
}

// waitReady waits for the payload's ready file and returns the set's id
// and the child's pid in the container.
func (rr *runcRig) waitReady(t *testing.T, b *bundle) (set, child int) {
	t.Helper()
	ready := filepath.Join(b.dir, "rootfs", "ready")
	for i := 0; ; i++ {
		text, err := os.ReadFile(ready)
		if err == nil {
			if _, err := fmt.Sscanf(string(text), "set %d\nchild %d\n", &set, &child); err != nil {
				t.Fatalf("ready file %q: %v", text, err)
			}
			return set, child
		}
		if e, err := os.ReadFile(ready + ".err"); err == nil {
			t.Fatalf("payload failed: %s", e)
		}
		if i == 2000 {
			t.Fatalf("the payload wrote no %s within 10 s", ready)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// hostPID returns the host pid of the descendant of init whose pid in the
// container's PID namespace is vpid.
func hostPID(t *testing.T, init, vpid int) int {
	t.Helper()
	pid := innermost(t, init)[vpid]
	if pid == 0 {
		t.Fatalf("no descendant of pid %d has pid %d in the container", init, vpid)
	}
	return pid
}

// countScriptRuns counts how often CRIU's log shows the action script
// starting for action (CRIU logs the script's path after "Running ACTION
// scripts", once per run).
func countScriptRuns(log, action string) int {
	n := 0
	lines := strings.Split(log, "\n")
	for i, l := range lines {
		if !strings.HasSuffix(l, "Running "+action+" scripts") {
			continue
		}
		for _, m := range lines[i+1:] {
			if strings.Contains(m, "Running ") && strings.HasSuffix(m, " scripts") {
				break
			}
			if strings.HasSuffix(strings.TrimSpace(m), "]") && strings.Contains(m, "\t[/") {
				n++
			}
		}
	}
	return n
}

func readLog(path string) string {
	b, err := os.ReadFile(path)
	if err != nil {
		return fmt.Sprintf("(%v)", err)
	}
	return string(b)
}
