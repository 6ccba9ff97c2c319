package helper

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/signal"
	"strings"
	"syscall"

	"github.com/semundo/semundo/inject"
	"github.com/semundo/semundo/undo"
	"github.com/semundo/semundo/writer"
)

// prefix starts the helper's message line.
const prefix = "semundo " + Arg + ": "

// maxRequest bounds what the helper reads: a request names lists of at
// most a few thousand sets, far below this.
const maxRequest = 64 << 20

// Init belongs first in main of every program that runs the helper (by Run
// with no Options.Path, or undofs's default injector). Started as the
// helper (os.Args[1] is Arg), the process runs Main and exits with its
// status; otherwise Init records that this program is the helper too, and
// returns.
func Init() {
	registered.Store(true)
	if len(os.Args) < 2 || os.Args[1] != Arg {
		return
	}
	// If the process that started the helper is gone, the message has
	// nowhere to go; that must not kill the helper mid-injection.
	signal.Ignore(syscall.SIGPIPE)
	os.Exit(Main(os.Args[2:], os.Stdin, os.Stderr))
}

// Main is the helper: it reads one Request, or an array of them, from
// stdin, does them in order with writer.Inject, and returns its exit
// status. The process that started it must never be a target (its list
// would be applied at its exit), so it is passed to writer as a caller.
// On failure it writes one line to stderr, "semundo __inject: " and the
// error; a failed request leaves the later ones undone. args must be
// empty.
func Main(args []string, stdin io.Reader, stderr io.Writer) int {
	// Read now, while the parent certainly waits for this process.
	parent := os.Getppid()
	status, err := serve(args, stdin, parent)
	if err != nil {
		msg := strings.ReplaceAll(err.Error(), "\n", " ")
		fmt.Fprintf(stderr, "%s%s\n", prefix, msg)
	}
	return status
}

// serve runs the requests and returns the exit status and its error.
func serve(args []string, stdin io.Reader, parent int) (int, error) {
	if len(args) > 0 {
		return ExitUsage, fmt.Errorf("takes no arguments (%q): the request comes on standard input", args)
	}
	in, err := io.ReadAll(io.LimitReader(stdin, maxRequest+1))
	if err != nil {
		return ExitInvalid, fmt.Errorf("bad request: %w", err)
	}
	if len(in) > maxRequest {
		return ExitInvalid, fmt.Errorf("bad request: longer than %d bytes", maxRequest)
	}
	reqs, err := parseRequests(in)
	if err != nil {
		return ExitInvalid, fmt.Errorf("bad request: %w", err)
	}
	for _, req := range reqs {
		if status, err := injectOne(req, parent); err != nil {
			return status, err
		}
	}
	return ExitOK, nil
}

// parseRequests reads one request object or an array of them, and checks
// what it can before any write: the pids, and both lists' format.
func parseRequests(in []byte) ([]Request, error) {
	var reqs []Request
	var err error
	if t := bytes.TrimSpace(in); len(t) > 0 && t[0] == '[' {
		err = json.Unmarshal(in, &reqs)
	} else {
		var one Request
		err = json.Unmarshal(in, &one)
		reqs = []Request{one}
	}
	if err != nil {
		return nil, err
	}
	for _, r := range reqs {
		if r.PID <= 0 {
			return nil, fmt.Errorf("pid %d is not a process id", r.PID)
		}
	}
	return reqs, nil
}

// injectOne does one request, and returns the exit status its failure
// stands for.
func injectOne(req Request, parent int) (int, error) {
	cur, err := undo.Parse([]byte(req.Current))
	if err != nil {
		return ExitInvalid, fmt.Errorf("current list: %w", err)
	}
	want, err := undo.Parse([]byte(req.Want))
	if err != nil {
		return ExitInvalid, err
	}
	err = writer.Inject(req.PID, cur, want, &writer.Options{Callers: []int{parent}})
	return exitStatus(err), err
}

// exitStatus is the helper's status for writer.Inject's error. A refusal
// by the kernel is ExitPermission before anything else; a target traced
// already, which writer finds before ptrace could say EPERM, is an error
// (1): no privilege would help, and the message names the tracer.
func exitStatus(err error) int {
	switch {
	case err == nil:
		return ExitOK
	case errors.Is(err, inject.ErrPermission), errors.Is(err, writer.ErrPermission):
		return ExitPermission
	case errors.Is(err, writer.ErrNoSet), errors.Is(err, writer.ErrCount):
		return ExitInvalid
	case errors.Is(err, inject.ErrNoProcess), errors.Is(err, inject.ErrTargetExited), errors.Is(err, inject.ErrZombie):
		return ExitGone
	case errors.Is(err, inject.ErrAlreadyTraced):
		return ExitError
	case errors.Is(err, errors.ErrUnsupported):
		return ExitUnsupported
	}
	return ExitError
}
