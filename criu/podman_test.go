package criu

import (
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/semundo/semundo/internal/testenv"
	"golang.org/x/sys/unix"
)

// TestPodman checks the Podman path of docs/criu.md for real: Podman
// checkpoints and restores through runc, which drives CRIU over RPC, so the
// action script and leave-stopped reach CRIU only through the CRIU
// configuration file named by the container's org.criu.config annotation
// (podman run --annotation). The container runs TestRunc's payload: its
// pid 1 made a set and its child holds +1 on it with SEM_UNDO. After
// podman container checkpoint --keep and podman container restore --keep,
// killing the restored child must bring the value back to 0. The control,
// the same container with a configuration file that names no action
// script (Podman, runc and CRIU alone), leaves it at 1.
//
// Podman keeps all its state in the test's directory: its own storage
// (vfs, so no mounts), run root, tmpdir, network configuration directory
// and runc state directory (--runtime-flag root=), the payload as the
// container's --rootfs (no image), --network none (a network namespace
// with nothing to configure; CRIU still locks it with iptables-restore),
// --ipc none (the container's own IPC namespace, without the host-side
// /dev/shm mount Podman makes otherwise), and a cgroup parent of its own,
// removed at the end.
//
// Podman checks CRIU's version itself (over RPC) and runc finds CRIU by
// PATH (Podman passes no --criu), so the podman commands run with a
// directory holding a link named criu first in PATH; conmon, which runs
// runc restore, inherits podman's PATH. It does not inherit the rest of
// the environment, so the action script gets the state directory from its
// wrapper instead of from podman's environment.
func TestPodman(t *testing.T) {
	pr := newPodmanRig(t)
	r := openReader(t)
	for _, withSemundo := range []bool{true, false} {
		name, want := "semundo", "0"
		if !withSemundo {
			name, want = "podman alone (control)", "1"
		}
		t.Run(name, func(t *testing.T) {
			pc := pr.container(t, withSemundo)
			pr.run(t, pc)
			set, vchild := pr.waitReady(t, pc.bundle)
			st := pr.inspect(t, pc)
			if st.Status != "running" {
				t.Fatalf("container %s is %s, want running", pc.id, st.Status)
			}
			init := st.PID
			child := hostPID(t, init, vchild)
			pr.checkHolding(t, r, init, child, set)

			// --keep keeps CRIU's logs (and, at restore, the images).
			out, err := pr.podman(t, "container", "checkpoint", "--keep", pc.id).CombinedOutput()
			st = pr.inspect(t, pc)
			dumpLog := readLog(st.CheckpointLog)
			if err != nil {
				t.Fatalf("podman container checkpoint: %v\n%s\ndump.log:\n%s", err, out, tail(dumpLog, 40))
			}
			// With leave-stopped CRIU leaves the tasks stopped and runc
			// keeps the container ("container still running", exit 0), but
			// Podman then deletes it through runc as after any checkpoint:
			// the container is checkpointed and its tasks are gone either
			// way.
			if st.Status != "exited" || !st.Checkpointed {
				t.Fatalf("after the checkpoint the container is %s (checkpointed %v), want exited and checkpointed\n%s", st.Status, st.Checkpointed, out)
			}
			for _, p := range []int{init, child} {
				waitState(t, p, stateGone)
			}
			checkDumped(t, st.CheckpointPath, dumpLog, init, withSemundo)
			if withSemundo {
				t.Logf("podman container checkpoint said: %s", strings.TrimSpace(string(out)))
			}

			pr.restore(t, pc)
			st = pr.inspect(t, pc)
			restoreLog := readLog(st.RestoreLog)
			if st.Status != "running" || !st.Restored {
				t.Fatalf("after the restore the container is %s (restored %v), want running and restored\nrestore.log:\n%s", st.Status, st.Restored, tail(restoreLog, 40))
			}
			init = st.PID
			child = hostPID(t, init, vchild)
			pr.checkRestored(t, r, restoreLog, init, child, set, withSemundo, want)
		})
	}
}

// podmanRig is the runc rig plus Podman, with every piece of Podman's
// state under the rig's directory.
type podmanRig struct {
	*runcRig
	podmanBin string
	global    []string // podman's global flags
	path      string   // PATH for podman: CRIU's link first
	wrapper   string   // runs the rig's action script with the state directory
	cgroup    string   // the containers' cgroup parent
}

