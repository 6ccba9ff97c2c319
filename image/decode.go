package image

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"math"
	"math/bits"
	"slices"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"
)

// Decode reads one image from r, up to EOF, and returns it only if it is a
// well-formed, consistent image of a format version this package reads:
//
//   - "format" must be "semundo/1" (or "semundo/1.0"), or a minor
//     extension "semundo/1.N" with N >= 1; any other value is ErrVersion.
//   - The input must be UTF-8 JSON holding one object and nothing after it
//     but white space. Every field of the format must be present with its
//     JSON type (null is never accepted; only "warnings" may be left out),
//     and no object may name a field twice. Under "semundo/1" an unknown
//     field anywhere is an error; under "semundo/1.N" unknown fields are
//     skipped, since minor versions only add fields an older reader may
//     ignore. Such errors are ErrMalformed and say where (line, column and
//     byte offset).
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

func decode(data []byte) (*Image, error) {
	if err := checkSyntax(data); err != nil {
		return nil, err
	}
	p := &parser{data: data}
	format, err := p.format()
	if err != nil {
		return nil, err
	}
	if p.strict, err = checkFormat(format); err != nil {
		return nil, err
	}
	p.pos = 0
	im, err := p.image()
	if err != nil {
		return nil, err
	}
	if err := im.Validate(); err != nil {
		return nil, err
	}
	return im, nil
}

// checkSyntax rejects input that is not UTF-8 or not one JSON value, so
// that the parser below only ever walks valid JSON.
func checkSyntax(data []byte) error {
	for off := 0; off < len(data); {
		if data[off] < utf8.RuneSelf {
			off++
			continue
		}
		r, size := utf8.DecodeRune(data[off:])
		if r == utf8.RuneError && size == 1 {
			return &ValidationError{Kind: ErrMalformed, Msg: "not UTF-8 text" + where(data, off)}
		}
		off += size
	}
	if json.Valid(data) {
		return nil
	}
	if len(bytes.TrimLeft(data, " \t\r\n")) == 0 {
		return &ValidationError{Kind: ErrMalformed, Msg: "empty input; want a semundo image (a JSON object)"}
	}
	var se *json.SyntaxError
	if err := json.Unmarshal(data, &struct{}{}); errors.As(err, &se) {
		if strings.HasPrefix(se.Error(), "unexpected end of JSON input") {
			return &ValidationError{Kind: ErrMalformed, Err: se,
				Msg: "truncated: " + se.Error() + where(data, len(data))}
		}
		// Offset counts the bytes read, the offending one included.
		return &ValidationError{Kind: ErrMalformed, Err: se,
			Msg: "not valid JSON: " + se.Error() + where(data, int(se.Offset)-1)}
	}
	// json.Valid and json.Unmarshal disagree; trust Valid.
	return &ValidationError{Kind: ErrMalformed, Msg: "not valid JSON"}
}

