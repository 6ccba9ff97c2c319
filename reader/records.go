package reader

import (
	"encoding/binary"
	"fmt"
)

// Mirrors of the #defines in bpf/records.h; TestRecordConstants keeps them
// equal.
const (
	iterSemundoMaxNsems    = 65535
	iterSemundoInlineMax   = 16384
	iterSemundoTaskOwner   = 1
	iterSemundoTaskRing    = 2
	iterSemundoTaskTrunc   = 4
	iterSemundoTaskUnstab  = 8
	iterSemundoTaskLost    = 16
	iterSemundoEntryNoset  = 1
	iterSemundoEntryToobig = 2
	iterSemundoChunkMagic  = 0x53454d55
	iterSemundoBatchMagic  = 0x53454d42
)

// Record sizes, fixed by the C layout.
const (
	taskSize  = 64
	entrySize = 16
	chunkSize = 64
	batchSize = 8
)

var ne = binary.NativeEndian

// decodeTask decodes a task record; b holds at least taskSize bytes. The
// fields are read one by one: records in the stream are 4-byte aligned only.
func decodeTask(b []byte) iterSemundoTask {
	t := iterSemundoTask{
		Tid:     ne.Uint32(b[0:]),
		Tgid:    ne.Uint32(b[4:]),
		List:    ne.Uint32(b[8:]),
		Ipcns:   ne.Uint32(b[12:]),
		Flags:   ne.Uint32(b[16:]),
		Entries: ne.Uint32(b[20:]),
		Nonce:   ne.Uint64(b[24:]),
		Chunks:  ne.Uint32(b[32:]),
	}
	for i := range t.Comm {
		t.Comm[i] = int8(b[40+i])
	}
	return t
}

// entryLen is the length of an entry record with nsems adjustments.
func entryLen(nsems uint32) int { return entrySize + (int(nsems)*2+3)&^3 }

// adjSlab hands out adjustment slices carved from large blocks, so that a
// scan of 20,000 entries makes a few allocations, not 20,000.
type adjSlab struct{ free []int16 }

func (s *adjSlab) take(n int) []int16 {
	if n > len(s.free) {
		if n > 1<<14 {
			return make([]int16, n)
		}
		s.free = make([]int16, 1<<16)
	}
	a := s.free[:n:n]
	s.free = s.free[n:]
	return a
}

// entrySlab hands out room for a list's entries carved from large blocks,
// as adjSlab does for adjustments: appended one by one into a slice of its
// own, 10,000 lists of 2 entries grew 20,000 times, a sixth of a scan's
// decoding in Go.
type entrySlab struct{ free []Entry }

// take returns an empty slice with room for n entries; nil (as a list
// without entries had before, and append then allocates) for none or for a
// count larger than any block.
func (s *entrySlab) take(n uint32) []Entry {
	if n == 0 || n > 1<<10 {
		return nil
	}
	if int(n) > len(s.free) {
		s.free = make([]Entry, 1<<12)
	}
	a := s.free[:0:n]
	s.free = s.free[n:]
	return a
}

// decodeEntries decodes n entry records from b into dst and returns the
// bytes used. Entries of sets being removed are counted in *dropped and
// left out; a set too large to copy is an error.
func decodeEntries(b []byte, n uint32, slab *adjSlab, dst []Entry, dropped *int) ([]Entry, int, error) {
	off := 0
	for i := uint32(0); i < n; i++ {
		if len(b)-off < entrySize {
			return dst, 0, errShort
		}
		semid := int32(ne.Uint32(b[off:]))
		nsems := ne.Uint32(b[off+4:])
		key := int32(ne.Uint32(b[off+8:]))
		flags := ne.Uint32(b[off+12:])
		if nsems > iterSemundoMaxNsems {
			return dst, 0, fmt.Errorf("BPF entry record for set %d claims %d semaphores", semid, nsems)
		}
		l := entryLen(nsems)
		if len(b)-off < l {
			return dst, 0, errShort
		}
		switch {
		case flags&iterSemundoEntryNoset != 0:
			*dropped++
		case flags&iterSemundoEntryToobig != 0:
			return dst, 0, fmt.Errorf("set %d has more than %d semaphores: %w", semid, iterSemundoMaxNsems, ErrIncomplete)
		default:
			adj := slab.take(int(nsems))
			body := b[off+entrySize:]
			for j := range adj {
				adj[j] = int16(ne.Uint16(body[2*j:]))
			}
			dst = append(dst, Entry{Semid: semid, Key: key, Adj: adj})
		}
		off += l
	}
	return dst, off, nil
}

var errShort = fmt.Errorf("record cut short")
