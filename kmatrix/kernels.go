package kmatrix

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"maps"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"sort"
	"strconv"
	"strings"
	"time"
)

// Series maps a matrix name (what -kernels takes) to the Debian package
// names of that amd64 kernel line, found with the host's APT; the first
// group is the release (uname -r), the second the number that orders
// builds. Both come from bookworm's own sources: 6.1 is bookworm's kernel,
// 6.12 is the "+deb12" kernel that bookworm-security carries (no backports
// line is needed). The kernels APT here does not know are in
// ArchiveSeries.
var Series = map[string]*regexp.Regexp{
	"6.1":  regexp.MustCompile(`^linux-image-(6\.1\.0-([0-9]+)-cloud-amd64)$`),
	"6.12": regexp.MustCompile(`^linux-image-(6\.12\.([0-9]+)\+deb12-cloud-amd64)$`),
}

// exactPackage matches a package name given instead of a series; the
// last group is the architecture.
var exactPackage = regexp.MustCompile(`^linux-image-(([0-9][^ ]*)-cloud-(amd64|arm64))$`)

// ErrUnknownKernel is returned for a kernel that is neither a series of
// the architecture (Series, ArchiveSeries) nor a
// linux-image-*-cloud-<arch> package name.
var ErrUnknownKernel = errors.New("kmatrix: unknown kernel")

// ErrNoPackage is returned when APT knows no package for a series and none
// is cached.
var ErrNoPackage = errors.New("kmatrix: no kernel package found")

// Kernel is one kernel of the matrix, ready to boot.
type Kernel struct {
	Name    string // as asked: a series ("6.1") or a package name
	Arch    string // amd64 or arm64
	Package string // Debian package, e.g. linux-image-6.1.0-56-cloud-amd64
	Release string // uname -r the package promises
	Vmlinuz string // cached kernel image
	Config  string // cached kernel config
	// Modules are the cached modules of Modules that this kernel builds
	// as modules (=m), in load order: /init loads them.
	Modules []string
	Cached  bool // true when nothing had to be downloaded
}

// Module is a loadable module that the tests need where a kernel builds
// its option as a module rather than in.
type Module struct {
	Config string // the option, e.g. CONFIG_FUSE_FS
	Path   string // under lib/modules/<release>/, without a compression suffix
}

// Modules are kept from a kernel package whose config has their option
// =m, and loaded by /init in this order (each after those it depends on).
// FUSE (package undofs mounts through /dev/fuse) is a module in Debian's
// 6.1 cloud kernels and built in from 6.12; fuse.ko depends on no other
// module.
var Modules = []Module{{"CONFIG_FUSE_FS", "kernel/fs/fuse/fuse.ko"}}

// ExtraModules are modules a run loads only when asked to (kmatrix
// -modules NAME), so that the other runs' guests stay as they are; a
// cache entry made without one is fetched again when a run asks for it.
// nfnetlink: CRIU's start-up probe for nftables (kerndat) opens a
// NETLINK_NETFILTER socket, which without the module fails with
// EPROTONOSUPPORT (the guest has no modprobe to load it on demand), and
// libnftables then exits the probe's child, failing every criu command.
// nfnetlink.ko depends on no other module.
var ExtraModules = map[string]Module{
	"nfnetlink": {"CONFIG_NETFILTER_NETLINK", "kernel/net/netfilter/nfnetlink.ko"},
}

// ErrNoModule is returned by LookupModules for a name ExtraModules lacks.
var ErrNoModule = errors.New("no such extra module")

// LookupModules returns the modules of ExtraModules that names name, in
// that order.
func LookupModules(names []string) ([]Module, error) {
	var mods []Module
	for _, name := range names {
		m, ok := ExtraModules[name]
		if !ok {
			return nil, fmt.Errorf("kmatrix: module %q: %w (-modules takes %s)", name, ErrNoModule, strings.Join(slices.Sorted(maps.Keys(ExtraModules)), ", "))
		}
		mods = append(mods, m)
	}
	return mods, nil
}

// moduleFile is where a module is cached: CACHE/<package>/modules/<name>.
func moduleFile(dir string, m Module) string {
	return filepath.Join(dir, "modules", filepath.Base(m.Path))
}

// cachedModules returns the cached files of mods that the config in dir
// builds as modules, and whether all of them are there (a cache made
// before a module was added to mods lacks it).
func cachedModules(dir string, mods []Module) ([]string, bool) {
	opts, err := readConfig(filepath.Join(dir, "config"))
	if err != nil {
		return nil, false
	}
	var files []string
	for _, m := range mods {
		if opts[m.Config] != "m" {
			continue
		}
		p := moduleFile(dir, m)
		if !fileExists(p) {
			return nil, false
		}
		files = append(files, p)
	}
	return files, true
}

