package image

import (
	"fmt"
	"io"
	"strconv"
	"time"
	"unicode/utf8"
)

// flushAt is how much encoded text Encode collects before writing it, so a
// large image is written in pieces rather than built whole in memory.
const flushAt = 32 << 10

// Encode validates im and writes it to w as a "semundo/1" document: UTF-8
// JSON, one set, list or warning per line, fields in a fixed order, numbers
// in decimal. The output depends only on the image's content (Created is
// written in UTC), so equal images encode to equal bytes. Encode writes
// nothing when im fails Validate; an error from w is returned wrapped.
func Encode(w io.Writer, im *Image) error {
	if err := im.Validate(); err != nil {
		return err
	}
	if err := encode(w, im); err != nil {
		return fmt.Errorf("image: write: %w", err)
	}
	return nil
}

// encode writes a validated image and returns w's first error unwrapped.
func encode(w io.Writer, im *Image) error {
	e := encoder{w: w, b: make([]byte, 0, flushAt+4096)}
	e.image(im)
	e.flush()
	return e.err
}

// encoder appends the document to b and hands b to w whenever it grows
// past flushAt; the first write error stops all further output.
type encoder struct {
	w   io.Writer
	b   []byte
	err error
}

func (e *encoder) flush() {
	if e.err == nil && len(e.b) > 0 {
		if _, err := e.w.Write(e.b); err != nil {
			e.err = err
		}
	}
	e.b = e.b[:0]
}

func (e *encoder) maybeFlush() {
	if len(e.b) >= flushAt {
		e.flush()
	}
}

func (e *encoder) image(im *Image) {
	b := e.b
	b = append(b, "{\n  \"format\": "...)
	b = appendString(b, FormatVersion)
	b = append(b, ",\n  \"created\": "...)
	b = appendString(b, im.Created.UTC().Format(time.RFC3339Nano))
	b = append(b, ",\n  \"kernel_release\": "...)
	b = appendString(b, im.KernelRelease)
	b = append(b, ",\n  \"hostname\": "...)
	b = appendString(b, im.Hostname)
	b = append(b, ",\n  \"semundo_version\": "...)
	b = appendString(b, im.SemundoVersion)
	b = append(b, ",\n  \"ipcns\": "...)
	b = strconv.AppendUint(b, im.IPCNamespace, 10)
	b = append(b, ",\n  \"limits\": {\"semmsl\": "...)
	b = strconv.AppendInt(b, int64(im.Limits.Semmsl), 10)
	b = append(b, ", \"semmns\": "...)
	b = strconv.AppendInt(b, int64(im.Limits.Semmns), 10)
	b = append(b, ", \"semopm\": "...)
	b = strconv.AppendInt(b, int64(im.Limits.Semopm), 10)
	b = append(b, ", \"semmni\": "...)
	b = strconv.AppendInt(b, int64(im.Limits.Semmni), 10)
	b = append(b, "},\n  \"sets\": ["...)
	e.b = b
	for i := range im.Sets {
		e.sep(i)
		e.set(&im.Sets[i])
		e.maybeFlush()
	}
	e.closeArray(len(im.Sets))
	e.b = append(e.b, ",\n  \"lists\": ["...)
	for i := range im.Lists {
		e.sep(i)
		e.list(&im.Lists[i])
		e.maybeFlush()
	}
	e.closeArray(len(im.Lists))
	if len(im.Warnings) > 0 {
		e.b = append(e.b, ",\n  \"warnings\": ["...)
		for i, w := range im.Warnings {
			e.sep(i)
			e.b = appendString(e.b, w)
			e.maybeFlush()
		}
		e.closeArray(len(im.Warnings))
	}
	e.b = append(e.b, "\n}\n"...)
}

// sep starts element i of a top-level array on its own line.
func (e *encoder) sep(i int) {
	if i > 0 {
		e.b = append(e.b, ',')
	}
	e.b = append(e.b, "\n    "...)
}

func (e *encoder) closeArray(n int) {
	if n > 0 {
		e.b = append(e.b, "\n  "...)
	}
	e.b = append(e.b, ']')
}

