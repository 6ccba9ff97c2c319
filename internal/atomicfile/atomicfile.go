// Package atomicfile replaces a file's contents so that a reader sees the
// old file or the new one, never a part: a temporary file beside it,
// renamed over it.
package atomicfile

import (
	"os"
	"path/filepath"
)

// Write replaces path with b, mode perm. It does not sync: its callers
// write files that a crash loses with what they belong to anyway (CRIU's
// images, which CRIU does not sync; a metrics file rewritten on every
// run), and a sync would only add to their time.
func Write(path string, b []byte, perm os.FileMode) error {
	dir, base := filepath.Split(path)
	if dir == "" {
		dir = "."
	}
	f, err := os.CreateTemp(dir, "."+base+".tmp-*")
	if err != nil {
		return err
	}
	// CreateTemp's mode is 0600 less the umask; make it exact.
	err = f.Chmod(perm)
	if err == nil {
		_, err = f.Write(b)
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Rename(f.Name(), path)
	}
	if err != nil {
		os.Remove(f.Name())
	}
	return err
}
