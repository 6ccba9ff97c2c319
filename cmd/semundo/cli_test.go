package main

import (
	"bytes"
	"errors"
	"io/fs"
	"os"
	"strings"
	"testing"
)

// TestHelp: every command answers -h and --help with its usage on stdout
// and exit 0, and help COMMAND does the same.
func TestHelp(t *testing.T) {
	for _, s := range commands {
		if s.hidden {
			continue
		}
		cases := [][]string{{s.name, "-h"}, {s.name, "--help"}, {"help", s.name}}
		if !s.raw { // exec's arguments after CMD are CMD's
			cases = append(cases, []string{s.name, "x", "--help"})
		}
		for _, args := range cases {
			var out, errs bytes.Buffer
			code := run(args, &out, &errs)
			if code != exitOK || errs.Len() != 0 || !strings.HasPrefix(out.String(), "usage: semundo "+s.name) {
				t.Errorf("semundo %q: exit %d, stdout %q, stderr %q", args, code, out.String(), errs.String())
			}
		}
	}
	for _, args := range [][]string{{"help"}, {"--help"}, {"-h"}} {
		var out, errs bytes.Buffer
		if code := run(args, &out, &errs); code != exitOK || !strings.Contains(out.String(), "Commands:") {
			t.Errorf("semundo %q: exit %d, stdout %q", args, code, out.String())
		}
	}
	var out, errs bytes.Buffer
	if code := run([]string{"--version"}, &out, &errs); code != exitOK || !strings.HasPrefix(out.String(), "semundo ") {
		t.Errorf("semundo --version: exit %d, stdout %q", code, out.String())
	}
}

// TestUsageErrors: bad command lines exit 2 with one line naming what is
// wrong, flags may follow the positional arguments, and a negative number
// is an argument that the command refuses, not an unknown flag.
func TestUsageErrors(t *testing.T) {
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"who", "-1"}, `"-1" is not a semid`},
		{[]string{"show", "-5"}, `not a pid`},
		{[]string{"show", "12", "--json"}, "flag provided but not defined: -json"},
		{[]string{"ps", "extra"}, `ps takes no arguments, got "extra"`},
		{[]string{"who", "1", "2"}, "who takes one SEMID"},
		{[]string{"who", "3", "--ipcns", "99999999999"}, "are 32-bit"},
		{[]string{"exec", "--undo", "f"}, "exec takes --undo FILE -- CMD"},
		{[]string{"restore"}, "restore takes one image FILE"},
		{[]string{"restore", "a", "--sets", "b"}, "restore takes one image FILE"},
		{[]string{"checkpoint", "--tree"}, "checkpoint needs at least one PID"},
		{[]string{"mount"}, "mount needs a DIR"},
		{[]string{"completion", "zsh"}, "completion takes the shell's name"},
		{[]string{"nosuch"}, `unknown command "nosuch"`},
	} {
		var out, errs bytes.Buffer
		code := run(tc.args, &out, &errs)
		if code != exitUsage || out.Len() != 0 || strings.Count(errs.String(), "\n") != 1 || !strings.Contains(errs.String(), tc.want) {
			t.Errorf("semundo %q: exit %d, stdout %q, stderr %q; want exit 2 and one line with %q", tc.args, code, out.String(), errs.String(), tc.want)
		}
	}
}

// TestManPageCoversCommands: the man page names every command and flag the
// command table has, so a new flag cannot go undocumented.
func TestManPageCoversCommands(t *testing.T) {
	src, err := os.ReadFile("../../man/semundo.8.md")
	if errors.Is(err, fs.ErrNotExist) {
		t.Skip("no man/semundo.8.md: the test binary runs outside the source tree")
	}
	if err != nil {
		t.Fatal(err)
	}
	man := string(src)
	for _, s := range commands {
		if s.hidden {
			continue
		}
		if !strings.Contains(man, "**semundo "+s.name+"**") && !strings.Contains(man, "**semundo "+s.name+" ") {
			t.Errorf("the man page's synopsis lacks semundo %s", s.name)
		}
		for _, f := range s.flagNames() {
			if f != "--help" && !strings.Contains(man, "**"+f+"**") {
				t.Errorf("the man page does not document %s %s", s.name, f)
			}
		}
	}
}
