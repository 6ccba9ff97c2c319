package image

import (
	"fmt"
	"math"
	"strconv"
)

// intRule is the range rule of one integer field. Decode checks it on the
// number's text before narrowing it to the Go type, Validate on the Go
// value, and both report the same message, so an error does not depend on
// where the image came from.
type intRule struct {
	what   string // the field's name in messages
	lo, hi int64
	why    string // appended to the message, starting with a space
}

func (r intRule) ok(v int64) bool { return v >= r.lo && v <= r.hi }

// msg is the message for a value outside the range, given as text so that
// numbers too large for int64 can be named too.
func (r intRule) msg(text string) string {
	return r.what + " " + shorten(text) + " is outside " +
		strconv.FormatInt(r.lo, 10) + ".." + strconv.FormatInt(r.hi, 10) + r.why
}

func (r intRule) check(v int64) (string, bool) {
	if r.ok(v) {
		return "", true
	}
	return r.msg(strconv.FormatInt(v, 10)), false
}

const maxID = math.MaxInt32

var (
	ruleIPCNS  = intRule{"ipcns", 1, math.MaxInt64, " (an inode number)"}
	ruleSemmsl = intRule{"semmsl", math.MinInt32, math.MaxInt32, " (a C int)"}
	ruleSemmns = intRule{"semmns", math.MinInt32, math.MaxInt32, " (a C int)"}
	ruleSemopm = intRule{"semopm", math.MinInt32, math.MaxInt32, " (a C int)"}
	ruleSemmni = intRule{"semmni", 0, MaxSemmni, " (the kernel refuses other values)"}
	ruleID     = intRule{"id", 0, maxID, ""}
	ruleKey    = intRule{"key", math.MinInt32, math.MaxInt32, " (key_t is a signed 32-bit int; write keys above 0x7fffffff as negative numbers)"}
	ruleUID    = intRule{"uid", 0, math.MaxUint32 - 1, " ((uid_t)-1 is never a valid id)"}
	ruleGID    = intRule{"gid", 0, math.MaxUint32 - 1, " ((gid_t)-1 is never a valid id)"}
	ruleCUID   = intRule{"cuid", 0, math.MaxUint32 - 1, " ((uid_t)-1 is never a valid id)"}
	ruleCGID   = intRule{"cgid", 0, math.MaxUint32 - 1, " ((gid_t)-1 is never a valid id)"}
	ruleMode   = intRule{"mode", 0, 0xffff, " (the kernel keeps a 16-bit umode_t)"}
	ruleNsems  = intRule{"nsems", 1, MaxNsems, " (no kernel creates a larger set)"}
	ruleOtime  = intRule{"otime", 0, math.MaxInt64, " (seconds since the epoch, 0 for never)"}
	ruleCtime  = intRule{"ctime", 0, math.MaxInt64, " (seconds since the epoch)"}
	ruleValue  = intRule{"value", 0, MaxValue, " (SEMVMX)"}
	ruleSempid = intRule{"sempid", 0, maxID, ""}
	rulePID    = intRule{"pid", 1, maxID, ""}
	ruleTID    = intRule{"tid", 1, maxID, ""}
	ruleSemid  = intRule{"semid", 0, maxID, " (a negative semid marks a removed set; drop the entry)"}
	ruleAdj    = intRule{"adjustment", math.MinInt16, math.MaxInt16, ""}
)

// inconsistent returns an ErrInconsistent error at path.
func inconsistent(path, msg string) *ValidationError {
	return &ValidationError{Path: path, Msg: msg, Kind: ErrInconsistent}
}

// pathFn returns the path of a field of the object being checked; paths
// are built only when there is an error to report, so checking a valid
// image allocates nothing per element.
type pathFn func(field string) string

// under returns the pathFn of the fields of the object at path.
func under(path string) pathFn {
	return func(field string) string {
		if field == "" {
			return path
		}
		if path == "" {
			return field
		}
		return path + "." + field
	}
}

