package criu

import (
	"encoding/binary"
	"errors"
	"fmt"
	"path/filepath"

	"github.com/semundo/semundo/internal/procfs"
)

// CRIU's image files (criu/include/magic.h, images/core.proto): a file
// starts with IMG_COMMON_MAGIC and the image's own magic, then holds
// entries, each a native-endian u32 size and a protobuf message.
const (
	imgCommonMagic = 0x54564319
	coreMagic      = 0x55053847
	// CoreEntry.tc is field 3, TaskCoreEntry.task_state field 1.
	coreFieldTC        = 3
	taskCoreFieldState = 1
	// compel's COMPEL_TASK_STOPPED: the task was in group-stop at dump,
	// and CRIU restores it stopped.
	taskStopped = 3
)

// errProto marks a core image that does not parse.
var errProto = errors.New("malformed protobuf")

// stoppedAtDump reads CRIU's core-VPID.img in dir and reports whether
// CRIU found the task stopped. It is CRIU's own record, taken when it
// seized the task: at post-dump every task shows as traced ('t').
func stoppedAtDump(dir string, vpid int) (bool, error) {
	path := filepath.Join(dir, fmt.Sprintf("core-%d.img", vpid))
	// With plain system calls: os.ReadFile's fstat and poller cost more
	// than these small files' read, once per task while the tree is
	// frozen.
	b, err := procfs.ReadFile(path)
	if err != nil {
		return false, fmt.Errorf("read CRIU's core image of pid %d: %w", vpid, err)
	}
	state, err := coreTaskState(b)
	if err != nil {
		return false, fmt.Errorf("CRIU's core image core-%d.img: %w", vpid, err)
	}
	return state == taskStopped, nil
}

// coreTaskState returns CoreEntry.tc.task_state from a core image.
func coreTaskState(b []byte) (uint64, error) {
	body, err := imageBody(b, coreMagic, "core")
	if err != nil {
		return 0, err
	}
	if len(body) == 0 {
		return 0, fmt.Errorf("no entry: %w", errProto)
	}
	msg, _, err := nextEntry(body)
	if err != nil {
		return 0, err
	}
	tc, ok, err := protoField(msg, coreFieldTC, 2)
	if err != nil {
		return 0, err
	}
	if !ok {
		return 0, errors.New("no task core entry (is it a thread's?)")
	}
	state, ok, err := protoField(tc, taskCoreFieldState, 0)
	if err != nil {
		return 0, err
	}
	if !ok {
		return 0, fmt.Errorf("task core entry without task_state: %w", errProto)
	}
	return protoVarint(state)
}

// imageBody checks the two magics at the head of a CRIU image, the
// common one and the image's own (what names it in the error), and
// returns what follows them: the image's entries.
func imageBody(b []byte, magic uint32, what string) ([]byte, error) {
	ne := binary.NativeEndian
	if len(b) < 8 || ne.Uint32(b) != imgCommonMagic || ne.Uint32(b[4:]) != magic {
		return nil, fmt.Errorf("not a CRIU %s image (wrong magic)", what)
	}
	return b[8:], nil
}

// nextEntry splits the first entry off entries: a native-endian u32 size
// and a protobuf message of that size.
func nextEntry(entries []byte) (msg, rest []byte, err error) {
	if len(entries) < 4 {
		return nil, nil, fmt.Errorf("%d bytes where an entry's size belongs: %w", len(entries), errProto)
	}
	n := uint64(binary.NativeEndian.Uint32(entries))
	if n > uint64(len(entries)-4) {
		return nil, nil, fmt.Errorf("entry of %d bytes with %d left: %w", n, len(entries)-4, errProto)
	}
	return entries[4 : 4+n], entries[4+n:], nil
}

// protoField finds the first field num of wire type wt in a protobuf
// message and returns its bytes: a varint's own encoding, or the payload
// of a length-delimited field.
func protoField(msg []byte, num uint64, wt int) ([]byte, bool, error) {
	for len(msg) > 0 {
		key, n := binary.Uvarint(msg)
		if n <= 0 {
			return nil, false, errProto
		}
		msg = msg[n:]
		var val []byte
		switch int(key & 7) {
		case 0: // varint
			_, n := binary.Uvarint(msg)
			if n <= 0 {
				return nil, false, errProto
			}
			val, msg = msg[:n], msg[n:]
		case 1: // 64-bit
			if len(msg) < 8 {
				return nil, false, errProto
			}
			val, msg = msg[:8], msg[8:]
		case 2: // length-delimited
			l, n := binary.Uvarint(msg)
			if n <= 0 || l > uint64(len(msg)-n) {
				return nil, false, errProto
			}
			val, msg = msg[n:n+int(l)], msg[n+int(l):]
		case 5: // 32-bit
			if len(msg) < 4 {
				return nil, false, errProto
			}
			val, msg = msg[:4], msg[4:]
		default: // groups: not used by CRIU
			return nil, false, errProto
		}
		if key>>3 == num {
			if int(key&7) != wt {
				return nil, false, fmt.Errorf("field %d has wire type %d, not %d: %w", num, key&7, wt, errProto)
			}
			return val, true, nil
		}
	}
	return nil, false, nil
}

func protoVarint(b []byte) (uint64, error) {
	v, n := binary.Uvarint(b)
	if n <= 0 {
		return 0, errProto
	}
	return v, nil
}
