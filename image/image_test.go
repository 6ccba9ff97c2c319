package image

import (
	"bytes"
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"strings"
	"testing"
	"testing/iotest"
	"time"

	"github.com/semundo/semundo/undo"
)

func TestRoundTrip(t *testing.T) {
	in := realistic()
	var first bytes.Buffer
	if err := Encode(&first, in); err != nil {
		t.Fatal(err)
	}
	out, err := Decode(bytes.NewReader(first.Bytes()))
	if err != nil {
		t.Fatal(err)
	}
	// The decoded image equals the original field for field: the original
	// was built in UTC with every slice non-nil except one list's entries.
	want := realistic()
	want.Lists[2].Entries = nil
	if !reflect.DeepEqual(out, want) {
		t.Errorf("decoded image differs:\n got %+v\nwant %+v", out, want)
	}
	var second bytes.Buffer
	if err := Encode(&second, out); err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(first.Bytes(), second.Bytes()) {
		t.Errorf("re-encoding changed the bytes:\n%s\n---\n%s", first.Bytes(), second.Bytes())
	}
	// Other JSON readers see the same document.
	var generic map[string]any
	if err := json.Unmarshal(first.Bytes(), &generic); err != nil {
		t.Fatalf("encoding/json rejects the output: %v", err)
	}
	if generic["format"] != FormatVersion || generic["ipcns"] != float64(4026532451) {
		t.Errorf("format %v, ipcns %v", generic["format"], generic["ipcns"])
	}
	if got := len(arr(arr(generic, "lists")[1], "processes")); got != 1 {
		t.Errorf("lists[1] has %d processes, want 1", got)
	}
}

func TestEncodeLayout(t *testing.T) {
	var b bytes.Buffer
	if err := Encode(&b, realistic()); err != nil {
		t.Fatal(err)
	}
	lines := strings.Split(strings.TrimSuffix(b.String(), "\n"), "\n")
	// 1 brace + 6 header + limits + "sets" + 4 sets + "]," + "lists" + 4
	// lists + "]," + "warnings" + 1 warning + "]" + brace
	if len(lines) != 24 {
		t.Errorf("%d lines, want 24 (one per set, list and warning):\n%s", len(lines), b.String())
	}
	for _, want := range []string{
		`  "format": "semundo/1",`,
		`  "created": "2026-11-27T14:03:59.123456789Z",`,
		`  "limits": {"semmsl": 32000, "semmns": 1024000000, "semopm": 500, "semmni": 32000},`,
		`    {"id": 32769, "key": 305419896, "uid": 0, "gid": 0, "cuid": 0, "cgid": 0, "mode": 438, "nsems": 4, "otime": 1795788030, "ctime": 1795788001, "values": [0, 5, 32767, 2], "sempids": [4001, 0, 4002, 4001]},`,
		`    {"processes": [{"pid": 4100, "comm": "worker \"a\"\t<7>", "stopped": true, "tids": [4100, 4101, 4102]}], "entries": [{"semid": 65538, "adj": [-32768, 0,`,
		`    {"processes": [{"pid": 4200, "comm": "java", "stopped": false, "tids": [4201, 4203]}], "entries": []},`,
	} {
		if !slices.ContainsFunc(lines, func(l string) bool { return strings.HasPrefix(l, want) }) {
			t.Errorf("no line starts with %s", want)
		}
	}
}

func TestEncodeEmptyNamespace(t *testing.T) {
	im := realistic()
	im.Sets, im.Lists, im.Warnings = nil, nil, nil
	var b bytes.Buffer
	if err := Encode(&b, im); err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(b.String(), "\"sets\": [],\n  \"lists\": []\n}") {
		t.Errorf("empty arrays not written as []:\n%s", b.String())
	}
	out, err := Decode(&b)
	if err != nil {
		t.Fatal(err)
	}
	if out.Sets != nil || out.Lists != nil || out.Warnings != nil {
		t.Errorf("empty arrays decode to %#v %#v %#v, want nil", out.Sets, out.Lists, out.Warnings)
	}
	// An empty "warnings" is accepted and decodes as nil, so the image
	// re-encodes without it (found by FuzzDecode: regression-empty-warnings).
	withEmpty := strings.Replace(encodeString(t, im), "\"lists\": []\n}", "\"lists\": [],\n  \"warnings\": []\n}", 1)
	out, err = Decode(strings.NewReader(withEmpty))
	if err != nil || out.Warnings != nil {
		t.Fatalf("Decode with empty warnings: %v, %#v", err, out.Warnings)
	}
	if got := encodeString(t, out); strings.Contains(got, "warnings") {
		t.Errorf("empty warnings re-encoded:\n%s", got)
	}
}

