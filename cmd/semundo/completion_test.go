package main

import (
	"bytes"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// TestBashCompletion loads the script into bash and asks it to complete,
// as bash would on Tab.
func TestBashCompletion(t *testing.T) {
	bash, err := exec.LookPath("bash")
	if err != nil {
		t.Skip("no bash to load the completion script into")
	}
	var script bytes.Buffer
	if code := run([]string{"completion", "bash"}, &script, os.Stderr); code != exitOK {
		t.Fatalf("semundo completion bash: exit %d", code)
	}
	file := filepath.Join(t.TempDir(), "semundo.bash")
	if err := os.WriteFile(file, script.Bytes(), 0o644); err != nil {
		t.Fatal(err)
	}
	complete := func(words ...string) []string {
		t.Helper()
		var quoted []string
		for _, w := range words {
			quoted = append(quoted, fmt.Sprintf("%q", w))
		}
		prog := fmt.Sprintf("source %s; COMP_WORDS=(%s); COMP_CWORD=%d; _semundo; printf '%%s\\n' \"${COMPREPLY[@]}\"",
			file, strings.Join(quoted, " "), len(words)-1)
		out, err := exec.Command(bash, "--norc", "-c", prog).CombinedOutput()
		if err != nil {
			t.Fatalf("complete %q: %v: %s", words, err, out)
		}
		return strings.Fields(string(out))
	}
	has := func(got []string, want ...string) bool {
		for _, w := range want {
			found := false
			for _, g := range got {
				found = found || g == w
			}
			if !found {
				return false
			}
		}
		return true
	}
	if got := complete("semundo", "ch"); !has(got, "checkpoint") || len(got) != 1 {
		t.Errorf("semundo ch<Tab> = %q, want [checkpoint]", got)
	}
	if got := complete("semundo", "ps", "--"); !has(got, "--json", "--all", "--help") || len(got) != 3 {
		t.Errorf("semundo ps --<Tab> = %q", got)
	}
	if got := complete("semundo", "checkpoint", "--t"); !has(got, "--tree") {
		t.Errorf("semundo checkpoint --t<Tab> = %q", got)
	}
	self := fmt.Sprint(os.Getpid())
	if got := complete("semundo", "show", self); !has(got, self) {
		t.Errorf("semundo show %s<Tab> = %q, want this test's pid among them", self, got)
	}
	for _, s := range commands {
		if !s.hidden && !has(complete("semundo", ""), s.name) {
			t.Errorf("command %s is not completed", s.name)
		}
	}
}
