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

	"github.com/semundo/semundo/internal/testenv"
)

// BenchmarkTree100 measures what the action script adds to criu dump and
// to criu restore of a tree of 100 processes: a root and 99 children,
// each holding +1 with SEM_UNDO on its own semaphore of a 99-semaphore
// set. Each iteration dumps and restores one such tree with CRIU alone
// (criu restore -d), one with semundo without its helper
// (SEMUNDO_CRIU_HELPER=0) and one with semundo as it runs by default
// (criu restore -d --leave-stopped and the action script in both), each
// of these two through a wrapper that times every action, and one more as
// deployed: by default, the script untimed. It reports the wall time of
// each criu command, and for the timed runs the time spent in post-dump
// and post-resume, the actions during which CRIU holds the tree frozen or
// stopped, and how many of the helper's dumps took the lists read when
// CRIU wrote pstree.img (early-dumps, a fraction).
//
//	go test -run '^$' -bench BenchmarkTree100 -benchtime 5x ./criu/
func BenchmarkTree100(b *testing.B) {
	rg := newRig(b)
	rg.quiet = true
	// semundo is built from the module around the working directory, not
	// from the source this test binary was compiled from: a comparison of
	// two builds must run each test binary in its own tree.
	if wd, err := os.Getwd(); err == nil {
		b.Logf("semundo built by go build in %s", wd)
	}
	// The script, wrapped to log how long each action took: bash's clock
	// in $EPOCHREALTIME, not date(1), whose fork and exec fell inside the
	// timed span (about 0.7 ms of each action).
	times := filepath.Join(rg.dir, "times")
	wrapped := rg.script + "-timed"
	bash := testenv.RequireTool(b, "bash")
	err := os.WriteFile(wrapped, []byte("#!"+bash+"\ns=$EPOCHREALTIME\n"+rg.script+"\nrc=$?\ne=$EPOCHREALTIME\n"+
		"echo \"$CRTOOLS_SCRIPT_ACTION $(( ${e//[.,]/} - ${s//[.,]/} ))\" >>"+times+"\nexit $rc\n"), 0o755)
	if err != nil {
		b.Fatal(err)
	}
	plain := rg.script
	rg.script = wrapped
	kids := make([]string, 99)
	for i := range kids {
		kids[i] = fmt.Sprintf("1/0.%d+1", i)
	}
	spec := treeSpec{sizes: "99", kids: kids}
	// deployed runs the script as docs/criu.md installs it, without the
	// timing wrapper (whose date(1) calls and second shell cost about a
	// millisecond at each of the actions): its criu commands' wall times
	// are what a user's are.
	const alone, noHelper, helper, deployed = 0, 1, 2, 3
	var dump, restore, inScriptDump, inScriptRestore [4]time.Duration
	perAction := [4]map[string]time.Duration{nil, {}, {}, nil}
	var helperJob [2]time.Duration // the helper's own time at post-dump, post-resume
	early := 0                     // dumps whose lists the helper read as CRIU wrote pstree.img
	for b.Loop() {
		for v := range 4 {
			script := v != alone
			timed := v == noHelper || v == helper
			rg.script = wrapped
			if v == deployed {
				rg.script = plain
			}
			var env []string
			if v == noHelper {
				env = []string{EnvHelper + "=0"}
			}
			rg.dumpEnv = env
			lt := rg.startTree(b, spec)
			dir, run := rg.dump(b, lt.root, script)
			if run.status != 0 {
				b.Fatalf("criu dump: %s", run)
			}
			dump[v] += run.wall
			if timed {
				inScriptDump[v] += scriptTime(b, times, perAction[v])
			}
			if v == helper {
				helperJob[0] += helperTime(b, run.log, "post-dump")
				if strings.Contains(run.log, earlyNote) {
					early++
				}
			}
			lt.kill(b)
			rs := rg.restore(b, dir, script, script, env...)
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
			if timed {
				inScriptRestore[v] += scriptTime(b, times, perAction[v])
			}
			if v == helper {
				helperJob[1] += helperTime(b, rs.run.log, "post-resume")
			}
			rs.kill(b)
		}
	}
	ms := func(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) / float64(b.N) }
	b.ReportMetric(ms(dump[alone]), "criu-dump-ms")
	b.ReportMetric(ms(restore[alone]), "criu-restore-ms")
	for v, name := range map[int]string{noHelper: "nohelper", helper: "semundo"} {
		b.ReportMetric(ms(dump[v]), name+"-dump-ms")
		b.ReportMetric(ms(restore[v]), name+"-restore-ms")
		b.ReportMetric(ms(perAction[v]["post-dump"]), name+"-post-dump-ms")
		b.ReportMetric(ms(perAction[v]["post-resume"]), name+"-post-resume-ms")
		b.ReportMetric(float64(restore[v])/float64(restore[alone]), name+"-restore-x")
	}
	b.ReportMetric(ms(dump[deployed]), "deployed-dump-ms")
	b.ReportMetric(ms(restore[deployed]), "deployed-restore-ms")
	b.ReportMetric(float64(restore[deployed])/float64(restore[alone]), "deployed-restore-x")
	b.ReportMetric(ms(helperJob[0]), "helper-job-dump-ms")
	b.ReportMetric(ms(helperJob[1]), "helper-job-restore-ms")
	b.ReportMetric(float64(early)/float64(b.N), "early-dumps")
	for v, name := range map[int]string{noHelper: "without the helper", helper: "with the helper"} {
		var acts []string
		for a, d := range perAction[v] {
			acts = append(acts, fmt.Sprintf("%s %.1f ms", a, ms(d)))
		}
		slices.Sort(acts)
		b.Logf("%s, the action script per action and iteration: %s (in all: %.1f ms at dump, %.1f ms at restore)",
			name, strings.Join(acts, ", "), ms(inScriptDump[v]), ms(inScriptRestore[v]))
	}
}

// helperTime returns the time the helper says its job took at action.
func helperTime(b *testing.B, log, action string) time.Duration {
	_, rest, ok := strings.Cut(log, "semundo: "+action+": done by the helper")
	if !ok {
		b.Fatalf("%s was not done by the helper:\n%s", action, tail(log, 20))
	}
	line, _, _ := strings.Cut(rest, "\n")
	i := strings.LastIndex(line, " in ")
	var v float64
	if i < 0 {
		b.Fatalf("helper line %q", line)
	}
	if _, err := fmt.Sscanf(line[i:], " in %f ms", &v); err != nil {
		b.Fatalf("helper line %q: %v", line, err)
	}
	return time.Duration(v * float64(time.Millisecond))
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
		us, err := strconv.ParseInt(f[1], 10, 64)
		if err != nil {
			b.Fatalf("timing line %q", line)
		}
		sum += time.Duration(us) * time.Microsecond
		perAction[f[0]] += time.Duration(us) * time.Microsecond
	}
	return sum
}