// encodeString returns Encode's output as a string.
func encodeString(t *testing.T, im *Image) string {
	t.Helper()
	var b bytes.Buffer
	if err := Encode(&b, im); err != nil {
		t.Fatal(err)
	}
	return b.String()
}

func TestEncodeNormalizes(t *testing.T) {
	im := realistic()
	// A local time with a monotonic reading, as time.Now() gives.
	im.Created = time.Now().In(time.FixedZone("CET", 3600))
	im.Lists[0].Processes[0].Comm = "bad\xffutf8\x01\x7f"
	out := clone(t, im)
	if !out.Created.Equal(im.Created) || out.Created.Location() != time.UTC {
		t.Errorf("created %v, want %v in UTC", out.Created, im.Created)
	}
	if got := out.Lists[0].Processes[0].Comm; got != "bad\uFFFDutf8\x01\x7f" {
		t.Errorf("comm %q, want invalid UTF-8 replaced by U+FFFD", got)
	}
}

func TestEncodeRefusesInvalid(t *testing.T) {
	im := realistic()
	im.Sets[1].Values[0] = 40000
	var b bytes.Buffer
	err := Encode(&b, im)
	checkErr(t, err, ErrInconsistent, "sets[1].values[0]", "value 40000 is outside 0..32767")
	if b.Len() != 0 {
		t.Errorf("Encode wrote %d bytes of an invalid image", b.Len())
	}
}

func TestEncodeWriteError(t *testing.T) {
	boom := errors.New("disk on fire")
	w := &failAfter{n: 100, err: boom}
	err := Encode(w, realistic())
	if !errors.Is(err, boom) {
		t.Fatalf("error %v does not wrap the writer's", err)
	}
	if errors.Is(err, ErrMalformed) || errors.Is(err, ErrInconsistent) {
		t.Errorf("a write error is reported as a content error: %v", err)
	}
}

// failAfter accepts n bytes, then fails every write.
type failAfter struct {
	n   int
	err error
}

func (w *failAfter) Write(p []byte) (int, error) {
	if len(p) > w.n {
		n := w.n
		w.n = 0
		return n, w.err
	}
	w.n -= len(p)
	return len(p), nil
}

func TestDecodeReadError(t *testing.T) {
	boom := errors.New("read failed")
	_, err := Decode(iotest.ErrReader(boom))
	if !errors.Is(err, boom) {
		t.Fatalf("error %v does not wrap the reader's", err)
	}
	var ve *ValidationError
	if errors.As(err, &ve) {
		t.Errorf("a read error is reported as a *ValidationError: %v", err)
	}
}

func TestDecodeOneByteReads(t *testing.T) {
	var b bytes.Buffer
	if err := Encode(&b, realistic()); err != nil {
		t.Fatal(err)
	}
	out, err := Decode(iotest.OneByteReader(&b))
	if err != nil {
		t.Fatal(err)
	}
	if !sameImage(out, realistic()) {
		t.Error("image read one byte at a time differs")
	}
}

func TestLookups(t *testing.T) {
	im := realistic()
	if s := im.Set(65538); s == nil || s.Nsems != 300 {
		t.Errorf("Set(65538) = %+v", s)
	}
	if s := im.Set(1); s != nil {
		t.Errorf("Set(1) = %+v, want nil", s)
	}
	im.Set(0).Values[0] = 7
	if im.Sets[0].Values[0] != 7 {
		t.Error("Set does not point into the image")
	}
	for pid, want := range map[int32]int{4001: 0, 4002: 0, 4100: 1, 4102: 1, 4200: 2, 4203: 2, 4300: 3, 4202: -1, 1: -1} {
		l := im.ListOf(pid)
		switch {
		case want < 0 && l != nil:
			t.Errorf("ListOf(%d) = %+v, want nil", pid, l)
		case want >= 0 && l != &im.Lists[want]:
			t.Errorf("ListOf(%d) is not lists[%d]", pid, want)
		}
	}
	if got := im.Lists[0].PIDs(); !slices.Equal(got, []int32{4001, 4002}) {
		t.Errorf("PIDs() = %v", got)
	}
	var none *Image
	var noList *List
	none.Sort()
	if none.Set(0) != nil || none.ListOf(1) != nil || noList.Undo() != nil || noList.PIDs() != nil {
		t.Error("nil receivers give non-nil results")
	}
}