func newPodmanRig(t *testing.T) *podmanRig {
	t.Helper()
	rr := newRuncRig(t)
	pr := &podmanRig{
		runcRig:   rr,
		podmanBin: testenv.RequireTool(t, "podman"),
	}
	// Podman finds conmon itself; under CI its absence must fail here,
	// not as a podman error.
	testenv.RequireTool(t, "conmon")

	// Podman looks up criu in PATH (and checks its version), and so does
	// runc under podman.
	bin := filepath.Join(rr.dir, "podman-bin")
	if err := os.MkdirAll(bin, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink(rr.criu, filepath.Join(bin, "criu")); err != nil {
		t.Fatal(err)
	}
	pr.path = bin + string(os.PathListSeparator) + os.Getenv("PATH")

	// conmon runs runc restore with a fixed environment (PATH, HOME, ...),
	// so SEMUNDO_CRIU_STATE_DIR set for podman would reach the script at
	// the dump but not at the restore: the wrapper sets it.
	pr.wrapper = filepath.Join(rr.dir, "podman-criu-script")
	text := "#!/bin/sh\nexport " + EnvStateDir + "=" + shellQuote(rr.state) + "\nexec " + shellQuote(rr.script) + "\n"
	if err := os.WriteFile(pr.wrapper, []byte(text), 0o755); err != nil {
		t.Fatal(err)
	}

	root := filepath.Join(rr.dir, "podman")
	pr.cgroup = fmt.Sprintf("/semundo-test-podman-%d", os.Getpid())
	pr.global = []string{
		"--root", filepath.Join(root, "root"),
		"--runroot", filepath.Join(root, "runroot"),
		"--tmpdir", filepath.Join(root, "tmp"),
		"--network-config-dir", filepath.Join(root, "net"),
		"--storage-driver", "vfs",
		"--events-backend", "file",
		"--cgroup-manager", "cgroupfs",
		"--runtime", rr.bin,
		"--runtime-flag", "root=" + rr.root,
	}
	// Registered after the rig's temporary directory, so it runs before
	// that is removed, and after every container's own cleanup.
	t.Cleanup(func() { pr.cleanup(t, root) })
	return pr
}

// podman returns a podman command with the rig's global flags and PATH,
// to be run within testenv.WaitLimit().
func (pr *podmanRig) podman(tb testing.TB, args ...string) *testenv.Cmd {
	argv := pr.podmanArgs(args...)
	cmd := testenv.Command(tb, "podman "+strings.Join(args, " "), argv[0], argv[1:]...)
	cmd.Env = append(os.Environ(), "PATH="+pr.path)
	return cmd
}

// podmanArgs returns podman's command line with the rig's global flags.
func (pr *podmanRig) podmanArgs(args ...string) []string {
	return append(append([]string{pr.podmanBin}, pr.global...), args...)
}

// podmanContainer is one container: its directory (rootfs, CRIU
// configuration file) and name.
type podmanContainer struct {
	*bundle
	conf string // the CRIU configuration file of the annotation
}

// container prepares a container's rootfs and CRIU configuration file.
func (pr *podmanRig) container(t *testing.T, semundo bool) *podmanContainer {
	t.Helper()
	pr.n++
	pc := &podmanContainer{bundle: &bundle{
		dir: filepath.Join(pr.dir, fmt.Sprintf("podman%d", pr.n)),
		id:  fmt.Sprintf("semundo-test-%d-%d", os.Getpid(), pr.n),
	}}
	rootfs := filepath.Join(pc.dir, "rootfs")
	if err := os.MkdirAll(rootfs, 0o755); err != nil {
		t.Fatal(err)
	}
	exe, err := os.ReadFile(pr.payload)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(rootfs, "payload"), exe, 0o755); err != nil {
		t.Fatal(err)
	}
	// A missing file would mean /etc/criu/runc.conf to runc: the control
	// gets a file too, naming nothing.
	pc.conf = filepath.Join(pc.dir, "criu.conf")
	text := "# podman, runc and CRIU alone\n"
	if semundo {
		text = "action-script " + pr.wrapper + "\nleave-stopped\n"
	}
	if err := os.WriteFile(pc.conf, []byte(text), 0o644); err != nil {
		t.Fatal(err)
	}
	return pc
}

// run starts the container with podman run -d under a reaper.
func (pr *podmanRig) run(t *testing.T, pc *podmanContainer) {
	t.Helper()
	args := []string{"run", "-d", "--name", pc.id,
		"--network", "none", "--ipc", "none",
		"--cgroup-parent", pr.cgroup,
		"--annotation", "org.criu.config=" + pc.conf,
	}
	args = append(args, ulimitFlags()...)
	args = append(args, "--rootfs", filepath.Join(pc.dir, "rootfs"), "/payload", "/ready")
	if status, out := pr.detached(t, pc, args...); status != 0 {
		t.Fatalf("podman run: exit %d\n%s", status, out)
	}
}

// restore restores the checkpointed container in place with podman
// container restore --keep under a reaper.
func (pr *podmanRig) restore(t *testing.T, pc *podmanContainer) {
	t.Helper()
	if status, out := pr.detached(t, pc, "container", "restore", "--keep", pc.id); status != 0 {
		st := pr.inspect(t, pc)
		t.Fatalf("podman container restore: exit %d\n%s\nrestore.log:\n%s", status, out, tail(readLog(st.RestoreLog), 40))
	}
}

