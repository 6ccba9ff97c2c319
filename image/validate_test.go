package image

import (
	"bytes"
	"math"
	"testing"
	"time"
)

// TestValidationRules breaks one rule per case in an otherwise valid image
// and checks the error from Validate, then that Decode reports the very
// same error for the same image written out.
func TestValidationRules(t *testing.T) {
	for _, tc := range []struct {
		name   string
		mutate func(im *Image)
		path   string
		want   string
	}{
		{"created missing", func(im *Image) { im.Created = time.Time{} }, "created", "missing"},
		{"created before 1970", func(im *Image) { im.Created = time.Date(1969, 12, 31, 23, 0, 0, 0, time.UTC) }, "created", "year 1969 is outside 1970..9999"},
		{"kernel release empty", func(im *Image) { im.KernelRelease = "" }, "kernel_release", "empty"},
		{"semundo version empty", func(im *Image) { im.SemundoVersion = "" }, "semundo_version", "empty"},
		{"ipcns zero", func(im *Image) { im.IPCNamespace = 0 }, "ipcns", "ipcns 0 is outside 1.."},
		{"semmni negative", func(im *Image) { im.Limits.Semmni = -1 }, "limits.semmni", "semmni -1 is outside 0..16777216"},
		{"semmni above IPCMNI", func(im *Image) { im.Limits.Semmni = MaxSemmni + 1 }, "limits.semmni", "semmni 16777217"},
		{"set id negative", func(im *Image) { im.Sets[1].ID = -1 }, "sets[1].id", "id -1 is outside 0..2147483647"},
		{"duplicate set id", func(im *Image) { im.Sets[2].ID = 32769 }, "sets[2].id", "set 32769 is also sets[1]"},
		{"duplicate key", func(im *Image) { im.Sets[2].Key = 0x12345678 }, "sets[2].key", "key 305419896 (0x12345678) is also the key of sets[1]; only IPC_PRIVATE (0) may repeat"},
		{"uid -1", func(im *Image) { im.Sets[0].UID = math.MaxUint32 }, "sets[0].uid", "uid 4294967295 is outside 0..4294967294"},
		{"gid -1", func(im *Image) { im.Sets[0].GID = math.MaxUint32 }, "sets[0].gid", "gid 4294967295"},
		{"cuid -1", func(im *Image) { im.Sets[3].CUID = math.MaxUint32 }, "sets[3].cuid", "cuid 4294967295"},
		{"cgid -1", func(im *Image) { im.Sets[3].CGID = math.MaxUint32 }, "sets[3].cgid", "cgid 4294967295"},
		{"mode above 16 bits", func(im *Image) { im.Sets[0].Mode = 0x10000 }, "sets[0].mode", "mode 65536 is outside 0..65535"},
		{"nsems zero", func(im *Image) { im.Sets[0].Nsems, im.Sets[0].Values, im.Sets[0].Sempids = 0, nil, nil },
			"sets[0].nsems", "nsems 0 is outside 1..33554431"},
		{"nsems huge", func(im *Image) { im.Sets[0].Nsems = MaxNsems + 1 }, "sets[0].nsems", "nsems 33554432 is outside 1..33554431"},
		{"nsems negative", func(im *Image) { im.Sets[0].Nsems = -3 }, "sets[0].nsems", "nsems -3"},
		{"otime negative", func(im *Image) { im.Sets[1].Otime = time.Time{}.Unix() }, "sets[1].otime", "otime -62135596800 is outside 0.."},
		{"ctime negative", func(im *Image) { im.Sets[1].Ctime = -1 }, "sets[1].ctime", "ctime -1"},
		{"fewer values than nsems", func(im *Image) { im.Sets[1].Values = im.Sets[1].Values[:3] }, "sets[1].values", "3 values for a set of nsems 4"},
		{"more values than nsems", func(im *Image) { im.Sets[0].Values = append(im.Sets[0].Values, 1) }, "sets[0].values", "2 values for a set of nsems 1"},
		{"value above SEMVMX", func(im *Image) { im.Sets[1].Values[2] = 32768 }, "sets[1].values[2]", "value 32768 is outside 0..32767 (SEMVMX)"},
		{"sempids count", func(im *Image) { im.Sets[2].Sempids = im.Sets[2].Sempids[:299] }, "sets[2].sempids", "299 sempids for a set of nsems 300"},
		{"sempids one", func(im *Image) { im.Sets[2].Sempids = im.Sets[2].Sempids[:1] }, "sets[2].sempids", "1 sempids for a set of nsems 300; want one per semaphore, or none"},
		{"sempid negative", func(im *Image) { im.Sets[1].Sempids[3] = -5 }, "sets[1].sempids[3]", "sempid -5"},
		{"list without process", func(im *Image) { im.Lists[1].Processes = nil }, "lists[1].processes", "no process shares this list"},
		{"pid zero", func(im *Image) { im.Lists[0].Processes[1].PID = 0 }, "lists[0].processes[1].pid", "pid 0 is outside 1..2147483647"},
		{"pid negative", func(im *Image) { im.Lists[3].Processes[0].PID = -4300 }, "lists[3].processes[0].pid", "pid -4300"},
		{"process without tid", func(im *Image) { im.Lists[2].Processes[0].TIDs = nil }, "lists[2].processes[0].tids", "no thread"},
		{"tid zero", func(im *Image) { im.Lists[1].Processes[0].TIDs[2] = 0 }, "lists[1].processes[0].tids[2]", "tid 0 is outside 1.."},
		{"tid repeated", func(im *Image) { im.Lists[1].Processes[0].TIDs[2] = 4101 }, "lists[1].processes[0].tids[2]", "tid 4101 appears twice"},
		{"leader tid repeated", func(im *Image) { im.Lists[1].Processes[0].TIDs[2] = 4100 },
			"lists[1].processes[0].tids[2]", "tid 4100 appears twice"},
		{"pid in two lists", func(im *Image) { im.Lists[3].Processes[0].PID, im.Lists[3].Processes[0].TIDs[0] = 4002, 4002 },
			"lists[3].processes[0].pid", "pid 4002 is also in lists[0].processes[1]"},
		{"pid twice in one list", func(im *Image) { im.Lists[0].Processes[1].PID = 4001 },
			"lists[0].processes[1].pid", "pid 4001 is also in lists[0].processes[0]"},
		{"tid in two lists", func(im *Image) { im.Lists[2].Processes[0].TIDs[1] = 4102 },
			"lists[2].processes[0].tids[1]", "tid 4102 is also in lists[1].processes[0]"},
		{"pid is another process's tid", func(im *Image) { im.Lists[3].Processes[0].PID = 4203 },
			"lists[3].processes[0].pid", "pid 4203 is also in lists[2].processes[0]"},
		{"tid is another process's pid", func(im *Image) { im.Lists[3].Processes[0].TIDs[0] = 4200 },
			"lists[3].processes[0].tids[0]", "tid 4200 is also in lists[2].processes[0]"},
		{"entry semid negative", func(im *Image) { im.Lists[0].Entries[1].Semid = -1 }, "lists[0].entries[1].semid", "semid -1 is outside 0..2147483647 (a negative semid marks a removed set"},
		{"entry set not in image", func(im *Image) { im.Lists[3].Entries[0].Semid = 65536 }, "lists[3].entries[0]", "set 65536 is not in the image"},
		{"duplicate semid in list", func(im *Image) { im.Lists[0].Entries[1] = Entry{Semid: 32769, Adj: []int16{0, 0, 0, 0}} },
			"lists[0].entries[1].semid", "set 32769 is also entries[0]"},
		{"fewer adjustments than nsems", func(im *Image) { im.Lists[0].Entries[0].Adj = im.Lists[0].Entries[0].Adj[:2] },
			"lists[0].entries[0].adj", "2 adjustments for set 32769 of nsems 4"},
		{"more adjustments than nsems", func(im *Image) { im.Lists[3].Entries[0].Adj = append(im.Lists[3].Entries[0].Adj, 0) },
			"lists[3].entries[0].adj", "3 adjustments for set 98307 of nsems 2"},
		{"adjustment semop cannot reach", func(im *Image) {
			const n = MaxSemop + 1
			im.Sets = append(im.Sets, Set{ID: 7, Nsems: n, Values: make([]uint16, n), Sempids: make([]int32, n), Ctime: 1})
			adj := make([]int16, n)
			adj[MaxSemop] = -1
			im.Lists[0].Entries = append(im.Lists[0].Entries, Entry{Semid: 7, Adj: adj})
		}, "lists[0].entries[2].adj[65536]", "adjustment -1 on semaphore 65536: semop addresses only semaphores 0..65535, so it must be 0"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			im := realistic()
			tc.mutate(im)
			verr := im.Validate()
			checkErr(t, verr, ErrInconsistent, tc.path, tc.want)
			if verr == nil {
				return
			}
			_, derr := Decode(bytes.NewReader(encodeRaw(t, im)))
			checkErr(t, derr, ErrInconsistent, tc.path, tc.want)
			if derr != nil && derr.Error() != verr.Error() {
				t.Errorf("Decode says %q, Validate %q", derr, verr)
			}
		})
	}
}

