package exposition

import (
	"bytes"
	"io"
	"math"
	"testing"

	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
)

// fixture has what the text format must escape, a family without labels,
// one without series, and the values that are not plain numbers.
var fixture = []Family{
	{Name: "a_gauge", Help: `with \ and a
newline`, Series: []Series{
		{Labels: []Label{{"ipcns", "4026531839"}, {"semid", "0"}}, Value: 3},
		{Labels: []Label{{"ipcns", "4026531839"}, {"semid", "12"}}, Value: -0.25},
		{Labels: []Label{{"odd", "quote \" back \\ nl \n end"}, {"semid", "1"}}, Value: 1e300},
	}},
	{Name: "b_total", Help: "No labels.", Series: []Series{{Value: 0}}},
	{Name: "c_special", Help: "NaN and infinities.", Series: []Series{
		{Labels: []Label{{"k", "nan"}}, Value: math.NaN()},
		{Labels: []Label{{"k", "+inf"}}, Value: math.Inf(1)},
		{Labels: []Label{{"k", "-inf"}}, Value: math.Inf(-1)},
	}},
}

// check compares decoded families with fixture.
func check(t *testing.T, format string, got map[string]*dto.MetricFamily) {
	t.Helper()
	if len(got) != len(fixture) {
		t.Errorf("%s: %d families, want %d", format, len(got), len(fixture))
	}
	for _, f := range fixture {
		mf := got[f.Name]
		if mf == nil {
			t.Errorf("%s: family %s missing", format, f.Name)
			continue
		}
		if mf.GetHelp() != f.Help || mf.GetType() != dto.MetricType_GAUGE {
			t.Errorf("%s: %s has help %q and type %v, want %q and GAUGE", format, f.Name, mf.GetHelp(), mf.GetType(), f.Help)
		}
		if len(mf.GetMetric()) != len(f.Series) {
			t.Errorf("%s: %s has %d series, want %d", format, f.Name, len(mf.GetMetric()), len(f.Series))
			continue
		}
		for i, s := range f.Series {
			m := mf.GetMetric()[i]
			v := m.GetGauge().GetValue()
			if v != s.Value && !(math.IsNaN(v) && math.IsNaN(s.Value)) {
				t.Errorf("%s: %s series %d is %v, want %v", format, f.Name, i, v, s.Value)
			}
			if len(m.GetLabel()) != len(s.Labels) {
				t.Errorf("%s: %s series %d has %d labels, want %d", format, f.Name, i, len(m.GetLabel()), len(s.Labels))
				continue
			}
			for j, l := range s.Labels {
				if g := m.GetLabel()[j]; g.GetName() != l.Name || g.GetValue() != l.Value {
					t.Errorf("%s: %s series %d label %d is %s=%q, want %s=%q", format, f.Name, i, j, g.GetName(), g.GetValue(), l.Name, l.Value)
				}
			}
		}
	}
}

// TestText: Prometheus's own text parser reads back what Write wrote.
func TestText(t *testing.T) {
	var b bytes.Buffer
	if err := Write(&b, Text, fixture); err != nil {
		t.Fatal(err)
	}
	p := expfmt.NewTextParser(model.UTF8Validation)
	got, err := p.TextToMetricFamilies(bytes.NewReader(b.Bytes()))
	if err != nil {
		t.Fatalf("parse %q: %v", b.String(), err)
	}
	check(t, "text", got)
	// And writes it as Prometheus's encoder does.
	var want bytes.Buffer
	enc := expfmt.NewEncoder(&want, expfmt.NewFormat(expfmt.TypeTextPlain))
	for _, f := range fixture {
		if err := enc.Encode(got[f.Name]); err != nil {
			t.Fatal(err)
		}
	}
	if b.String() != want.String() {
		t.Errorf("text:\n%s\nPrometheus's encoder writes:\n%s", b.String(), want.String())
	}
}

// TestDelimited: Prometheus's own decoder reads back the protobuf form,
// under the Content-Type Delimited names.
func TestDelimited(t *testing.T) {
	var b bytes.Buffer
	if err := Write(&b, Delimited, fixture); err != nil {
		t.Fatal(err)
	}
	format := expfmt.Format(Delimited)
	if format.FormatType() != expfmt.TypeProtoDelim {
		t.Fatalf("Content-Type %q is not the delimited protobuf format to expfmt", Delimited)
	}
	if ft := expfmt.Format(Text).FormatType(); ft != expfmt.TypeTextPlain {
		t.Fatalf("Content-Type %q is not the text format to expfmt", Text)
	}
	dec := expfmt.NewDecoder(&b, format)
	got := map[string]*dto.MetricFamily{}
	for {
		mf := &dto.MetricFamily{}
		if err := dec.Decode(mf); err == io.EOF {
			break
		} else if err != nil {
			t.Fatalf("decode: %v", err)
		}
		got[mf.GetName()] = mf
	}
	check(t, "protobuf", got)
}

// TestNegotiate: the format a scraper's Accept header asks for, as
// expfmt.Negotiate picks it among these two.
func TestNegotiate(t *testing.T) {
	for _, c := range []struct {
		accept string
		want   Format
		// unlike expfmt, which takes q=0 as a preference like any
		// other; RFC 9110 says it means "not acceptable".
		unlike bool
	}{
		{"", Text, false},
		{"*/*", Text, false},
		{"application/json", Text, false},
		// Prometheus's own scrape header.
		{"application/vnd.google.protobuf;proto=io.prometheus.client.MetricFamily;encoding=delimited;q=0.7,text/plain;version=0.0.4;q=0.3,*/*;q=0.1", Delimited, false},
		{"text/plain;version=0.0.4;q=0.9,application/vnd.google.protobuf;proto=io.prometheus.client.MetricFamily;encoding=delimited;q=0.5", Text, false},
		{"application/vnd.google.protobuf;proto=io.prometheus.client.MetricFamily;encoding=delimited", Delimited, false},
		// Protobuf's text encodings, and other protobuf messages, are not
		// written here.
		{"application/vnd.google.protobuf;proto=io.prometheus.client.MetricFamily;encoding=text", Text, false},
		{"application/vnd.google.protobuf;proto=other.Message;encoding=delimited", Text, false},
		{"application/vnd.google.protobuf;proto=io.prometheus.client.MetricFamily;encoding=delimited;q=0", Text, true},
		{"text/plain;version=1.0.0", Text, false},
		{"garbage;;;, ;q=x", Text, false},
	} {
		if got := Negotiate(c.accept); got != c.want {
			t.Errorf("Negotiate(%q) = %q, want %q", c.accept, got, c.want)
		}
		h := map[string][]string{"Accept": {c.accept}}
		if ref := expfmt.Negotiate(h).FormatType(); (ref == expfmt.TypeProtoDelim) != (c.want == Delimited) && !c.unlike {
			t.Errorf("Negotiate(%q) = %q, expfmt.Negotiate picks %v", c.accept, c.want, ref)
		}
	}
}
