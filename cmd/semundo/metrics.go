package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"os/signal"
	"strconv"
	"sync"
	"syscall"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"github.com/prometheus/common/expfmt"
	"github.com/semundo/semundo/internal/waitfor"
	"github.com/semundo/semundo/reader"
	"github.com/semundo/semundo/sysvsem"
	"golang.org/x/sys/unix"
)

var metricsCmd = &spec{
	name: "metrics",
	about: "print Prometheus metrics of waiters, holders and deadlocks (for node_exporter's\n" +
		"textfile collector), or serve them on /metrics with --listen",
	more: "Per set with undo holders or waiters: semundo_set_waiters,\n" +
		"semundo_set_undo_holders and semundo_semaphore_value (for the semaphores\n" +
		"held or waited on, in semundo's own IPC namespace). Totals: semundo_sets,\n" +
		"semundo_undo_lists, semundo_waiters, semundo_deadlock_cycles,\n" +
		"semundo_scrape_duration_seconds, semundo_waiters_supported.\n",
	define: defineMetrics,
}

func defineMetrics(fs *flag.FlagSet, c *cli) func([]string) error {
	listen := fs.String("listen", "", "serve /metrics on `ADDR` (host:port) until SIGINT or SIGTERM, the reader loaded once")
	out := fs.String("o", "", "write the metrics to `FILE` atomically (a .prom file of the textfile collector's directory) instead of stdout")
	return func(pos []string) error {
		if len(pos) > 0 {
			return usagef("metrics takes no arguments, got %q", pos[0])
		}
		if *listen != "" && *out != "" {
			return usagef("--listen and -o exclude each other: serve or write, not both")
		}
		if *listen != "" {
			if _, _, err := net.SplitHostPort(*listen); err != nil {
				return usagef("--listen %q is not host:port (try 127.0.0.1:9842 or :9842)", *listen)
			}
		}
		r, err := openReader()
		if err != nil {
			return err
		}
		defer r.Close()
		reg := prometheus.NewRegistry()
		col := &collector{r: r}
		reg.MustRegister(col)
		var werr error
		switch {
		case *listen != "":
			return serveMetrics(c, reg, *listen)
		case *out != "":
			if werr = prometheus.WriteToTextfile(*out, reg); werr != nil {
				werr = fmt.Errorf("write metrics to %s: %w", *out, werr)
			}
		default:
			werr = writeMetrics(c.stdout, reg)
		}
		// The scan's own error says more than the registry's account of it.
		if err := col.err(); err != nil {
			return err
		}
		return werr
	}
}

// writeMetrics writes every metric of reg in the text format.
func writeMetrics(w io.Writer, reg prometheus.Gatherer) error {
	mfs, err := reg.Gather()
	if err != nil {
		return err
	}
	enc := expfmt.NewEncoder(w, expfmt.NewFormat(expfmt.TypeTextPlain))
	for _, mf := range mfs {
		if err := enc.Encode(mf); err != nil {
			return err
		}
	}
	return nil
}

// serveMetrics serves /metrics on addr until SIGINT or SIGTERM.
func serveMetrics(c *cli, reg *prometheus.Registry, addr string) error {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return fmt.Errorf("listen on %s: %w (choose a free port with --listen)", addr, err)
	}
	mux := http.NewServeMux()
	mux.Handle("/metrics", promhttp.HandlerFor(reg, promhttp.HandlerOpts{ErrorHandling: promhttp.HTTPErrorOnError}))
	srv := &http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second}
	// The address actually bound (with :0, the port the kernel chose),
	// for whoever started semundo to scrape.
	fmt.Fprintf(c.stderr, "semundo metrics: serving http://%s/metrics\n", ln.Addr())
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()
	errc := make(chan error, 1)
	go func() { errc <- srv.Serve(ln) }()
	select {
	case err := <-errc:
		return fmt.Errorf("serve metrics on %s: %w", addr, err)
	case <-ctx.Done():
	}
	shut, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := srv.Shutdown(shut); err != nil && !errors.Is(err, http.ErrServerClosed) {
		return err
	}
	return nil
}

// Metric descriptions. Labels name a set by its IPC namespace's inode and
// its id there; only sets with holders or waiters get series, so their
// number stays that of the sets in use, not of all sets.
var (
	descSetWaiters = prometheus.NewDesc("semundo_set_waiters",
		"Tasks blocked in semop or semtimedop on the set.", []string{"ipcns", "semid"}, nil)
	descSetHolders = prometheus.NewDesc("semundo_set_undo_holders",
		"Processes whose undo lists hold a nonzero adjustment for the set.", []string{"ipcns", "semid"}, nil)
	descSemValue = prometheus.NewDesc("semundo_semaphore_value",
		"Value of a semaphore that is held or waited on (sets of semundo's own IPC namespace only).", []string{"ipcns", "semid", "sem"}, nil)
	descSets = prometheus.NewDesc("semundo_sets",
		"Semaphore sets in semundo's own IPC namespace.", nil, nil)
	descLists = prometheus.NewDesc("semundo_undo_lists",
		"Undo lists with at least one entry, in every IPC namespace.", nil, nil)
	descWaiters = prometheus.NewDesc("semundo_waiters",
		"Tasks blocked in semop or semtimedop, in every IPC namespace.", nil, nil)
	descCycles = prometheus.NewDesc("semundo_deadlock_cycles",
		"Cycles in the wait-for graph of waiters and SEM_UNDO holders (a holder without SEM_UNDO is invisible).", nil, nil)
	descDuration = prometheus.NewDesc("semundo_scrape_duration_seconds",
		"Time the scan and the metrics took.", nil, nil)
	descSupported = prometheus.NewDesc("semundo_waiters_supported",
		"1 when this kernel lets semundo read waiters (Linux 5.17+), else 0: waiter metrics are then absent.", nil, nil)
)