// Fetcher finds kernel packages of one architecture, with APT (Series)
// or in Debian's archive (ArchiveSeries), and keeps their vmlinuz and
// config in CacheDir/<package>/, so a later run downloads nothing.
type Fetcher struct {
	CacheDir string
	Arch     Arch
	Archive  Archive   // where ArchiveSeries come from
	Log      io.Writer // progress messages; nil discards them
	// Extra are modules of ExtraModules kept and loaded besides Modules.
	Extra []Module

	updated bool // apt-get update already tried in this run
}

func (f *Fetcher) logf(format string, args ...any) {
	if f.Log != nil {
		fmt.Fprintf(f.Log, format+"\n", args...)
	}
}

// pick returns the package of re with the highest build number among names.
func pick(re *regexp.Regexp, names []string) string {
	best, bestN := "", -1
	for _, n := range names {
		m := re.FindStringSubmatch(n)
		if m == nil {
			continue
		}
		num, err := strconv.Atoi(m[2])
		if err == nil && num > bestN {
			best, bestN = n, num
		}
	}
	return best
}

func (f *Fetcher) aptNames(ctx context.Context) ([]string, error) {
	out, err := exec.CommandContext(ctx, "apt-cache", "pkgnames", "linux-image-").Output()
	if err != nil {
		return nil, fmt.Errorf("apt-cache pkgnames: %w", err)
	}
	return strings.Fields(string(out)), nil
}

func (f *Fetcher) cachedNames() []string {
	ents, _ := os.ReadDir(f.CacheDir)
	var names []string
	for _, e := range ents {
		if e.IsDir() && !strings.HasPrefix(e.Name(), ".") {
			names = append(names, e.Name())
		}
	}
	sort.Strings(names)
	return names
}

// checkName accepts, for arch, a series of Series (amd64) or
// ArchiveSeries, or an exact package name of that architecture.
func checkName(arch, name string) error {
	if _, ok := archiveKernelFor(arch, name); ok {
		return nil
	}
	if m := exactPackage.FindStringSubmatch(name); m != nil && m[3] == arch {
		if arch == "amd64" {
			return nil
		}
		// The host's APT has no arm64 packages: only ArchiveSeries lines.
	} else if _, ok := Series[name]; ok && arch == "amd64" {
		return nil
	}
	known := make([]string, 0, len(Series))
	if arch == "amd64" {
		for k := range Series {
			known = append(known, k)
		}
	}
	for k := range ArchiveSeries[arch] {
		known = append(known, k)
	}
	sort.Strings(known)
	return fmt.Errorf("%w %q on %s: use one of %s or a linux-image-*-cloud-%s package name of those lines", ErrUnknownKernel, name, arch, strings.Join(known, ", "), arch)
}

// resolve turns a matrix name into a package name: the newest build APT
// knows, else the newest cached one (offline), else after apt-get update.
func (f *Fetcher) resolve(ctx context.Context, name string) (string, error) {
	if exactPackage.MatchString(name) {
		return name, nil
	}
	re := Series[name]
	for {
		names, err := f.aptNames(ctx)
		if p := pick(re, names); p != "" {
			return p, nil
		}
		if p := pick(re, f.cachedNames()); p != "" {
			f.logf("kmatrix: APT knows no %s kernel; using cached %s", name, p)
			return p, nil
		}
		if f.updated || os.Geteuid() != 0 {
			if err == nil {
				err = fmt.Errorf("%w for %s (pattern %s): run apt-get update; 6.1 comes from bookworm main, 6.12 (+deb12) from bookworm-security", ErrNoPackage, name, re)
			}
			return "", err
		}
		f.updated = true
		f.logf("kmatrix: APT knows no %s kernel; running apt-get update", name)
		if out, err := exec.CommandContext(ctx, "apt-get", "update").CombinedOutput(); err != nil {
			return "", fmt.Errorf("apt-get update: %w\n%s", err, out)
		}
	}
}

