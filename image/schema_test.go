package image

import (
	"bytes"
	"encoding/json"
	"slices"
	"strconv"
	"strings"
	"testing"
)

// place is a value of a generic JSON document: its path as
// ValidationError.Path writes it, and how to reach it.
type place struct {
	path  string
	steps []any // string: an object's member; int: an array's element
}

// places lists every member of every object of data and the first element
// of every array.
func places(t *testing.T, data []byte) []place {
	var m map[string]any
	d := json.NewDecoder(bytes.NewReader(data))
	d.UseNumber()
	if err := d.Decode(&m); err != nil {
		t.Fatal(err)
	}
	var out []place
	var walk func(v any, p place)
	walk = func(v any, p place) {
		switch v := v.(type) {
		case map[string]any:
			for k, child := range v {
				path := k
				if p.path != "" {
					path = p.path + "." + k
				}
				c := place{path, append(slices.Clone(p.steps), k)}
				out = append(out, c)
				walk(child, c)
			}
		case []any:
			if len(v) > 0 {
				c := place{p.path + "[0]", append(slices.Clone(p.steps), 0)}
				out = append(out, c)
				walk(v[0], c)
			}
		}
	}
	walk(m, place{})
	return out
}

// set replaces the value at p (delete: removes the member) in data.
func (p place) set(t *testing.T, data []byte, v any, remove bool) []byte {
	return mutateJSON(t, data, func(m map[string]any) {
		var cur any = m
		for i, s := range p.steps {
			last := i == len(p.steps)-1
			switch s := s.(type) {
			case string:
				o := cur.(map[string]any)
				switch {
				case last && remove:
					delete(o, s)
				case last:
					o[s] = v
				default:
					cur = o[s]
				}
			case int:
				a := cur.([]any)
				if last {
					a[s] = v
				} else {
					cur = a[s]
				}
			}
		}
	})
}

// parent returns the path of the object holding p.
func (p place) parent() string {
	if i := strings.LastIndexAny(p.path, ".["); i >= 0 {
		return p.path[:i]
	}
	return ""
}

// TestDecodeNullEverywhere: null in place of any value of the format,
// member or array element, is refused at its path, whatever its type.
func TestDecodeNullEverywhere(t *testing.T) {
	base := encodeRaw(t, realistic())
	ps := places(t, base)
	if len(ps) < 40 {
		t.Fatalf("only %d places in the realistic image", len(ps))
	}
	for _, p := range ps {
		if p.path == "format" {
			continue // a version error, tested in TestVersions
		}
		_, err := Decode(bytes.NewReader(p.set(t, base, nil, false)))
		checkErr(t, err, ErrMalformed, p.path, ", got null at line ")
	}
}

// TestDecodeMissingEverywhere: every member of every object is required,
// except the top-level "warnings", and a missing one is reported at its
// object with the object's position.
func TestDecodeMissingEverywhere(t *testing.T) {
	base := encodeRaw(t, realistic())
	for _, p := range places(t, base) {
		if _, isMember := p.steps[len(p.steps)-1].(string); !isMember || p.path == "format" {
			continue
		}
		im, err := Decode(bytes.NewReader(p.set(t, base, nil, true)))
		if p.path == "warnings" {
			if err != nil || im.Warnings != nil {
				t.Errorf("without warnings: %v, warnings %q", err, im.Warnings)
			}
			continue
		}
		name := p.steps[len(p.steps)-1].(string)
		checkErr(t, err, ErrMalformed, p.parent(), "missing field "+strconv.Quote(name)+" at line ")
	}
}

// TestDecodeExtensionsAreIJSON: the fields a minor version skips are not
// decoded, but they must still be I-JSON: no repeated name, no escaped
// lone surrogate.
func TestDecodeExtensionsAreIJSON(t *testing.T) {
	base := replace1(t, encodeRaw(t, realistic()), `"format": "semundo/1"`, `"format": "semundo/1.3"`)
	for _, tc := range []struct {
		ext, path, want string
	}{
		{`"cgroup": {"a": 1, "a": 2}`, "cgroup", `field "a" appears twice at line 5, column 44`},
		{`"cgroup": [{"0": {"b": [], "b": {}}}]`, "cgroup[0].0", `field "b" appears twice`},
		{`"cgroup": "\ud800"`, "cgroup", "not valid JSON: invalid surrogate pair"},
	} {
		data := replace1(t, base, `"hostname": "node-7",`, `"hostname": "node-7", `+tc.ext+",")
		_, err := Decode(bytes.NewReader(data))
		checkErr(t, err, ErrMalformed, tc.path, tc.want)
	}
	if _, err := Decode(bytes.NewReader(replace1(t, base, `"hostname": "node-7",`, `"hostname": "node-7", "cgroup": {"a": [1, 1], "\u00e9": null},`))); err != nil {
		t.Errorf("an extension with repeated values but no repeated name: %v", err)
	}
}

// TestDecodeSignedZero: -0 is 0 for a signed field; an unsigned field
// takes no minus sign (as neither encoding/json version does).
func TestDecodeSignedZero(t *testing.T) {
	base := encodeRaw(t, realistic())
	im, err := Decode(bytes.NewReader(replace1(t, base, `"key": 305419896`, `"key": -0`)))
	if err != nil || im.Sets[1].Key != 0 {
		t.Fatalf("key -0: %v", err)
	}
	_, err = Decode(bytes.NewReader(replace1(t, base, `"uid": 1000,`, `"uid": -0,`)))
	checkErr(t, err, ErrMalformed, "sets[0].uid", "want an integer without a minus sign, got -0 at line ")
}

// TestDecodeLoneSurrogate: encoding/json reads "\ud800" as U+FFFD; the
// decoder refuses it, naming the field.
func TestDecodeLoneSurrogate(t *testing.T) {
	data := replace1(t, encodeRaw(t, realistic()), `"comm": "java"`, `"comm": "ja\udc00va"`)
	_, err := Decode(bytes.NewReader(data))
	checkErr(t, err, ErrMalformed, "lists[2].processes[0].comm", "not valid JSON: invalid surrogate pair")
}
