package image

import (
	"bufio"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"syscall"
)

// FileMode is the mode of the files WriteFile creates: an image names
// processes and the state of their locks, which is nobody else's business.
const FileMode = 0o600

// WriteFile writes im to path atomically: it encodes into a new temporary
// file in path's directory (mode FileMode), syncs it, renames it over path
// and syncs the directory, so that after a crash path holds either the old
// content or the whole new image, never a mix. An image failing Validate
// is refused before any file is created. On any error before the rename
// the temporary file is removed and path is untouched; an error syncing
// the directory after the rename is reported, but path then already holds
// the new image. A symbolic link at path is replaced, not followed.
func WriteFile(path string, im *Image) error { return writeFile(path, im, true) }

// WriteFileNoSync is WriteFile without the syncs: the rename still makes
// the new image appear whole or not at all to a reader, but a crash may
// lose it. It is for an image that lives beside files whose writer does
// not sync them either, as CRIU does not sync its images: syncing ours
// would buy no restore that survives a crash, and costs while CRIU holds
// the dumped tree frozen.
func WriteFileNoSync(path string, im *Image) error { return writeFile(path, im, false) }

func writeFile(path string, im *Image, sync bool) error {
	if err := im.Validate(); err != nil {
		setFile(err, path)
		return err
	}
	if fi, err := os.Stat(path); err == nil && fi.IsDir() {
		return fmt.Errorf("image: %s is a directory: give the image a file name: %w", path, syscall.EISDIR)
	}
	dir, base := filepath.Split(path)
	if dir == "" {
		dir = "."
	}
	tmp, err := os.CreateTemp(dir, "."+base+".tmp-*")
	if err != nil {
		return fmt.Errorf("image: create a temporary file next to %s: %w", path, err)
	}
	committed := false
	defer func() {
		if !committed {
			tmp.Close()
			os.Remove(tmp.Name())
		}
	}()
	// CreateTemp's mode is 0600 less the umask; make it exact.
	if err := tmp.Chmod(FileMode); err != nil {
		return fmt.Errorf("image: write %s: %w", path, err)
	}
	w := bufio.NewWriterSize(tmp, 64<<10)
	if err := encode(w, im); err != nil {
		return fmt.Errorf("image: write %s: %w", path, err)
	}
	if err := w.Flush(); err != nil {
		return fmt.Errorf("image: write %s: %w", path, err)
	}
	if sync {
		if err := tmp.Sync(); err != nil {
			return fmt.Errorf("image: write %s: sync: %w", path, err)
		}
	}
	if err := tmp.Close(); err != nil {
		return fmt.Errorf("image: write %s: %w", path, err)
	}
	if err := os.Rename(tmp.Name(), path); err != nil {
		return fmt.Errorf("image: write %s: %w", path, err)
	}
	committed = true
	if !sync {
		return nil
	}
	d, err := os.Open(dir)
	if err != nil {
		return fmt.Errorf("image: %s is written but its directory could not be synced: %w", path, err)
	}
	defer d.Close()
	if err := d.Sync(); err != nil {
		return fmt.Errorf("image: %s is written but its directory could not be synced: %w", path, err)
	}
	return nil
}

// ReadFile reads and decodes the image in the file at path (see Decode).
// A *ValidationError it returns has File set to path.
func ReadFile(path string) (*Image, error) {
	// os.ReadFile sizes its buffer from the file's size, unlike Decode's
	// io.ReadAll.
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("image: %w", err)
	}
	im, err := decode(data)
	if err != nil {
		setFile(err, path)
		return nil, err
	}
	return im, nil
}

// setFile records path in err if it is a *ValidationError.
func setFile(err error, path string) {
	if ve, ok := errors.AsType[*ValidationError](err); ok {
		ve.File = path
	}
}
