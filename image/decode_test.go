package image

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"runtime"
	"strings"
	"testing"
	"time"
)

// replace1 replaces the first old in data, failing the test if absent.
func replace1(t testing.TB, data []byte, old, new string) []byte {
	t.Helper()
	if !bytes.Contains(data, []byte(old)) {
		t.Fatalf("%q not in the input", old)
	}
	return bytes.Replace(data, []byte(old), []byte(new), 1)
}

func TestDecodeMalformed(t *testing.T) {
	base := encodeRaw(t, realistic())
	set := func(path func(m map[string]any) map[string]any, key string, v any) func([]byte) []byte {
		return func(data []byte) []byte {
			return mutateJSON(t, data, func(m map[string]any) {
				o := path(m)
				if v == nil {
					delete(o, key)
				} else {
					o[key] = v
				}
			})
		}
	}
	top := func(m map[string]any) map[string]any { return m }
	set1 := func(m map[string]any) map[string]any { return arr(m, "sets")[1].(map[string]any) }
	proc01 := func(m map[string]any) map[string]any {
		return arr(arr(m, "lists")[0], "processes")[1].(map[string]any)
	}
	null := json.RawMessage("null")
	for _, tc := range []struct {
		name  string
		input func([]byte) []byte
		path  string
		want  string
	}{
		{"empty", func([]byte) []byte { return nil }, "", "empty input"},
		{"white space", func([]byte) []byte { return []byte(" \n\t\r\n") }, "", "empty input"},
		{"truncated", func(b []byte) []byte { return b[:len(b)/2] }, "", "truncated: unexpected end of JSON input at line "},
		{"truncated after the object", func(b []byte) []byte { return b[:len(b)-3] }, "", "truncated"},
		{"trailing garbage", func(b []byte) []byte { return append(b, "x\n"...) }, "", "not valid JSON: invalid character 'x' after top-level value at line 25, column 1 (byte offset 6503)"},
		{"two objects", func(b []byte) []byte { return append(b, b...) }, "", "after top-level value"},
		{"not JSON", func([]byte) []byte { return []byte("semundo/1\n") }, "", "not valid JSON: invalid character 's' looking for beginning of value at line 1, column 1 (byte offset 0)"},
		{"not UTF-8", func(b []byte) []byte { return replace1(t, b, "node-7", "node\xff7") }, "", "not UTF-8 text at line 5, column 20 (byte offset 136)"},
		{"array", func([]byte) []byte { return []byte(`[{"format": "semundo/1"}]`) }, "", "want a JSON object (a semundo image), got an array at line 1, column 1"},
		{"string", func([]byte) []byte { return []byte(`"semundo/1"`) }, "", "got a string"},
		{"unknown top-level field", set(top, "extra", 1), "", `unknown field "extra" (semundo/1 has no such field; an image with extensions must declare "semundo/1.N")`},
		{"unknown field in a set", set(set1, "semncnt", 0), "sets[1]", `unknown field "semncnt"`},
		{"unknown field in a process", set(proc01, "cgroup", "/"), "lists[0].processes[1]", `unknown field "cgroup"`},
		{"repeated top-level field", func(b []byte) []byte {
			return replace1(t, b, `"hostname": "node-7",`, `"hostname": "node-7", "hostname": "node-8",`)
		}, "", `field "hostname" appears twice at line 5, column 25`},
		{"repeated field in a set", func(b []byte) []byte {
			return replace1(t, b, `{"id": 32769, `, `{"id": 32769, "id": 1, `)
		}, "sets[1]", `field "id" appears twice`},
		{"repeated format", func(b []byte) []byte {
			return replace1(t, b, `"format": "semundo/1",`, `"format": "semundo/1", "format": "semundo/1",`)
		}, "", `field "format" appears twice`},
		{"repeated field spelled with an escape", func(b []byte) []byte {
			return replace1(t, b, `"hostname": "node-7",`, `"hostname": "node-7", "host\u006eame": "node-8",`)
		}, "", `field "hostname" appears twice`},
		{"missing top-level field", set(top, "lists", nil), "", `missing field "lists" at line 1, column 1`},
		{"missing created", set(top, "created", nil), "", `missing field "created"`},
		{"missing set field", set(set1, "nsems", nil), "sets[1]", `missing field "nsems"`},
		{"missing informational field", set(set1, "sempids", nil), "sets[1]", `missing field "sempids"`},
		{"missing stopped", set(proc01, "stopped", nil), "lists[0].processes[1]", `missing field "stopped"`},
		{"null sets", set(top, "sets", null), "sets", "want an array, got null"},
		{"null values", set(set1, "values", null), "sets[1].values", "want an array, got null"},
		{"null hostname", set(top, "hostname", null), "hostname", "want a string, got null"},
		{"string id", set(set1, "id", "32769"), "sets[1].id", "want an integer, got a string"},
		{"boolean key", set(set1, "key", true), "sets[1].key", "want an integer, got a boolean"},
		{"fraction", set(set1, "nsems", json.Number("4.0")), "sets[1].nsems", "want an integer, got 4.0"},
		{"exponent", set(set1, "otime", json.Number("1e3")), "sets[1].otime", "want an integer, got 1e3"},
		{"number stopped", set(proc01, "stopped", 0), "lists[0].processes[1].stopped", "want a boolean, got a number"},
		{"number comm", set(proc01, "comm", 7), "lists[0].processes[1].comm", "want a string, got a number"},
		{"object tids", set(proc01, "tids", map[string]any{}), "lists[0].processes[1].tids", "want an array, got an object"},
		{"string in values", func(b []byte) []byte { return replace1(t, b, `"values": [0, 5,`, `"values": [0, "5",`) },
			"sets[1].values[1]", "want an integer, got a string"},
		{"limits array", set(top, "limits", []int{1, 2, 3, 4}), "limits", "want an object, got an array"},
		{"entry not an object", func(b []byte) []byte {
			return replace1(t, b, `"entries": [{"semid": 32769`, `"entries": [7, {"semid": 32769`)
		},
			"lists[0].entries[0]", "want an object, got a number"},
		{"created not a time", set(top, "created", "yesterday"), "created", `want an RFC 3339 time such as "2006-01-02T15:04:05Z", got "yesterday"`},
		{"created without zone", set(top, "created", "2026-11-27T14:03:59"), "created", "want an RFC 3339 time"},
		{"ipcns float", set(top, "ipcns", json.Number("4026532451.0")), "ipcns", "want an integer"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := Decode(bytes.NewReader(tc.input(bytes.Clone(base))))
			checkErr(t, err, ErrMalformed, tc.path, tc.want)
		})
	}
}

