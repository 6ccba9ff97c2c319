package main

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"testing"

	"github.com/semundo/semundo/checkpoint"
	"github.com/semundo/semundo/image"
	"github.com/semundo/semundo/inject"
	"github.com/semundo/semundo/reader"
	"github.com/semundo/semundo/sysvsem"
	"github.com/semundo/semundo/undofs"
	"github.com/semundo/semundo/writer"
	"golang.org/x/sys/unix"
)

// TestExitCode is the table of the one mapping from errors to exit
// statuses: every package's errors, wrapped as the commands wrap them.
func TestExitCode(t *testing.T) {
	wrap := func(err error) error { return fmt.Errorf("pid 7: set 3: %w", err) }
	for _, tc := range []struct {
		name string
		err  error
		want int
	}{
		{"nil", nil, exitOK},
		{"plain", errors.New("boom"), exitError},
		{"usage", usagef("%q is not a pid", "x"), exitUsage},
		{"wrapped usage", wrap(usagef("bad")), exitUsage},
		{"explicit code", codeError{exitUnsupported, errors.New("x")}, exitUnsupported},
		{"child status 4", &childError{msg: "x", code: exitUnsupported}, exitUnsupported},
		{"EPERM", wrap(unix.EPERM), exitPermission},
		{"EACCES", wrap(os.NewSyscallError("semop", unix.EACCES)), exitPermission},
		{"fs.ErrPermission", wrap(fs.ErrPermission), exitPermission},
		{"reader permission", wrap(reader.ErrPermission), exitPermission},
		{"inject permission", wrap(&inject.OpError{Pid: 7, Op: "seize", Kind: inject.ErrPermission, Err: unix.EPERM}), exitPermission},
		{"writer permission", wrap(writer.ErrPermission), exitPermission},
		{"undofs permission", wrap(undofs.ErrPermission), exitPermission},
		{"already traced (EPERM, but no privilege helps)", wrap(&inject.OpError{Pid: 7, Op: "seize", Kind: inject.ErrAlreadyTraced, Err: unix.EPERM}), exitError},
		{"reader not supported", wrap(reader.ErrNotSupported), exitUnsupported},
		{"checkpoint not supported", wrap(checkpoint.ErrNotSupported), exitUnsupported},
		{"sysvsem not supported", wrap(sysvsem.ErrNotSupported), exitUnsupported},
		{"no injector for this arch", wrap(inject.ErrArchNotSupported), exitUnsupported},
		{"no FUSE", wrap(undofs.ErrNoFUSE), exitUnsupported},
		{"errors.ErrUnsupported", wrap(errors.ErrUnsupported), exitUnsupported},
		{"no such process", wrap(reader.ErrNoProcess), exitError},
		{"ESRCH", wrap(unix.ESRCH), exitError},
		{"no such set", wrap(writer.ErrNoSet), exitError},
		{"wrong count", wrap(writer.ErrCount), exitError},
		{"malformed image", wrap(image.ErrMalformed), exitError},
		{"own list", wrap(writer.ErrOwnList), exitError},
	} {
		if got := exitCode(tc.err); got != tc.want {
			t.Errorf("%s: exitCode(%v) = %d, want %d", tc.name, tc.err, got, tc.want)
		}
	}
}

// TestSharedSentinels: the errors every package returns for the same cause
// are one value, so errors.Is answers for an error from any layer.
func TestSharedSentinels(t *testing.T) {
	same := func(name string, errs ...error) {
		for _, e := range errs[1:] {
			if e != errs[0] {
				t.Errorf("%s: %v and %v are different values", name, errs[0], e)
			}
		}
	}
	same("not supported", reader.ErrNotSupported, checkpoint.ErrNotSupported, sysvsem.ErrNotSupported)
	same("permission", fs.ErrPermission, reader.ErrPermission, inject.ErrPermission, writer.ErrPermission, undofs.ErrPermission)
	same("no process", reader.ErrNoProcess, inject.ErrNoProcess, checkpoint.ErrNoProcess, undofs.ErrNoProcess)
	if !errors.Is(inject.ErrArchNotSupported, reader.ErrNotSupported) || !errors.Is(undofs.ErrNoFUSE, errors.ErrUnsupported) {
		t.Error("a narrower not-supported error does not match the shared one")
	}
}