// TestValidEdgeCases are states the kernel really produces; each must pass.
func TestValidEdgeCases(t *testing.T) {
	for _, tc := range []struct {
		name   string
		mutate func(im *Image)
	}{
		{"many private sets", func(im *Image) { im.Sets[1].Key = 0; im.Sets[2].Key = 0 }},
		{"list without entries", func(im *Image) { im.Lists[0].Entries = nil }},
		{"all-zero entry", func(im *Image) { im.Lists[0].Entries[0].Adj = []int16{0, 0, 0, 0} }},
		{"leader exited, threads remain", func(im *Image) { im.Lists[1].Processes[0].TIDs = []int32{4101, 4102} }},
		{"tids out of order", func(im *Image) { im.Lists[1].Processes[0].TIDs = []int32{4102, 4100, 4101} }},
		{"extreme values and ids", func(im *Image) {
			im.Sets[1].ID, im.Sets[1].Key = math.MaxInt32, math.MinInt32
			im.Sets[1].Values = []uint16{0, MaxValue, MaxValue, 0}
			im.Lists[0].Entries[0] = Entry{Semid: math.MaxInt32, Adj: []int16{math.MinInt16, math.MaxInt16, 0, -1}}
			im.Lists[0].Processes[0].PID, im.Lists[0].Processes[0].TIDs = math.MaxInt32, []int32{math.MaxInt32}
		}},
		{"negative and zero limits", func(im *Image) { im.Limits = Limits{Semmsl: -1, Semmns: math.MinInt32, Semopm: 0, Semmni: 0} }},
		{"nsems above SEMMSL", func(im *Image) { im.Limits.Semmsl = 2 }},
		{"no sets, no lists", func(im *Image) { im.Sets, im.Lists = nil, nil }},
		{"empty hostname and comm", func(im *Image) { im.Hostname = ""; im.Lists[0].Processes[0].Comm = "" }},
		{"mode with other bits", func(im *Image) { im.Sets[0].Mode = 0o101777 }},
		{"set that semop cannot fully reach", func(im *Image) {
			const n = MaxSemop + 1
			im.Sets = append(im.Sets, Set{ID: 7, Nsems: n, Values: make([]uint16, n), Sempids: make([]int32, n), Ctime: 1})
			adj := make([]int16, n)
			adj[MaxSemop-1] = -1
			im.Lists[0].Entries = append(im.Lists[0].Entries, Entry{Semid: 7, Adj: adj})
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			im := realistic()
			tc.mutate(im)
			if err := im.Validate(); err != nil {
				t.Fatal(err)
			}
			if !sameImage(clone(t, im), im) {
				t.Error("does not round-trip")
			}
		})
	}
}