// ulimitFlags sets the container's nofile and nproc limits low: Podman's
// defaults for root are higher than the hard limits here (nofile 20000,
// and podman lowers its own nproc to 32768), and runc then fails to set
// them ("error setting rlimits for ready process: ... operation not
// permitted") where root lacks CAP_SYS_RESOURCE, as on this machine. The
// payload needs a handful of descriptors, and nproc does not bind root.
func ulimitFlags() []string {
	return []string{"--ulimit", "nofile=1024:1024", "--ulimit", "nproc=1024:1024"}
}

// detached runs podman with args under tree.c's reaper, which conmon
// (double-forked by podman) is reparented to, and returns podman's exit
// status and output. Cleanup removes the container and waits until the
// reaper has reaped conmon and the container's processes.
func (pr *podmanRig) detached(t *testing.T, pc *podmanContainer, args ...string) (int, string) {
	t.Helper()
	outFile := filepath.Join(pc.dir, fmt.Sprintf("podman-%s-%d.out", args[0], time.Now().UnixNano()))
	reaper, status := startReaper(t, pr.tree, append([]string{"reaper", outFile}, pr.podmanArgs(args...)...), "PATH="+pr.path)
	t.Cleanup(func() {
		pr.remove(t, pc.id)
		killDescendants(reaper.Process.Pid)
		waitReaper(t, reaper)
	})
	n, err := reaperStatus(status, reaper, "podman "+args[0]+" "+pc.id)
	out := readLog(outFile)
	if err != nil {
		t.Fatalf("%v\n%s", err, out)
	}
	return n, out
}

// remove removes the container id (or all, for "-a"), killing it; it
// reports only a podman that hung, since the container may be gone.
func (pr *podmanRig) remove(t *testing.T, id string) {
	if err := pr.podman(t, "rm", "-f", "-t", "0", id).Run(); errors.Is(err, testenv.ErrDeadline) {
		t.Error(err)
	}
}

// podmanState is the part of podman inspect's State the test reads.
type podmanState struct {
	Status         string
	PID            int `json:"Pid"`
	Checkpointed   bool
	Restored       bool
	CheckpointPath string
	CheckpointLog  string
	RestoreLog     string
}

func (pr *podmanRig) inspect(t *testing.T, pc *podmanContainer) podmanState {
	t.Helper()
	out, err := pr.podman(t, "inspect", "--format", "{{json .State}}", pc.id).Output()
	if err != nil {
		t.Fatalf("podman inspect %s: %v", pc.id, err)
	}
	var st podmanState
	if err := json.Unmarshal(out, &st); err != nil {
		t.Fatalf("podman inspect %s: %q: %v", pc.id, out, err)
	}
	return st
}

// cleanup removes what Podman may leave outside the rig's directory (the
// cgroup parent, in every hierarchy) and unmounts anything left mounted
// inside it, so the directory can be removed.
func (pr *podmanRig) cleanup(t *testing.T, root string) {
	pr.remove(t, "-a")
	mounts, err := os.ReadFile("/proc/self/mountinfo")
	if err != nil {
		t.Errorf("read mountinfo: %v", err)
		return
	}
	var left, cgroups []string
	for line := range strings.SplitSeq(string(mounts), "\n") {
		f := strings.Fields(line)
		sep := slices.Index(f, "-")
		if len(f) < 5 || sep < 0 || sep+1 >= len(f) {
			continue
		}
		mp := unescapeMount(f[4])
		if strings.HasPrefix(mp, root+"/") {
			left = append(left, mp)
		}
		if fstype := f[sep+1]; fstype == "cgroup" || fstype == "cgroup2" {
			cgroups = append(cgroups, filepath.Join(mp, pr.cgroup))
		}
	}
	// Deepest first.
	slices.SortFunc(left, func(a, b string) int { return len(b) - len(a) })
	for _, mp := range left {
		t.Logf("podman left %s mounted: unmounting it", mp)
		if err := unix.Unmount(mp, unix.MNT_DETACH); err != nil {
			t.Errorf("unmount %s: %v", mp, err)
		}
	}
	for _, cg := range cgroups {
		var dirs []string
		filepath.WalkDir(cg, func(p string, d fs.DirEntry, err error) error {
			if err == nil && d.IsDir() {
				dirs = append(dirs, p)
			}
			return nil
		})
		for _, d := range slices.Backward(dirs) {
			if err := os.Remove(d); err != nil && !os.IsNotExist(err) {
				t.Errorf("remove cgroup %s: %v", d, err)
			}
		}
	}
}

// unescapeMount undoes mountinfo's octal escapes (\040 for a space).
func unescapeMount(s string) string {
	if !strings.Contains(s, `\`) {
		return s
	}
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		if s[i] == '\\' && i+3 < len(s) {
			if n, err := strconv.ParseUint(s[i+1:i+4], 8, 8); err == nil {
				b.WriteByte(byte(n))
				i += 3
				continue
			}
		}
		b.WriteByte(s[i])
	}
	return b.String()
}

// shellQuote quotes s for sh.
func shellQuote(s string) string {
	return "'" + strings.ReplaceAll(s, "'", `'\''`) + "'"
}
