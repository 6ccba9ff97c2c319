package kmatrix

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"reflect"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/semundo/semundo/kmatrix/cpio"
	"github.com/semundo/semundo/kmatrix/gotest"
)

// collect replays a console log captured from a real VM (kmatrix -keep).
func collect(t *testing.T, name string) *KernelRun {
	t.Helper()
	f, err := os.Open(filepath.Join("testdata", name))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	run := &KernelRun{Kernel: Kernel{Name: "test"}}
	var stream strings.Builder
	c := collector{run: run, stream: &stream, prefix: "[test] "}
	c.read(f)
	if strings.ContainsAny(stream.String(), "\x1b\x16\r") {
		t.Errorf("stream keeps control characters: %q", stream.String())
	}
	return run
}

func TestCollectPass(t *testing.T) {
	run := collect(t, "pass-6.12.console.log")
	if run.Release != "6.12.117+deb12-cloud-amd64" || !run.Done || run.Uptime != 1680*time.Millisecond {
		t.Errorf("release %q done %v uptime %v", run.Release, run.Done, run.Uptime)
	}
	if len(run.Binaries) != 1 || !run.Binaries[0].Exited || run.Binaries[0].Code != 0 || run.Binaries[0].Name != "kmatrix/sample" {
		t.Fatalf("binaries: %+v", run.Binaries)
	}
	if p, f, s := counts(run); p != 4 || f != 0 || s != 0 {
		t.Errorf("counts %d/%d/%d, want 4/0/0", p, f, s)
	}
	for _, strict := range []bool{false, true} {
		r := &Report{Runs: []*KernelRun{run}, Strict: strict}
		if p := r.Problems(run); len(p) != 0 || !r.OK() {
			t.Errorf("strict=%v: problems %q", strict, p)
		}
	}
	// The kernel's power-off message is the last console line.
	if n := len(run.Console); n == 0 || !strings.Contains(run.Console[n-1], "reboot: Power down") {
		t.Errorf("console = %q", run.Console)
	}
}

func TestCollectFixture(t *testing.T) {
	run := collect(t, "fixture-6.1.console.log")
	if p, f, s := counts(run); p != 7 || f != 3 || s != 2 {
		t.Errorf("counts %d/%d/%d, want 7/3/2", p, f, s)
	}
	r := &Report{Runs: []*KernelRun{run}}
	if got, want := r.Problems(run), []string{"3 failed"}; !reflect.DeepEqual(got, want) || r.OK() {
		t.Errorf("problems %q, want %q", got, want)
	}
	r.Strict = true
	if got := r.Problems(run); len(got) != 2 || !strings.Contains(got[1], "2 skipped") {
		t.Errorf("strict problems %q, want the failures and the skips", got)
	}
	var out strings.Builder
	r.Print(&out, true)
	for _, want := range []string{"6.1.0-56-cloud-amd64", "FAIL test kmatrix/gotest/testdata/fixture TestSub/bad", "expected sub failure", "SKIP test kmatrix/gotest/testdata/fixture TestSkip"} {
		if !strings.Contains(out.String(), want) {
			t.Errorf("report lacks %q:\n%s", want, out.String())
		}
	}
	if strings.Contains(out.String(), "TestNotReal") && !strings.Contains(out.String(), "TestLookalike") {
		t.Errorf("report took printed text for a result:\n%s", out.String())
	}
}

func TestCollectNoBoot(t *testing.T) {
	run := collect(t, "nope-6.1.console.log")
	if run.Release != "" || run.Done || len(run.Binaries) != 0 {
		t.Errorf("a kernel that panicked before /init: %+v", run)
	}
	if !strings.Contains(strings.Join(run.Console, "\n"), "Kernel panic - not syncing") {
		t.Errorf("console tail lacks the panic: %q", run.Console)
	}
	r := &Report{Runs: []*KernelRun{run}}
	run.Errors = append(run.Errors, "kernel did not boot to /init")
	var out strings.Builder
	r.Print(&out, true)
	if r.OK() || !strings.Contains(out.String(), "last console lines") {
		t.Errorf("report:\n%s", out.String())
	}
}

