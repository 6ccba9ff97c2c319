//go:build !linux || !(amd64 || arm64)

package inject

import (
	"errors"
	"runtime"
	"strings"
	"testing"
)

func TestNotSupported(t *testing.T) {
	s, err := Seize(1)
	if s != nil || !errors.Is(err, ErrArchNotSupported) || !strings.Contains(err.Error(), "not supported on "+runtime.GOARCH) {
		t.Fatalf("Seize: %v, %v; want ErrArchNotSupported naming %s", s, err, runtime.GOARCH)
	}
	for _, err := range []error{s.Detach(), s.WriteMemory(0, nil), s.Munmap(0, 1)} {
		if !errors.Is(err, ErrArchNotSupported) {
			t.Fatalf("entry point returned %v, want ErrArchNotSupported", err)
		}
	}
	if _, err := s.Syscall(0); !errors.Is(err, ErrArchNotSupported) {
		t.Fatalf("Syscall: %v", err)
	}
	if _, err := s.Mmap(1); !errors.Is(err, ErrArchNotSupported) {
		t.Fatalf("Mmap: %v", err)
	}
}
