package image

import (
	"errors"
	"strconv"
	"strings"
	"unicode/utf8"
)

// Kinds of content errors; test with errors.Is. Every error Decode,
// ReadFile, Validate, Encode or WriteFile returns about an image's content
// is a *ValidationError wrapping exactly one of them.
var (
	// ErrVersion: the input is not a semundo image, or its format version
	// is one this package does not read (a major version other than 1).
	ErrVersion = errors.New("unsupported image format version")
	// ErrMalformed: the input is not the format's shape: not UTF-8, not
	// JSON, truncated, trailing data, a field of the wrong JSON type or
	// missing, an unknown or repeated field, a number that is not an
	// integer.
	ErrMalformed = errors.New("malformed image")
	// ErrInconsistent: the input has the right shape but its content
	// breaks a rule: a number out of range, a count that differs from
	// nsems, a duplicate id or key, a list naming a set the image lacks,
	// a pid in two lists.
	ErrInconsistent = errors.New("inconsistent image")
)

// ValidationError reports what is wrong with an image and where.
type ValidationError struct {
	// File is the file the image was read from or written to, or "" when
	// the image came from a reader or from memory.
	File string
	// Path locates the problem in the image, in the JSON field names:
	// "lists[2].entries[0].adj", "sets[1].values[7]"; "" for the input as
	// a whole.
	Path string
	// Msg says what is wrong, one line. For ErrMalformed it ends with the
	// place in the input: line, column and byte offset.
	Msg string
	// Kind is ErrVersion, ErrMalformed or ErrInconsistent.
	Kind error
	// Err is the underlying error, such as a *json.SyntaxError or a
	// *time.ParseError, or nil.
	Err error
}

// Error returns "image[ FILE]: PATH: MSG" on one line.
func (e *ValidationError) Error() string {
	var b strings.Builder
	b.WriteString("image")
	if e.File != "" {
		b.WriteString(" ")
		b.WriteString(e.File)
	}
	b.WriteString(": ")
	if e.Path != "" {
		b.WriteString(e.Path)
		b.WriteString(": ")
	}
	b.WriteString(e.Msg)
	return b.String()
}

// Unwrap returns the kind and, when there is one, the underlying error, so
// both errors.Is(err, ErrMalformed) and errors.As(err, &syntaxErr) work.
func (e *ValidationError) Unwrap() []error {
	if e.Err != nil {
		return []error{e.Kind, e.Err}
	}
	return []error{e.Kind}
}

// maxQuoted bounds how much of a string from the input goes into an error
// message, so a hostile file cannot make a message as large as itself.
const maxQuoted = 64

// quote returns s quoted for a one-line message, cut to maxQuoted bytes.
func quote(s string) string {
	if len(s) <= maxQuoted {
		return strconv.Quote(s)
	}
	cut := maxQuoted
	for cut > 0 && !utf8.RuneStart(s[cut]) {
		cut--
	}
	return strconv.Quote(s[:cut]) + "..."
}

// shorten cuts the literal text of a number for a message.
func shorten(s string) string {
	if len(s) <= maxQuoted {
		return s
	}
	return s[:maxQuoted] + "..."
}
