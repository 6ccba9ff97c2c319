package criu

import (
	"bytes"
	"encoding/binary"
	"errors"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/semundo/semundo/image"
	"github.com/semundo/semundo/internal/procfs"

	"github.com/semundo/semundo/reader"
	"github.com/semundo/semundo/undo"
)

func lookupIn(m map[string]string) func(string) (string, bool) {
	return func(k string) (string, bool) { v, ok := m[k]; return v, ok }
}

func TestParseEnv(t *testing.T) {
	e, err := ParseEnv(lookupIn(map[string]string{
		EnvAction: "post-dump", EnvImageDir: "/proc/12/fd/3", EnvInitPID: "77",
		EnvAllowRunning: "1", EnvStateDir: "/tmp/x",
	}))
	if err != nil {
		t.Fatal(err)
	}
	want := Env{Action: "post-dump", ImageDir: "/proc/12/fd/3", InitPID: 77, AllowRunning: true, StateDir: "/tmp/x"}
	if e != want {
		t.Errorf("got %+v, want %+v", e, want)
	}
	if e, err := ParseEnv(lookupIn(nil)); err != nil || e != (Env{}) {
		t.Errorf("empty environment: %+v, %v", e, err)
	}
	for _, bad := range []map[string]string{
		{EnvInitPID: "x"}, {EnvInitPID: "-3"}, {EnvInitPID: "0"}, {EnvAllowRunning: "maybe"}, {EnvHelper: "maybe"},
	} {
		if _, err := ParseEnv(lookupIn(bad)); !errors.Is(err, ErrEnv) {
			t.Errorf("%v: error %v, want ErrEnv", bad, err)
		}
	}
	for _, v := range []string{"0", "", "false", "no"} {
		if e, err := ParseEnv(lookupIn(map[string]string{EnvAllowRunning: v})); err != nil || e.AllowRunning {
			t.Errorf("%s=%q: %+v, %v", EnvAllowRunning, v, e, err)
		}
	}
	for v, no := range map[string]bool{"0": true, "false": true, "no": true, "": false, "1": false, "yes": false} {
		if e, err := ParseEnv(lookupIn(map[string]string{EnvHelper: v})); err != nil || e.NoHelper != no {
			t.Errorf("%s=%q: %+v, %v; want NoHelper %v", EnvHelper, v, e, err, no)
		}
	}
}

// TestRunQuiet: the actions the companion does not act on, and a restore
// of a dump taken without it, exit 0 without a word.
func TestRunQuiet(t *testing.T) {
	var log bytes.Buffer
	opts := &Options{Log: &log, OpenReader: func() (*reader.Reader, error) {
		t.Fatal("the reader was opened")
		return nil, nil
	}}
	dir := t.TempDir()
	state := t.TempDir()
	// This process stands in for CRIU: its pid is in the directory's path.
	imgDir := "/proc/" + strconv.Itoa(os.Getpid()) + "/cwd" // any path under /proc/PID/
	for _, a := range []string{"pre-dump", "network-lock", "network-unlock", "setup-namespaces",
		"post-setup-namespaces", "post-restore", "pre-resume", "orphan-pts-master", "status-ready", "", "bogus"} {
		if err := Run(Env{Action: a, ImageDir: imgDir, StateDir: state}, opts); err != nil {
			t.Errorf("action %q: %v", a, err)
		}
	}
	// pre-restore of images without ImageFile, then post-resume.
	env := Env{Action: ActionPreRestore, ImageDir: "/proc/" + strconv.Itoa(os.Getpid()) + "/root" + dir, StateDir: state}
	if err := Run(env, opts); err != nil {
		t.Errorf("pre-restore without a semundo image: %v", err)
	}
	env.Action, env.InitPID = ActionPostResume, os.Getpid()
	if err := Run(env, opts); err != nil {
		t.Errorf("post-resume without a semundo image: %v", err)
	}
	if log.Len() != 0 {
		t.Errorf("said %q", log.String())
	}
	if ents, _ := os.ReadDir(state); len(ents) != 0 {
		t.Errorf("state directory holds %d entries", len(ents))
	}
	// post-dump and pre-restore need CRIU's variables.
	for _, e := range []Env{{Action: ActionPostDump, ImageDir: dir}, {Action: ActionPostDump, InitPID: 1}, {Action: ActionPreRestore}} {
		if err := Run(e, opts); !errors.Is(err, ErrEnv) {
			t.Errorf("%+v: %v, want ErrEnv", e, err)
		}
	}
}