func (e *encoder) set(s *Set) {
	b := e.b
	b = append(b, "{\"id\": "...)
	b = strconv.AppendInt(b, int64(s.ID), 10)
	b = append(b, ", \"key\": "...)
	b = strconv.AppendInt(b, int64(s.Key), 10)
	b = append(b, ", \"uid\": "...)
	b = strconv.AppendUint(b, uint64(s.UID), 10)
	b = append(b, ", \"gid\": "...)
	b = strconv.AppendUint(b, uint64(s.GID), 10)
	b = append(b, ", \"cuid\": "...)
	b = strconv.AppendUint(b, uint64(s.CUID), 10)
	b = append(b, ", \"cgid\": "...)
	b = strconv.AppendUint(b, uint64(s.CGID), 10)
	b = append(b, ", \"mode\": "...)
	b = strconv.AppendUint(b, uint64(s.Mode), 10)
	b = append(b, ", \"nsems\": "...)
	b = strconv.AppendInt(b, int64(s.Nsems), 10)
	b = append(b, ", \"otime\": "...)
	b = strconv.AppendInt(b, s.Otime, 10)
	b = append(b, ", \"ctime\": "...)
	b = strconv.AppendInt(b, s.Ctime, 10)
	b = append(b, ", \"values\": ["...)
	e.b = b
	for i, v := range s.Values {
		e.num(i, int64(v))
	}
	e.b = append(e.b, "], \"sempids\": ["...)
	for i, v := range s.Sempids {
		e.num(i, int64(v))
	}
	e.b = append(e.b, "]}"...)
}

// num appends element i of a number array; sets can hold millions of
// semaphores, so long arrays are flushed as they grow.
func (e *encoder) num(i int, v int64) {
	if i > 0 {
		e.b = append(e.b, ", "...)
	}
	e.b = strconv.AppendInt(e.b, v, 10)
	e.maybeFlush()
}

func (e *encoder) list(l *List) {
	e.b = append(e.b, "{\"processes\": ["...)
	for i := range l.Processes {
		p := &l.Processes[i]
		if i > 0 {
			e.b = append(e.b, ", "...)
		}
		e.b = append(e.b, "{\"pid\": "...)
		e.b = strconv.AppendInt(e.b, int64(p.PID), 10)
		e.b = append(e.b, ", \"comm\": "...)
		e.b = appendString(e.b, p.Comm)
		e.b = append(e.b, ", \"stopped\": "...)
		e.b = strconv.AppendBool(e.b, p.Stopped)
		e.b = append(e.b, ", \"tids\": ["...)
		for k, t := range p.TIDs {
			e.num(k, int64(t))
		}
		e.b = append(e.b, "]}"...)
	}
	e.b = append(e.b, "], \"entries\": ["...)
	for i := range l.Entries {
		en := &l.Entries[i]
		if i > 0 {
			e.b = append(e.b, ", "...)
		}
		e.b = append(e.b, "{\"semid\": "...)
		e.b = strconv.AppendInt(e.b, int64(en.Semid), 10)
		e.b = append(e.b, ", \"adj\": ["...)
		for k, a := range en.Adj {
			e.num(k, int64(a))
		}
		e.b = append(e.b, "]}"...)
	}
	e.b = append(e.b, "]}"...)
}

const hexDigits = "0123456789abcdef"

// appendString appends s as a JSON string. Invalid UTF-8 becomes U+FFFD
// (a comm can hold any bytes; JSON text must be UTF-8), control characters
// are escaped, and nothing else is: "<" stays "<", unlike encoding/json.
func appendString(b []byte, s string) []byte {
	b = append(b, '"')
	for i := 0; i < len(s); {
		c := s[i]
		if c < utf8.RuneSelf {
			switch {
			case c == '"' || c == '\\':
				b = append(b, '\\', c)
			case c == '\n':
				b = append(b, '\\', 'n')
			case c == '\r':
				b = append(b, '\\', 'r')
			case c == '\t':
				b = append(b, '\\', 't')
			case c < 0x20 || c == 0x7f:
				b = append(b, '\\', 'u', '0', '0', hexDigits[c>>4], hexDigits[c&0xf])
			default:
				b = append(b, c)
			}
			i++
			continue
		}
		r, size := utf8.DecodeRuneInString(s[i:])
		if r == utf8.RuneError && size == 1 {
			b = append(b, `\ufffd`...)
		} else {
			b = append(b, s[i:i+size]...)
		}
		i += size
	}
	return append(b, '"')
}
