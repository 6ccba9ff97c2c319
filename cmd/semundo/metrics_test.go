package main

import (
	"bufio"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"

	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
	"github.com/semundo/semundo/internal/holder"
	"github.com/semundo/semundo/internal/testenv"
)

// parseMetrics parses the text format with Prometheus's own parser.
func parseMetrics(t *testing.T, r io.Reader) map[string]*dto.MetricFamily {
	t.Helper()
	p := expfmt.NewTextParser(model.UTF8Validation)
	mfs, err := p.TextToMetricFamilies(r)
	if err != nil {
		t.Fatalf("parse metrics: %v", err)
	}
	return mfs
}

// value returns the gauge of family name whose labels include want, and
// whether there is one.
func value(mfs map[string]*dto.MetricFamily, name string, want map[string]string) (float64, bool) {
	mf := mfs[name]
	if mf == nil {
		return 0, false
	}
next:
	for _, m := range mf.GetMetric() {
		labels := map[string]string{}
		for _, l := range m.GetLabel() {
			labels[l.GetName()] = l.GetValue()
		}
		for k, v := range want {
			if labels[k] != v {
				continue next
			}
		}
		return m.GetGauge().GetValue(), true
	}
	return 0, false
}

// metricsFixture starts a holder and two waiters on one set and a
// two-process deadlock on two others, and returns the first set's id.
func metricsFixture(t *testing.T) int {
	t.Helper()
	s := holder.NewSetVal(t, 2, 0)
	holder.StartWaiter(t, fmt.Sprintf("hold:%d:0:1", s))
	holder.StartWaiter(t, "threads:2", fmt.Sprintf("wait:%d:1:-1", s))
	d1, d2 := holder.NewSetVal(t, 1, 1), holder.NewSetVal(t, 1, 1)
	a := holder.StartWaiter(t, fmt.Sprintf("hold:%d:0:-1", d1), "sync", fmt.Sprintf("wait:%d:0:-1", d2))
	holder.StartWaiter(t, fmt.Sprintf("hold:%d:0:-1", d2), fmt.Sprintf("wait:%d:0:-1", d1))
	a.Continue(t)
	holder.BlockedOn(t, s, 1, 2, false)
	holder.BlockedOn(t, d1, 0, 1, false)
	holder.BlockedOn(t, d2, 0, 1, false)
	return s
}

// checkMetrics checks the fixture's series and the totals; false when the
// fixture's waiters are not all asleep yet (the caller scrapes again).
func checkMetrics(t *testing.T, mfs map[string]*dto.MetricFamily, s int) bool {
	t.Helper()
	set := map[string]string{"semid": fmt.Sprint(s)}
	if w, _ := value(mfs, "semundo_set_waiters", set); w < 2 {
		return false
	}
	if c, _ := value(mfs, "semundo_deadlock_cycles", nil); c < 1 {
		return false
	}
	for _, c := range []struct {
		name   string
		labels map[string]string
		want   float64
	}{
		{"semundo_set_waiters", set, 2},
		{"semundo_set_undo_holders", set, 1},
		{"semundo_semaphore_value", map[string]string{"semid": fmt.Sprint(s), "sem": "0"}, 1},
		{"semundo_semaphore_value", map[string]string{"semid": fmt.Sprint(s), "sem": "1"}, 0},
		{"semundo_waiters_supported", nil, 1},
	} {
		if got, ok := value(mfs, c.name, c.labels); !ok || got != c.want {
			t.Errorf("%s%v = %v (present %v), want %v", c.name, c.labels, got, ok, c.want)
		}
	}
	for name, least := range map[string]float64{"semundo_waiters": 4, "semundo_undo_lists": 3, "semundo_sets": 3} {
		if got, ok := value(mfs, name, nil); !ok || got < least {
			t.Errorf("%s = %v (present %v), want at least %v", name, got, ok, least)
		}
	}
	if d, ok := value(mfs, "semundo_scrape_duration_seconds", nil); !ok || d <= 0 {
		t.Errorf("semundo_scrape_duration_seconds = %v (present %v)", d, ok)
	}
	return true
}

func TestMetricsText(t *testing.T) {
	testenv.RequireRoot(t)
	s := metricsFixture(t)
	testenv.Eventually(t, "semundo metrics to show the fixture", func() bool {
		return checkMetrics(t, parseMetrics(t, strings.NewReader(mustRun(t, "metrics"))), s)
	})
	file := filepath.Join(t.TempDir(), "semundo.prom")
	testenv.Eventually(t, "semundo metrics -o to show the fixture", func() bool {
		mustRun(t, "metrics", "-o", file)
		f, err := os.Open(file)
		if err != nil {
			t.Fatal(err)
		}
		defer f.Close()
		return checkMetrics(t, parseMetrics(t, f), s)
	})
	// node_exporter runs as nobody: the file must be readable by all.
	if st, err := os.Stat(file); err != nil || st.Mode().Perm() != 0o644 {
		t.Errorf("metrics -o wrote %s with %v (%v), want mode 0644", file, st.Mode(), err)
	}
	if left, _ := filepath.Glob(filepath.Join(filepath.Dir(file), ".*")); len(left) > 0 {
		t.Errorf("metrics -o left %v", left)
	}
}