// TestPrepareRestoreChecks: pre-restore refuses an image without its tree
// file, or a broken one, before CRIU creates any task.
func TestPrepareRestoreChecks(t *testing.T) {
	dir, state := t.TempDir(), t.TempDir()
	handoff := filepath.Join(state, "criu-2147483646-1") // no such pid: stale
	img := `{"format":"semundo/1","created":"2026-01-01T00:00:00Z","kernel_release":"6.18","hostname":"h","semundo_version":"t","ipcns":1,` +
		`"limits":{"semmsl":1,"semmns":1,"semopm":1,"semmni":1},"sets":[{"id":0,"key":0,"uid":0,"gid":0,"cuid":0,"cgid":0,"mode":384,"nsems":1,"otime":0,"ctime":0,"values":[1],"sempids":[]}],` +
		`"lists":[{"processes":[{"pid":20,"comm":"c","stopped":false,"tids":[20]}],"entries":[{"semid":0,"adj":[-1]}]}]}`
	write := func(name, s string) {
		if err := os.WriteFile(filepath.Join(dir, name), []byte(s), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	write(ImageFile, img)
	if ok, err := PrepareRestore(dir, handoff); ok || !errors.Is(err, ErrCorrupt) {
		t.Errorf("without %s: %v, %v; want ErrCorrupt", TreeFile, ok, err)
	}
	write(TreeFile, `{"format":"semundo-criu-tree/1","root":10,"tasks":[{"pid":10,"vpid":1,"stopped":false}]}`)
	if ok, err := PrepareRestore(dir, handoff); ok || !errors.Is(err, ErrCorrupt) {
		t.Errorf("image names a pid the tree lacks: %v, %v; want ErrCorrupt", ok, err)
	}
	tree := `{"format":"semundo-criu-tree/1","root":10,"tasks":[{"pid":10,"vpid":1,"stopped":false},{"pid":20,"vpid":2,"stopped":true}]}`
	write(TreeFile, tree)
	ok, err := PrepareRestore(dir, handoff)
	if !ok || err != nil {
		t.Fatalf("valid files: %v, %v", ok, err)
	}
	for name, want := range map[string]string{ImageFile: img, TreeFile: tree} {
		b, err := os.ReadFile(filepath.Join(handoff, name))
		if err != nil || string(b) != want {
			t.Errorf("handoff %s: %q, %v", name, b, err)
		}
	}
	if st, err := os.Stat(handoff); err != nil || st.Mode().Perm() != 0o700 {
		t.Errorf("handoff directory: %v, %v", st, err)
	}
	// A directory of a CRIU process that is gone is removed by the next
	// pre-restore.
	write(ImageFile, "{")
	if _, err := PrepareRestore(dir, filepath.Join(state, "criu-2-2")); err == nil {
		t.Error("a malformed image passed")
	}
	if _, err := os.Stat(handoff); !os.IsNotExist(err) {
		t.Errorf("stale handoff directory still there: %v", err)
	}
}

func TestDecodeTree(t *testing.T) {
	good := `{"format":"semundo-criu-tree/1","root":5,"tasks":[{"pid":5,"vpid":1,"stopped":false},{"pid":6,"vpid":2,"stopped":true}]}`
	tr, err := decodeTree([]byte(good))
	if err != nil || tr.Root != 5 || len(tr.Tasks) != 2 || !tr.Tasks[1].Stopped {
		t.Fatalf("%+v, %v", tr, err)
	}
	for _, bad := range []string{
		``, `{`, `null`, good + `{}`,
		strings.Replace(good, "tree/1", "tree/2", 1),
		strings.Replace(good, `"root":5`, `"root":6`, 1),
		strings.Replace(good, `"vpid":2`, `"vpid":1`, 1),
		strings.Replace(good, `"pid":6`, `"pid":5`, 1),
		strings.Replace(good, `"pid":6`, `"pid":-6`, 1),
		strings.Replace(good, `"stopped":true`, `"stopped":true,"x":1`, 1),
		`{"format":"semundo-criu-tree/1","root":5,"tasks":[]}`,
	} {
		if _, err := decodeTree([]byte(bad)); !errors.Is(err, ErrCorrupt) {
			t.Errorf("%q: %v, want ErrCorrupt", bad, err)
		}
	}
}

// coreImage builds a CRIU core image holding task_state, behind fields
// that come before it in a real one.
func coreImage(state uint64) []byte {
	var tc []byte
	tc = binary.AppendUvarint(tc, 1<<3|0)
	tc = binary.AppendUvarint(tc, state)
	tc = append(tc, 2<<3|0, 0)                     // exit_code
	tc = append(tc, 6<<3|2, 4, 't', 'r', 'e', 'e') // comm
	var msg []byte
	msg = append(msg, 1<<3|0, 1)          // mtype
	msg = append(msg, 2<<3|2, 3, 1, 2, 3) // thread_info, skipped
	msg = append(msg, 9<<3|1, 0, 0, 0, 0, 0, 0, 0, 0)
	msg = append(msg, 10<<3|5, 0, 0, 0, 0)
	msg = append(msg, 3<<3|2)
	msg = binary.AppendUvarint(msg, uint64(len(tc)))
	msg = append(msg, tc...)
	b := binary.NativeEndian.AppendUint32(nil, imgCommonMagic)
	b = binary.NativeEndian.AppendUint32(b, coreMagic)
	b = binary.NativeEndian.AppendUint32(b, uint32(len(msg)))
	return append(b, msg...)
}

func TestCoreTaskState(t *testing.T) {
	for _, st := range []uint64{1, 3, 6, 300} {
		got, err := coreTaskState(coreImage(st))
		if err != nil || got != st {
			t.Errorf("state %d: got %d, %v", st, got, err)
		}
	}
	dir := t.TempDir()
	os.WriteFile(filepath.Join(dir, "core-7.img"), coreImage(taskStopped), 0o600)
	os.WriteFile(filepath.Join(dir, "core-8.img"), coreImage(1), 0o600)
	if s, err := stoppedAtDump(dir, 7); !s || err != nil {
		t.Errorf("core-7: %v, %v", s, err)
	}
	if s, err := stoppedAtDump(dir, 8); s || err != nil {
		t.Errorf("core-8: %v, %v", s, err)
	}
	if _, err := stoppedAtDump(dir, 9); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("missing core image: %v", err)
	}
	full := coreImage(3)
	for i := 0; i < len(full); i++ {
		if _, err := coreTaskState(full[:i]); err == nil {
			t.Errorf("cut at %d of %d: no error", i, len(full))
		}
	}
	bad := append([]byte(nil), full...)
	bad[4] ^= 1
	if _, err := coreTaskState(bad); err == nil {
		t.Error("wrong magic accepted")
	}
}

func FuzzCoreTaskState(f *testing.F) {
	f.Add(coreImage(3))
	f.Add(coreImage(1))
	f.Fuzz(func(t *testing.T, b []byte) {
		coreTaskState(b) // must not panic
	})
}

func TestSum(t *testing.T) {
	cur := undo.List{{Semid: 1, Adj: []int16{5, -1}}, {Semid: 9, Adj: []int16{7}}}
	saved := undo.List{{Semid: 1, Adj: []int16{-2, -1}}, {Semid: 3, Adj: []int16{4}}}
	got, err := sum(cur, saved)
	want := undo.List{{Semid: 1, Adj: []int16{3, -2}}, {Semid: 3, Adj: []int16{4}}}
	if err != nil || !got.Equal(want) {
		t.Errorf("got %v, %v; want %v", got, err, want)
	}
	if _, err := sum(undo.List{{Semid: 1, Adj: []int16{32000}}}, undo.List{{Semid: 1, Adj: []int16{1000}}}); err == nil {
		t.Error("overflow accepted")
	}
	if _, err := sum(undo.List{{Semid: 1, Adj: []int16{1, 2}}}, undo.List{{Semid: 1, Adj: []int16{1}}}); err == nil {
		t.Error("size change accepted")
	}
}

func TestCheckSharing(t *testing.T) {
	snap := &reader.Snapshot{Lists: []reader.List{
		{Processes: []reader.Process{{PID: 10, TIDs: []int{10, 11}}}},
		{Processes: []reader.Process{{PID: 12, TIDs: []int{12}}, {PID: 99, Comm: "outer", TIDs: []int{99}}}},
		{Processes: []reader.Process{{PID: 13, TIDs: []int{13}}, {PID: 14, TIDs: []int{14}}}},
	}}
	in := func(pids ...int) map[int]bool {
		m := map[int]bool{}
		for _, p := range pids {
			m[p] = true
		}
		return m
	}
	if err := checkSharing(snap, []int{10, 20}, in(10, 20), 10); err != nil {
		t.Errorf("threads of one process: %v", err)
	}
	err := checkSharing(snap, []int{10, 12}, in(10, 12), 10)
	if !errors.Is(err, ErrShared) || !strings.Contains(err.Error(), "shared with pid 99 (outer)") {
		t.Errorf("shared outside: %v", err)
	}
	if err := checkSharing(snap, []int{13, 14}, in(13, 14), 13); !errors.Is(err, ErrSharedInTree) {
		t.Errorf("shared inside: %v", err)
	}
}

func TestHandoffDir(t *testing.T) {
	me := os.Getpid()
	st, err := live.Stat(me)
	if err != nil {
		t.Fatal(err)
	}
	want := filepath.Join("/s", "criu-"+strconv.Itoa(me)+"-"+strconv.FormatUint(st.StartTime, 10))
	got, err := handoffDir(Env{ImageDir: "/proc/" + strconv.Itoa(me) + "/fd/3", StateDir: "/s"})
	if err != nil || got != want {
		t.Errorf("got %q, %v; want %q", got, err, want)
	}
	// Not a /proc path: CRIU is the parent.
	pst, err := live.Stat(os.Getppid())
	if err != nil {
		t.Fatal(err)
	}
	got, err = handoffDir(Env{ImageDir: "/images", StateDir: "/s"})
	want = filepath.Join("/s", "criu-"+strconv.Itoa(os.Getppid())+"-"+strconv.FormatUint(pst.StartTime, 10))
	if err != nil || got != want {
		t.Errorf("got %q, %v; want %q", got, err, want)
	}
}

// TestResumeHandedOver checks that post-resume takes the files the helper
// read at pre-restore when they are those of its handoff directory, and
// reads the directory otherwise.
func TestResumeHandedOver(t *testing.T) {
	empty := procfs.NewFS(t.TempDir()) // no process: Resume stops at the tree
	img := &image.Image{Created: time.Now().UTC(), KernelRelease: "test", SemundoVersion: "test", IPCNamespace: 1}
	tr := &tree{Format: treeFormat, Root: 4242, Tasks: []task{{PID: 4242, VPID: 4242}}}
	for _, c := range []struct {
		name     string
		sameDir  bool
		wantFile bool // the error is about the missing files
	}{{"same directory", true, false}, {"another directory", false, true}} {
		dir := filepath.Join(t.TempDir(), "handoff")
		if err := os.Mkdir(dir, 0o700); err != nil {
			t.Fatal(err)
		}
		h := &handedOver{dir: dir, img: img, tree: tr}
		if !c.sameDir {
			h.dir = dir + "-other"
		}
		_, err := Resume(4242, dir, &Options{Proc: empty, handoff: h})
		if err == nil {
			t.Fatalf("%s: Resume of a tree that does not exist succeeded", c.name)
		}
		if aboutFile := strings.Contains(err.Error(), ImageFile); aboutFile != c.wantFile {
			t.Errorf("%s: %v: about %s: %v, want %v", c.name, err, ImageFile, aboutFile, c.wantFile)
		}
		if c.sameDir && !strings.Contains(err.Error(), "4242") {
			t.Errorf("%s: %v does not name the tree's root", c.name, err)
		}
		if _, err := os.Stat(dir); !errors.Is(err, os.ErrNotExist) {
			t.Errorf("%s: the handoff directory is left: %v", c.name, err)
		}
	}
}
