package main

import "runtime/debug"

// version names this build, for --version and checkpoint images: the
// module version when semundo was built from a tagged module, otherwise
// the commit it was built from (and whether the tree had changes).
var version = buildVersion(debug.ReadBuildInfo())

func buildVersion(bi *debug.BuildInfo, ok bool) string {
	if !ok {
		return "semundo (unknown version)"
	}
	if v := bi.Main.Version; v != "" && v != "(devel)" {
		return "semundo " + v
	}
	var rev, dirty string
	for _, s := range bi.Settings {
		switch s.Key {
		case "vcs.revision":
			rev = s.Value
		case "vcs.modified":
			if s.Value == "true" {
				dirty = ", modified"
			}
		}
	}
	if len(rev) > 12 {
		rev = rev[:12]
	}
	if rev == "" {
		return "semundo (development build)"
	}
	return "semundo (development build " + rev + dirty + ")"
}