// where returns " at line L, column C (byte offset O)" for the byte at
// offset off (0-based; the column is 1-based and counts bytes).
func where(data []byte, off int) string {
	off = max(0, min(off, len(data)))
	line := 1 + bytes.Count(data[:off], []byte{'\n'})
	col := off - bytes.LastIndexByte(data[:off], '\n')
	return " at line " + strconv.Itoa(line) + ", column " + strconv.Itoa(col) +
		" (byte offset " + strconv.Itoa(off) + ")"
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

// parser walks input that checkSyntax accepted and fills an Image from it,
// checking the schema on the way: JSON kinds, required, unknown and
// repeated fields, integer syntax, and each integer's range before it is
// narrowed to its Go type. It still checks bounds everywhere, so a bug in
// that assumption gives an error, not a panic.
type parser struct {
	data   []byte
	pos    int
	strict bool       // unknown fields are errors
	path   []pathElem // where the value being parsed is, for errors
}

// pathElem is one step of a path: a field name, or an array index when key
// is empty.
type pathElem struct {
	key   string
	index int
}

func (p *parser) push(key string) { p.path = append(p.path, pathElem{key: key}) }
func (p *parser) pushIndex(i int) { p.path = append(p.path, pathElem{index: i}) }
func (p *parser) pop()            { p.path = p.path[:len(p.path)-1] }

func (p *parser) pathString() string {
	var b strings.Builder
	for _, e := range p.path {
		if e.key == "" {
			b.WriteByte('[')
			b.WriteString(strconv.Itoa(e.index))
			b.WriteByte(']')
			continue
		}
		if b.Len() > 0 {
			b.WriteByte('.')
		}
		b.WriteString(e.key)
	}
	return b.String()
}

// malformed returns an ErrMalformed error at the current path, pointing at
// byte offset off of the input.
func (p *parser) malformed(off int, msg string) error {
	return &ValidationError{Path: p.pathString(), Kind: ErrMalformed, Msg: msg + where(p.data, off)}
}

// inconsistent returns an ErrInconsistent error at the current path. Its
// message carries no offset, so it reads exactly as Validate's would.
func (p *parser) inconsistent(msg string) error {
	return &ValidationError{Path: p.pathString(), Kind: ErrInconsistent, Msg: msg}
}

func (p *parser) ws() {
	for p.pos < len(p.data) {
		switch p.data[p.pos] {
		case ' ', '\t', '\n', '\r':
			p.pos++
		default:
			return
		}
	}
}

// peek skips white space and returns the next byte, 0 at the end.
func (p *parser) peek() byte {
	p.ws()
	if p.pos >= len(p.data) {
		return 0
	}
	return p.data[p.pos]
}

// kindOf names the JSON kind of a value starting with c.
func kindOf(c byte) string {
	switch c {
	case '{':
		return "an object"
	case '[':
		return "an array"
	case '"':
		return "a string"
	case 't', 'f':
		return "a boolean"
	case 'n':
		return "null"
	case 0:
		return "the end of the input"
	}
	return "a number"
}

// want consumes c, or fails naming what was expected and what is there.
func (p *parser) want(c byte, what string) error {
	if got := p.peek(); got != c {
		return p.malformed(p.pos, "want "+what+", got "+kindOf(got))
	}
	p.pos++
	return nil
}

// next consumes the byte after a member or element: one of the two given.
func (p *parser) next(more, end byte) (bool, error) {
	switch c := p.peek(); c {
	case more:
		p.pos++
		return true, nil
	case end:
		p.pos++
		return false, nil
	}
	return false, p.malformed(p.pos, "want '"+string(more)+"' or '"+string(end)+"'")
}

// stringEnd returns the offset just after the string starting at p.pos
// (which holds '"') and whether it contains an escape.
func (p *parser) stringEnd() (end int, escaped bool, err error) {
	for i := p.pos + 1; i < len(p.data); i++ {
		switch p.data[i] {
		case '\\':
			escaped = true
			i++
		case '"':
			return i + 1, escaped, nil
		}
	}
	return 0, false, p.malformed(p.pos, "unterminated string")
}

func (p *parser) str() (string, error) {
	if c := p.peek(); c != '"' {
		return "", p.malformed(p.pos, "want a string, got "+kindOf(c))
	}
	end, escaped, err := p.stringEnd()
	if err != nil {
		return "", err
	}
	raw := p.data[p.pos:end]
	if !escaped {
		p.pos = end
		return string(raw[1 : len(raw)-1]), nil
	}
	var s string
	if err := json.Unmarshal(raw, &s); err != nil {
		return "", p.malformed(p.pos, "bad string: "+err.Error())
	}
	p.pos = end
	return s, nil
}

// key reads an object's member name and returns its index in names, or
// -1 and the name. Names are compared in place, so the fields of the
// format cost no allocation however many objects there are.
func (p *parser) key(names []string) (int, string, error) {
	if c := p.peek(); c != '"' {
		return -1, "", p.malformed(p.pos, "want a string, got "+kindOf(c))
	}
	end, escaped, err := p.stringEnd()
	if err != nil {
		return -1, "", err
	}
	if escaped {
		key, err := p.str()
		return slices.Index(names, key), key, err
	}
	raw := p.data[p.pos+1 : end-1]
	p.pos = end
	for i, n := range names {
		if string(raw) == n {
			return i, n, nil
		}
	}
	return -1, string(raw), nil
}

func (p *parser) boolean() (bool, error) {
	switch c := p.peek(); {
	case c == 't' && bytes.HasPrefix(p.data[p.pos:], []byte("true")):
		p.pos += 4
		return true, nil
	case c == 'f' && bytes.HasPrefix(p.data[p.pos:], []byte("false")):
		p.pos += 5
		return false, nil
	default:
		return false, p.malformed(p.pos, "want a boolean, got "+kindOf(c))
	}
}

func isNumberByte(c byte) bool {
	return c >= '0' && c <= '9' || c == '-' || c == '+' || c == '.' || c == 'e' || c == 'E'
}

// int reads an integer and checks it against r.
func (p *parser) int(r intRule) (int64, error) {
	c := p.peek()
	if c != '-' && (c < '0' || c > '9') {
		return 0, p.malformed(p.pos, "want an integer, got "+kindOf(c))
	}
	start := p.pos
	for p.pos < len(p.data) && isNumberByte(p.data[p.pos]) {
		p.pos++
	}
	text := p.data[start:p.pos]
	v, inRange, isInt := parseInt(text)
	if !isInt {
		return 0, p.malformed(start, "want an integer, got "+shorten(string(text)))
	}
	if !inRange || !r.ok(v) {
		return 0, p.inconsistent(r.msg(string(text)))
	}
	return v, nil
}

// parseInt parses an optionally negative run of decimal digits. isInt is
// false for anything else (a fraction or an exponent), inRange false when
// it does not fit an int64.
func parseInt(b []byte) (v int64, inRange, isInt bool) {
	neg := len(b) > 0 && b[0] == '-'
	if neg {
		b = b[1:]
	}
	if len(b) == 0 {
		return 0, false, false
	}
	var mag uint64
	inRange = true
	for _, c := range b {
		if c < '0' || c > '9' {
			return 0, false, false
		}
		hi, lo := bits.Mul64(mag, 10)
		lo, carry := bits.Add64(lo, uint64(c-'0'), 0)
		if hi != 0 || carry != 0 {
			inRange = false
		}
		mag = lo
	}
	switch {
	case !inRange:
		return 0, false, true
	case neg && mag <= 1<<63:
		return int64(-mag), true, true
	case !neg && mag <= 1<<63-1:
		return int64(mag), true, true
	}
	return 0, false, true
}

// skip passes over one value of any kind: an unknown field's.
func (p *parser) skip() error {
	switch c := p.peek(); c {
	case '"':
		end, _, err := p.stringEnd()
		p.pos = end
		return err
	case '{', '[':
		depth := 0
		for p.pos < len(p.data) {
			switch p.data[p.pos] {
			case '"':
				end, _, err := p.stringEnd()
				if err != nil {
					return err
				}
				p.pos = end
				continue
			case '{', '[':
				depth++
			case '}', ']':
				depth--
				if depth == 0 {
					p.pos++
					return nil
				}
			}
			p.pos++
		}
		return p.malformed(p.pos, "unterminated "+kindOf(c))
	case 't', 'n':
		p.pos = min(p.pos+4, len(p.data))
	case 'f':
		p.pos = min(p.pos+5, len(p.data))
	default:
		start := p.pos
		for p.pos < len(p.data) && isNumberByte(p.data[p.pos]) {
			p.pos++
		}
		if p.pos == start {
			return p.malformed(p.pos, "want a value, got "+kindOf(c))
		}
	}
	return nil
}

// object parses an object whose fields are names; field is called with
// the index of each one found, with the path extended by its name. Every
// name is required unless its bit is set in optional. Unknown fields are
// errors in strict mode and skipped otherwise; a repeated field is always
// an error, since JSON readers disagree on which copy wins.
func (p *parser) object(names []string, optional uint32, field func(i int) error) error {
	if err := p.want('{', "an object"); err != nil {
		return err
	}
	open := p.pos - 1 // missing fields are reported at the object's '{'
	var seen uint32
	var unknown map[string]bool
	more := p.peek() != '}'
	if !more {
		p.pos++
	}
	for more {
		p.ws()
		keyAt := p.pos
		i, key, err := p.key(names)
		if err != nil {
			return err
		}
		if err := p.want(':', "':'"); err != nil {
			return err
		}
		switch {
		case (i >= 0 && seen&(1<<i) != 0) || (i < 0 && unknown[key]):
			return p.malformed(keyAt, "field "+quote(key)+" appears twice")
		case i >= 0:
			seen |= 1 << i
			p.push(key)
			err = field(i)
			p.pop()
		case p.strict:
			return p.malformed(keyAt, "unknown field "+quote(key)+
				" (semundo/1 has no such field; an image with extensions must declare \"semundo/1.N\")")
		default:
			if unknown == nil {
				unknown = make(map[string]bool)
			}
			unknown[key] = true
			err = p.skip()
		}
		if err != nil {
			return err
		}
		if more, err = p.next(',', '}'); err != nil {
			return err
		}
	}
	all := uint32(1)<<len(names) - 1
	if missing := all &^ optional &^ seen; missing != 0 {
		return p.malformed(open, "missing field "+quote(names[bits.TrailingZeros32(missing)]))
	}
	return nil
}

// count returns the number of elements of the array starting at the next
// non-space byte (0 if it is not an array), by scanning to its end. Number
// arrays are allocated from this count of what the input holds, never from
// a count it declares, and at once rather than by repeated growth: each
// counted element takes at least two bytes of input and at most four of
// memory. Arrays of objects grow as their elements are parsed instead,
// since counting "[1,1,1,...]" as sets would allocate 50 times the input.
func (p *parser) count() int {
	if p.peek() != '[' {
		return 0
	}
	n, depth, empty := 0, 0, true
	for i := p.pos; i < len(p.data); i++ {
		switch c := p.data[i]; c {
		case ' ', '\t', '\n', '\r':
		case '"':
			empty = false
			for i++; i < len(p.data) && p.data[i] != '"'; i++ {
				if p.data[i] == '\\' {
					i++
				}
			}
		case '[', '{':
			if depth > 0 {
				empty = false
			}
			depth++
		case ']', '}':
			depth--
			if depth == 0 {
				if empty {
					return 0
				}
				return n + 1
			}
		case ',':
			if depth == 1 {
				n++
			}
		default:
			empty = false
		}
	}
	return n + 1
}

// ints parses an array of integers, each checked against r. An empty
// array gives nil, as every empty array does.
func ints[T int16 | uint16 | int32](p *parser, r intRule) ([]T, error) {
	var out []T
	if n := p.count(); n > 0 {
		out = make([]T, 0, n)
	}
	err := p.array(func(int) error {
		v, err := p.int(r)
		out = append(out, T(v))
		return err
	})
	return out, err
}

// array parses an array, calling elem for each element with the path
// extended by its index.
func (p *parser) array(elem func(i int) error) error {
	if err := p.want('[', "an array"); err != nil {
		return err
	}
	more := p.peek() != ']'
	if !more {
		p.pos++
	}
	for i := 0; more; i++ {
		p.pushIndex(i)
		err := elem(i)
		p.pop()
		if err != nil {
			return err
		}
		if more, err = p.next(',', ']'); err != nil {
			return err
		}
	}
	return nil
}

// format finds the top-level "format" string without checking anything
// else, since it decides how strict the real pass is.
func (p *parser) format() (string, error) {
	if c := p.peek(); c != '{' {
		return "", p.malformed(p.pos, "want a JSON object (a semundo image), got "+kindOf(c))
	}
	p.pos++
	var format string
	found := false
	more := p.peek() != '}'
	for more {
		p.ws()
		keyAt := p.pos
		key, err := p.str()
		if err != nil {
			return "", err
		}
		if err := p.want(':', "':'"); err != nil {
			return "", err
		}
		if key != "format" {
			err = p.skip()
		} else {
			if found {
				return "", p.malformed(keyAt, "field \"format\" appears twice")
			}
			found = true
			if c := p.peek(); c != '"' {
				return "", &ValidationError{Path: "format", Kind: ErrVersion,
					Msg: "want a string such as \"semundo/1\", got " + kindOf(c) + "; not a semundo image"}
			}
			format, err = p.str()
		}
		if err != nil {
			return "", err
		}
		if more, err = p.next(',', '}'); err != nil {
			return "", err
		}
	}
	if !found {
		return "", &ValidationError{Kind: ErrVersion,
			Msg: "no \"format\" field; not a semundo image (want \"format\": \"semundo/1\")"}
	}
	return format, nil
}

var (
	imageNames = []string{"format", "created", "kernel_release", "hostname", "semundo_version",
		"ipcns", "limits", "sets", "lists", "warnings"}
	imageOptional = uint32(1) << 9 // warnings
	limitsNames   = []string{"semmsl", "semmns", "semopm", "semmni"}
	setNames      = []string{"id", "key", "uid", "gid", "cuid", "cgid", "mode", "nsems",
		"otime", "ctime", "values", "sempids"}
	listNames    = []string{"processes", "entries"}
	processNames = []string{"pid", "comm", "stopped", "tids"}
	entryNames   = []string{"semid", "adj"}
)

func (p *parser) image() (*Image, error) {
	im := new(Image)
	err := p.object(imageNames, imageOptional, func(i int) error {
		var err error
		var v int64
		switch i {
		case 0: // format: checked before this pass
			_, err = p.str()
		case 1:
			im.Created, err = p.time()
		case 2:
			im.KernelRelease, err = p.str()
		case 3:
			im.Hostname, err = p.str()
		case 4:
			im.SemundoVersion, err = p.str()
		case 5:
			v, err = p.int(ruleIPCNS)
			im.IPCNamespace = uint64(v)
		case 6:
			err = p.limits(&im.Limits)
		case 7:
			err = p.array(func(int) error {
				im.Sets = append(im.Sets, Set{})
				return p.set(&im.Sets[len(im.Sets)-1])
			})
		case 8:
			err = p.array(func(int) error {
				im.Lists = append(im.Lists, List{})
				return p.list(&im.Lists[len(im.Lists)-1])
			})
		case 9:
			err = p.array(func(int) error {
				s, err := p.str()
				im.Warnings = append(im.Warnings, s)
				return err
			})
		}
		return err
	})
	if err != nil {
		return nil, err
	}
	return im, nil
}

func (p *parser) time() (time.Time, error) {
	at := p.pos
	s, err := p.str()
	if err != nil {
		return time.Time{}, err
	}
	t, err := time.Parse(time.RFC3339Nano, s)
	if err != nil {
		e := p.malformed(at, "want an RFC 3339 time such as \"2006-01-02T15:04:05Z\", got "+quote(s)).(*ValidationError)
		e.Err = err
		return time.Time{}, e
	}
	return t.UTC(), nil
}

func (p *parser) limits(l *Limits) error {
	return p.object(limitsNames, 0, func(i int) error {
		rule, dst := ruleSemmsl, &l.Semmsl
		switch i {
		case 1:
			rule, dst = ruleSemmns, &l.Semmns
		case 2:
			rule, dst = ruleSemopm, &l.Semopm
		case 3:
			rule, dst = ruleSemmni, &l.Semmni
		}
		v, err := p.int(rule)
		*dst = int32(v)
		return err
	})
}

func (p *parser) set(s *Set) error {
	return p.object(setNames, 0, func(i int) error {
		var err error
		var v int64
		switch i {
		case 0:
			v, err = p.int(ruleID)
			s.ID = int32(v)
		case 1:
			v, err = p.int(ruleKey)
			s.Key = int32(v)
		case 2, 3, 4, 5, 6:
			rule, dst := ruleUID, &s.UID
			switch i {
			case 3:
				rule, dst = ruleGID, &s.GID
			case 4:
				rule, dst = ruleCUID, &s.CUID
			case 5:
				rule, dst = ruleCGID, &s.CGID
			case 6:
				rule, dst = ruleMode, &s.Mode
			}
			v, err = p.int(rule)
			*dst = uint32(v)
		case 7:
			v, err = p.int(ruleNsems)
			s.Nsems = int(v)
		case 8:
			s.Otime, err = p.int(ruleOtime)
		case 9:
			s.Ctime, err = p.int(ruleCtime)
		case 10:
			s.Values, err = ints[uint16](p, ruleValue)
		case 11:
			s.Sempids, err = ints[int32](p, ruleSempid)
		}
		return err
	})
}

func (p *parser) list(l *List) error {
	return p.object(listNames, 0, func(i int) error {
		if i == 0 {
			return p.array(func(int) error {
				l.Processes = append(l.Processes, Process{})
				return p.process(&l.Processes[len(l.Processes)-1])
			})
		}
		return p.array(func(int) error {
			l.Entries = append(l.Entries, Entry{})
			return p.entry(&l.Entries[len(l.Entries)-1])
		})
	})
}

func (p *parser) process(pr *Process) error {
	return p.object(processNames, 0, func(i int) error {
		var err error
		var v int64
		switch i {
		case 0:
			v, err = p.int(rulePID)
			pr.PID = int32(v)
		case 1:
			pr.Comm, err = p.str()
		case 2:
			pr.Stopped, err = p.boolean()
		case 3:
			pr.TIDs, err = ints[int32](p, ruleTID)
		}
		return err
	})
}

func (p *parser) entry(e *Entry) error {
	return p.object(entryNames, 0, func(i int) error {
		if i == 0 {
			v, err := p.int(ruleSemid)
			e.Semid = int32(v)
			return err
		}
		var err error
		e.Adj, err = ints[int16](p, ruleAdj)
		return err
	})
}
