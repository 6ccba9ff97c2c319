package undofs

import (
	"bytes"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strconv"
	"strings"

	"golang.org/x/sys/unix"
)

// procFS reads process facts from a procfs mounted at its root ("/proc" in
// normal use, a directory of fixtures in tests).
type procFS string

// procStatus is the part of /proc/<pid>/status that names a task's identity.
type procStatus struct {
	// Tgid is the task's process (thread-group) id.
	Tgid int
	// UID and GID hold the real, effective, saved and filesystem ids.
	UID, GID [4]uint32
	// Groups are the supplementary groups.
	Groups []uint32
	// CapEff is the effective capability set.
	CapEff uint64
}

// Indexes into procStatus.UID and procStatus.GID.
const (
	idReal = iota
	idEffective
	idSaved
	idFS
)

// errNoTask: the task does not exist (or was reaped while being read).
var errNoTask = errors.New("no such process")

// status reads /proc/<pid>/status. A task that does not exist is errNoTask.
// pid may be a thread id: FUSE names the calling thread, and the kernel's
// credentials belong to threads.
func (p procFS) status(pid int) (*procStatus, error) {
	if pid <= 0 {
		return nil, fmt.Errorf("pid %d: %w", pid, errNoTask)
	}
	b, err := os.ReadFile(filepath.Join(string(p), strconv.Itoa(pid), "status"))
	if err != nil {
		// ESRCH: the task was reaped between open and read.
		if errors.Is(err, fs.ErrNotExist) || errors.Is(err, unix.ESRCH) {
			return nil, fmt.Errorf("pid %d: %w", pid, errNoTask)
		}
		return nil, fmt.Errorf("read status of pid %d: %w", pid, err)
	}
	st, err := parseStatus(b)
	if err != nil {
		return nil, fmt.Errorf("%s/%d/status: %w", string(p), pid, err)
	}
	return st, nil
}

// parseStatus parses the lines of a status file that procStatus holds; the
// others are ignored. Every field must be present: a status file without
// them is not one this package can judge credentials from.
func parseStatus(b []byte) (*procStatus, error) {
	var st procStatus
	var seen int
	const (
		seenTgid = 1 << iota
		seenUID
		seenGID
		seenGroups
		seenCapEff
		seenAll = seenTgid | seenUID | seenGID | seenGroups | seenCapEff
	)
	for line := range bytes.SplitSeq(b, []byte("\n")) {
		key, val, ok := bytes.Cut(line, []byte(":"))
		if !ok {
			continue
		}
		fields := strings.Fields(string(val))
		var err error
		switch string(key) {
		case "Tgid":
			if len(fields) != 1 {
				return nil, fmt.Errorf("bad Tgid line %q", line)
			}
			st.Tgid, err = strconv.Atoi(fields[0])
			seen |= seenTgid
		case "Uid":
			err = parseIDs(&st.UID, fields)
			seen |= seenUID
		case "Gid":
			err = parseIDs(&st.GID, fields)
			seen |= seenGID
		case "Groups":
			st.Groups = make([]uint32, 0, len(fields))
			for _, f := range fields {
				var g uint64
				g, err = strconv.ParseUint(f, 10, 32)
				if err != nil {
					break
				}
				st.Groups = append(st.Groups, uint32(g))
			}
			seen |= seenGroups
		case "CapEff":
			if len(fields) != 1 {
				return nil, fmt.Errorf("bad CapEff line %q", line)
			}
			st.CapEff, err = strconv.ParseUint(fields[0], 16, 64)
			seen |= seenCapEff
		}
		if err != nil {
			return nil, fmt.Errorf("bad %s line %q: %w", key, line, err)
		}
	}
	if seen != seenAll {
		return nil, errors.New("status lacks one of Tgid, Uid, Gid, Groups, CapEff")
	}
	return &st, nil
}

func parseIDs(ids *[4]uint32, fields []string) error {
	if len(fields) != 4 {
		return fmt.Errorf("want 4 ids, have %d", len(fields))
	}
	for i, f := range fields {
		v, err := strconv.ParseUint(f, 10, 32)
		if err != nil {
			return err
		}
		ids[i] = uint32(v)
	}
	return nil
}

// mountAt looks in mountinfo (the text of /proc/self/mountinfo) for the
// topmost mount whose mount point is dir, and returns its file system type
// and source.
func mountAt(mountinfo []byte, dir string) (fstype, source string, ok bool) {
	for line := range bytes.SplitSeq(mountinfo, []byte("\n")) {
		// id parent major:minor root mountpoint options [optional...] - fstype source superoptions
		f := strings.Fields(string(line))
		if len(f) < 10 || unescapeMountinfo(f[4]) != dir {
			continue
		}
		for i := 6; i+2 < len(f); i++ {
			if f[i] == "-" {
				// Later lines are mounts stacked on earlier ones.
				fstype, source, ok = f[i+1], unescapeMountinfo(f[i+2]), true
				break
			}
		}
	}
	return fstype, source, ok
}

// unescapeMountinfo undoes the kernel's octal escapes (\040 for a space,
// \011, \012, \134) in a mountinfo path.
func unescapeMountinfo(s string) string {
	if !strings.Contains(s, `\`) {
		return s
	}
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		if s[i] == '\\' && i+4 <= len(s) {
			if v, err := strconv.ParseUint(s[i+1:i+4], 8, 8); err == nil {
				b.WriteByte(byte(v))
				i += 3
				continue
			}
		}
		b.WriteByte(s[i])
	}
	return b.String()
}
