package image

import (
	"bytes"
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"
)

// entries lists dir's names.
func entries(t *testing.T, dir string) []string {
	t.Helper()
	des, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, de := range des {
		names = append(names, de.Name())
	}
	return names
}

func TestWriteFileReadFile(t *testing.T) {
	for name, write := range map[string]func(string, *Image) error{"WriteFile": WriteFile, "WriteFileNoSync": WriteFileNoSync} {
		t.Run(name, func(t *testing.T) {
			dir := t.TempDir()
			path := filepath.Join(dir, "semundo.img")
			if err := write(path, realistic()); err != nil {
				t.Fatal(err)
			}
			fi, err := os.Stat(path)
			if err != nil {
				t.Fatal(err)
			}
			if fi.Mode() != 0o600 {
				t.Errorf("mode %v, want -rw-------", fi.Mode())
			}
			if got := entries(t, dir); !slices.Equal(got, []string{"semundo.img"}) {
				t.Errorf("directory holds %v", got)
			}
			data, err := os.ReadFile(path)
			if err != nil {
				t.Fatal(err)
			}
			var want bytes.Buffer
			if err := Encode(&want, realistic()); err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(data, want.Bytes()) {
				t.Error("file content differs from Encode's output")
			}
			im, err := ReadFile(path)
			if err != nil {
				t.Fatal(err)
			}
			if !sameImage(im, realistic()) {
				t.Error("ReadFile returned a different image")
			}
		})
	}
}

// TestWriteFileReplaces: an existing image, readable by others, is
// replaced by a new file of mode 0600, whatever the umask.
func TestWriteFileReplaces(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "img.json")
	if err := os.WriteFile(path, []byte("old"), 0o644); err != nil {
		t.Fatal(err)
	}
	old := syscall.Umask(0o277) // would give 0400 without the explicit chmod
	defer syscall.Umask(old)
	im := realistic()
	im.Hostname = "replaced"
	if err := WriteFile(path, im); err != nil {
		t.Fatal(err)
	}
	fi, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	if fi.Mode() != 0o600 {
		t.Errorf("mode %v, want -rw-------", fi.Mode())
	}
	got, err := ReadFile(path)
	if err != nil || got.Hostname != "replaced" {
		t.Fatalf("ReadFile: %v, hostname %q", err, got.Hostname)
	}
	if got := entries(t, dir); !slices.Equal(got, []string{"img.json"}) {
		t.Errorf("directory holds %v", got)
	}
}

// TestWriteFileOverDirectory: a directory as the target is refused before
// anything is written, on one line naming it, and nothing is left behind.
func TestWriteFileOverDirectory(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "img")
	if err := os.Mkdir(path, 0o755); err != nil {
		t.Fatal(err)
	}
	err := WriteFile(path, realistic())
	if err == nil {
		t.Fatal("WriteFile over a directory succeeded")
	}
	if !errors.Is(err, syscall.EISDIR) || !strings.Contains(err.Error(), "give the image a file name") {
		t.Errorf("error %v does not say the path is a directory (EISDIR)", err)
	}
	if !strings.Contains(err.Error(), path) || strings.Contains(err.Error(), "\n") {
		t.Errorf("error %q does not name %s on one line", err, path)
	}
	if got := entries(t, dir); !slices.Equal(got, []string{"img"}) {
		t.Errorf("directory holds %v after a failed rename, want only img", got)
	}
	if got := entries(t, path); len(got) != 0 {
		t.Errorf("target directory holds %v", got)
	}
}

// TestWriteFileInvalidKeepsOld: an image failing Validate leaves the old
// file byte for byte and creates nothing.
func TestWriteFileInvalidKeepsOld(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "img.json")
	if err := WriteFile(path, realistic()); err != nil {
		t.Fatal(err)
	}
	before, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	im := realistic()
	im.Lists[3].Entries[0].Semid = 65536
	err = WriteFile(path, im)
	checkErr(t, err, ErrInconsistent, "lists[3].entries[0]", "set 65536 is not in the image")
	if want := "image " + path + ": lists[3].entries[0]: set 65536 is not in the image"; err.Error() != want {
		t.Errorf("error %q, want %q", err, want)
	}
	after, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(before, after) {
		t.Error("the old image changed")
	}
	if got := entries(t, dir); !slices.Equal(got, []string{"img.json"}) {
		t.Errorf("directory holds %v", got)
	}
}

func TestWriteFileMissingDir(t *testing.T) {
	dir := t.TempDir()
	err := WriteFile(filepath.Join(dir, "no", "img.json"), realistic())
	if !errors.Is(err, fs.ErrNotExist) {
		t.Fatalf("error %v, want one wrapping fs.ErrNotExist", err)
	}
	if got := entries(t, dir); len(got) != 0 {
		t.Errorf("directory holds %v", got)
	}
}

func TestWriteFileRelative(t *testing.T) {
	t.Chdir(t.TempDir())
	if err := WriteFile("img.json", realistic()); err != nil {
		t.Fatal(err)
	}
	if _, err := ReadFile("img.json"); err != nil {
		t.Fatal(err)
	}
}

func TestReadFileErrors(t *testing.T) {
	dir := t.TempDir()
	_, err := ReadFile(filepath.Join(dir, "missing"))
	if !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("error %v, want one wrapping fs.ErrNotExist", err)
	}
	path := filepath.Join(dir, "bad.json")
	if err := os.WriteFile(path, []byte(`{"format": "semundo/2"}`), 0o600); err != nil {
		t.Fatal(err)
	}
	_, err = ReadFile(path)
	checkErr(t, err, ErrVersion, "format", "major version 2")
	var ve *ValidationError
	if errors.As(err, &ve) && ve.File != path {
		t.Errorf("File %q, want %q", ve.File, path)
	}
	if !strings.HasPrefix(err.Error(), "image "+path+": format: ") {
		t.Errorf("error %q does not name the file", err)
	}
	_, err = ReadFile(dir)
	if err == nil || errors.Is(err, ErrMalformed) {
		t.Errorf("reading a directory: %v", err)
	}
}