// Get returns the kernel for a matrix name, downloading its package the
// first time.
func (f *Fetcher) Get(ctx context.Context, name string) (Kernel, error) {
	if err := checkName(f.Arch.Name, name); err != nil {
		return Kernel{}, err
	}
	kernel := func(pkg string) Kernel {
		return Kernel{
			Name:    name,
			Arch:    f.Arch.Name,
			Package: pkg,
			Release: strings.TrimPrefix(pkg, "linux-image-"),
			Vmlinuz: filepath.Join(f.CacheDir, pkg, "vmlinuz"),
			Config:  filepath.Join(f.CacheDir, pkg, "config"),
		}
	}
	// cached completes k from the cache, if everything is there.
	cached := func(k *Kernel) bool {
		if !fileExists(k.Vmlinuz) || !fileExists(k.Config) {
			return false
		}
		mods, ok := cachedModules(filepath.Dir(k.Config), f.modules())
		k.Modules, k.Cached = mods, ok
		return ok
	}
	if k := kernel(name); exactPackage.MatchString(name) && cached(&k) {
		return k, nil
	}
	ak, fromArchive := archiveKernelFor(f.Arch.Name, name)
	var (
		pkg string
		deb debInfo
		err error
	)
	if fromArchive {
		deb, err = f.resolveArchive(ctx, name, ak)
		pkg = deb.Package
	} else {
		pkg, err = f.resolve(ctx, name)
	}
	if err != nil {
		return Kernel{}, err
	}
	k := kernel(pkg)
	if cached(&k) {
		return k, nil
	}
	t0 := time.Now()
	if fromArchive {
		err = f.downloadArchive(ctx, deb)
	} else {
		err = f.download(ctx, pkg)
	}
	if err != nil {
		return Kernel{}, err
	}
	f.logf("kmatrix: downloaded %s into %s in %.1fs", pkg, f.CacheDir, time.Since(t0).Seconds())
	if !cached(&k) {
		return Kernel{}, fmt.Errorf("kmatrix: %s: the cache at %s is incomplete after the download", pkg, filepath.Dir(k.Config))
	}
	k.Cached = false
	return k, nil
}

func fileExists(p string) bool {
	fi, err := os.Stat(p)
	return err == nil && fi.Mode().IsRegular()
}

// download fetches pkg with apt-get, unpacks it in a scratch directory and
// moves only vmlinuz, config and the modules of Modules it builds as
// modules into the cache, atomically by rename.
func (f *Fetcher) download(ctx context.Context, pkg string) error {
	tmp, err := f.scratch()
	if err != nil {
		return err
	}
	defer os.RemoveAll(tmp)

	args := []string{"download"}
	if os.Geteuid() == 0 {
		// Root's apt-get downloads as _apt, which cannot write here.
		args = append(args, "-o", "APT::Sandbox::User=root")
	}
	cmd := exec.CommandContext(ctx, "apt-get", append(args, pkg)...)
	cmd.Dir = tmp
	if out, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("apt-get download %s: %w\n%s", pkg, err, bytes.TrimSpace(out))
	}
	debs, _ := filepath.Glob(filepath.Join(tmp, "*.deb"))
	if len(debs) != 1 {
		return fmt.Errorf("apt-get download %s left %d .deb files, want 1", pkg, len(debs))
	}
	return f.unpack(ctx, tmp, debs[0], pkg)
}

// scratch makes a download directory in the cache (so that the final
// rename stays on one file system).
func (f *Fetcher) scratch() (string, error) {
	if err := os.MkdirAll(f.CacheDir, 0o755); err != nil {
		return "", fmt.Errorf("create kernel cache: %w (choose another with -cache)", err)
	}
	tmp, err := os.MkdirTemp(f.CacheDir, ".download-")
	if err != nil {
		return "", fmt.Errorf("create download dir: %w", err)
	}
	return tmp, nil
}

