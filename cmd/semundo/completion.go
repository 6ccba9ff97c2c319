package main

import (
	"fmt"
	"io"
	"strings"
)

var completionCmd = &spec{
	name:  "completion",
	args:  "bash",
	about: "print a bash completion script (commands, flags, pids):\nsource <(semundo completion bash)",
	define: noFlags(func(c *cli, pos []string) error {
		if len(pos) != 1 || pos[0] != "bash" {
			return usagef("completion takes the shell's name: bash (the only one so far)")
		}
		return bashCompletion(c.stdout)
	}),
}

// bashCompletion writes a completion function built from the command
// table, so that it offers exactly the commands and flags semundo has.
func bashCompletion(w io.Writer) error {
	var names, cases []string
	for _, s := range commands {
		if s.hidden {
			continue
		}
		names = append(names, s.name)
		words := strings.Join(s.flagNames(), " ")
		var args string
		switch {
		case s.pids:
			args = `COMPREPLY+=($(compgen -W "$(cd /proc && printf '%s ' [0-9]*)" -- "$cur"))`
		case s.name == "completion":
			args = `COMPREPLY+=($(compgen -W "bash" -- "$cur"))`
		case s.args != "":
			args = `COMPREPLY+=($(compgen -f -- "$cur"))`
		}
		cases = append(cases, fmt.Sprintf("\t%s)\n\t\tif [[ $cur == -* ]]; then\n\t\t\tCOMPREPLY=($(compgen -W %q -- \"$cur\"))\n\t\telse\n\t\t\t%s\n\t\tfi\n\t\t;;", s.name, words, orTrue(args)))
	}
	_, err := fmt.Fprintf(w, `# bash completion for semundo; load it with: source <(semundo completion bash)
_semundo() {
	local cur=${COMP_WORDS[COMP_CWORD]} prev=${COMP_WORDS[COMP_CWORD-1]}
	COMPREPLY=()
	if [[ $COMP_CWORD -eq 1 ]]; then
		COMPREPLY=($(compgen -W %q -- "$cur"))
		return
	fi
	case $prev in
	-o|--undo|--cgroup|--state-dir) COMPREPLY=($(compgen -f -- "$cur")); return ;;
	--ipcns|--pid|--listen) return ;;
	esac
	case ${COMP_WORDS[1]} in
%s
	esac
}
complete -F _semundo semundo
`, strings.Join(append(names, "help", "--version"), " "), strings.Join(cases, "\n"))
	return err
}

func orTrue(s string) string {
	if s == "" {
		return ":"
	}
	return s
}
