package image

import (
	"bytes"
	"reflect"
	"strconv"
	"sync"
	"time"

	"github.com/go-json-experiment/json"
	"github.com/go-json-experiment/json/jsontext"
)

// member is one field of the format's objects of type T: its JSON name,
// where its value goes, and whether it may be left out.
type member[T any] struct {
	name     string
	at       func(*T) any // a pointer for json.UnmarshalDecode
	optional bool
}

var (
	imageMembers = []member[Image]{
		{name: "format", at: func(*Image) any { return new(string) }}, // checked by version
		{name: "created", at: func(im *Image) any { return &im.Created }},
		{name: "kernel_release", at: func(im *Image) any { return &im.KernelRelease }},
		{name: "hostname", at: func(im *Image) any { return &im.Hostname }},
		{name: "semundo_version", at: func(im *Image) any { return &im.SemundoVersion }},
		{name: "ipcns", at: func(im *Image) any { return &im.IPCNamespace }},
		{name: "limits", at: func(im *Image) any { return &im.Limits }},
		{name: "sets", at: func(im *Image) any { return &im.Sets }},
		{name: "lists", at: func(im *Image) any { return &im.Lists }},
		{name: "warnings", at: func(im *Image) any { return &im.Warnings }, optional: true},
	}
	limitsMembers = []member[Limits]{
		{name: "semmsl", at: func(l *Limits) any { return &l.Semmsl }},
		{name: "semmns", at: func(l *Limits) any { return &l.Semmns }},
		{name: "semopm", at: func(l *Limits) any { return &l.Semopm }},
		{name: "semmni", at: func(l *Limits) any { return &l.Semmni }},
	}
	setMembers = []member[Set]{
		{name: "id", at: func(s *Set) any { return &s.ID }},
		{name: "key", at: func(s *Set) any { return &s.Key }},
		{name: "uid", at: func(s *Set) any { return &s.UID }},
		{name: "gid", at: func(s *Set) any { return &s.GID }},
		{name: "cuid", at: func(s *Set) any { return &s.CUID }},
		{name: "cgid", at: func(s *Set) any { return &s.CGID }},
		{name: "mode", at: func(s *Set) any { return &s.Mode }},
		{name: "nsems", at: func(s *Set) any { return &s.Nsems }},
		{name: "otime", at: func(s *Set) any { return &s.Otime }},
		{name: "ctime", at: func(s *Set) any { return &s.Ctime }},
		{name: "values", at: func(s *Set) any { return &s.Values }},
		{name: "sempids", at: func(s *Set) any { return &s.Sempids }},
	}
	listMembers = []member[List]{
		{name: "processes", at: func(l *List) any { return &l.Processes }},
		{name: "entries", at: func(l *List) any { return &l.Entries }},
	}
	processMembers = []member[Process]{
		{name: "pid", at: func(p *Process) any { return &p.PID }},
		{name: "comm", at: func(p *Process) any { return &p.Comm }},
		{name: "stopped", at: func(p *Process) any { return &p.Stopped }},
		{name: "tids", at: func(p *Process) any { return &p.TIDs }},
	}
	entryMembers = []member[Entry]{
		{name: "semid", at: func(e *Entry) any { return &e.Semid }},
		{name: "adj", at: func(e *Entry) any { return &e.Adj }},
	}
)

// schemaOptions returns the options that make v2 decode the format's
// objects with decodeObject, and "created" as time.Parse reads RFC 3339
// (v2's own time parsing is stricter than what Encode has always been
// able to read back). The second also reads the arrays of numbers and
// strings element by element, refusing a null element, which v2 would
// read as a zero value; it is for input that holds the text null at all,
// since it costs a call per element. (A function that hands a value back
// to v2 would be cheaper, but the way to say so differs between the
// module and Go 1.26's GOEXPERIMENT=jsonv2 package, which the module
// becomes when that experiment is on.) Built on first use, not at
// package init: every semundo process links this package, most never
// decode an image.
var schemaOptions = sync.OnceValues(func() (withSchema, withSchemaNoNull json.Options) {
	schema := json.JoinUnmarshalers(
		objectUnmarshaler(imageMembers, func(im *Image) { nilIfEmpty(&im.Sets); nilIfEmpty(&im.Lists); nilIfEmpty(&im.Warnings) }),
		objectUnmarshaler(limitsMembers, nil),
		objectUnmarshaler(setMembers, func(s *Set) { nilIfEmpty(&s.Values); nilIfEmpty(&s.Sempids) }),
		objectUnmarshaler(listMembers, func(l *List) { nilIfEmpty(&l.Processes); nilIfEmpty(&l.Entries) }),
		objectUnmarshaler(processMembers, func(p *Process) { nilIfEmpty(&p.TIDs) }),
		objectUnmarshaler(entryMembers, func(e *Entry) { nilIfEmpty(&e.Adj) }),
		json.UnmarshalFromFunc(unmarshalTime),
	)
	return json.WithUnmarshalers(schema), json.WithUnmarshalers(json.JoinUnmarshalers(schema,
		json.UnmarshalFromFunc(decodeArray[uint16]), json.UnmarshalFromFunc(decodeArray[int16]),
		json.UnmarshalFromFunc(decodeArray[int32]), json.UnmarshalFromFunc(decodeArray[string])))
})