// unpack extracts deb in the scratch directory tmp and moves its vmlinuz,
// config and needed modules (see Modules) into CacheDir/pkg, replacing
// an older cache entry that lacks a module.
func (f *Fetcher) unpack(ctx context.Context, tmp, deb, pkg string) error {
	root := filepath.Join(tmp, "root")
	if out, err := exec.CommandContext(ctx, "dpkg-deb", "-x", deb, root).CombinedOutput(); err != nil {
		return fmt.Errorf("dpkg-deb -x %s: %w\n%s", filepath.Base(deb), err, out)
	}
	img, _ := filepath.Glob(filepath.Join(root, "boot", "vmlinuz-*"))
	cfg, _ := filepath.Glob(filepath.Join(root, "boot", "config-*"))
	if len(img) != 1 || len(cfg) != 1 {
		return fmt.Errorf("package %s holds %d boot/vmlinuz-* and %d boot/config-* files, want 1 each", pkg, len(img), len(cfg))
	}
	out := filepath.Join(tmp, "out")
	if err := os.Mkdir(out, 0o755); err != nil {
		return err
	}
	if err := os.Rename(img[0], filepath.Join(out, "vmlinuz")); err != nil {
		return err
	}
	if err := os.Rename(cfg[0], filepath.Join(out, "config")); err != nil {
		return err
	}
	if err := keepModules(ctx, root, out, pkg, f.modules()); err != nil {
		return err
	}
	final := filepath.Join(f.CacheDir, pkg)
	if fileExists(filepath.Join(final, "vmlinuz")) {
		// An entry from before a module was needed: set it aside, so the
		// rename below can take its place.
		old := filepath.Join(tmp, "old")
		if err := os.Rename(final, old); err != nil {
			return fmt.Errorf("replace %s in the cache: %w", pkg, err)
		}
	}
	if err := os.Rename(out, final); err != nil && !fileExists(filepath.Join(final, "vmlinuz")) {
		return fmt.Errorf("store %s in the cache: %w", pkg, err)
	}
	return nil
}

// modules are the modules this fetcher keeps, in load order.
func (f *Fetcher) modules() []Module { return append(append([]Module(nil), Modules...), f.Extra...) }

// keepModules copies from the unpacked package at root into out/modules
// each module of mods that out/config builds as a module, decompressed
// (Debian's 6.12 packages compress theirs with xz).
func keepModules(ctx context.Context, root, out, pkg string, mods []Module) error {
	opts, err := readConfig(filepath.Join(out, "config"))
	if err != nil {
		return err
	}
	for _, m := range mods {
		if opts[m.Config] != "m" {
			continue
		}
		src, _ := filepath.Glob(filepath.Join(root, "lib", "modules", "*", m.Path+"*"))
		if len(src) != 1 {
			return fmt.Errorf("package %s builds %s as a module but holds %d lib/modules/*/%s files, want 1", pkg, m.Config, len(src), m.Path)
		}
		dst := moduleFile(out, m)
		if err := os.MkdirAll(filepath.Dir(dst), 0o755); err != nil {
			return err
		}
		if !strings.HasSuffix(src[0], ".xz") {
			if err := os.Rename(src[0], dst); err != nil {
				return err
			}
			continue
		}
		b, err := exec.CommandContext(ctx, "xz", "-dc", src[0]).Output()
		if err != nil {
			return fmt.Errorf("xz -dc %s: %w (install Debian package xz-utils)", src[0], err)
		}
		if err := os.WriteFile(dst, b, 0o644); err != nil {
			return err
		}
	}
	return nil
}

// Required lists the kernel options semundo's tests rely on; each must be
// built in (=y) because the initramfs carries no modules but those of
// Modules. The console's option is the architecture's (Arch.ConsoleConfig).
var Required = []string{
	"CONFIG_BPF_SYSCALL", "CONFIG_DEBUG_INFO_BTF", "CONFIG_SYSVIPC", "CONFIG_CHECKPOINT_RESTORE",
	"CONFIG_BLK_DEV_INITRD", "CONFIG_DEVTMPFS", "CONFIG_TMPFS",
	"CONFIG_CGROUPS", "CONFIG_IPC_NS", "CONFIG_PID_NS", "CONFIG_KCMP",
}

// CheckConfig reads a kernel config file and returns the options of
// Required and a's console option that are not built in, and those of
// Modules that are neither built in nor modules, each with its value ("m"
// or "unset").
func CheckConfig(path string, a Arch) ([]string, error) {
	val, err := readConfig(path)
	if err != nil {
		return nil, err
	}
	var bad []string
	for _, opt := range append(append([]string(nil), Required...), a.ConsoleConfig) {
		switch v := val[opt]; v {
		case "y":
		case "":
			bad = append(bad, opt+"=unset")
		default:
			bad = append(bad, opt+"="+v)
		}
	}
	for _, m := range Modules {
		if v := val[m.Config]; v != "y" && v != "m" {
			if v == "" {
				v = "unset"
			}
			bad = append(bad, m.Config+"="+v)
		}
	}
	return bad, nil
}

// readConfig reads a kernel config file into option -> value.
func readConfig(path string) (map[string]string, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("read kernel config: %w", err)
	}
	defer f.Close()
	val := map[string]string{}
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if k, v, ok := strings.Cut(sc.Text(), "="); ok {
			val[k] = v
		}
	}
	if err := sc.Err(); err != nil {
		return nil, fmt.Errorf("read kernel config %s: %w", path, err)
	}
	return val, nil
}