func TestUndo(t *testing.T) {
	im := realistic()
	l := &im.Lists[0]
	u := l.Undo()
	want := undo.List{{Semid: 32769, Adj: []int16{-1, 0, 0, -2}}, {Semid: 0, Adj: []int16{0}}}
	if !u.Equal(want) {
		t.Fatalf("Undo() = %v, want %v", u, want)
	}
	text, err := undo.Marshal(u)
	if err != nil || string(text) != "0 0\n32769 -1 0 0 -2\n" {
		t.Errorf("undo.Marshal(Undo()) = %q, %v", text, err)
	}
	u[0].Adj[0] = 99
	if l.Entries[0].Adj[0] != -1 {
		t.Error("Undo() shares memory with the image")
	}
	if got := im.Lists[2].Undo(); got != nil {
		t.Errorf("Undo() of a list without entries = %v, want nil", got)
	}
}

func TestSort(t *testing.T) {
	im := realistic()
	slices.Reverse(im.Sets)
	slices.Reverse(im.Lists)
	slices.Reverse(im.Lists[3].Processes)
	slices.Reverse(im.Lists[3].Entries)
	slices.Reverse(im.Lists[0].Processes[0].TIDs)
	im.Sort()
	for i := 1; i < len(im.Sets); i++ {
		if im.Sets[i-1].ID >= im.Sets[i].ID {
			t.Fatalf("sets not sorted: %d before %d", im.Sets[i-1].ID, im.Sets[i].ID)
		}
	}
	var firsts []int32
	for _, l := range im.Lists {
		firsts = append(firsts, l.Processes[0].PID)
		if !slices.IsSortedFunc(l.Entries, func(a, b Entry) int { return int(a.Semid - b.Semid) }) {
			t.Errorf("entries not sorted: %+v", l.Entries)
		}
	}
	if !slices.Equal(firsts, []int32{4001, 4100, 4200, 4300}) {
		t.Errorf("lists in order %v", firsts)
	}
	if got := im.Lists[1].Processes[0].TIDs; !slices.Equal(got, []int32{4100, 4101, 4102}) {
		t.Errorf("tids %v", got)
	}
	if got := im.Lists[0].Entries; got[0].Semid != 0 || got[1].Semid != 32769 {
		t.Errorf("entries %+v", got)
	}
	if !sameImage(clone(t, im), im) {
		t.Error("sorted image does not round-trip")
	}
}

// TestDocs checks docs/image.md against the code: its example decodes and
// is in Encode's layout, and its tables name every field the decoder knows.
func TestDocs(t *testing.T) {
	doc, err := os.ReadFile(filepath.Join("..", "docs", "image.md"))
	if err != nil {
		t.Fatal(err)
	}
	_, rest, ok := strings.Cut(string(doc), "```json\n")
	example, _, ok2 := strings.Cut(rest, "```")
	if !ok || !ok2 {
		t.Fatal("docs/image.md has no ```json example")
	}
	im, err := Decode(strings.NewReader(example))
	if err != nil {
		t.Fatalf("the example does not decode: %v", err)
	}
	var b bytes.Buffer
	if err := Encode(&b, im); err != nil {
		t.Fatal(err)
	}
	if b.String() != example {
		t.Errorf("the example is not in Encode's layout; Encode writes:\n%s", b.String())
	}
	for _, names := range [][]string{imageNames, limitsNames, setNames, listNames, processNames, entryNames} {
		for _, n := range names {
			if !strings.Contains(string(doc), "| `"+n+"` |") {
				t.Errorf("docs/image.md has no table row for field %q", n)
			}
		}
	}
}