func TestUnfinishedBinary(t *testing.T) {
	run := &KernelRun{Release: "x", Done: true, Binaries: []*BinaryRun{{Name: "p", Exited: true, Code: 2,
		Result: gotest.Result{Panic: "panic: boom", Tests: []gotest.Test{{Name: "TestA", Status: gotest.Pass}}}}}}
	r := &Report{Runs: []*KernelRun{run}}
	if p := r.Problems(run); len(p) != 1 || !strings.Contains(p[0], "panic: boom") {
		t.Errorf("problems %q, want the exit status with the panic", p)
	}
	run.Binaries = nil
	if p := r.Problems(run); len(p) != 1 || !strings.Contains(p[0], "no test ran") {
		t.Errorf("problems %q, want no test ran", p)
	}
}

func TestPick(t *testing.T) {
	names := []string{
		"linux-image-6.1.0-9-cloud-amd64", "linux-image-6.1.0-56-cloud-amd64", "linux-image-6.1.0-57-cloud-amd64-dbg",
		"linux-image-6.1.0-58-cloud-amd64-unsigned", "linux-image-6.1.0-56-amd64", "linux-image-cloud-amd64",
		"linux-image-6.12.99+deb12-cloud-amd64", "linux-image-6.12.117+deb12-cloud-amd64", "linux-image-6.12-cloud-amd64",
		"linux-image-6.12.118+deb13-cloud-amd64",
	}
	if got := pick(Series["6.1"], names); got != "linux-image-6.1.0-56-cloud-amd64" {
		t.Errorf("6.1: %q", got)
	}
	if got := pick(Series["6.12"], names); got != "linux-image-6.12.117+deb12-cloud-amd64" {
		t.Errorf("6.12: %q", got)
	}
	if got := pick(Series["6.1"], nil); got != "" {
		t.Errorf("no names: %q", got)
	}
}

func TestCheckConfig(t *testing.T) {
	p := filepath.Join(t.TempDir(), "config")
	var b strings.Builder
	for _, opt := range Required {
		switch opt {
		case "CONFIG_KCMP":
			b.WriteString("# CONFIG_KCMP is not set\n")
		case "CONFIG_IPC_NS":
			b.WriteString(opt + "=m\n")
		default:
			b.WriteString(opt + "=y\n")
		}
	}
	// A module of Modules may be one.
	b.WriteString("CONFIG_FUSE_FS=m\n")
	if err := os.WriteFile(p, []byte(b.String()), 0o644); err != nil {
		t.Fatal(err)
	}
	// Each architecture asks for its own console; this config has neither.
	got, err := CheckConfig(p, Arches["amd64"])
	if want := []string{"CONFIG_IPC_NS=m", "CONFIG_KCMP=unset", "CONFIG_SERIAL_8250_CONSOLE=unset"}; err != nil || !reflect.DeepEqual(got, want) {
		t.Errorf("amd64: CheckConfig = %q, %v; want %q", got, err, want)
	}
	got, err = CheckConfig(p, Arches["arm64"])
	if want := []string{"CONFIG_IPC_NS=m", "CONFIG_KCMP=unset", "CONFIG_SERIAL_AMBA_PL011_CONSOLE=unset"}; err != nil || !reflect.DeepEqual(got, want) {
		t.Errorf("arm64: CheckConfig = %q, %v; want %q", got, err, want)
	}
	if _, err := CheckConfig(filepath.Join(t.TempDir(), "none"), Arches["amd64"]); err == nil {
		t.Error("missing config: no error")
	}
}

