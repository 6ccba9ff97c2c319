// Package exposition writes gauges in Prometheus's exposition formats: the
// text format (version 0.0.4) and the length-delimited protobuf one that
// Prometheus servers ask for first, and picks between them from a
// scrape's Accept header.
//
// It exists so that semundo does not link Prometheus's client_model and
// expfmt packages: their protobuf runtime's package initialisers (one
// reads the first 64 KiB of the executable) ran in every semundo process,
// each CRIU action in a container's downtime among them, for the one
// command that prints metrics. The tests check its output with those
// packages' own decoders.
package exposition

import (
	"encoding/binary"
	"io"
	"math"
	"mime"
	"strconv"
	"strings"
)

// Family is one gauge family: its name, help text and series. Names (the
// family's and the labels') are written as they are: they must be valid
// Prometheus names, as constant names are.
type Family struct {
	Name, Help string
	Series     []Series
}

// Series is one sample of a family: its labels (names and values, in
// order) and its value.
type Series struct {
	Labels []Label
	Value  float64
}

// Label is a label's name and value.
type Label struct{ Name, Value string }

// Format is an exposition format, as its Content-Type names it.
type Format string

const (
	// Text is the text format, version 0.0.4.
	Text Format = "text/plain; version=0.0.4; charset=utf-8"
	// Delimited is protobuf MetricFamily messages, each after its length
	// as a varint.
	Delimited Format = "application/vnd.google.protobuf; proto=io.prometheus.client.MetricFamily; encoding=delimited"
)

// Negotiate returns the format a scrape's Accept header prefers among
// those this package writes, Text when it names neither.
func Negotiate(accept string) Format {
	best, bestQ := Text, 0.0
	for part := range strings.SplitSeq(accept, ",") {
		media, params, err := mime.ParseMediaType(strings.TrimSpace(part))
		if err != nil {
			continue
		}
		q := 1.0
		if s, ok := params["q"]; ok {
			if q, err = strconv.ParseFloat(s, 64); err != nil {
				continue
			}
		}
		var f Format
		switch {
		case media == "application/vnd.google.protobuf" && params["proto"] == "io.prometheus.client.MetricFamily" && params["encoding"] == "delimited":
			f = Delimited
		case media == "text/plain" && (params["version"] == "" || params["version"] == "0.0.4"):
			f = Text
		default:
			continue
		}
		// The first of the highest quality wins: the scraper's own
		// order breaks ties. q=0 means "not acceptable".
		if q > bestQ {
			best, bestQ = f, q
		}
	}
	return best
}

// Write writes fams to w in format f.
func Write(w io.Writer, f Format, fams []Family) error {
	var b []byte
	for _, fam := range fams {
		if f == Delimited {
			b = appendDelimited(b, fam)
		} else {
			b = appendText(b, fam)
		}
	}
	_, err := w.Write(b)
	return err
}

// appendText appends fam in the text format: its HELP and TYPE lines,
// then a line per series.
func appendText(b []byte, fam Family) []byte {
	b = append(b, "# HELP "...)
	b = append(b, fam.Name...)
	b = append(b, ' ')
	b = appendEscaped(b, fam.Help, false)
	b = append(b, "\n# TYPE "...)
	b = append(b, fam.Name...)
	b = append(b, " gauge\n"...)
	for _, s := range fam.Series {
		b = append(b, fam.Name...)
		if len(s.Labels) > 0 {
			b = append(b, '{')
			for i, l := range s.Labels {
				if i > 0 {
					b = append(b, ',')
				}
				b = append(b, l.Name...)
				b = append(b, '=', '"')
				b = appendEscaped(b, l.Value, true)
				b = append(b, '"')
			}
			b = append(b, '}')
		}
		b = append(b, ' ')
		b = appendFloat(b, s.Value)
		b = append(b, '\n')
	}
	return b
}

// appendEscaped appends s with the text format's escapes: backslash and
// newline, and the double quote in label values.
func appendEscaped(b []byte, s string, quote bool) []byte {
	for i := 0; i < len(s); i++ {
		switch c := s[i]; {
		case c == '\\':
			b = append(b, `\\`...)
		case c == '\n':
			b = append(b, `\n`...)
		case c == '"' && quote:
			b = append(b, `\"`...)
		default:
			b = append(b, c)
		}
	}
	return b
}

// appendFloat appends v as the text format writes numbers.
func appendFloat(b []byte, v float64) []byte {
	switch {
	case math.IsNaN(v):
		return append(b, "NaN"...)
	case math.IsInf(v, 1):
		return append(b, "+Inf"...)
	case math.IsInf(v, -1):
		return append(b, "-Inf"...)
	}
	return strconv.AppendFloat(b, v, 'g', -1, 64)
}

// The fields of client_model's metrics.proto that a gauge family uses.
const (
	fieldFamilyName   = 1 // MetricFamily.name, string
	fieldFamilyHelp   = 2 // MetricFamily.help, string
	fieldFamilyType   = 3 // MetricFamily.type, enum MetricType
	fieldFamilyMetric = 4 // MetricFamily.metric, repeated Metric
	fieldMetricLabel  = 1 // Metric.label, repeated LabelPair
	fieldMetricGauge  = 2 // Metric.gauge, Gauge
	fieldLabelName    = 1 // LabelPair.name, string
	fieldLabelValue   = 2 // LabelPair.value, string
	fieldGaugeValue   = 1 // Gauge.value, double
	typeGauge         = 1 // MetricType GAUGE

	wireVarint  = 0
	wireFixed64 = 1
	wireBytes   = 2
)

// appendDelimited appends fam as a MetricFamily message after its length.
func appendDelimited(b []byte, fam Family) []byte {
	var m []byte
	m = appendString(m, fieldFamilyName, fam.Name)
	m = appendString(m, fieldFamilyHelp, fam.Help)
	m = appendTag(m, fieldFamilyType, wireVarint)
	m = binary.AppendUvarint(m, typeGauge)
	for _, s := range fam.Series {
		var metric []byte
		for _, l := range s.Labels {
			var pair []byte
			pair = appendString(pair, fieldLabelName, l.Name)
			pair = appendString(pair, fieldLabelValue, l.Value)
			metric = appendBytes(metric, fieldMetricLabel, pair)
		}
		var gauge []byte
		gauge = appendTag(gauge, fieldGaugeValue, wireFixed64)
		gauge = binary.LittleEndian.AppendUint64(gauge, math.Float64bits(s.Value))
		metric = appendBytes(metric, fieldMetricGauge, gauge)
		m = appendBytes(m, fieldFamilyMetric, metric)
	}
	b = binary.AppendUvarint(b, uint64(len(m)))
	return append(b, m...)
}

func appendTag(b []byte, field, wire int) []byte {
	return binary.AppendUvarint(b, uint64(field)<<3|uint64(wire))
}

func appendBytes(b []byte, field int, v []byte) []byte {
	b = appendTag(b, field, wireBytes)
	b = binary.AppendUvarint(b, uint64(len(v)))
	return append(b, v...)
}

func appendString(b []byte, field int, v string) []byte {
	return appendBytes(b, field, []byte(v))
}