// TestDecodeOutOfType covers numbers a Go field cannot hold: Decode must
// reject them with the range rule's message (ErrInconsistent), not wrap
// them around.
func TestDecodeOutOfType(t *testing.T) {
	base := encodeRaw(t, realistic())
	for _, tc := range []struct {
		old, new string
		path     string
		want     string
	}{
		{`"values": [0, 5,`, `"values": [-1, 5,`, "sets[1].values[0]", "value -1 is outside 0..32767 (SEMVMX)"},
		{`"values": [0, 5,`, `"values": [0, 70000,`, "sets[1].values[1]", "value 70000 is outside 0..32767"},
		{`"values": [0, 5,`, `"values": [0, 99999999999999999999999,`, "sets[1].values[1]", "value 99999999999999999999999 is outside"},
		{`"values": [0, 5,`, `"values": [0, -99999999999999999999999,`, "sets[1].values[1]", "value -99999999999999999999999 is outside"},
		{`"adj": [-1, 0,`, `"adj": [32768, 0,`, "lists[0].entries[0].adj[0]", "adjustment 32768 is outside -32768..32767"},
		{`"adj": [-1, 0,`, `"adj": [-1, -32769,`, "lists[0].entries[0].adj[1]", "adjustment -32769 is outside"},
		{`{"id": 32769,`, `{"id": 2147483648,`, "sets[1].id", "id 2147483648 is outside 0..2147483647"},
		{`"key": 305419896`, `"key": 4294967295`, "sets[1].key", "key 4294967295 is outside -2147483648..2147483647 (key_t is a signed 32-bit int; write keys above 0x7fffffff as negative numbers)"},
		{`"key": 305419896`, `"key": -2147483649`, "sets[1].key", "key -2147483649"},
		{`"uid": 1000,`, `"uid": -1,`, "sets[0].uid", "uid -1 is outside 0..4294967294"},
		{`"uid": 1000,`, `"uid": 4294967296,`, "sets[0].uid", "uid 4294967296"},
		{`"mode": 384`, `"mode": -1`, "sets[0].mode", "mode -1 is outside 0..65535"},
		{`"nsems": 1,`, `"nsems": 4611686018427387904,`, "sets[0].nsems", "nsems 4611686018427387904 is outside 1..33554431"},
		{`"sempids": [4001,`, `"sempids": [2147483648,`, "sets[1].sempids[0]", "sempid 2147483648"},
		{`"otime": 0,`, `"otime": -9223372036854775809,`, "sets[0].otime", "otime -9223372036854775809 is outside 0..9223372036854775807"},
		{`"pid": 4001,`, `"pid": -1,`, "lists[0].processes[0].pid", "pid -1 is outside 1..2147483647"},
		{`"tids": [4100, 4101,`, `"tids": [4100, 2147483648,`, "lists[1].processes[0].tids[1]", "tid 2147483648"},
		{`{"semid": 32769,`, `{"semid": -1,`, "lists[0].entries[0].semid", "semid -1 is outside 0..2147483647 (a negative semid marks a removed set; drop the entry)"},
		{`"ipcns": 4026532451`, `"ipcns": -4026532451`, "ipcns", "ipcns -4026532451 is outside 1..9223372036854775807"},
		{`"ipcns": 4026532451`, `"ipcns": 9223372036854775808`, "ipcns", "ipcns 9223372036854775808"},
		{`"semmsl": 32000`, `"semmsl": 2147483648`, "limits.semmsl", "semmsl 2147483648 is outside -2147483648..2147483647 (a C int)"},
		{`"semmni": 32000`, `"semmni": -1`, "limits.semmni", "semmni -1 is outside 0..16777216"},
	} {
		t.Run(tc.path+"="+tc.new, func(t *testing.T) {
			_, err := Decode(bytes.NewReader(replace1(t, base, tc.old, tc.new)))
			checkErr(t, err, ErrInconsistent, tc.path, tc.want)
		})
	}
}

