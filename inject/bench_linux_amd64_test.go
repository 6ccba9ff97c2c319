package inject

import (
	"runtime"
	"slices"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// BenchmarkStopTime measures how long a sleeping C target stays stopped
// (interrupt to detach) for Seize + one injected getpid + Detach, next to a
// bare PTRACE_SEIZE/INTERRUPT/wait/DETACH cycle: the floor any injector pays.
// Both report the median and 99th percentile of the per-target stop time.
func BenchmarkStopTime(b *testing.B) {
	bin := buildC(b, "sleeper", sleeperSrc)
	var targets []*target
	for i := 0; i < 4; i++ {
		tg := start(b, bin, "100000000")
		tg.line(b)
		tg.blockedIn(b, nrClockNanoslp, nrNanosleep)
		targets = append(targets, tg)
	}
	report := func(b *testing.B, stops []time.Duration) {
		slices.Sort(stops)
		us := func(q float64) float64 {
			return float64(stops[int(q*float64(len(stops)-1))]) / float64(time.Microsecond)
		}
		b.ReportMetric(us(0.50), "p50-stop-µs")
		b.ReportMetric(us(0.99), "p99-stop-µs")
	}

	b.Run("floor", func(b *testing.B) {
		runtime.LockOSThread()
		defer runtime.UnlockOSThread()
		stops := make([]time.Duration, 0, b.N)
		for i := 0; b.Loop(); i++ {
			pid := targets[i%len(targets)].pid
			if err := seize(pid, 0); err != nil {
				b.Fatal(err)
			}
			t0 := time.Now()
			if err := interrupt(pid); err != nil {
				b.Fatal(err)
			}
			var ws unix.WaitStatus
			if _, err := unix.Wait4(pid, &ws, unix.WALL, nil); err != nil {
				b.Fatal(err)
			}
			if err := detach(pid); err != nil {
				b.Fatal(err)
			}
			stops = append(stops, time.Since(t0))
		}
		report(b, stops)
	})

	b.Run("getpid", func(b *testing.B) {
		stops := make([]time.Duration, 0, b.N)
		for i := 0; b.Loop(); i++ {
			pid := targets[i%len(targets)].pid
			s, err := Seize(pid)
			if err != nil {
				b.Fatal(err)
			}
			if got, err := s.Syscall(unix.SYS_GETPID); err != nil || int(got) != pid {
				b.Fatalf("getpid: %d, %v", got, err)
			}
			if err := s.Detach(); err != nil {
				b.Fatal(err)
			}
			stops = append(stops, s.Stats().StopTime)
		}
		report(b, stops)
	})
}
