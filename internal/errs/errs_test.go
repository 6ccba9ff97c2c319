package errs

import (
	"errors"
	"fmt"
	"io/fs"
	"testing"
)

func TestSentinels(t *testing.T) {
	for _, tc := range []struct {
		err, std, not error
	}{
		{ErrNotSupported, errors.ErrUnsupported, fs.ErrNotExist},
		{ErrNoProcess, fs.ErrNotExist, errors.ErrUnsupported},
	} {
		w := fmt.Errorf("pid 7: %w", tc.err)
		if !errors.Is(w, tc.err) || !errors.Is(w, tc.std) {
			t.Errorf("%q: errors.Is(%v) = false", w, tc.std)
		}
		if errors.Is(w, tc.not) || errors.Is(w, fs.ErrPermission) {
			t.Errorf("%q: matches an unrelated sentinel", w)
		}
	}
	arch := New("no injector on arm64", ErrNotSupported)
	if w := fmt.Errorf("set: %w", arch); !errors.Is(w, arch) || !errors.Is(w, ErrNotSupported) || !errors.Is(w, errors.ErrUnsupported) || errors.Is(w, ErrNoProcess) {
		t.Errorf("%q: a narrower case does not match its kinds", w)
	}
	if errors.Is(ErrNotSupported, ErrNoProcess) {
		t.Error("ErrNotSupported is ErrNoProcess")
	}
}
