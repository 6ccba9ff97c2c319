//go:build linux

package sysvsem

import (
	"fmt"
	"os/exec"
	"strings"
	"testing"
	"unsafe"

	"github.com/semundo/semundo/internal/testenv"
)

// layoutC prints the kernel UAPI structures' sizes and offsets as the C
// compiler sees them for this machine's architecture.
const layoutC = `#include <stdio.h>
#include <stddef.h>
#include <linux/sem.h>
int main(void) {
	printf("semid64_ds %zu\n", sizeof(struct semid64_ds));
	printf("sem_perm.key %zu\n", offsetof(struct semid64_ds, sem_perm.key));
	printf("sem_perm.uid %zu\n", offsetof(struct semid64_ds, sem_perm.uid));
	printf("sem_perm.gid %zu\n", offsetof(struct semid64_ds, sem_perm.gid));
	printf("sem_perm.cuid %zu\n", offsetof(struct semid64_ds, sem_perm.cuid));
	printf("sem_perm.cgid %zu\n", offsetof(struct semid64_ds, sem_perm.cgid));
	printf("sem_perm.mode %zu\n", offsetof(struct semid64_ds, sem_perm.mode));
	printf("sem_perm.seq %zu\n", offsetof(struct semid64_ds, sem_perm.seq));
	printf("sem_otime %zu\n", offsetof(struct semid64_ds, sem_otime));
	printf("sem_ctime %zu\n", offsetof(struct semid64_ds, sem_ctime));
	printf("sem_nsems %zu\n", offsetof(struct semid64_ds, sem_nsems));
	printf("sembuf %zu\n", sizeof(struct sembuf));
	printf("sembuf.sem_op %zu\n", offsetof(struct sembuf, sem_op));
	printf("sembuf.sem_flg %zu\n", offsetof(struct sembuf, sem_flg));
	printf("seminfo %zu\n", sizeof(struct seminfo));
	printf("seminfo.semusz %zu\n", offsetof(struct seminfo, semusz));
	printf("seminfo.semaem %zu\n", offsetof(struct seminfo, semaem));
	return 0;
}
`

func TestLayoutMatchesKernelHeaders(t *testing.T) {
	if testenv.InVM() {
		// The kernel-matrix VM has no C compiler; the layout is also
		// checked at compile time in layout_$GOARCH.go.
		t.Skip("no C compiler in the kernel-matrix VM")
	}
	bin := testenv.BuildC(t, "layout", layoutC)
	out, err := exec.Command(bin).Output()
	if err != nil {
		t.Fatal(err)
	}
	var ds semid64DS
	var sb Sembuf
	var si Seminfo
	want := map[string]uintptr{
		"semid64_ds":     unsafe.Sizeof(ds),
		"sem_perm.key":   unsafe.Offsetof(ds.Perm) + unsafe.Offsetof(ds.Perm.Key),
		"sem_perm.uid":   unsafe.Offsetof(ds.Perm) + unsafe.Offsetof(ds.Perm.UID),
		"sem_perm.gid":   unsafe.Offsetof(ds.Perm) + unsafe.Offsetof(ds.Perm.GID),
		"sem_perm.cuid":  unsafe.Offsetof(ds.Perm) + unsafe.Offsetof(ds.Perm.CUID),
		"sem_perm.cgid":  unsafe.Offsetof(ds.Perm) + unsafe.Offsetof(ds.Perm.CGID),
		"sem_perm.mode":  unsafe.Offsetof(ds.Perm) + unsafe.Offsetof(ds.Perm.Mode),
		"sem_perm.seq":   unsafe.Offsetof(ds.Perm) + unsafe.Offsetof(ds.Perm.Seq),
		"sem_otime":      unsafe.Offsetof(ds.Otime),
		"sem_ctime":      unsafe.Offsetof(ds.Ctime),
		"sem_nsems":      unsafe.Offsetof(ds.Nsems),
		"sembuf":         unsafe.Sizeof(sb),
		"sembuf.sem_op":  unsafe.Offsetof(sb.Op),
		"sembuf.sem_flg": unsafe.Offsetof(sb.Flg),
		"seminfo":        unsafe.Sizeof(si),
		"seminfo.semusz": unsafe.Offsetof(si.Semusz),
		"seminfo.semaem": unsafe.Offsetof(si.Semaem),
	}
	seen := 0
	for _, line := range strings.Split(strings.TrimSpace(string(out)), "\n") {
		var name string
		var c uintptr
		if _, err := fmt.Sscan(line, &name, &c); err != nil {
			t.Fatalf("bad line %q: %v", line, err)
		}
		g, ok := want[name]
		if !ok {
			t.Fatalf("unexpected line %q", line)
		}
		seen++
		if g != c {
			t.Errorf("%s: Go %d, C %d", name, g, c)
		}
	}
	if seen != len(want) {
		t.Errorf("C program printed %d of %d values", seen, len(want))
	}
}
