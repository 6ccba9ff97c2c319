package image

import (
	"bytes"
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"reflect"
	"strconv"
	"strings"
	"testing"
)

// FuzzDecode checks Decode on any input: it never panics; it fails only
// with a one-line *ValidationError of one of the three kinds; an image it
// accepts is valid JSON that encoding/json reads the same way, passes
// Validate, and survives Encode and Decode unchanged, byte for byte.
//
// The seed corpus in testdata/fuzz/FuzzDecode names each file after what
// Decode must do with it (TestSeedCorpus checks that): valid-*,
// version-*, malformed-*, inconsistent-*.
func FuzzDecode(f *testing.F) {
	f.Add(encodeRaw(f, realistic()))
	f.Fuzz(func(t *testing.T, data []byte) {
		im, err := Decode(bytes.NewReader(data))
		if err != nil {
			var ve *ValidationError
			if !errors.As(err, &ve) {
				t.Fatalf("error %q (%T) is not a *ValidationError", err, err)
			}
			if ve.Kind != ErrVersion && ve.Kind != ErrMalformed && ve.Kind != ErrInconsistent {
				t.Fatalf("error %q has kind %v", err, ve.Kind)
			}
			if msg := err.Error(); strings.ContainsAny(msg, "\n\r") || len(msg) > 1000 {
				t.Fatalf("message is not one short line: %q", msg)
			}
			return
		}
		if !json.Valid(data) {
			t.Fatal("accepted input that is not JSON")
		}
		if err := im.Validate(); err != nil {
			t.Fatalf("accepted image fails Validate: %v", err)
		}
		// Under a minor version, encoding/json would take an unknown
		// "Hostname" for "hostname" (it matches names case-insensitively);
		// the format matches exactly, so compare only strict images.
		if format, err := formatOf(data); err == nil {
			if strict, _ := checkFormat(format); strict {
				checkAgainstEncodingJSON(t, data, im)
			}
		}
		var first bytes.Buffer
		if err := Encode(&first, im); err != nil {
			t.Fatalf("accepted image does not encode: %v", err)
		}
		again, err := Decode(bytes.NewReader(first.Bytes()))
		if err != nil {
			t.Fatalf("re-encoded image is refused: %v\n%s", err, first.Bytes())
		}
		if !reflect.DeepEqual(im, again) {
			t.Fatalf("re-encoded image decodes differently:\n%+v\n%+v", im, again)
		}
		var second bytes.Buffer
		if err := Encode(&second, again); err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(first.Bytes(), second.Bytes()) {
			t.Fatalf("encoding is not stable:\n%s\n%s", first.Bytes(), second.Bytes())
		}
	})
}

// jsonImage mirrors the format for encoding/json, the reference the
// hand-written parser is compared with.
type jsonImage struct {
	Created        string  `json:"created"`
	KernelRelease  string  `json:"kernel_release"`
	Hostname       string  `json:"hostname"`
	SemundoVersion string  `json:"semundo_version"`
	IPCNS          uint64  `json:"ipcns"`
	Limits         Limits  `json:"limits"`
	Sets           []Set   `json:"sets"`
	Lists          []jList `json:"lists"`
	Warnings       []string
}

type jList struct {
	Processes []struct {
		PID     int32   `json:"pid"`
		Comm    string  `json:"comm"`
		Stopped bool    `json:"stopped"`
		TIDs    []int32 `json:"tids"`
	} `json:"processes"`
	Entries []struct {
		Semid int32   `json:"semid"`
		Adj   []int16 `json:"adj"`
	} `json:"entries"`
}

