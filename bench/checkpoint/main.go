// Command checkpoint measures semundo's checkpoint and restore (issue 4):
// capturing and restoring 32,000 sets (SEMMNI) of 16 semaphores, and
// capturing the undo lists of 10,000 processes, each next to its floor
// measured in the same run: IPC_STAT and GETALL of every set, nothing
// written. Run it as root from the repository's root:
//
//	go run ./bench/checkpoint
//
// Each part runs in a fresh IPC namespace of its own (a re-exec of this
// program with CLONE_NEWIPC), so the machine's sets are neither counted nor
// touched, and everything is gone when the part's process exits.
package main

import (
	"bufio"
	"encoding/json"
	"flag"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime/pprof"
	"strconv"
	"syscall"
	"time"

	"github.com/semundo/semundo/checkpoint"
	"github.com/semundo/semundo/image"
	"github.com/semundo/semundo/reader"
	"github.com/semundo/semundo/sysvsem"
	"golang.org/x/sys/unix"
)

// result is what a part reports, in milliseconds.
type result map[string]float64

func main() {
	sets := flag.Int("sets", 32000, "sets to create")
	nsems := flag.Int("nsems", 16, "semaphores per set")
	procs := flag.Int("procs", 10000, "processes holding lists")
	flag.Parse()
	if role := os.Getenv("SEMUNDO_BENCH_ROLE"); role != "" {
		if err := part(role, *sets, *nsems, *procs); err != nil {
			fmt.Fprintln(os.Stderr, "bench:", err)
			os.Exit(1)
		}
		return
	}
	dir, err := os.MkdirTemp("", "semundo-bench")
	if err != nil {
		fail(err)
	}
	defer os.RemoveAll(dir)
	all := result{}
	for _, role := range []string{"sets", "restore", "lists"} {
		r, err := runPart(role, dir, os.Args[1:])
		if err != nil {
			fail(fmt.Errorf("%s: %w", role, err))
		}
		for k, v := range r {
			all[k] = v
		}
	}
	fmt.Printf("sets: %d of %d semaphores; lists: %d processes x 2 entries\n", *sets, *nsems, *procs)
	fmt.Printf("%-44s %10s\n", "measure", "ms")
	for _, k := range []string{"floor-stat-getall", "checkpoint-sets", "checkpoint-sets-written", "restore-sets",
		"floor-lists-stat-getall", "scan-lists", "checkpoint-lists", "checkpoint-lists-written"} {
		fmt.Printf("%-44s %10.1f\n", k, all[k])
	}
	fmt.Printf("%-44s %10.2f\n", "checkpoint-sets / floor (target <= 2)", all["checkpoint-sets"]/all["floor-stat-getall"])
	fmt.Printf("%-44s %10.2f\n", "checkpoint-sets-written / floor", all["checkpoint-sets-written"]/all["floor-stat-getall"])
	fmt.Printf("%-44s %10.2f\n", "restore-sets seconds (target <= 2)", all["restore-sets"]/1000)
}

func fail(err error) {
	fmt.Fprintln(os.Stderr, "bench:", err)
	os.Exit(1)
}

// runPart re-executes this program in a new IPC namespace for one part.
func runPart(role, dir string, args []string) (result, error) {
	cmd := exec.Command("/proc/self/exe", args...)
	cmd.Env = append(os.Environ(), "SEMUNDO_BENCH_ROLE="+role, "SEMUNDO_BENCH_DIR="+dir)
	cmd.SysProcAttr = &syscall.SysProcAttr{Cloneflags: syscall.CLONE_NEWIPC}
	cmd.Stderr = os.Stderr
	out, err := cmd.Output()
	if err != nil {
		return nil, err
	}
	var r result
	return r, json.Unmarshal(out, &r)
}

func ms(d time.Duration) float64 { return float64(d.Microseconds()) / 1000 }

// part runs one part inside its namespace and prints its result as JSON.
func part(role string, nsets, nsems, nprocs int) error {
	dir := os.Getenv("SEMUNDO_BENCH_DIR")
	if prof := os.Getenv("SEMUNDO_BENCH_CPUPROFILE"); prof != "" && role == "sets" {
		f, err := os.Create(prof)
		if err != nil {
			return err
		}
		pprof.StartCPUProfile(f)
		defer pprof.StopCPUProfile()
	}
	img := filepath.Join(dir, "sets.json")
	res := result{}
	switch role {
	case "sets":
		if _, err := makeSets(nsets, nsems); err != nil {
			return err
		}
		res["floor-stat-getall"] = floor()
		// The checkpointed process: one that holds no list.
		c, w, err := capture(img)
		if err != nil {
			return err
		}
		res["checkpoint-sets"], res["checkpoint-sets-written"] = c, w
	case "restore":
		im, err := image.ReadFile(img)
		if err != nil {
			return err
		}
		t0 := time.Now()
		if err := checkpoint.RestoreSets(im); err != nil {
			return err
		}
		res["restore-sets"] = ms(time.Since(t0))
		got, err := sysvsem.Enumerate()
		if err != nil {
			return err
		}
		if len(got) != len(im.Sets) {
			return fmt.Errorf("restored %d sets, the image has %d", len(got), len(im.Sets))
		}
	case "lists":
		ids, err := makeSets(2, 8)
		if err != nil {
			return err
		}
		pids, stop, err := holdMany(dir, nprocs, ids)
		if err != nil {
			return err
		}
		defer stop()
		res["floor-lists-stat-getall"] = floor()
		r, err := reader.Open(nil)
		if err != nil {
			return err
		}
		t0 := time.Now()
		if _, err := r.Scan(); err != nil {
			return err
		}
		res["scan-lists"] = ms(time.Since(t0))
		r.Close()
		c, w, err := capture(filepath.Join(dir, "lists.json"), pids...)
		if err != nil {
			return err
		}
		res["checkpoint-lists"], res["checkpoint-lists-written"] = c, w
	}
	return json.NewEncoder(os.Stdout).Encode(res)
}