// TestCreatedYearRange: a year RFC 3339 cannot write is refused before
// encoding, and the decoder refuses its 5-digit form as malformed.
func TestCreatedYearRange(t *testing.T) {
	im := realistic()
	im.Created = time.Date(10000, 1, 1, 0, 0, 0, 0, time.UTC)
	checkErr(t, im.Validate(), ErrInconsistent, "created", "year 10000 is outside 1970..9999")
	_, err := Decode(bytes.NewReader(encodeRaw(t, im)))
	checkErr(t, err, ErrMalformed, "created", `want an RFC 3339 time such as "2006-01-02T15:04:05Z", got "10000-01-01T00:00:00Z" at line 3, column 14`)
	// 9999-12-31T23:30:00-01:00 is in year 10000 once in UTC.
	data := bytes.Replace(encodeRaw(t, realistic()), []byte("2026-11-27T14:03:59.123456789Z"), []byte("9999-12-31T23:30:00-01:00"), 1)
	_, err = Decode(bytes.NewReader(data))
	checkErr(t, err, ErrInconsistent, "created", "year 10000")
}

func TestValidateNil(t *testing.T) {
	var im *Image
	checkErr(t, im.Validate(), ErrInconsistent, "", "nil")
	checkErr(t, Encode(&bytes.Buffer{}, nil), ErrInconsistent, "", "nil")
}

// TestSempidsNotCaptured: an empty sempids array means they were not read.
func TestSempidsNotCaptured(t *testing.T) {
	im := realistic()
	for i := range im.Sets {
		im.Sets[i].Sempids = nil
	}
	if err := im.Validate(); err != nil {
		t.Fatalf("image without sempids: %v", err)
	}
	var b bytes.Buffer
	if err := Encode(&b, im); err != nil {
		t.Fatal(err)
	}
	back, err := Decode(&b)
	if err != nil {
		t.Fatal(err)
	}
	for _, s := range back.Sets {
		if len(s.Sempids) != 0 {
			t.Fatalf("set %d: sempids %v after a round trip, want none", s.ID, s.Sempids)
		}
	}
}