// checkAgainstEncodingJSON decodes data with encoding/json (which matches
// untagged fields case-insensitively, so Set and Limits need no tags) and
// compares every field with what Decode returned.
func checkAgainstEncodingJSON(t *testing.T, data []byte, im *Image) {
	t.Helper()
	var j jsonImage
	if err := json.Unmarshal(data, &j); err != nil {
		// encoding/json refuses only what it cannot hold, such as an
		// unknown field in a minor version with a value of another type
		// than a same-named Go field; nothing to compare then.
		t.Logf("encoding/json: %v", err)
		return
	}
	if im.KernelRelease != j.KernelRelease || im.Hostname != j.Hostname || im.SemundoVersion != j.SemundoVersion ||
		im.IPCNamespace != j.IPCNS || im.Limits != j.Limits {
		t.Fatalf("header differs from encoding/json's reading: %+v vs %+v", im, j)
	}
	if len(im.Sets) != len(j.Sets) || len(im.Lists) != len(j.Lists) {
		t.Fatalf("%d sets and %d lists, encoding/json reads %d and %d", len(im.Sets), len(im.Lists), len(j.Sets), len(j.Lists))
	}
	for i := range im.Sets {
		a, b := im.Sets[i], j.Sets[i]
		// Decode holds an empty array as nil, as Validate and Encode
		// treat either: "none recorded".
		nilIfEmpty(&b.Values)
		nilIfEmpty(&b.Sempids)
		if !reflect.DeepEqual(a, b) {
			t.Fatalf("sets[%d] differs from encoding/json's reading:\n%+v\n%+v", i, a, b)
		}
	}
	for i := range im.Lists {
		a, b := im.Lists[i], j.Lists[i]
		if len(a.Processes) != len(b.Processes) || len(a.Entries) != len(b.Entries) {
			t.Fatalf("lists[%d] differs from encoding/json's reading", i)
		}
		for k, p := range a.Processes {
			q := b.Processes[k]
			if p.PID != q.PID || p.Comm != q.Comm || p.Stopped != q.Stopped || !reflect.DeepEqual(p.TIDs, q.TIDs) {
				t.Fatalf("lists[%d].processes[%d] %+v, encoding/json reads %+v", i, k, p, q)
			}
		}
		for k, e := range a.Entries {
			q := b.Entries[k]
			if e.Semid != q.Semid || !reflect.DeepEqual(e.Adj, q.Adj) {
				t.Fatalf("lists[%d].entries[%d] %+v, encoding/json reads %+v", i, k, e, q)
			}
		}
	}
	// An empty array decodes as nil here, as []string{} there.
	if len(im.Warnings) != len(j.Warnings) || (len(j.Warnings) > 0 && !reflect.DeepEqual(im.Warnings, j.Warnings)) {
		t.Fatalf("warnings %q, encoding/json reads %q", im.Warnings, j.Warnings)
	}
}

// readCorpusFile returns the input stored in a "go test fuzz v1" file.
func readCorpusFile(t *testing.T, path string) []byte {
	t.Helper()
	raw, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	body, ok := strings.CutPrefix(string(raw), "go test fuzz v1\n")
	body = strings.TrimSpace(body)
	lit, ok2 := strings.CutPrefix(body, "[]byte(")
	lit, ok3 := strings.CutSuffix(lit, ")")
	if !ok || !ok2 || !ok3 {
		t.Fatalf("%s is not a one-[]byte fuzz corpus file", path)
	}
	s, err := strconv.Unquote(lit)
	if err != nil {
		t.Fatalf("%s: %v", path, err)
	}
	return []byte(s)
}

// TestSeedCorpus checks that the seed corpus covers every outcome and that
// each file gets the outcome its name promises.
func TestSeedCorpus(t *testing.T) {
	paths, err := filepath.Glob(filepath.Join("testdata", "fuzz", "FuzzDecode", "*"))
	if err != nil {
		t.Fatal(err)
	}
	if len(paths) < 12 {
		t.Fatalf("%d seed files, want at least 12", len(paths))
	}
	kinds := map[string]error{"valid": nil, "version": ErrVersion, "malformed": ErrMalformed, "inconsistent": ErrInconsistent}
	seen := map[string]int{}
	for _, path := range paths {
		name := filepath.Base(path)
		prefix, _, _ := strings.Cut(name, "-")
		want, ok := kinds[prefix]
		if !ok {
			if strings.HasPrefix(name, "regression-") || strings.HasPrefix(name, "fuzzed-") {
				// Found by the fuzzer (fuzzed-: kept from a 10-minute run
				// as corpus); FuzzDecode's invariants apply.
				continue
			}
			t.Errorf("%s: name does not say what Decode must do", name)
			continue
		}
		seen[prefix]++
		_, err := Decode(bytes.NewReader(readCorpusFile(t, path)))
		switch {
		case want == nil && err != nil:
			t.Errorf("%s: %v", name, err)
		case want != nil && !errors.Is(err, want):
			t.Errorf("%s: error %v, want %v", name, err, want)
		default:
			t.Logf("%s: %v", name, err)
		}
	}
	for prefix := range kinds {
		if seen[prefix] == 0 {
			t.Errorf("no %s-* seed", prefix)
		}
	}
}
