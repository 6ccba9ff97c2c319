package reader

import (
	"errors"
	"fmt"
	"io"
	"runtime"
	"unsafe"

	"github.com/cilium/ebpf/link"
	"golang.org/x/sys/unix"
)

// iterTaskInfo is the task member of the kernel's union bpf_iter_link_info
// (Linux >= 6.1), padded to the union's size: a nonzero tid makes the
// iterator visit that task alone, a nonzero pid the threads of that
// process. Both are pids of the PID namespace of the task that opens the
// iterator's seq file (the kernel looks them up there at each open): the
// reader's, whose pids the records carry.
type iterTaskInfo struct {
	tid   uint32
	pid   uint32
	pidFD uint32
	_     uint32
}

// linkCreateIterAttr is union bpf_attr for BPF_LINK_CREATE of an iterator.
type linkCreateIterAttr struct {
	progFD      uint32
	targetFD    uint32
	attachType  uint32
	flags       uint32
	iterInfo    uint64
	iterInfoLen uint32
	_           uint32
}

// errNoTaskFilter: the kernel refused a task-filtered iterator link.
var errNoTaskFilter = errors.New("the task iterator takes no pid filter on this kernel (Linux >= 6.1 does)")

// taskIter attaches the reader's program as an iterator over one task
// (tid, for a thread that is not its process's leader) or over the threads
// of one process (pid), which cilium/ebpf's link.IterOptions cannot ask
// for. The caller closes it. A kernel before 6.1 refuses the filter (or,
// 6.0, ignores it and walks every task): the caller falls back to the
// full walk, and keeps only the task's list either way.
func (r *Reader) taskIter(tid, pid uint32) (*link.Iter, error) {
	prog := r.coll.Programs["semundo_tasks"]
	if prog == nil {
		prog = r.coll.Programs["semundo_tasks_bounded"]
	}
	// In the Reader, on the heap: the kernel reads it through a pointer
	// the attribute carries as an integer, which a stack move would not
	// update. r.mu serializes its users.
	info := &r.taskInfo
	*info = iterTaskInfo{tid: tid, pid: pid}
	attr := linkCreateIterAttr{
		progFD:      uint32(prog.FD()),
		attachType:  unix.BPF_TRACE_ITER,
		iterInfo:    uint64(uintptr(unsafe.Pointer(info))),
		iterInfoLen: uint32(unsafe.Sizeof(*info)),
	}
	fd, _, errno := unix.Syscall(unix.SYS_BPF, unix.BPF_LINK_CREATE, uintptr(unsafe.Pointer(&attr)), unsafe.Sizeof(attr))
	runtime.KeepAlive(prog)
	if errno != 0 {
		return nil, fmt.Errorf("%w: %w", errNoTaskFilter, errno)
	}
	l, err := link.NewFromFD(int(fd))
	if err != nil {
		unix.Close(int(fd))
		return nil, fmt.Errorf("wrap the task-filtered iterator link: %w", err)
	}
	it, ok := l.(*link.Iter)
	if !ok {
		l.Close()
		return nil, fmt.Errorf("the task-filtered link is a %T, not an iterator", l)
	}
	return it, nil
}

// iterOpener is what a pass reads: the reader's link, or a filtered one.
type iterOpener interface {
	Open() (io.ReadCloser, error)
}