func TestVersions(t *testing.T) {
	base := encodeRaw(t, realistic())
	withFormat := func(f string) []byte {
		return replace1(t, base, `"format": "semundo/1"`, `"format": `+f)
	}
	// An extension a minor version might add: fields at every level,
	// including objects and arrays the decoder must skip whole.
	extended := func(f string) []byte {
		b := withFormat(f)
		b = replace1(t, b, `"hostname": "node-7",`, `"hostname": "node-7", "pidns": 4026531836, "cgroup": {"path": "/a", "x": [1, {"y": "}]"}]},`)
		b = replace1(t, b, `{"id": 32769, `, `{"id": 32769, "semzcnt": [0, 0, 0, 0], `)
		b = replace1(t, b, `{"pid": 4100, `, `{"pid": 4100, "starttime": 1234, "state": "T", `)
		b = replace1(t, b, `{"semid": 98307, `, `{"semid": 98307, "note": null, "flag": false, `)
		return b
	}
	for _, tc := range []struct {
		name  string
		input []byte
		kind  error // nil: decodes to realistic()
		path  string
		want  string
	}{
		{"semundo/1", withFormat(`"semundo/1"`), nil, "", ""},
		{"semundo/1.0", withFormat(`"semundo/1.0"`), nil, "", ""},
		{"semundo/1.7", withFormat(`"semundo/1.7"`), nil, "", ""},
		{"semundo/1.7 with extensions", extended(`"semundo/1.7"`), nil, "", ""},
		{"semundo/1.12 with extensions", extended(`"semundo/1.12"`), nil, "", ""},
		{"semundo/1 with extensions", extended(`"semundo/1"`), ErrMalformed, "", `unknown field "pidns"`},
		{"semundo/1.0 with extensions", extended(`"semundo/1.0"`), ErrMalformed, "", `unknown field "pidns"`},
		{"semundo/1.7 still needs every field", mutateJSON(t, withFormat(`"semundo/1.7"`), func(m map[string]any) { delete(m, "sets") }),
			ErrMalformed, "", `missing field "sets"`},
		{"semundo/1.7 still rejects repeats", replace1(t, extended(`"semundo/1.7"`), `"pidns": 4026531836,`, `"pidns": 4026531836, "pidns": 1,`),
			ErrMalformed, "", `field "pidns" appears twice`},
		{"semundo/1.7 still checks content", replace1(t, withFormat(`"semundo/1.7"`), `"values": [0, 5,`, `"values": [0, 50000,`),
			ErrInconsistent, "sets[1].values[1]", "value 50000"},
		{"semundo/2", withFormat(`"semundo/2"`), ErrVersion, "format",
			`"semundo/2" is major version 2; this decoder reads major version 1 only ("semundo/1" and "semundo/1.N"): use a newer semundo`},
		{"semundo/2.1", withFormat(`"semundo/2.1"`), ErrVersion, "format", "major version 2;"},
		{"semundo/10", withFormat(`"semundo/10"`), ErrVersion, "format", "major version 10;"},
		{"semundo/0", withFormat(`"semundo/0"`), ErrVersion, "format",
			`"semundo/0" is major version 0, which this semundo does not read: it reads major version 1 only ("semundo/1" and "semundo/1.N")`},
		{"a semundo/2 document of another shape", []byte(`{"images": [], "format": "semundo/2"}`), ErrVersion, "format", "major version 2"},
		{"semundo/01", withFormat(`"semundo/01"`), ErrVersion, "format", `"semundo/01" is not a version`},
		{"semundo/1.01", withFormat(`"semundo/1.01"`), ErrVersion, "format", "not a version"},
		{"semundo/1.", withFormat(`"semundo/1."`), ErrVersion, "format", "not a version"},
		{"semundo/1.2.3", withFormat(`"semundo/1.2.3"`), ErrVersion, "format", "not a version"},
		{"semundo/v1", withFormat(`"semundo/v1"`), ErrVersion, "format", "not a version"},
		{"semundo/", withFormat(`"semundo/"`), ErrVersion, "format", "not a version"},
		{"SEMUNDO/1", withFormat(`"SEMUNDO/1"`), ErrVersion, "format", `"SEMUNDO/1" is not a semundo image format; want "semundo/1"`},
		{"criu", withFormat(`"criu/3.19"`), ErrVersion, "format", "not a semundo image format"},
		{"empty format", withFormat(`""`), ErrVersion, "format", "not a semundo image format"},
		{"long format", withFormat(`"` + strings.Repeat("x", 10000) + `"`), ErrVersion, "format", `"xxxxxxxx`},
		{"format a number", withFormat(`1`), ErrVersion, "format", `want a string such as "semundo/1", got a number; not a semundo image`},
		{"format null", withFormat(`null`), ErrVersion, "format", "got null"},
		{"no format", mutateJSON(t, base, func(m map[string]any) { delete(m, "format") }), ErrVersion, "",
			`no "format" field; not a semundo image (want "format": "semundo/1")`},
		{"other JSON", []byte(`{"apiVersion": "v1", "kind": "Pod"}`), ErrVersion, "", `no "format" field`},
		{"empty object", []byte(`{}`), ErrVersion, "", `no "format" field`},
		{"format last", mutateJSON(t, base, func(map[string]any) {}), nil, "", ""}, // encoding/json sorts keys
	} {
		t.Run(tc.name, func(t *testing.T) {
			im, err := Decode(bytes.NewReader(tc.input))
			if tc.kind == nil {
				if err != nil {
					t.Fatal(err)
				}
				if !sameImage(im, realistic()) {
					t.Error("decoded image differs from the one encoded")
				}
				return
			}
			checkErr(t, err, tc.kind, tc.path, tc.want)
			if len(err.Error()) > 400 {
				t.Errorf("message of %d bytes", len(err.Error()))
			}
		})
	}
}