// decodeArray reads an array of E, refusing null elements.
func decodeArray[E any](dec *jsontext.Decoder, s *[]E) error {
	if err := begin[[]E](dec, '['); err != nil {
		return err
	}
	*s = (*s)[:0]
	for i := 0; ; i++ {
		switch dec.PeekKind() {
		case ']':
			_, err := dec.ReadToken()
			return err
		case 'n':
			// The pointer is to the last value read: the array or the
			// element before.
			ptr := dec.StackPointer()
			if i > 0 {
				ptr = ptr.Parent()
			}
			return nullRefusal(ptr.AppendToken(strconv.Itoa(i)), dec.InputOffset(), reflect.TypeFor[E]())
		}
		var e E
		if err := json.UnmarshalDecode(dec, &e); err != nil {
			return err
		}
		*s = append(*s, e)
	}
}

// begin reads the '{' or '[' that starts a value of Go type T, or returns
// an error saying what is there instead.
func begin[T any](dec *jsontext.Decoder, want jsontext.Kind) error {
	switch k := dec.PeekKind(); k {
	case want, 0: // 0: a syntax error, which ReadToken returns
		_, err := dec.ReadToken()
		return err
	default: // nothing read: v2 locates the error at the value
		return &json.SemanticError{JSONKind: k, GoType: reflect.TypeFor[T]()}
	}
}

// nilIfEmpty makes an empty array decode as nil, as it did before v2 (v2
// gives an empty slice), so that decoded images compare equal to built
// ones.
func nilIfEmpty[S ~[]E, E any](s *S) {
	if len(*s) == 0 {
		*s = nil
	}
}

// objectUnmarshaler decodes objects of type T with decodeObject, then
// calls after, if any, on each.
func objectUnmarshaler[T any](members []member[T], after func(*T)) *json.Unmarshalers {
	return json.UnmarshalFromFunc(func(dec *jsontext.Decoder, v *T) error {
		if err := decodeObject(dec, v, members); err != nil {
			return err
		}
		if after != nil {
			after(v)
		}
		return nil
	})
}

// decodeObject reads an object into v, each member with v2, and checks
// what v2 does not: that no member of members is missing unless optional
// or null, and that a name members lacks is refused when
// json.RejectUnknownMembers is set (the rest is skipped). Duplicate names
// are the decoder's error.
func decodeObject[T any](dec *jsontext.Decoder, v *T, members []member[T]) error {
	if err := begin[T](dec, '{'); err != nil {
		return err
	}
	open := dec.InputOffset() - 1 // missing members are reported at the '{'
	strict, _ := json.GetOption(dec.Options(), json.RejectUnknownMembers)
	var seen uint32 // the format's objects have at most 12 members
	for dec.PeekKind() != '}' {
		name, err := dec.ReadValue()
		if err != nil {
			return err
		}
		i := lookup(members, name)
		switch {
		case i >= 0 && dec.PeekKind() == 'n':
			// v2 would read null as the zero value.
			return nullRefusal(dec.StackPointer(), dec.InputOffset(), reflect.TypeOf(members[i].at(v)).Elem())
		case i >= 0:
			seen |= 1 << i
			err = json.UnmarshalDecode(dec, members[i].at(v))
		case strict:
			return &refusal{kind: ErrMalformed, located: true, ptr: dec.StackPointer().Parent(),
				off: dec.InputOffset() - int64(len(name)),
				msg: "unknown field " + quote(dec.StackPointer().LastToken()) +
					" (semundo/1 has no such field; an image with extensions must declare \"semundo/1.N\")"}
		default:
			err = dec.SkipValue()
		}
		if err != nil {
			return err
		}
	}
	if _, err := dec.ReadToken(); err != nil {
		return err
	}
	for i, m := range members {
		if seen&(1<<i) == 0 && !m.optional {
			return &refusal{kind: ErrMalformed, located: true, ptr: dec.StackPointer(), off: open,
				msg: "missing field " + quote(m.name)}
		}
	}
	return nil
}

// lookup returns the index of the member named by name (a JSON string as
// the input spells it), or -1. Names without escapes, all the format's,
// are compared in place.
func lookup[T any](members []member[T], name jsontext.Value) int {
	raw := name[1 : len(name)-1]
	if bytes.IndexByte(raw, '\\') >= 0 {
		unquoted, err := jsontext.AppendUnquote(nil, name)
		if err != nil {
			return -1
		}
		raw = unquoted
	}
	for i, m := range members {
		if string(raw) == m.name {
			return i
		}
	}
	return -1
}

// unmarshalTime reads "created": an RFC 3339 string as time.Parse reads
// it, in UTC.
func unmarshalTime(dec *jsontext.Decoder, t *time.Time) error {
	var s string
	if err := json.UnmarshalDecode(dec, &s); err != nil {
		return err
	}
	v, err := time.Parse(time.RFC3339Nano, s)
	if err != nil {
		return &refusal{kind: ErrMalformed, err: err,
			msg: "want an RFC 3339 time such as \"2006-01-02T15:04:05Z\", got " + quote(s)}
	}
	*t = v.UTC()
	return nil
}

// nullRefusal refuses the null that follows offset off, at ptr, in place
// of a value of type t.
func nullRefusal(ptr jsontext.Pointer, off int64, t reflect.Type) error {
	return &refusal{kind: ErrMalformed, msg: "want " + kindName(t) + ", got null",
		located: true, ptr: ptr, off: off, null: true}
}

// refusal is an error of the decoding functions above, with its message;
// v2 wraps it in a *json.SemanticError, which locates it unless located
// says that ptr and off already do.
type refusal struct {
	kind    error
	msg     string
	err     error // the underlying error, or nil
	located bool
	ptr     jsontext.Pointer
	off     int64
	null    bool // off is before the null meant, past white space and a delimiter
}

func (r *refusal) Error() string { return r.msg }