// makeSets creates n sets of nsems semaphores with values set.
func makeSets(n, nsems int) ([]int, error) {
	vals := make([]uint16, nsems)
	var ids []int
	for i := 0; i < n; i++ {
		id, err := sysvsem.Get(sysvsem.Private, nsems, unix.IPC_CREAT|0o600)
		if err != nil {
			return nil, fmt.Errorf("create set %d: %w", i, err)
		}
		for j := range vals {
			vals[j] = uint16((i + j) % 100)
		}
		if err := sysvsem.SetAll(id, vals); err != nil {
			return nil, err
		}
		ids = append(ids, id)
	}
	return ids, nil
}

// floor reads every set with IPC_STAT and GETALL and writes nothing.
func floor() float64 {
	t0 := time.Now()
	_, maxIdx, err := sysvsem.SemInfo()
	if err != nil {
		fail(err)
	}
	buf := make([]uint16, 65536)
	for i := 0; i <= maxIdx; i++ {
		id, ds, err := sysvsem.StatAnyIndex(i)
		if err != nil {
			continue
		}
		_, _, errno := unix.Syscall6(unix.SYS_SEMCTL, uintptr(id), 0, sysvsem.CmdGetAll, uintptr(unsafePointer(buf)), 0, 0)
		if errno != 0 || ds.Nsems > len(buf) {
			fail(fmt.Errorf("GETALL %d: %v", id, errno))
		}
	}
	return ms(time.Since(t0))
}

// capture checkpoints pids (or a fresh sleep process) into path and
// returns the time to capture and the time to capture and write the image.
func capture(path string, pids ...int) (float64, float64, error) {
	if len(pids) == 0 {
		sleep := exec.Command("sleep", "600")
		if err := sleep.Start(); err != nil {
			return 0, 0, err
		}
		defer func() { sleep.Process.Kill(); sleep.Wait() }()
		pids = []int{sleep.Process.Pid}
	}
	r, err := reader.Open(nil)
	if err != nil {
		return 0, 0, err
	}
	defer r.Close()
	t0 := time.Now()
	im, err := checkpoint.Capture(r, checkpoint.CaptureOptions{PIDs: pids, Version: "bench"})
	if err != nil {
		return 0, 0, err
	}
	captured := time.Since(t0)
	if err := image.WriteFile(path, im); err != nil {
		return 0, 0, err
	}
	return ms(captured), ms(time.Since(t0)), nil
}

// holdMany forks n processes that each take +1 with SEM_UNDO on semaphore
// 0 of each set (reader/testdata/holdmany.c, compiled with gcc).
func holdMany(dir string, n int, ids []int) ([]int, func(), error) {
	bin := filepath.Join(dir, "holdmany")
	if out, err := exec.Command("gcc", "-O1", "-o", bin, "reader/testdata/holdmany.c").CombinedOutput(); err != nil {
		return nil, nil, fmt.Errorf("gcc (run from the repository root): %v: %s", err, out)
	}
	args := []string{strconv.Itoa(n)}
	for _, id := range ids {
		args = append(args, fmt.Sprintf("%d:0:1", id))
	}
	cmd := exec.Command(bin, args...)
	cmd.Stderr = os.Stderr
	stdin, _ := cmd.StdinPipe()
	stdout, _ := cmd.StdoutPipe()
	if err := cmd.Start(); err != nil {
		return nil, nil, err
	}
	stop := func() { stdin.Close(); cmd.Wait() }
	sc := bufio.NewScanner(stdout)
	if !sc.Scan() || sc.Text() != "ready" {
		stop()
		return nil, nil, fmt.Errorf("holdmany: %q", sc.Text())
	}
	var pids []int
	for len(pids) < n && sc.Scan() {
		pid, _ := strconv.Atoi(sc.Text())
		pids = append(pids, pid)
	}
	return pids, stop, nil
}