func TestSyntaxErrorIsReachable(t *testing.T) {
	_, err := Decode(strings.NewReader(`{"format": "semundo/1",}`))
	var se *json.SyntaxError
	if !errors.As(err, &se) || se.Offset != 24 {
		t.Fatalf("error %v: want a *json.SyntaxError at offset 24", err)
	}
	checkErr(t, err, ErrMalformed, "", "invalid character '}' looking for beginning of object key string at line 1, column 24 (byte offset 23)")
	_, err = Decode(bytes.NewReader(replace1(t, encodeRaw(t, realistic()), "2026-11-27T14:03:59.123456789Z", "2026-13-27T14:03:59Z")))
	var pe *time.ParseError
	if !errors.As(err, &pe) {
		t.Errorf("error %v does not wrap the *time.ParseError", err)
	}
}

// allocated returns the bytes allocated by one Decode of data, and its
// error.
func allocated(data []byte) (uint64, error) {
	var before, after runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&before)
	_, err := Decode(bytes.NewReader(data))
	runtime.ReadMemStats(&after)
	return after.TotalAlloc - before.TotalAlloc, err
}

// TestDeclaredCountsCostNothing: a set that declares the largest nsems but
// carries one value must be refused without allocating for the declared
// size (64 MiB of values, 128 MiB of sempids).
func TestDeclaredCountsCostNothing(t *testing.T) {
	data := replace1(t, encodeRaw(t, realistic()), `"nsems": 1,`, fmt.Sprintf(`"nsems": %d,`, MaxNsems))
	n, err := allocated(data)
	checkErr(t, err, ErrInconsistent, "sets[0].values", "1 values for a set of nsems 33554431")
	t.Logf("a %d-byte image declaring nsems %d: %d bytes allocated", len(data), MaxNsems, n)
	if n > 1<<20 {
		t.Errorf("Decode allocated %d bytes for a %d-byte input", n, len(data))
	}
}

