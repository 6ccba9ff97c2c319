package main

import (
	"runtime/debug"
	"testing"
)

func TestBuildVersion(t *testing.T) {
	for _, tc := range []struct {
		bi   *debug.BuildInfo
		ok   bool
		want string
	}{
		{nil, false, "semundo (unknown version)"},
		{&debug.BuildInfo{Main: debug.Module{Version: "v1.2.3"}}, true, "semundo v1.2.3"},
		{&debug.BuildInfo{Main: debug.Module{Version: "(devel)"}}, true, "semundo (development build)"},
		{&debug.BuildInfo{Main: debug.Module{Version: "(devel)"}, Settings: []debug.BuildSetting{
			{Key: "vcs.revision", Value: "0123456789abcdef0123"}, {Key: "vcs.modified", Value: "true"}}}, true,
			"semundo (development build 0123456789ab, modified)"},
	} {
		if got := buildVersion(tc.bi, tc.ok); got != tc.want {
			t.Errorf("buildVersion(%+v) = %q, want %q", tc.bi, got, tc.want)
		}
	}
}
