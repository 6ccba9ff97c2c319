package image

import (
	"bytes"
	"encoding/json"
	"errors"
	"reflect"
	"strconv"
	"strings"
	"unicode/utf8"

	jsonv2 "github.com/go-json-experiment/json"
	"github.com/go-json-experiment/json/jsontext"
)

// explain turns an error of v2 decoding data into a *ValidationError that
// names the place, as a path and as a position in the input.
func explain(data []byte, err error) error {
	// The input as a whole comes first, whichever problem v2 met first.
	if serr := checkSyntax(data); serr != nil {
		return serr
	}
	if se, ok := errors.AsType[*jsontext.SyntacticError](err); ok {
		if se.Err == jsontext.ErrDuplicateName {
			return &ValidationError{Path: pathOf(data, se.JSONPointer.Parent()), Kind: ErrMalformed,
				Msg: "field " + quote(se.JSONPointer.LastToken()) + " appears twice" + where(data, int(se.ByteOffset))}
		}
		// What encoding/json lets pass, such as an escaped lone surrogate.
		return &ValidationError{Path: pathOf(data, se.JSONPointer), Kind: ErrMalformed, Err: se,
			Msg: "not valid JSON: " + se.Err.Error() + where(data, int(se.ByteOffset))}
	}
	me, ok := errors.AsType[*jsonv2.SemanticError](err)
	if !ok {
		return &ValidationError{Kind: ErrMalformed, Err: err, Msg: "not a semundo image: " + shorten(err.Error())}
	}
	if r, ok := me.Err.(*refusal); ok {
		ptr, off := me.JSONPointer, me.ByteOffset
		if r.located {
			ptr, off = r.ptr, r.off
		}
		if r.null && off >= 0 && off < int64(len(data)) {
			off += int64(max(0, bytes.Index(data[off:], []byte("null"))))
		}
		return &ValidationError{Path: pathOf(data, ptr), Kind: r.kind, Err: r.err, Msg: r.msg + where(data, int(off))}
	}
	path := pathOf(data, me.JSONPointer)
	text := string(me.JSONValue)
	if me.JSONKind == '0' && isIntType(me.GoType) {
		at := where(data, int(me.ByteOffset))
		switch {
		case text == "-0": // the one integer in range that v2 refuses
			return &ValidationError{Path: path, Kind: ErrMalformed,
				Msg: "want an integer without a minus sign, got -0" + at}
		case !isInteger(text):
			return &ValidationError{Path: path, Kind: ErrMalformed, Msg: "want an integer, got " + shorten(text) + at}
		}
		// An integer its Go type cannot hold, or negative for an
		// unsigned type: say which range the field has.
		msg := "integer " + shorten(text) + " is out of range"
		if rule, ok := ruleOf(me.JSONPointer); ok {
			msg = rule.msg(text)
		}
		return &ValidationError{Path: path, Kind: ErrInconsistent, Msg: msg}
	}
	return &ValidationError{Path: path, Kind: ErrMalformed,
		Msg: "want " + kindName(me.GoType) + ", got " + kindOf(byte(me.JSONKind)) + where(data, int(me.ByteOffset))}
}

// checkSyntax rejects input that is not UTF-8 or not one JSON value, with
// encoding/json's message and *json.SyntaxError, which callers may look
// for.
func checkSyntax(data []byte) error {
	if !utf8.Valid(data) {
		off := 0
		for off < len(data) {
			r, size := utf8.DecodeRune(data[off:])
			if r == utf8.RuneError && size == 1 {
				break
			}
			off += size
		}
		return &ValidationError{Kind: ErrMalformed, Msg: "not UTF-8 text" + where(data, off)}
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

// pathOf writes ptr, a JSON pointer into data, as ValidationError.Path
// does: names joined by dots, array indices in brackets. A pointer does not
// tell an index from a name made of digits, so pathOf follows it in data,
// which must be valid JSON up to the place it points to.
func pathOf(data []byte, ptr jsontext.Pointer) string {
	dec := jsontext.NewDecoder(bytes.NewReader(data), jsontext.AllowDuplicateNames(true))
	var b strings.Builder
	for tok := range ptr.Tokens() {
		if dec.PeekKind() == '[' {
			b.WriteString("[" + tok + "]")
			i, err := strconv.Atoi(tok)
			_, err2 := dec.ReadToken()
			for ; i > 0 && err == nil && err2 == nil; i-- {
				err = dec.SkipValue()
			}
			continue
		}
		if b.Len() > 0 {
			b.WriteByte('.')
		}
		b.WriteString(tok)
		if _, err := dec.ReadToken(); err != nil {
			continue
		}
		for {
			name, err := dec.ReadToken()
			if err != nil || name.Kind() != '"' || name.String() == tok || dec.SkipValue() != nil {
				break
			}
		}
	}
	return b.String()
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

// kindName names the JSON kind the format has for a field of Go type t.
func kindName(t reflect.Type) string {
	switch {
	case t == nil:
		return "a value"
	case isIntType(t):
		return "an integer"
	}
	switch t.Kind() {
	case reflect.String:
		return "a string"
	case reflect.Bool:
		return "a boolean"
	case reflect.Slice:
		return "an array"
	}
	return "an object"
}

func isIntType(t reflect.Type) bool {
	if t == nil {
		return false
	}
	switch t.Kind() {
	case reflect.Int, reflect.Int8, reflect.Int16, reflect.Int32, reflect.Int64,
		reflect.Uint, reflect.Uint8, reflect.Uint16, reflect.Uint32, reflect.Uint64:
		return true
	}
	return false
}

// isInteger reports whether a JSON number is an integer: no fraction, no
// exponent.
func isInteger(s string) bool {
	s = strings.TrimPrefix(s, "-")
	return s != "" && strings.Trim(s, "0123456789") == ""
}

// rules are the range rules of integer fields by name (arrays of
// integers by the array's name).
var rules = map[string]intRule{
	"ipcns": ruleIPCNS, "semmsl": ruleSemmsl, "semmns": ruleSemmns, "semopm": ruleSemopm, "semmni": ruleSemmni,
	"id": ruleID, "key": ruleKey, "uid": ruleUID, "gid": ruleGID, "cuid": ruleCUID, "cgid": ruleCGID,
	"mode": ruleMode, "nsems": ruleNsems, "otime": ruleOtime, "ctime": ruleCtime,
	"values": ruleValue, "sempids": ruleSempid, "pid": rulePID, "tids": ruleTID, "semid": ruleSemid, "adj": ruleAdj,
}

// ruleOf returns the range rule of the integer ptr points to: the rule of
// its field, or of its array when the last token is an index.
func ruleOf(ptr jsontext.Pointer) (intRule, bool) {
	if isInteger(ptr.LastToken()) {
		ptr = ptr.Parent()
	}
	r, ok := rules[ptr.LastToken()]
	return r, ok
}
