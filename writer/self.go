package writer

import (
	"os"

	"github.com/semundo/semundo/plan"
	"github.com/semundo/semundo/sysvsem"
	"github.com/semundo/semundo/undo"
)

// WriteSelf writes want into the calling process's own list, whose current
// entries are cur. In a Go program the list is shared by all the process's
// threads and is applied when the process exits: a program that writes its
// own list and exits has written nothing that lasts, which is why
// `semundo exec` writes and then execs (the list survives execve).
func WriteSelf(cur, want undo.List, opts *Options) error {
	return apply(self{}, cur, want, opts)
}

// self runs the calls in the calling process.
type self struct{}

func (self) pid() int { return os.Getpid() }

func (self) stat(semid int32) (sysvsem.SemidDS, error) { return sysvsem.Stat(int(semid)) }

func (self) getAll(semid int32, nsems int) ([]uint16, error) {
	vals, err := sysvsem.GetAll(int(semid))
	if err == nil && len(vals) != nsems {
		return nil, errSizeChanged(semid)
	}
	return vals, err
}

func (self) semop(semid int32, ops []plan.Op) error {
	sops := make([]sysvsem.Sembuf, len(ops))
	for i, o := range ops {
		sops[i] = sysvsem.Sembuf{Num: o.Num, Op: o.Op, Flg: o.Flg}
	}
	return sysvsem.Op(int(semid), sops)
}

func (self) semopm() (int, error) {
	info, _, err := sysvsem.Info()
	if err != nil {
		return 0, err
	}
	return int(info.Semopm), nil
}

func (self) creds() (*Creds, error) { return ReadCreds(os.Getpid()) }