// index returns prefix + "[i]".
func index(prefix string, i int) string { return prefix + "[" + strconv.Itoa(i) + "]" }

// checkInt applies r to v and returns an error at field when it fails.
func checkInt(at pathFn, field string, r intRule, v int64) error {
	if msg, ok := r.check(v); !ok {
		return inconsistent(at(field), msg)
	}
	return nil
}

// Validate reports the first way in which im breaks the format's rules (see
// docs/image.md), as a *ValidationError wrapping ErrInconsistent, or nil.
// Decode applies it to every image it returns; the checkpoint side calls it
// before writing, and Encode and WriteFile refuse an image that fails it.
// Its memory use is proportional to the image, never to a declared count.
func (im *Image) Validate() error {
	if im == nil {
		return inconsistent("", "no image (nil *Image)")
	}
	if err := im.validateHeader(); err != nil {
		return err
	}
	nsems, err := im.validateSets()
	if err != nil {
		return err
	}
	return im.validateLists(nsems)
}

func (im *Image) validateHeader() error {
	if im.Created.IsZero() {
		return inconsistent("created", "missing: set it to the time the snapshot was taken")
	}
	if y := im.Created.UTC().Year(); y < 1970 || y > 9999 {
		return inconsistent("created", "year "+strconv.Itoa(y)+" is outside 1970..9999")
	}
	if im.KernelRelease == "" {
		return inconsistent("kernel_release", "empty: record uname -r")
	}
	if im.SemundoVersion == "" {
		return inconsistent("semundo_version", "empty: record the capturing program's version")
	}
	if im.IPCNamespace > math.MaxInt64 {
		return inconsistent("ipcns", ruleIPCNS.msg(strconv.FormatUint(im.IPCNamespace, 10)))
	}
	top := under("")
	if err := checkInt(top, "ipcns", ruleIPCNS, int64(im.IPCNamespace)); err != nil {
		return err
	}
	return checkInt(top, "limits.semmni", ruleSemmni, int64(im.Limits.Semmni))
}

// validateSets checks every set and returns each set's nsems by id.
func (im *Image) validateSets() (map[int32]int, error) {
	nsems := make(map[int32]int, len(im.Sets))
	byID := make(map[int32]int, len(im.Sets))
	byKey := make(map[int32]int, len(im.Sets))
	for i := range im.Sets {
		s := &im.Sets[i]
		at := func(field string) string { return index("sets", i) + "." + field }
		if err := checkInt(at, "id", ruleID, int64(s.ID)); err != nil {
			return nil, err
		}
		if j, dup := byID[s.ID]; dup {
			return nil, inconsistent(at("id"), fmt.Sprintf("set %d is also sets[%d]; a namespace has one set per id", s.ID, j))
		}
		byID[s.ID] = i
		if s.Key != 0 {
			if j, dup := byKey[s.Key]; dup {
				return nil, inconsistent(at("key"), fmt.Sprintf("key %d (%#x) is also the key of sets[%d]; only IPC_PRIVATE (0) may repeat", s.Key, uint32(s.Key), j))
			}
			byKey[s.Key] = i
		}
		for _, f := range [...]struct {
			r intRule
			v uint32
		}{{ruleUID, s.UID}, {ruleGID, s.GID}, {ruleCUID, s.CUID}, {ruleCGID, s.CGID}, {ruleMode, s.Mode}} {
			if err := checkInt(at, f.r.what, f.r, int64(f.v)); err != nil {
				return nil, err
			}
		}
		if err := checkInt(at, "nsems", ruleNsems, int64(s.Nsems)); err != nil {
			return nil, err
		}
		if err := checkInt(at, "otime", ruleOtime, s.Otime); err != nil {
			return nil, err
		}
		if err := checkInt(at, "ctime", ruleCtime, s.Ctime); err != nil {
			return nil, err
		}
		if len(s.Values) != s.Nsems {
			return nil, inconsistent(at("values"), fmt.Sprintf("%d values for a set of nsems %d; want one per semaphore", len(s.Values), s.Nsems))
		}
		for j, v := range s.Values {
			if msg, ok := ruleValue.check(int64(v)); !ok {
				return nil, inconsistent(at(index("values", j)), msg)
			}
		}
		// Empty: not captured (it costs a system call per semaphore).
		if len(s.Sempids) != s.Nsems && len(s.Sempids) != 0 {
			return nil, inconsistent(at("sempids"), fmt.Sprintf("%d sempids for a set of nsems %d; want one per semaphore, or none", len(s.Sempids), s.Nsems))
		}
		for j, v := range s.Sempids {
			if msg, ok := ruleSempid.check(int64(v)); !ok {
				return nil, inconsistent(at(index("sempids", j)), msg)
			}
		}
		nsems[s.ID] = s.Nsems
	}
	return nsems, nil
}

