package criu

import (
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"
)

// BenchmarkTree100 measures what the action script adds to criu dump and
// to criu restore of a tree of 100 processes: a root and 99 children,
// each holding +1 with SEM_UNDO on its own semaphore of a 99-semaphore
// set. Each iteration dumps and restores one such tree with CRIU alone
// (criu restore -d) and one with semundo (criu restore -d --leave-stopped
// and the action script), and reports the wall time of each criu command.
//
//	go test -run '^$' -bench BenchmarkTree100 -benchtime 5x ./criu/
func BenchmarkTree100(b *testing.B) {
	rg := newRig(b)
	rg.quiet = true
	// The script, wrapped to log how long each action took.
	times := filepath.Join(rg.dir, "times")
	wrapped := rg.script + "-timed"
	err := os.WriteFile(wrapped, []byte("#!/bin/sh\ns=$(date +%s%N)\n"+rg.script+"\nrc=$?\n"+
		"echo \"$CRTOOLS_SCRIPT_ACTION $(( $(date +%s%N) - s ))\" >>"+times+"\nexit $rc\n"), 0o755)
	if err != nil {
		b.Fatal(err)
	}
	rg.script = wrapped
	var inScript [2]time.Duration // during dump, during restore
	perAction := map[string]time.Duration{}
	kids := make([]string, 99)
	for i := range kids {
		kids[i] = fmt.Sprintf("1/0.%d+1", i)
	}
	spec := treeSpec{sizes: "99", kids: kids}
	var dump, restore [2]time.Duration
	for b.Loop() {
		for v, script := range []bool{false, true} {
			lt := rg.startTree(b, spec)
			dir, run := rg.dump(b, lt.root, script)
			if run.status != 0 {
				b.Fatalf("criu dump: %s", run)
			}
			dump[v] += run.wall
			if script {
				inScript[0] += scriptTime(b, times, perAction)
			}
			lt.kill(b)
			rs := rg.restore(b, dir, script, script)
			if rs.run.status != 0 {
				b.Fatalf("criu restore: %s", rs.run)
			}
			if script && !strings.Contains(rs.run.log, "wrote 99 undo lists into the stopped tasks, continued 100 of the 100 tasks") {
				b.Fatalf("semundo did not restore the 99 lists:\n%s", tail(rs.run.log, 20))
			}
			if len(rs.procs) != 100 {
				b.Fatalf("restored %d processes, want 100", len(rs.procs))
			}
			restore[v] += rs.run.wall
			if script {
				inScript[1] += scriptTime(b, times, perAction)
			}
			rs.kill(b)
		}
	}
	ms := func(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) / float64(b.N) }
	b.ReportMetric(ms(dump[0]), "criu-dump-ms")
	b.ReportMetric(ms(dump[1]), "semundo-dump-ms")
	b.ReportMetric(ms(restore[0]), "criu-restore-ms")
	b.ReportMetric(ms(restore[1]), "semundo-restore-ms")
	b.ReportMetric(ms(dump[1]-dump[0]), "added-dump-ms")
	b.ReportMetric(ms(restore[1]-restore[0]), "added-restore-ms")
	b.ReportMetric(ms(inScript[0]), "script-in-dump-ms")
	b.ReportMetric(ms(inScript[1]), "script-in-restore-ms")
	var acts []string
	for a, d := range perAction {
		acts = append(acts, fmt.Sprintf("%s %.1f ms", a, ms(d)))
	}
	slices.Sort(acts)
	b.Logf("the action script per action and iteration: %s", strings.Join(acts, ", "))
}

// scriptTime sums and clears the durations the timed script logged.
func scriptTime(b *testing.B, path string, perAction map[string]time.Duration) time.Duration {
	data, err := os.ReadFile(path)
	if err != nil {
		b.Fatal(err)
	}
	os.Remove(path)
	var sum time.Duration
	for line := range strings.SplitSeq(strings.TrimSpace(string(data)), "\n") {
		f := strings.Fields(line)
		if len(f) != 2 {
			b.Fatalf("timing line %q", line)
		}
		ns, err := strconv.ParseInt(f[1], 10, 64)
		if err != nil {
			b.Fatalf("timing line %q", line)
		}
		sum += time.Duration(ns)
		perAction[f[0]] += time.Duration(ns)
	}
	return sum
}