// TestMetricsOrder checks that a scrape lists families by name and series
// by their label values, numbers in numeric order, so that two scrapes of
// the same state read the same.
func TestMetricsOrder(t *testing.T) {
	fs := families{}
	for _, id := range []string{"10", "9", "100", "2"} {
		fs.add(gaugeSetHolders, 1, "7", id)
	}
	fs.add(gaugeSetHolders, 1, "6", "50")
	fs.add(gaugeLists, 3)
	var b strings.Builder
	if err := writeMetrics(&b, fs.sorted()); err != nil {
		t.Fatal(err)
	}
	var got []string
	for line := range strings.SplitSeq(b.String(), "\n") {
		if line != "" && !strings.HasPrefix(line, "#") {
			got = append(got, line)
		}
	}
	want := []string{
		`semundo_set_undo_holders{ipcns="6",semid="50"} 1`,
		`semundo_set_undo_holders{ipcns="7",semid="2"} 1`,
		`semundo_set_undo_holders{ipcns="7",semid="9"} 1`,
		`semundo_set_undo_holders{ipcns="7",semid="10"} 1`,
		`semundo_set_undo_holders{ipcns="7",semid="100"} 1`,
		`semundo_undo_lists 3`,
	}
	if !slices.Equal(got, want) {
		t.Errorf("series in the order\n%s\nwant\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
	}
}

// TestMetricsListen scrapes semundo metrics --listen over loopback, more
// than once from the one process, and stops it with SIGTERM.
func TestMetricsListen(t *testing.T) {
	testenv.RequireRoot(t)
	s := metricsFixture(t)
	cmd := exec.Command(binary, "metrics", "--listen", "127.0.0.1:0")
	stderr, err := cmd.StderrPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		cmd.Process.Kill()
		cmd.Wait()
	})
	line, err := bufio.NewReader(stderr).ReadString('\n')
	var url string
	if _, serr := fmt.Sscanf(line, "semundo metrics: serving %s", &url); err != nil || serr != nil {
		t.Fatalf("semundo metrics --listen said %q (%v)", line, err)
	}
	scrape := func() map[string]*dto.MetricFamily {
		resp, err := http.Get(url)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			b, _ := io.ReadAll(resp.Body)
			t.Fatalf("GET %s: %s: %s", url, resp.Status, b)
		}
		return parseMetrics(t, resp.Body)
	}
	testenv.Eventually(t, "the scrape to show the fixture", func() bool { return checkMetrics(t, scrape(), s) })
	if !checkMetrics(t, scrape(), s) {
		t.Errorf("a second scrape lost the fixture")
	}
	// A Prometheus server asks for protobuf first; the answer must decode
	// as the format it names.
	req, err := http.NewRequest("GET", url, nil)
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Accept", "application/vnd.google.protobuf;proto=io.prometheus.client.MetricFamily;encoding=delimited;q=0.7,text/plain;version=0.0.4;q=0.3")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	format := expfmt.ResponseFormat(resp.Header)
	if format.FormatType() != expfmt.TypeProtoDelim {
		t.Errorf("a scrape accepting protobuf got Content-Type %q", resp.Header.Get("Content-Type"))
	}
	dec := expfmt.NewDecoder(resp.Body, format)
	mfs := map[string]*dto.MetricFamily{}
	for {
		mf := &dto.MetricFamily{}
		if err := dec.Decode(mf); err == io.EOF {
			break
		} else if err != nil {
			t.Fatalf("decode the protobuf scrape: %v", err)
		}
		mfs[mf.GetName()] = mf
	}
	if !checkMetrics(t, mfs, s) {
		t.Errorf("the protobuf scrape lost the fixture")
	}
	if err := cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	if err := testenv.Wait(t, cmd, "semundo metrics --listen after SIGTERM"); err != nil {
		t.Errorf("semundo metrics --listen after SIGTERM: %v", err)
	}
}

func TestMetricsUsage(t *testing.T) {
	for _, c := range []struct {
		args []string
		want string
	}{
		{[]string{"metrics", "--listen", "nonsense"}, "not host:port"},
		{[]string{"metrics", "--listen", ":0", "-o", "f"}, "exclude each other"},
		{[]string{"metrics", "x"}, "takes no arguments"},
	} {
		out, errs, code := semundo(t, nil, c.args...)
		if code != exitUsage || out != "" || strings.Count(errs, "\n") != 1 || !strings.Contains(errs, c.want) {
			t.Errorf("%v: exit %d, stdout %q, stderr %q; want exit 2 and one line with %q", c.args, code, out, errs, c.want)
		}
	}
}
