package writer

import (
	"testing"

	"github.com/semundo/semundo/internal/procfs"
	"github.com/semundo/semundo/sysvsem"
)

// mayAlter must grant exactly what ipcperms grants: the owner's or the
// creator's bits for either uid, else the group bits for either gid
// (fsgid or a supplementary group), else the others' bits; CAP_IPC_OWNER
// overrides. The status is a thread of a set-uid program: uid 1000, euid 0,
// fsgid 1000, groups 4 24 27 1000, no capabilities. (It is built here, not
// read from a fixture file: the kernel matrix runs this test binary
// without the source tree.)
func TestMayAlter(t *testing.T) {
	st, err := procfs.ParseStatus([]byte("Tgid:\t100\nUid:\t1000\t0\t0\t0\nGid:\t1000\t1000\t1000\t1000\nGroups:\t4 24 27 1000 \nCapEff:\t0000000000000000\n"))
	if err != nil {
		t.Fatal(err)
	}
	c := credsOf(st)
	if c.EUID != 0 || c.FSGID != 1000 || len(c.Groups) != 4 || c.IPCOwner {
		t.Fatalf("credsOf = %+v", c)
	}
	user := &Creds{EUID: 1000, FSGID: 100, Groups: []uint32{27}}
	tests := []struct {
		c    *Creds
		perm sysvsem.Perm
		want bool
	}{
		{user, sysvsem.Perm{UID: 1000, GID: 5, CUID: 0, CGID: 0, Mode: 0o600}, true},
		{user, sysvsem.Perm{UID: 1000, GID: 5, Mode: 0o466}, false}, // owner bits win, even when group/others could
		{user, sysvsem.Perm{UID: 0, GID: 5, CUID: 1000, Mode: 0o200}, true},
		{user, sysvsem.Perm{UID: 0, GID: 100, Mode: 0o620}, true},         // fsgid
		{user, sysvsem.Perm{UID: 0, GID: 5, CGID: 27, Mode: 0o020}, true}, // supplementary group, creator gid
		{user, sysvsem.Perm{UID: 0, GID: 27, Mode: 0o602}, false},         // group bits win over others'
		{user, sysvsem.Perm{UID: 0, GID: 5, Mode: 0o602}, true},
		{user, sysvsem.Perm{UID: 0, GID: 5, Mode: 0o644}, false},
		{&Creds{EUID: 1000, IPCOwner: true}, sysvsem.Perm{UID: 0, GID: 0, Mode: 0o000}, true},
		{c, sysvsem.Perm{UID: 0, GID: 0, Mode: 0o400}, false}, // root without CAP_IPC_OWNER
	}
	for _, tt := range tests {
		if got := tt.c.mayAlter(tt.perm); got != tt.want {
			t.Errorf("%+v mayAlter(%+v) = %v, want %v", tt.c, tt.perm, got, tt.want)
		}
	}
}
