package image

import (
	"bytes"
	"encoding/json"
	"errors"
	"reflect"
	"strings"
	"testing"
	"time"
)

// realistic returns an image like one taken on a busy host: private and
// keyed sets of several sizes, a list shared by two processes (clone with
// CLONE_SYSVSEM), a stopped multi-threaded process, a process whose
// thread group leader has exited (its tids lack its pid), a list without
// entries, an all-zero entry, adjustments at both ends of the range, and a
// warning.
func realistic() *Image {
	big := make([]uint16, 300)
	bigPids := make([]int32, 300)
	for i := range big {
		big[i] = uint16(i * 109 % (MaxValue + 1))
		bigPids[i] = int32(4000 + i%7)
	}
	bigAdj := make([]int16, 300)
	bigAdj[0], bigAdj[299] = -32768, 32767
	return &Image{
		Created:        time.Date(2026, 11, 27, 14, 3, 59, 123456789, time.UTC),
		KernelRelease:  "6.18.44-cloud-amd64",
		Hostname:       "node-7",
		SemundoVersion: "0.4.0 (go1.26.8)",
		IPCNamespace:   4026532451,
		Limits:         Limits{Semmsl: 32000, Semmns: 1024000000, Semopm: 500, Semmni: 32000},
		Sets: []Set{
			{ID: 0, Key: 0, UID: 1000, GID: 1000, CUID: 1000, CGID: 1000, Mode: 0o600, Nsems: 1,
				Values: []uint16{1}, Otime: 0, Ctime: 1795788000, Sempids: []int32{0}},
			{ID: 32769, Key: 0x12345678, UID: 0, GID: 0, CUID: 0, CGID: 0, Mode: 0o666, Nsems: 4,
				Values: []uint16{0, 5, 32767, 2}, Otime: 1795788030, Ctime: 1795788001, Sempids: []int32{4001, 0, 4002, 4001}},
			{ID: 65538, Key: -254058033, UID: 1001, GID: 100, CUID: 0, CGID: 0, Mode: 0o640, Nsems: 300,
				Values: big, Otime: 1795788039, Ctime: 1795788002, Sempids: bigPids},
			{ID: 98307, Key: 0, UID: 65534, GID: 65534, CUID: 65534, CGID: 65534, Mode: 0o1600, Nsems: 2,
				Values: []uint16{0, 0}, Otime: 0, Ctime: 1795788003, Sempids: []int32{0, 0}},
		},
		Lists: []List{
			{
				Processes: []Process{
					{PID: 4001, Comm: "postgres", TIDs: []int32{4001}},
					{PID: 4002, Comm: "postgres: wal", TIDs: []int32{4002}},
				},
				Entries: []Entry{
					{Semid: 32769, Adj: []int16{-1, 0, 0, -2}},
					{Semid: 0, Adj: []int16{0}},
				},
			},
			{
				Processes: []Process{{PID: 4100, Comm: "worker \"a\"\t<7>", Stopped: true, TIDs: []int32{4100, 4101, 4102}}},
				Entries:   []Entry{{Semid: 65538, Adj: bigAdj}},
			},
			{
				Processes: []Process{{PID: 4200, Comm: "java", TIDs: []int32{4201, 4203}}},
			},
			{
				Processes: []Process{{PID: 4300, Comm: "éclair", TIDs: []int32{4300}}},
				Entries:   []Entry{{Semid: 98307, Adj: []int16{1, -1}}},
			},
		},
		Warnings: []string{"--force: list of pid 4002 is shared with pid 4999 outside the checkpoint"},
	}
}

// clone deep-copies an image by encoding and decoding it, which also
// checks that it is valid.
func clone(t testing.TB, im *Image) *Image {
	t.Helper()
	var b bytes.Buffer
	if err := Encode(&b, im); err != nil {
		t.Fatalf("Encode: %v", err)
	}
	out, err := Decode(&b)
	if err != nil {
		t.Fatalf("Decode: %v", err)
	}
	return out
}

// encodeRaw encodes im without validating it, to build invalid inputs.
func encodeRaw(t testing.TB, im *Image) []byte {
	t.Helper()
	var b bytes.Buffer
	if err := encode(&b, im); err != nil {
		t.Fatal(err)
	}
	return b.Bytes()
}

// sameImage reports whether a and b hold the same content: Created as an
// instant, nil and empty slices alike.
func sameImage(a, b *Image) bool {
	var ea, eb bytes.Buffer
	if encode(&ea, a) != nil || encode(&eb, b) != nil {
		return false
	}
	return bytes.Equal(ea.Bytes(), eb.Bytes()) && a.Created.Equal(b.Created)
}

// mutateJSON decodes data into generic JSON, lets f change it and encodes
// it again: the way to build inputs with the wrong shape.
func mutateJSON(t testing.TB, data []byte, f func(m map[string]any)) []byte {
	t.Helper()
	d := json.NewDecoder(bytes.NewReader(data))
	d.UseNumber()
	var m map[string]any
	if err := d.Decode(&m); err != nil {
		t.Fatal(err)
	}
	f(m)
	out, err := json.Marshal(m)
	if err != nil {
		t.Fatal(err)
	}
	return out
}

// obj and arr index into generic JSON.
func obj(v any, key string) map[string]any { return v.(map[string]any)[key].(map[string]any) }
func arr(v any, key string) []any          { return v.(map[string]any)[key].([]any) }

// checkErr asserts that err is a one-line *ValidationError of kind with
// path, whose message contains want.
func checkErr(t testing.TB, err error, kind error, path, want string) {
	t.Helper()
	if err == nil {
		t.Fatalf("no error; want %v at %q", kind, path)
	}
	var ve *ValidationError
	if !errors.As(err, &ve) {
		t.Fatalf("error %q (%T) is not a *ValidationError", err, err)
	}
	if !errors.Is(err, kind) {
		t.Errorf("error %q: kind %v, want %v", err, ve.Kind, kind)
	}
	if ve.Path != path {
		t.Errorf("error %q: path %q, want %q", err, ve.Path, path)
	}
	if !strings.Contains(err.Error(), want) {
		t.Errorf("error %q does not contain %q", err, want)
	}
	if strings.ContainsAny(err.Error(), "\n\r") {
		t.Errorf("error %q is not one line", err)
	}
	prefix := "image: "
	if ve.File != "" {
		prefix = "image " + ve.File + ": "
	}
	if path != "" {
		prefix += path + ": "
	}
	if !strings.HasPrefix(err.Error(), prefix) {
		t.Errorf("error %q does not start with %q", err, prefix)
	}
}

func TestRealisticIsValid(t *testing.T) {
	im := realistic()
	if err := im.Validate(); err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(im, realistic()) {
		t.Fatal("realistic() is not deterministic")
	}
}

// The field names of each object of the format, in the decoder's order.
var (
	imageNames   = memberNames(imageMembers)
	limitsNames  = memberNames(limitsMembers)
	setNames     = memberNames(setMembers)
	listNames    = memberNames(listMembers)
	processNames = memberNames(processMembers)
	entryNames   = memberNames(entryMembers)
)

func memberNames[T any](members []member[T]) []string {
	names := make([]string, len(members))
	for i, m := range members {
		names[i] = m.name
	}
	return names
}
