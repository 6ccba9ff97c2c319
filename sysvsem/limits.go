//go:build linux

package sysvsem

import (
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
)

// DefaultProcMount is where procfs is mounted on a normal system.
const DefaultProcMount = "/proc"

// FS reads semaphore settings from a procfs mount, in the style of
// github.com/prometheus/procfs: the root is a parameter so tests can point
// it at fixture trees.
type FS struct {
	root string
}

// NewFS returns an FS rooted at root, which must be a directory (a procfs
// mount or a fixture tree holding sys/kernel/sem).
func NewFS(root string) (FS, error) {
	info, err := os.Stat(root)
	if err != nil {
		return FS{}, fmt.Errorf("sysvsem: procfs root: %w", err)
	}
	if !info.IsDir() {
		return FS{}, fmt.Errorf("sysvsem: procfs root %s is not a directory", root)
	}
	return FS{root: root}, nil
}

// NewDefaultFS returns an FS rooted at DefaultProcMount.
func NewDefaultFS() (FS, error) { return NewFS(DefaultProcMount) }

// Limits are the semaphore sysctls of the caller's IPC namespace, the four
// fields of /proc/sys/kernel/sem in the kernel's order.
type Limits struct {
	Semmsl int // SEMMSL: most semaphores in one set
	Semmns int // SEMMNS: most semaphores in all sets together
	Semopm int // SEMOPM: most operations in one semop call
	Semmni int // SEMMNI: most sets
}

// Limits reads and parses sys/kernel/sem under the FS root. Content that is
// not exactly four decimal C ints yields an error wrapping ErrMalformed.
func (fs FS) Limits() (Limits, error) {
	path := filepath.Join(fs.root, "sys", "kernel", "sem")
	data, err := os.ReadFile(path)
	if err != nil {
		return Limits{}, fmt.Errorf("sysvsem: read semaphore limits: %w", err)
	}
	l, err := parseLimits(data)
	if err != nil {
		return Limits{}, fmt.Errorf("sysvsem: %s: %w", path, err)
	}
	return l, nil
}

// ReadLimits reads the limits from /proc/sys/kernel/sem.
func ReadLimits() (Limits, error) {
	fs, err := NewDefaultFS()
	if err != nil {
		return Limits{}, err
	}
	return fs.Limits()
}

func parseLimits(data []byte) (Limits, error) {
	fields := strings.Fields(string(data))
	if len(fields) != 4 {
		return Limits{}, fmt.Errorf("%w: want 4 integers (SEMMSL SEMMNS SEMOPM SEMMNI), got %d fields", ErrMalformed, len(fields))
	}
	var v [4]int
	names := [4]string{"SEMMSL", "SEMMNS", "SEMOPM", "SEMMNI"}
	for i, f := range fields {
		// The kernel stores each as a C int (proc_dointvec), so anything
		// outside 32 bits did not come from it.
		n, err := strconv.ParseInt(f, 10, 32)
		if err != nil {
			if len(f) > 32 {
				f = f[:32] + "..."
			}
			return Limits{}, fmt.Errorf("%w: %s %q is not a 32-bit decimal integer", ErrMalformed, names[i], f)
		}
		v[i] = int(n)
	}
	return Limits{Semmsl: v[0], Semmns: v[1], Semopm: v[2], Semmni: v[3]}, nil
}

// Index shifts: a set's id is its index (slot) in the namespace plus a
// sequence number shifted above it (ipc/util.h: ipcmni_seq_shift).
const (
	DefaultIndexShift  = 15 // IPCMNI_SHIFT
	ExtendedIndexShift = 24 // IPCMNI_EXTEND_SHIFT, with ipcmni_extend
)

// IndexShift returns how many low bits of a set id are its index in the
// namespace: DefaultIndexShift, or ExtendedIndexShift when the kernel was booted
// with ipcmni_extend (read from cmdline under the FS root; the kernel
// shows the setting nowhere else). A restorer needs it to tell which live
// set holds the slot a checkpointed id asks for.
func (fs FS) IndexShift() (int, error) {
	b, err := os.ReadFile(filepath.Join(fs.root, "cmdline"))
	if err != nil {
		return 0, fmt.Errorf("sysvsem: read the kernel command line: %w", err)
	}
	for _, f := range strings.Fields(string(b)) {
		if f == "--" {
			break // the rest is init's
		}
		// Like every __setup parameter, it matches with any "=value".
		if f == "ipcmni_extend" || strings.HasPrefix(f, "ipcmni_extend=") {
			return ExtendedIndexShift, nil
		}
	}
	return DefaultIndexShift, nil
}

// SetLimits writes l to sys/kernel/sem under the FS root: the limits of
// the caller's IPC namespace. The kernel lets them go below what existing
// sets use; they bound only what is created next. Writing needs
// CAP_SYS_ADMIN in the namespace's user namespace.
func (fs FS) SetLimits(l Limits) error {
	path := filepath.Join(fs.root, "sys", "kernel", "sem")
	s := fmt.Sprintf("%d %d %d %d\n", l.Semmsl, l.Semmns, l.Semopm, l.Semmni)
	if err := os.WriteFile(path, []byte(s), 0); err != nil {
		return fmt.Errorf("sysvsem: write %s: %w", path, err)
	}
	return nil
}
