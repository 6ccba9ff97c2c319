package criu

import (
	"slices"
	"testing"

	"github.com/semundo/semundo/internal/procfs"
)

// TestWalkTreeFixture walks procfs's fixture tree, whose root 200 is pid 1
// of its own PID namespace: every process comes with its pid there.
func TestWalkTreeFixture(t *testing.T) {
	fixture := procfs.NewFS("../internal/procfs/testdata/tree")
	got, err := walkTree(fixture, 200)
	want := []proc{{200, 1}, {201, 2}, {202, 3}, {205, 4}, {210, 5}}
	if err != nil || !slices.Equal(got, want) {
		t.Errorf("walkTree(200) = %v, %v; want %v", got, err, want)
	}
	// A root at the top namespace level keeps host pids.
	got, err = walkTree(fixture, 300)
	if want := []proc{{300, 300}, {301, 301}}; err != nil || !slices.Equal(got, want) {
		t.Errorf("walkTree(300) = %v, %v; want %v", got, err, want)
	}
	if _, err := walkTree(fixture, 999); err == nil {
		t.Errorf("walkTree of no process succeeded")
	}
}
