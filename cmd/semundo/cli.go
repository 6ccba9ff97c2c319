package main

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"regexp"
	"strings"
)

// cli is what every command is given: its output streams.
type cli struct {
	stdout, stderr io.Writer
}

// spec describes one command, for running it, its -h text, the top-level
// usage and shell completion alike.
type spec struct {
	name  string
	args  string // positional arguments after the flags, as in the synopsis
	about string // what the command does, one or two lines
	more  string // optional text after the flags in -h
	// pids: the positional arguments are pids (completion offers them).
	pids bool
	// raw: the first positional argument ends flag parsing; the rest
	// belongs to it (exec's command line).
	raw    bool
	hidden bool
	// define declares the command's flags on fs and returns the command,
	// which gets the positional arguments.
	define func(fs *flag.FlagSet, c *cli) func(pos []string) error
}

// errHelpShown: -h or --help printed the command's usage (exit 0).
var errHelpShown = errors.New("help shown")

// negNumber is a positional argument that the flag package would take for
// an unknown flag ("who -1"): the command says what it is instead.
var negNumber = regexp.MustCompile(`^-[0-9]+$`)

// run parses args for the command, with its flags allowed before, between
// or after the positional arguments (up to "--", after which everything is
// positional), and runs it.
func (s *spec) run(c *cli, args []string) error {
	fs := flag.NewFlagSet(s.name, flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	cmd := s.define(fs, c)
	var pos []string
	for len(args) > 0 {
		if negNumber.MatchString(args[0]) {
			pos, args = append(pos, args[0]), args[1:]
			continue
		}
		if err := fs.Parse(args); err != nil {
			if errors.Is(err, flag.ErrHelp) {
				s.usage(c.stdout, fs)
				return errHelpShown
			}
			return usagef("%v (see semundo %s --help)", err, s.name)
		}
		rest := fs.Args()
		if consumed := len(args) - len(rest); consumed > 0 && args[consumed-1] == "--" || s.raw {
			pos = append(pos, rest...)
			break
		}
		if len(rest) == 0 {
			break
		}
		pos, args = append(pos, rest[0]), rest[1:]
	}
	return cmd(pos)
}

// synopsis is the command's one-line form: name, flags, arguments.
func (s *spec) synopsis(fs *flag.FlagSet) string {
	parts := []string{"semundo", s.name}
	fs.VisitAll(func(f *flag.Flag) {
		name, _ := flag.UnquoteUsage(f)
		opt := "--" + f.Name
		if f.Name == "o" {
			opt = "-o"
		}
		if name != "" {
			opt += " " + strings.ToUpper(name)
		}
		parts = append(parts, "["+opt+"]")
	})
	if s.args != "" {
		parts = append(parts, s.args)
	}
	return strings.Join(parts, " ")
}

// usage prints the command's -h text.
func (s *spec) usage(w io.Writer, fs *flag.FlagSet) {
	fmt.Fprintf(w, "usage: %s\n\n%s\n", s.synopsis(fs), s.about)
	first := true
	fs.VisitAll(func(f *flag.Flag) {
		if first {
			fmt.Fprint(w, "\nFlags:\n")
			first = false
		}
		name, text := flag.UnquoteUsage(f)
		opt := "--" + f.Name
		if len(f.Name) == 1 {
			opt = "-" + f.Name
		}
		if name != "" {
			opt += " " + strings.ToUpper(name)
		}
		fmt.Fprintf(w, "  %s\n        %s\n", opt, text)
	})
	if s.more != "" {
		fmt.Fprintf(w, "\n%s", s.more)
	}
	fmt.Fprint(w, "\nExit status: 0 ok, 1 error, 2 usage, 3 missing privilege, 4 kernel lacks a feature.\n")
}

// flagNames lists the command's flags as completion offers them.
func (s *spec) flagNames() []string {
	fs := flag.NewFlagSet(s.name, flag.ContinueOnError)
	s.define(fs, &cli{stdout: io.Discard, stderr: io.Discard})
	names := []string{"--help"}
	fs.VisitAll(func(f *flag.Flag) {
		if len(f.Name) == 1 {
			names = append(names, "-"+f.Name)
		} else {
			names = append(names, "--"+f.Name)
		}
	})
	return names
}

// noFlags is define for a command without flags.
func noFlags(run func(c *cli, pos []string) error) func(*flag.FlagSet, *cli) func([]string) error {
	return func(_ *flag.FlagSet, c *cli) func([]string) error {
		return func(pos []string) error { return run(c, pos) }
	}
}