// collector scans on every collection.
type collector struct {
	r       *reader.Reader
	mu      sync.Mutex
	lastErr error
}

func (c *collector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{descSetWaiters, descSetHolders, descSemValue, descSets,
		descLists, descWaiters, descCycles, descDuration, descSupported} {
		ch <- d
	}
}

// err is the last collection's error.
func (c *collector) err() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.lastErr
}

func (c *collector) Collect(ch chan<- prometheus.Metric) {
	start := time.Now()
	err := c.collect(ch)
	c.mu.Lock()
	c.lastErr = err
	c.mu.Unlock()
	if err != nil {
		ch <- prometheus.NewInvalidMetric(descDuration, err)
		return
	}
	ch <- prometheus.MustNewConstMetric(descDuration, prometheus.GaugeValue, time.Since(start).Seconds())
}

// setUse is what one set's series count.
type setUse struct {
	waiters, holders int
	sems             map[uint16]bool // semaphores held or waited on
}

func (c *collector) collect(ch chan<- prometheus.Metric) error {
	snap, err := c.r.Scan()
	if err != nil {
		return err
	}
	var st unix.Stat_t
	if err := unix.Stat("/proc/self/ns/ipc", &st); err != nil {
		return fmt.Errorf("find own IPC namespace: %w", err)
	}
	own := uint32(st.Ino)
	uses := map[waitfor.Set]*setUse{}
	use := func(s waitfor.Set) *setUse {
		u := uses[s]
		if u == nil {
			u = &setUse{sems: map[uint16]bool{}}
			uses[s] = u
		}
		return u
	}
	lists := 0
	for _, l := range snap.Lists {
		if len(l.Entries) > 0 {
			lists++
		}
		for _, e := range l.Entries {
			held := false
			for i, v := range e.Adj {
				if v != 0 {
					held = true
					use(waitfor.Set{IPCNS: l.IPCNS, Semid: e.Semid}).sems[uint16(i)] = true
				}
			}
			if held {
				use(waitfor.Set{IPCNS: l.IPCNS, Semid: e.Semid}).holders += len(l.Processes)
			}
		}
	}
	supported := 1.0
	switch {
	case errors.Is(snap.WaitersErr, reader.ErrNotSupported):
		supported = 0
	case snap.WaitersErr != nil:
		// Counts short of some waiters would mislead: fail the scrape.
		return snap.WaitersErr
	default:
		for _, w := range snap.Waiters {
			u := use(waitfor.Set{IPCNS: w.IPCNS, Semid: w.Semid})
			u.waiters++
			for _, o := range w.Ops {
				u.sems[o.Num] = true
			}
		}
		ch <- prometheus.MustNewConstMetric(descWaiters, prometheus.GaugeValue, float64(len(snap.Waiters)))
		ch <- prometheus.MustNewConstMetric(descCycles, prometheus.GaugeValue, float64(len(waitfor.Build(snap).Cycles())))
	}
	ch <- prometheus.MustNewConstMetric(descSupported, prometheus.GaugeValue, supported)
	ch <- prometheus.MustNewConstMetric(descLists, prometheus.GaugeValue, float64(lists))
	if si, _, err := sysvsem.SemInfo(); err == nil {
		ch <- prometheus.MustNewConstMetric(descSets, prometheus.GaugeValue, float64(si.Semusz))
	}
	for s, u := range uses {
		ns, id := strconv.FormatUint(uint64(s.IPCNS), 10), strconv.Itoa(int(s.Semid))
		if supported == 1 {
			ch <- prometheus.MustNewConstMetric(descSetWaiters, prometheus.GaugeValue, float64(u.waiters), ns, id)
		}
		ch <- prometheus.MustNewConstMetric(descSetHolders, prometheus.GaugeValue, float64(u.holders), ns, id)
		if s.IPCNS != own {
			continue
		}
		for num := range u.sems {
			// A set removed since the scan has no values: leave it out.
			v, err := sysvsem.GetVal(int(s.Semid), int(num))
			if err != nil {
				break
			}
			ch <- prometheus.MustNewConstMetric(descSemValue, prometheus.GaugeValue, float64(v), ns, id, strconv.Itoa(int(num)))
		}
	}
	return nil
}