// TestDecodeLinear checks, by measuring memory rather than time, that
// hostile inputs cost memory proportional to their size: quadrupling the
// input must roughly quadruple what Decode allocates (reading the input
// included), and no input may cost more than 16 times its size.
func TestDecodeLinear(t *testing.T) {
	head := func(format string) string {
		return strings.Replace(string(encodeRaw(t, &Image{Created: time.Unix(1, 0), KernelRelease: "k", SemundoVersion: "v", IPCNamespace: 1})),
			`"semundo/1"`, format, 1)
	}
	withSets := func(format string, sets string) string {
		return strings.Replace(head(format), `"sets": []`, `"sets": [`+sets+`]`, 1)
	}
	repeat := func(s, sep string, n int) string {
		return strings.TrimSuffix(strings.Repeat(s+sep, n), sep)
	}
	inputs := map[string]func(n int) string{
		"wide set": func(n int) string {
			return withSets(`"semundo/1"`, fmt.Sprintf(`{"id": 0, "key": 0, "uid": 0, "gid": 0, "cuid": 0, "cgid": 0, "mode": 0, "nsems": %d, "otime": 0, "ctime": 0, "values": [%s], "sempids": [%s]}`,
				n/4, repeat("1", ",", n/4), repeat("1", ",", n/4)))
		},
		"many sets": func(n int) string {
			var b strings.Builder
			for i := range n / 128 {
				if i > 0 {
					b.WriteByte(',')
				}
				fmt.Fprintf(&b, `{"id":%d,"key":0,"uid":0,"gid":0,"cuid":0,"cgid":0,"mode":0,"nsems":1,"otime":0,"ctime":0,"values":[1],"sempids":[0]}`, i)
			}
			return withSets(`"semundo/1"`, b.String())
		},
		"many unknown fields": func(n int) string {
			var b strings.Builder
			for i := range n / 16 {
				fmt.Fprintf(&b, `"x%d":[1],`, i)
			}
			return strings.Replace(head(`"semundo/1.1"`), `{`, "{"+b.String(), 1)
		},
		"deep unknown field": func(n int) string {
			d := min(n/2, 9000) // encoding/json refuses nesting deeper than 10000
			return strings.Replace(head(`"semundo/1.1"`), `{`, `{"deep":`+strings.Repeat("[", d)+strings.Repeat("]", d)+`,"s":"`+strings.Repeat("a", n-2*d)+`",`, 1)
		},
		"long strings": func(n int) string {
			return strings.Replace(head(`"semundo/1"`), `"hostname": ""`, `"hostname": "`+strings.Repeat(`\"`, n/2)+`"`, 1)
		},
		"bad value at the end": func(n int) string {
			return withSets(`"semundo/1"`, fmt.Sprintf(`{"id": 0, "key": 0, "uid": 0, "gid": 0, "cuid": 0, "cgid": 0, "mode": 0, "nsems": 1, "otime": 0, "ctime": 0, "values": [%s,"x"], "sempids": [0]}`,
				repeat("1", ",", n/2)))
		},
		"huge number": func(n int) string {
			return strings.Replace(head(`"semundo/1"`), `"ipcns": 1`, `"ipcns": 1`+strings.Repeat("0", n), 1)
		},
		"truncated": func(n int) string {
			return withSets(`"semundo/1"`, `{"values": [`+repeat("1", ",", n/2))[:n]
		},
	}
	for name, gen := range inputs {
		small, large := []byte(gen(1<<15)), []byte(gen(1<<17))
		bs, _ := allocated(small)
		bl, err := allocated(large)
		ratio := float64(bl) / float64(max(bs, 1))
		t.Logf("%s: %d bytes in -> %d allocated; %d -> %d (x%.1f); %v", name, len(small), bs, len(large), bl, ratio, err)
		if bl > 256<<10 && ratio > 6 {
			t.Errorf("%s: 4x the input made Decode allocate %.1fx the memory", name, ratio)
		}
		if bl > 16*uint64(len(large))+256<<10 {
			t.Errorf("%s: Decode allocated %d bytes for a %d-byte input", name, bl, len(large))
		}
	}
}
