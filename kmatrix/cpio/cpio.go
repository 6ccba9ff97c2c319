// Package cpio writes "newc" (SVR4, magic 070701) cpio archives, the format
// the Linux kernel unpacks as an initramfs. It writes only what an initramfs
// needs: regular files, directories, symlinks and device nodes, with uid and
// gid 0 and a fixed mtime so the same inputs give the same archive.
package cpio

import (
	"errors"
	"fmt"
	"io"
	"path"
	"strings"
)

// Sizes the format fixes: the header is "070701" plus 13 eight-digit hex
// fields, and both the name and the data are padded to 4 bytes.
const (
	headerLen = 110
	magic     = "070701"
	trailer   = "TRAILER!!!"
)

// File type bits of the mode field (as in stat(2)).
const (
	modeDir  = 0o040000
	modeReg  = 0o100000
	modeLink = 0o120000
	modeChr  = 0o020000
	modeBlk  = 0o060000
	permMask = 0o7777
)

// ErrClosed is returned by a Writer used after Close.
var ErrClosed = errors.New("cpio: archive already closed")

// ErrBadName is returned for an entry name that is empty, absolute after
// cleaning, or climbs out of the archive with "..".
var ErrBadName = errors.New("cpio: bad entry name")

// ErrShortData is returned when a file's reader gives fewer or more bytes
// than the size promised for it.
var ErrShortData = errors.New("cpio: file data does not match its size")

// EntryError describes a failure to write one entry.
type EntryError struct {
	Name string // entry name as given
	Err  error
}

// Error names the entry and the failure.
func (e *EntryError) Error() string { return "cpio: entry " + e.Name + ": " + e.Err.Error() }

// Unwrap returns the underlying error.
func (e *EntryError) Unwrap() error { return e.Err }

// Writer writes one archive to an io.Writer. It is not safe for concurrent
// use.
type Writer struct {
	w      io.Writer
	ino    uint32
	off    int64
	closed bool
}

// NewWriter returns a Writer that writes an archive to w.
func NewWriter(w io.Writer) *Writer { return &Writer{w: w, ino: 1} }

// header is one entry's metadata as the format stores it.
type header struct {
	mode       uint32
	nlink      uint32
	size       uint32
	rmaj, rmin uint32
	name       string
}

// cleanName makes name relative ("./a/b" and "/a/b" become "a/b") because
// the kernel unpacks names relative to the root it is filling.
func cleanName(name string) (string, error) {
	n := path.Clean("/" + name)
	n = strings.TrimPrefix(n, "/")
	if name == "" || n == "" || strings.ContainsRune(n, 0) {
		return "", ErrBadName
	}
	for _, el := range strings.Split(name, "/") {
		if el == ".." {
			return "", ErrBadName
		}
	}
	return n, nil
}

func (cw *Writer) writeHeader(h header) error {
	if cw.closed {
		return ErrClosed
	}
	var b strings.Builder
	b.Grow(headerLen + len(h.name) + 4)
	b.WriteString(magic)
	// ino, mode, uid, gid, nlink, mtime, filesize, devmajor, devminor,
	// rdevmajor, rdevminor, namesize, check
	for _, v := range []uint32{cw.ino, h.mode, 0, 0, h.nlink, 0, h.size, 0, 0, h.rmaj, h.rmin, uint32(len(h.name) + 1), 0} {
		fmt.Fprintf(&b, "%08x", v)
	}
	b.WriteString(h.name)
	b.WriteByte(0)
	for b.Len()%4 != 0 {
		b.WriteByte(0)
	}
	cw.ino++
	return cw.write([]byte(b.String()))
}

func (cw *Writer) write(p []byte) error {
	n, err := cw.w.Write(p)
	cw.off += int64(n)
	return err
}

func (cw *Writer) pad() error {
	if r := cw.off % 4; r != 0 {
		return cw.write(make([]byte, 4-r))
	}
	return nil
}

func (cw *Writer) entry(name string, h header, data io.Reader) error {
	n, err := cleanName(name)
	if err != nil {
		return &EntryError{Name: name, Err: err}
	}
	h.name = n
	if err := cw.writeHeader(h); err != nil {
		return &EntryError{Name: name, Err: err}
	}
	if data != nil {
		got, err := io.Copy(writerFunc(cw.write), io.LimitReader(data, int64(h.size)+1))
		if err != nil {
			return &EntryError{Name: name, Err: err}
		}
		if got != int64(h.size) {
			return &EntryError{Name: name, Err: fmt.Errorf("%w: got %d bytes or more, want %d", ErrShortData, got, h.size)}
		}
	}
	if err := cw.pad(); err != nil {
		return &EntryError{Name: name, Err: err}
	}
	return nil
}

type writerFunc func([]byte) error

func (f writerFunc) Write(p []byte) (int, error) {
	if err := f(p); err != nil {
		return 0, err
	}
	return len(p), nil
}

// Dir adds a directory with permission bits perm.
func (cw *Writer) Dir(name string, perm uint32) error {
	return cw.entry(name, header{mode: modeDir | perm&permMask, nlink: 2}, nil)
}

// File adds a regular file of size bytes read from r. The archive format
// limits a file to 4 GiB - 1.
func (cw *Writer) File(name string, perm uint32, size int64, r io.Reader) error {
	if size < 0 || size > 0xffffffff {
		return &EntryError{Name: name, Err: fmt.Errorf("%w: size %d does not fit the newc format", ErrShortData, size)}
	}
	return cw.entry(name, header{mode: modeReg | perm&permMask, nlink: 1, size: uint32(size)}, r)
}

// Bytes adds a regular file holding data.
func (cw *Writer) Bytes(name string, perm uint32, data []byte) error {
	return cw.File(name, perm, int64(len(data)), strings.NewReader(string(data)))
}

// Symlink adds a symbolic link name pointing to target.
func (cw *Writer) Symlink(name, target string) error {
	return cw.entry(name, header{mode: modeLink | 0o777, nlink: 1, size: uint32(len(target))}, strings.NewReader(target))
}

// CharDev adds a character device node, such as dev/console (5, 1) that the
// kernel opens for init before any devtmpfs is mounted.
func (cw *Writer) CharDev(name string, perm, major, minor uint32) error {
	return cw.entry(name, header{mode: modeChr | perm&permMask, nlink: 1, rmaj: major, rmin: minor}, nil)
}

// BlockDev adds a block device node.
func (cw *Writer) BlockDev(name string, perm, major, minor uint32) error {
	return cw.entry(name, header{mode: modeBlk | perm&permMask, nlink: 1, rmaj: major, rmin: minor}, nil)
}

// Close writes the trailer entry that ends the archive. It does not close the
// underlying writer.
func (cw *Writer) Close() error {
	if cw.closed {
		return ErrClosed
	}
	h := header{name: trailer, nlink: 1}
	if err := cw.writeHeader(h); err != nil {
		return err
	}
	if err := cw.pad(); err != nil {
		return err
	}
	cw.closed = true
	return nil
}