// The modules a kernel builds as modules are kept from its package
// (decompressed), found again in the cache, and packed for the release
// that needs them; a built-in one is neither kept nor asked for.
func TestKeepModules(t *testing.T) {
	tmp := t.TempDir()
	root, out := filepath.Join(tmp, "root"), filepath.Join(tmp, "out")
	mod := filepath.Join(root, "lib", "modules", "6.1.0-57-cloud-arm64", "kernel", "fs", "fuse", "fuse.ko")
	if err := os.MkdirAll(filepath.Dir(mod), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.MkdirAll(out, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(mod, []byte("ELF"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(out, "config"), []byte("CONFIG_FUSE_FS=m\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	if files, ok := cachedModules(out, Modules); ok {
		t.Errorf("cachedModules before keepModules = %q, complete; want incomplete", files)
	}
	if err := keepModules(t.Context(), root, out, "linux-image-6.1.0-57-cloud-arm64", Modules); err != nil {
		t.Fatal(err)
	}
	files, ok := cachedModules(out, Modules)
	if want := []string{filepath.Join(out, "modules", "fuse.ko")}; !ok || !reflect.DeepEqual(files, want) {
		t.Errorf("cachedModules = %q, %v; want %q, complete", files, ok, want)
	}
	k := Kernel{Release: "6.1.0-57-cloud-arm64", Modules: files}
	cfg := guestConfig(nil, []Kernel{k, {Release: "6.12.118+deb12-cloud-arm64"}}, nil, nil, time.Minute)
	if want := map[string][]string{k.Release: {"/kmatrix/modules/6.1.0-57-cloud-arm64/fuse.ko"}}; !reflect.DeepEqual(cfg.Modules, want) {
		t.Errorf("guest modules %q, want %q", cfg.Modules, want)
	}

	builtin := filepath.Join(tmp, "builtin")
	if err := os.MkdirAll(builtin, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(builtin, "config"), []byte("CONFIG_FUSE_FS=y\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := keepModules(t.Context(), filepath.Join(tmp, "empty"), builtin, "linux-image-6.12.118+deb12-cloud-arm64", Modules); err != nil {
		t.Errorf("keepModules of a kernel with FUSE built in: %v", err)
	}
	if files, ok := cachedModules(builtin, Modules); !ok || len(files) != 0 {
		t.Errorf("cachedModules with FUSE built in = %q, %v; want none, complete", files, ok)
	}
}

func TestQEMUArgs(t *testing.T) {
	for arch, wants := range map[string][]string{
		"amd64": {"-accel tcg,thread=multi -cpu max -smp 2", "console=ttyS0 panic=-1 quiet loglevel=7"},
		"arm64": {"-M virt -accel tcg,thread=multi -cpu max,pauth-impdef=on -smp 2", "console=ttyAMA0 panic=-1 quiet loglevel=7"},
	} {
		vm := VM{Arch: Arches[arch], Memory: "2G", SMP: 2, Append: []string{"loglevel=7"}}
		args := strings.Join(vm.Args(Kernel{Vmlinuz: "/k"}, "/i"), " ")
		for _, want := range append(wants, "-m 2G", "-nographic", "-no-reboot", "-nic none", "-kernel /k", "-initrd /i") {
			if !strings.Contains(args, want) {
				t.Errorf("%s: args lack %q: %s", arch, want, args)
			}
		}
		if strings.Contains(args, "kvm") {
			t.Errorf("%s: args ask for KVM, which cannot run these kernels here: %s", arch, args)
		}
	}
	if _, err := LookupArch("riscv64"); !errors.Is(err, ErrUnknownArch) || !strings.Contains(err.Error(), "amd64, arm64") {
		t.Errorf("LookupArch(riscv64) = %v, want ErrUnknownArch naming amd64, arm64", err)
	}
	if err := noQEMU(Arches["arm64"], "qemu-system-aarch64"); !errors.Is(err, ErrNoQEMU) || !strings.Contains(err.Error(), "apt-get install -y --no-install-recommends qemu-system-arm") {
		t.Errorf("noQEMU = %v, want ErrNoQEMU with the install line", err)
	}
}

func TestCheckName(t *testing.T) {
	for _, c := range []struct {
		arch, name string
		ok         bool
	}{
		{"amd64", "6.1", true},
		{"amd64", "6.12", true},
		{"amd64", "5.10", true},
		{"amd64", "linux-image-6.1.0-57-cloud-amd64", true},
		{"amd64", "linux-image-5.10.0-46-cloud-amd64", true},
		{"amd64", "linux-image-6.1.0-57-cloud-arm64", false},
		{"amd64", "4.19", false},
		{"arm64", "6.1", true},
		{"arm64", "6.12", true},
		{"arm64", "linux-image-6.12.118+deb12-cloud-arm64", true},
		{"arm64", "5.10", false}, // not in the matrix on arm64
		{"arm64", "linux-image-6.1.0-57-cloud-amd64", false},
		{"arm64", "linux-image-6.6.0-1-cloud-arm64", false}, // no APT for arm64: archive lines only
	} {
		err := checkName(c.arch, c.name)
		if (err == nil) != c.ok || err != nil && !errors.Is(err, ErrUnknownKernel) {
			t.Errorf("checkName(%s, %s) = %v, want ok %v", c.arch, c.name, err, c.ok)
		}
	}
	ak, ok := archiveKernelFor("amd64", "linux-image-5.10.0-46-cloud-amd64")
	if !ok || ak.Suites[0].Name != "bullseye" || !ak.Suites[1].Security {
		t.Errorf("5.10 package: archive line %+v %v, want bullseye and bullseye-security", ak, ok)
	}
	if _, ok := archiveKernelFor("amd64", "linux-image-6.1.0-57-cloud-amd64"); ok {
		t.Error("amd64 6.1 taken from the archive: it comes from the host's APT")
	}
}

func TestPickArchive(t *testing.T) {
	names := []string{
		"linux-image-6.1.0-50-cloud-arm64", "linux-image-6.1.0-57-cloud-arm64", "linux-image-6.1.0-58-cloud-arm64-dbg",
		"linux-image-6.1.0-59-cloud-arm64-unsigned", "linux-image-6.1.0-60-arm64", "linux-image-6.1.0-57-cloud-amd64",
		"linux-image-6.12.117+deb12-cloud-arm64", "linux-image-6.12.118+deb12-cloud-arm64", "linux-image-6.12.107+deb12-cloud-arm64-dbg",
		"linux-image-5.10.0-46-cloud-amd64", "linux-image-5.10.0-9-cloud-amd64", "linux-image-6.1.0-0.deb11.52-cloud-amd64",
	}
	for _, c := range []struct{ arch, series, want string }{
		{"arm64", "6.1", "linux-image-6.1.0-57-cloud-arm64"},
		{"arm64", "6.12", "linux-image-6.12.118+deb12-cloud-arm64"},
		{"amd64", "5.10", "linux-image-5.10.0-46-cloud-amd64"},
	} {
		if got := pick(ArchiveSeries[c.arch][c.series].Pattern, names); got != c.want {
			t.Errorf("%s %s: %q, want %q", c.arch, c.series, got, c.want)
		}
	}
}

func TestKernelWarning(t *testing.T) {
	run := &KernelRun{Kernel: Kernel{Name: "k"}}
	c := collector{run: run}
	c.line("[    1.0] WARNING: CPU: 0 PID: 1 at early boot") // before /init: not the tests' doing
	c.line("@@kmx boot 6.1.0-56-cloud-amd64 1.5")
	c.line("[    9.1] WARNING: CPU: 1 PID: 99 at ipc/sem.c:123 freeary+0x1") // during the tests
	c.line("[    9.2] reboot: Power down")
	r := &Report{Runs: []*KernelRun{run}}
	if p := r.Problems(run); len(run.Oops) != 1 || len(p) == 0 || !strings.Contains(p[0], "ipc/sem.c") {
		t.Errorf("oops %q problems %q, want the warning from the tests only", run.Oops, p)
	}
}

// An extra module is kept and loaded only when a run asks for it, after
// Modules; a cache entry made without it is incomplete for such a run
// (and fetched again) but still complete for the others.
func TestExtraModules(t *testing.T) {
	extra, err := LookupModules([]string{"nfnetlink"})
	if err != nil || len(extra) != 1 {
		t.Fatalf("LookupModules(nfnetlink) = %v, %v", extra, err)
	}
	if _, err := LookupModules([]string{"nfnetlink", "nope"}); !errors.Is(err, ErrNoModule) || !strings.Contains(err.Error(), `"nope"`) {
		t.Errorf("LookupModules(nope): %v, want ErrNoModule naming it", err)
	}
	// keep unpacks a package holding both modules and keeps mods of it
	// (keepModules moves the files) in a new cache entry.
	keep := func(mods []Module) string {
		tmp := t.TempDir()
		root, out := filepath.Join(tmp, "root"), filepath.Join(tmp, "out")
		for _, m := range []string{"kernel/fs/fuse/fuse.ko", "kernel/net/netfilter/nfnetlink.ko"} {
			p := filepath.Join(root, "lib", "modules", "6.1.0-57-cloud-arm64", m)
			if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
				t.Fatal(err)
			}
			if err := os.WriteFile(p, []byte("ELF"), 0o644); err != nil {
				t.Fatal(err)
			}
		}
		if err := os.MkdirAll(out, 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(out, "config"), []byte("CONFIG_FUSE_FS=m\nCONFIG_NETFILTER_NETLINK=m\n"), 0o644); err != nil {
			t.Fatal(err)
		}
		if err := keepModules(t.Context(), root, out, "linux-image-6.1.0-57-cloud-arm64", mods); err != nil {
			t.Fatal(err)
		}
		return out
	}
	f := &Fetcher{Extra: extra}
	if files, ok := cachedModules(keep(Modules), f.modules()); ok {
		t.Errorf("an entry kept without nfnetlink is complete for a run that wants it: %q", files)
	}
	out := keep(f.modules())
	files, ok := cachedModules(out, f.modules())
	if want := []string{filepath.Join(out, "modules", "fuse.ko"), filepath.Join(out, "modules", "nfnetlink.ko")}; !ok || !reflect.DeepEqual(files, want) {
		t.Errorf("cachedModules with nfnetlink = %q, %v; want %q, complete", files, ok, want)
	}
	if files, ok := cachedModules(out, Modules); !ok || len(files) != 1 {
		t.Errorf("cachedModules without extras = %q, %v; want fuse.ko only, complete", files, ok)
	}
}

// -files packs a directory's tree at the archive's root: files with their
// modes, directories, and symbolic links as links.
func TestAddRoot(t *testing.T) {
	src := t.TempDir()
	if err := os.MkdirAll(filepath.Join(src, "var", "cache"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(src, "var", "cache", "criu"), []byte("#!/bin/sh\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.Mkdir(filepath.Join(src, "bin"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink("busybox", filepath.Join(src, "bin", "sh")); err != nil {
		t.Fatal(err)
	}
	var b bytes.Buffer
	w := cpio.NewWriter(&b)
	if err := addRoot(w, src); err != nil {
		t.Fatal(err)
	}
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	got := map[string]string{}
	for off := 0; ; {
		h := b.Bytes()[off:]
		mode, _ := strconv.ParseUint(string(h[14:22]), 16, 32)
		size, _ := strconv.ParseUint(string(h[54:62]), 16, 32)
		namesize, _ := strconv.ParseUint(string(h[94:102]), 16, 32)
		name := string(h[110 : 110+namesize-1])
		data := (110 + int(namesize) + 3) &^ 3
		if name == "TRAILER!!!" {
			break
		}
		got[name] = fmt.Sprintf("%o %s", mode, h[data:data+int(size)])
		off += (data + int(size) + 3) &^ 3
	}
	want := map[string]string{
		"bin":            "40755 ",
		"bin/sh":         "120777 busybox",
		"var":            "40755 ",
		"var/cache":      "40755 ",
		"var/cache/criu": "100755 #!/bin/sh\n",
	}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("archive holds %q, want %q", got, want)
	}
}
