package image

import (
	"bytes"
	"fmt"
	"io"
	"io/fs"
	"math"
	"strings"

	"github.com/go-json-experiment/json"
	"github.com/go-json-experiment/json/jsontext"
)

// Decode reads one image from r, up to EOF, and returns it only if it is a
// well-formed, consistent image of a format version this package reads:
//
//   - "format" must be "semundo/1" (or "semundo/1.0"), or a minor
//     extension "semundo/1.N" with N >= 1; any other value is ErrVersion.
//   - The input must be UTF-8 JSON holding one object and nothing after it
//     but white space. Every field of the format must be present with its
//     JSON type (null is never accepted; only "warnings" may be left out),
//     and no object anywhere may name a field twice. Under "semundo/1" an
//     unknown field anywhere is an error; under "semundo/1.N" unknown
//     fields are skipped, since minor versions only add fields an older
//     reader may ignore. Such errors are ErrMalformed and say where (line,
//     column and byte offset).
//   - The content must pass Validate (ErrInconsistent).
//
// Decode holds the input in memory and allocates in proportion to it, never
// to a count the input declares: a set claiming a million semaphores costs
// nothing until its values are actually there. Errors about the content are
// *ValidationError; an error from r is returned wrapped.
func Decode(r io.Reader) (*Image, error) {
	data, err := readAll(r)
	if err != nil {
		return nil, fmt.Errorf("image: read: %w", err)
	}
	return decode(data)
}

// readAll is io.ReadAll with one allocation when r tells its size (a
// bytes.Reader, strings.Reader or regular *os.File), instead of repeated
// growth that allocates several times the input.
func readAll(r io.Reader) ([]byte, error) {
	var size int64
	switch v := r.(type) {
	case interface{ Len() int }:
		size = int64(v.Len())
	case interface{ Stat() (fs.FileInfo, error) }:
		if fi, err := v.Stat(); err == nil && fi.Mode().IsRegular() {
			size = fi.Size()
		}
	}
	var b bytes.Buffer
	if size > 0 && size <= math.MaxInt-bytes.MinRead {
		b.Grow(int(size) + bytes.MinRead)
	}
	_, err := b.ReadFrom(r)
	return b.Bytes(), err
}

// decode is one pass of encoding/json/v2 (its module form, so that no
// GOEXPERIMENT is needed) over data, after a look at the format version,
// which decides whether unknown fields are errors. The JSON syntax, UTF-8,
// duplicate names and each number's fit in its Go type are v2's checks;
// schema.go adds what v2 does not check (a field that is missing or null,
// an unknown field); explain.go turns v2's errors into *ValidationError.
func decode(data []byte) (*Image, error) {
	strict, err := version(data)
	if err != nil {
		return nil, err
	}
	schema, noNull := schemaOptions()
	// Without the text null no value is null: spare the per-value check.
	if bytes.Contains(data, []byte("null")) {
		schema = noNull
	}
	im := new(Image)
	if err := json.Unmarshal(data, im, json.RejectUnknownMembers(strict), schema); err != nil {
		return nil, explain(data, err)
	}
	if err := im.Validate(); err != nil {
		return nil, err
	}
	return im, nil
}

// version reads the format version and says whether unknown fields are
// errors (major version 1 without a minor extension).
func version(data []byte) (strict bool, err error) {
	format, err := formatOf(data)
	if err == nil {
		strict, err = checkFormat(format)
	}
	if err != nil {
		// Syntax comes first: version errors are for well-formed JSON.
		if serr := checkSyntax(data); serr != nil {
			return false, serr
		}
		if _, ok := err.(*ValidationError); !ok {
			err = explain(data, err)
		}
	}
	return strict, err
}

// formatOf returns the top-level "format" string, reading the input only
// as far as that member (the encoder writes it first).
func formatOf(data []byte) (string, error) {
	dec := jsontext.NewDecoder(bytes.NewReader(data), jsontext.AllowDuplicateNames(true))
	if k := dec.PeekKind(); k != '{' {
		if k == 0 {
			_, err := dec.ReadToken()
			return "", err
		}
		return "", &ValidationError{Kind: ErrMalformed, Msg: "want a JSON object (a semundo image), got " +
			kindOf(byte(k)) + where(data, int(dec.InputOffset())+leadingSpace(data[dec.InputOffset():]))}
	}
	if _, err := dec.ReadToken(); err != nil {
		return "", err
	}
	for dec.PeekKind() != '}' {
		name, err := dec.ReadToken()
		if err != nil {
			return "", err
		}
		if name.String() != "format" {
			if err := dec.SkipValue(); err != nil {
				return "", err
			}
			continue
		}
		if k := dec.PeekKind(); k != '"' {
			if k == 0 {
				_, err := dec.ReadToken()
				return "", err
			}
			return "", &ValidationError{Path: "format", Kind: ErrVersion,
				Msg: "want a string such as \"semundo/1\", got " + kindOf(byte(k)) + "; not a semundo image"}
		}
		format, err := dec.ReadToken()
		return format.String(), err
	}
	if _, err := dec.ReadToken(); err != nil {
		return "", err
	}
	return "", &ValidationError{Kind: ErrVersion,
		Msg: "no \"format\" field; not a semundo image (want \"format\": \"semundo/1\")"}
}

// leadingSpace counts the JSON white space at the start of b.
func leadingSpace(b []byte) int {
	return len(b) - len(bytes.TrimLeft(b, " \t\r\n"))
}

// checkFormat says whether format is one Decode reads and, if so, whether
// unknown fields are errors (major version 1 without a minor extension).
func checkFormat(format string) (strict bool, err error) {
	verr := func(msg string) error {
		return &ValidationError{Path: "format", Kind: ErrVersion, Msg: msg}
	}
	rest, ok := strings.CutPrefix(format, "semundo/")
	if !ok {
		return false, verr(quote(format) + " is not a semundo image format; want \"semundo/1\"")
	}
	major, minor, hasMinor := strings.Cut(rest, ".")
	if !isDecimal(major) || (hasMinor && !isDecimal(minor)) {
		return false, verr(quote(format) + " is not a version; want \"semundo/MAJOR\" or \"semundo/MAJOR.MINOR\" in decimal")
	}
	if major == "0" {
		// No semundo wrote major version 0: a newer one would not read it
		// either.
		return false, verr(quote(format) + " is major version 0, which this semundo does not read: it reads major version 1 only (\"semundo/1\" and \"semundo/1.N\")")
	}
	if major != "1" {
		return false, verr(quote(format) + " is major version " + shorten(major) +
			"; this decoder reads major version 1 only (\"semundo/1\" and \"semundo/1.N\"): use a newer semundo")
	}
	return !hasMinor || minor == "0", nil
}

// isDecimal reports whether s is a decimal number without leading zeros.
func isDecimal(s string) bool {
	if s == "" || (len(s) > 1 && s[0] == '0') {
		return false
	}
	for i := range len(s) {
		if s[i] < '0' || s[i] > '9' {
			return false
		}
	}
	return true
}
