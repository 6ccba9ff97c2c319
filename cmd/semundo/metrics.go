package main

import (
	"bytes"
	"cmp"
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"os/signal"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/semundo/semundo/internal/atomicfile"
	"github.com/semundo/semundo/internal/exposition"
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
		col := &collector{r: r}
		if *listen != "" {
			return serveMetrics(c, col, *listen)
		}
		fams, err := col.gather()
		if err != nil {
			return err
		}
		if *out == "" {
			return writeMetrics(c.stdout, fams)
		}
		var b bytes.Buffer
		if err := writeMetrics(&b, fams); err != nil {
			return err
		}
		// Readable by all: node_exporter runs as nobody.
		if err := atomicfile.Write(*out, b.Bytes(), 0o644); err != nil {
			return fmt.Errorf("write metrics to %s: %w (is its directory there and writable?)", *out, err)
		}
		return nil
	}
}

// writeMetrics writes fams in the text format.
func writeMetrics(w io.Writer, fams []exposition.Family) error {
	return exposition.Write(w, exposition.Text, fams)
}

// serveMetrics serves /metrics on addr until SIGINT or SIGTERM.
func serveMetrics(c *cli, col *collector, addr string) error {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return fmt.Errorf("listen on %s: %w (choose a free port with --listen)", addr, err)
	}
	mux := http.NewServeMux()
	mux.Handle("/metrics", col)
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

// gauge describes a family of gauges. Labels name a set by its IPC
// namespace's inode and its id there; only sets with holders or waiters
// get series, so their number stays that of the sets in use, not of all
// sets.
type gauge struct {
	name, help string
	labels     []string
}

var (
	gaugeSetWaiters = &gauge{"semundo_set_waiters",
		"Tasks blocked in semop or semtimedop on the set.", []string{"ipcns", "semid"}}
	gaugeSetHolders = &gauge{"semundo_set_undo_holders",
		"Processes whose undo lists hold a nonzero adjustment for the set.", []string{"ipcns", "semid"}}
	gaugeSemValue = &gauge{"semundo_semaphore_value",
		"Value of a semaphore that is held or waited on (sets of semundo's own IPC namespace only).", []string{"ipcns", "semid", "sem"}}
	gaugeSets = &gauge{"semundo_sets",
		"Semaphore sets in semundo's own IPC namespace.", nil}
	gaugeLists = &gauge{"semundo_undo_lists",
		"Undo lists with at least one entry, in every IPC namespace.", nil}
	gaugeWaiters = &gauge{"semundo_waiters",
		"Tasks blocked in semop or semtimedop, in every IPC namespace.", nil}
	gaugeCycles = &gauge{"semundo_deadlock_cycles",
		"Cycles in the wait-for graph of waiters and SEM_UNDO holders (a holder without SEM_UNDO is invisible).", nil}
	gaugeDuration = &gauge{"semundo_scrape_duration_seconds",
		"Time the scan and the metrics took.", nil}
	gaugeSupported = &gauge{"semundo_waiters_supported",
		"1 when this kernel lets semundo read waiters (Linux 5.17+), else 0: waiter metrics are then absent.", nil}
)

// families gathers the samples of one scrape by family.
type families map[*gauge]*exposition.Family

// add records one sample of g, its label values in g's order.
func (fs families) add(g *gauge, v float64, values ...string) {
	f := fs[g]
	if f == nil {
		f = &exposition.Family{Name: g.name, Help: g.help}
		fs[g] = f
	}
	s := exposition.Series{Value: v}
	for i, name := range g.labels {
		s.Labels = append(s.Labels, exposition.Label{Name: name, Value: values[i]})
	}
	f.Series = append(f.Series, s)
}

// sorted returns the families by name and each one's series by label
// values, numerically where the values are numbers, so that one scrape
// reads like the next.
func (fs families) sorted() []exposition.Family {
	out := make([]exposition.Family, 0, len(fs))
	for _, f := range fs {
		slices.SortFunc(f.Series, func(a, b exposition.Series) int {
			for i := range a.Labels {
				x, y := a.Labels[i].Value, b.Labels[i].Value
				if c := cmp.Compare(len(x), len(y)); c != 0 {
					return c
				}
				if c := strings.Compare(x, y); c != 0 {
					return c
				}
			}
			return 0
		})
		out = append(out, *f)
	}
	slices.SortFunc(out, func(a, b exposition.Family) int { return strings.Compare(a.Name, b.Name) })
	return out
}

// collector scans on every scrape.
type collector struct {
	r  *reader.Reader
	mu sync.Mutex // one scan at a time, however many scrapers
}

// gather scans and returns the metric families, sorted.
func (c *collector) gather() ([]exposition.Family, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	start := time.Now()
	fs := families{}
	if err := c.collect(fs); err != nil {
		return nil, err
	}
	fs.add(gaugeDuration, time.Since(start).Seconds())
	return fs.sorted(), nil
}

// ServeHTTP answers a scrape in the format it asks for (the text format
// unless it prefers protobuf), or with 500 and the scan's error.
func (c *collector) ServeHTTP(w http.ResponseWriter, req *http.Request) {
	fams, err := c.gather()
	if err != nil {
		http.Error(w, "semundo metrics: "+err.Error(), http.StatusInternalServerError)
		return
	}
	format := exposition.Negotiate(req.Header.Get("Accept"))
	w.Header().Set("Content-Type", string(format))
	exposition.Write(w, format, fams) // an error: the scraper went away
}

// setUse is what one set's series count.
type setUse struct {
	waiters, holders int
	sems             map[uint16]bool // semaphores held or waited on
}

func (c *collector) collect(fs families) error {
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
		fs.add(gaugeWaiters, float64(len(snap.Waiters)))
		fs.add(gaugeCycles, float64(len(waitfor.Build(snap).Cycles())))
	}
	fs.add(gaugeSupported, supported)
	fs.add(gaugeLists, float64(lists))
	if si, _, err := sysvsem.SemInfo(); err == nil {
		fs.add(gaugeSets, float64(si.Semusz))
	}
	for s, u := range uses {
		ns, id := strconv.FormatUint(uint64(s.IPCNS), 10), strconv.Itoa(int(s.Semid))
		if supported == 1 {
			fs.add(gaugeSetWaiters, float64(u.waiters), ns, id)
		}
		fs.add(gaugeSetHolders, float64(u.holders), ns, id)
		if s.IPCNS != own {
			continue
		}
		for num := range u.sems {
			// A set removed since the scan has no values: leave it out.
			v, err := sysvsem.GetVal(int(s.Semid), int(num))
			if err != nil {
				break
			}
			fs.add(gaugeSemValue, float64(v), ns, id, strconv.Itoa(int(num)))
		}
	}
	return nil
}
