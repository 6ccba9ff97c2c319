package guest_test

import (
	"errors"
	"testing"
	"time"

	"github.com/semundo/semundo/kmatrix/guest"
)

func TestRoundTrip(t *testing.T) {
	for _, e := range []guest.Event{
		{Kind: guest.KindBoot, Release: "6.1.0-56-cloud-amd64", Uptime: 3210 * time.Millisecond},
		{Kind: guest.KindStart, Binary: "sample"},
		{Kind: guest.KindOut, Binary: "sample", Text: "--- PASS: TestX (0.01s)"},
		{Kind: guest.KindOut, Binary: "sample", Text: ""},
		{Kind: guest.KindOut, Binary: "sample", Text: "  leading and trailing spaces  "},
		{Kind: guest.KindExit, Binary: "sample", Code: 1, Elapsed: 1500 * time.Millisecond},
		{Kind: guest.KindExit, Binary: "sample", Code: -1, Elapsed: 90 * time.Second, Reason: "timeout after 1m30s"},
		{Kind: guest.KindError, Text: "mount /proc: operation not permitted"},
		{Kind: guest.KindDone},
	} {
		line := guest.Format(e)
		got, err := guest.Parse(line + "\r\n")
		if err != nil {
			t.Errorf("Parse(%q): %v", line, err)
			continue
		}
		if got != e {
			t.Errorf("Parse(Format(%+v)) = %+v (line %q)", e, got, line)
		}
	}
}

func TestSanitize(t *testing.T) {
	line := guest.Format(guest.Event{Kind: guest.KindOut, Binary: "a b", Text: "x\ny"})
	got, err := guest.Parse(line)
	if err != nil || got.Binary != "a_b" || got.Text != `x\ny` {
		t.Errorf("Parse(%q) = %+v, %v; want binary a_b and text x\\ny on one line", line, got, err)
	}
}

func TestNoise(t *testing.T) {
	// A kernel message left without its newline ends up before the marker.
	got, err := guest.Parse("[   12.3] random: crng init done@@kmx start sample")
	if err != nil || got.Kind != guest.KindStart || got.Binary != "sample" {
		t.Errorf("marker after noise: %+v, %v", got, err)
	}
	if _, err := guest.Parse("[    0.000000] Linux version 6.1.0"); !errors.Is(err, guest.ErrNotFramed) {
		t.Errorf("kernel line: %v, want ErrNotFramed", err)
	}
	for _, l := range []string{"@@kmx exit sample x 1.0 -", "@@kmx boot onlyone", "@@kmx exit sample 0", "@@kmx what", "@@kmx start", "@@kmx boot r -1"} {
		if _, err := guest.Parse(l); !errors.Is(err, guest.ErrBadFrame) {
			t.Errorf("Parse(%q) = %v, want ErrBadFrame", l, err)
		}
	}
}