// owner names the process a pid or tid was first seen in.
type owner struct{ list, proc int }

func (o owner) String() string {
	return index(index("lists", o.list)+".processes", o.proc)
}

func (im *Image) validateLists(nsems map[int32]int) error {
	owners := make(map[int32]owner)
	semids := make(map[int32]int)
	for i := range im.Lists {
		l := &im.Lists[i]
		if len(l.Processes) == 0 {
			return inconsistent(index("lists", i)+".processes", "no process shares this list; a list exists only while a process holds it")
		}
		for j := range l.Processes {
			p := &l.Processes[j]
			self := owner{i, j}
			at := func(field string) string { return self.String() + "." + field }
			if err := checkInt(at, "pid", rulePID, int64(p.PID)); err != nil {
				return err
			}
			if o, dup := owners[p.PID]; dup {
				return inconsistent(at("pid"), fmt.Sprintf("pid %d is also in %s; a process shares exactly one list", p.PID, o))
			}
			owners[p.PID] = self
			if len(p.TIDs) == 0 {
				return inconsistent(at("tids"), "no thread; a process shares a list through at least one of its threads")
			}
			pidListed := false
			for k, tid := range p.TIDs {
				if err := checkInt(at, index("tids", k), ruleTID, int64(tid)); err != nil {
					return err
				}
				if tid == p.PID && !pidListed {
					// The leader's own thread: already registered as the pid.
					pidListed = true
					continue
				}
				if o, dup := owners[tid]; dup {
					if o == self {
						return inconsistent(at(index("tids", k)), fmt.Sprintf("tid %d appears twice", tid))
					}
					return inconsistent(at(index("tids", k)), fmt.Sprintf("tid %d is also in %s; a thread belongs to one process", tid, o))
				}
				owners[tid] = self
			}
		}
		clear(semids)
		for j := range l.Entries {
			e := &l.Entries[j]
			at := func(field string) string {
				p := index(index("lists", i)+".entries", j)
				if field == "" {
					return p
				}
				return p + "." + field
			}
			if err := checkInt(at, "semid", ruleSemid, int64(e.Semid)); err != nil {
				return err
			}
			if k, dup := semids[e.Semid]; dup {
				return inconsistent(at("semid"), fmt.Sprintf("set %d is also entries[%d]; a list has one entry per set", e.Semid, k))
			}
			semids[e.Semid] = j
			n, ok := nsems[e.Semid]
			if !ok {
				return inconsistent(at(""), fmt.Sprintf("set %d is not in the image", e.Semid))
			}
			if len(e.Adj) != n {
				return inconsistent(at("adj"), fmt.Sprintf("%d adjustments for set %d of nsems %d; want one per semaphore", len(e.Adj), e.Semid, n))
			}
			for k := MaxSemop; k < len(e.Adj); k++ {
				if e.Adj[k] != 0 {
					return inconsistent(at(index("adj", k)), fmt.Sprintf("adjustment %d on semaphore %d: semop addresses only semaphores 0..%d, so it must be 0", e.Adj[k], k, MaxSemop-1))
				}
			}
		}
	}
	return nil
}
