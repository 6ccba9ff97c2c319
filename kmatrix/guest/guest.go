// Package guest is the contract between the kernel-matrix runner on the host
// and its /init inside the VM: the configuration file the host packs into
// the initramfs, and the line framing /init uses to report over the serial
// console, where the kernel's own messages may come in between.
package guest

import (
	"errors"
	"fmt"
	"math"
	"strconv"
	"strings"
	"time"
)

// ConfigPath is where the host puts the configuration in the initramfs.
const ConfigPath = "/kmatrix/config.json"

// Marker starts every line /init writes for the host; lines without it are
// kernel or console noise.
const Marker = "@@kmx "

// Binary is one test binary to run in the VM.
type Binary struct {
	Name string   // short unique name without spaces, used in every report line
	Path string   // absolute path inside the initramfs
	Dir  string   // working directory (the package's copy, holding its testdata)
	Args []string // arguments, e.g. -test.v -test.run REGEX
}

// Config is what /init reads from ConfigPath.
type Config struct {
	Binaries []Binary
	Env      []string      // extra environment (KEY=VALUE) for every binary
	Timeout  time.Duration // per binary; /init kills the binary's process group after it
	// Modules maps a kernel release (uname -r) to the module files /init
	// loads, in order, before the first binary, when it runs on that
	// release.
	Modules map[string][]string `json:",omitempty"`
}

// Kind tells what an Event reports.
type Kind string

// The event kinds, in the order a run emits them.
const (
	KindBoot  Kind = "boot"  // /init started: Release, Uptime
	KindStart Kind = "start" // Binary starts
	KindOut   Kind = "out"   // one line of Binary's output: Text
	KindExit  Kind = "exit"  // Binary ended: Code, Elapsed, Reason
	KindError Kind = "error" // /init failed: Text
	KindDone  Kind = "done"  // all binaries ran; /init powers off next
)

// Event is one framed line.
type Event struct {
	Kind    Kind
	Binary  string        // start, out, exit
	Text    string        // out: the output line; error: the message
	Release string        // boot: uname -r
	Uptime  time.Duration // boot: /proc/uptime when /init started
	Code    int           // exit: exit status, -1 when killed by a signal
	Elapsed time.Duration // exit: wall time of the binary
	Reason  string        // exit: "" for a normal exit, else e.g. "timeout" or "signal: killed"
}

// ErrNotFramed is returned by Parse for a line that does not carry Marker.
var ErrNotFramed = errors.New("guest: line is not a framed report")

// ErrBadFrame is returned by Parse for a marked line it cannot decode,
// usually a line the kernel's console output broke in two.
var ErrBadFrame = errors.New("guest: malformed framed line")

// nameOK keeps names decodable: they are space-separated fields.
func nameOK(s string) string {
	if s == "" {
		return "-"
	}
	return strings.Map(func(r rune) rune {
		if r <= ' ' || r == 0x7f {
			return '_'
		}
		return r
	}, s)
}

// oneLine keeps a report on one line, whatever the text holds.
func oneLine(s string) string {
	return strings.NewReplacer("\r", `\r`, "\n", `\n`).Replace(s)
}

// Format returns the framed line for e, without the trailing newline.
func Format(e Event) string {
	switch e.Kind {
	case KindBoot:
		return fmt.Sprintf("%s%s %s %.3f", Marker, e.Kind, nameOK(e.Release), e.Uptime.Seconds())
	case KindStart:
		return fmt.Sprintf("%s%s %s", Marker, e.Kind, nameOK(e.Binary))
	case KindOut:
		return fmt.Sprintf("%s%s %s %s", Marker, e.Kind, nameOK(e.Binary), oneLine(e.Text))
	case KindExit:
		reason := e.Reason
		if reason == "" {
			reason = "-"
		}
		return fmt.Sprintf("%s%s %s %d %.3f %s", Marker, e.Kind, nameOK(e.Binary), e.Code, e.Elapsed.Seconds(), oneLine(reason))
	case KindError:
		return fmt.Sprintf("%s%s %s", Marker, e.Kind, oneLine(e.Text))
	default:
		return fmt.Sprintf("%s%s", Marker, KindDone)
	}
}

func seconds(s string) (time.Duration, error) {
	f, err := strconv.ParseFloat(s, 64)
	if err != nil || f < 0 {
		return 0, ErrBadFrame
	}
	return time.Duration(math.Round(f * float64(time.Second))), nil
}

// Parse decodes a line written by Format. It finds Marker anywhere in the
// line because a console line may start with the tail of a kernel message,
// and ignores a trailing carriage return (the tty turns "\n" into "\r\n").
func Parse(line string) (Event, error) {
	line = strings.TrimRight(line, "\r\n")
	i := strings.Index(line, Marker)
	if i < 0 {
		return Event{}, ErrNotFramed
	}
	rest := line[i+len(Marker):]
	kind, rest, _ := strings.Cut(rest, " ")
	bad := fmt.Errorf("%w: %q", ErrBadFrame, line)
	switch Kind(kind) {
	case KindBoot:
		f := strings.Fields(rest)
		if len(f) != 2 {
			return Event{}, bad
		}
		up, err := seconds(f[1])
		if err != nil {
			return Event{}, bad
		}
		return Event{Kind: KindBoot, Release: f[0], Uptime: up}, nil
	case KindStart:
		if rest == "" || strings.Contains(rest, " ") {
			return Event{}, bad
		}
		return Event{Kind: KindStart, Binary: rest}, nil
	case KindOut:
		name, text, ok := strings.Cut(rest, " ")
		if !ok || name == "" {
			return Event{}, bad
		}
		return Event{Kind: KindOut, Binary: name, Text: text}, nil
	case KindExit:
		f := strings.SplitN(rest, " ", 4)
		if len(f) != 4 {
			return Event{}, bad
		}
		code, err := strconv.Atoi(f[1])
		if err != nil {
			return Event{}, bad
		}
		el, err := seconds(f[2])
		if err != nil {
			return Event{}, bad
		}
		reason := f[3]
		if reason == "-" {
			reason = ""
		}
		return Event{Kind: KindExit, Binary: f[0], Code: code, Elapsed: el, Reason: reason}, nil
	case KindError:
		return Event{Kind: KindError, Text: rest}, nil
	case KindDone:
		return Event{Kind: KindDone}, nil
	}
	return Event{}, bad
}
