package kmatrix

import (
	"bytes"
	"context"
	"fmt"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"time"

	"github.com/semundo/semundo/kmatrix/cpio"
	"github.com/semundo/semundo/kmatrix/guest"
)

// InitPackage is the import path of the VM's /init.
const InitPackage = "github.com/semundo/semundo/kmatrix/cmd/init"

// Package is a Go package whose tests run in the VM.
type Package struct {
	ImportPath string
	Dir        string // source directory (packed, as the binary's working directory)
	Name       string // short unique name used in reports, e.g. kmatrix/sample
	Binary     string // built test binary on the host
}

// goEnv is the environment for building what runs in a VM of arch:
// static, because the initramfs has no C library.
func goEnv(arch string) []string {
	return append(os.Environ(), "CGO_ENABLED=0", "GOOS=linux", "GOARCH="+arch)
}

// ListPackages expands patterns (./..., import paths) with go list and keeps
// the packages that have tests.
func ListPackages(ctx context.Context, patterns []string) ([]Package, error) {
	args := append([]string{"list", "-f", "{{.ImportPath}}\t{{.Dir}}\t{{len .TestGoFiles}}\t{{len .XTestGoFiles}}\t{{with .Module}}{{.Path}}{{end}}"}, patterns...)
	cmd := exec.CommandContext(ctx, "go", args...)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		return nil, fmt.Errorf("go list %s: %w\n%s", strings.Join(patterns, " "), err, bytes.TrimSpace(stderr.Bytes()))
	}
	var pkgs []Package
	seen := map[string]bool{}
	for _, line := range strings.Split(strings.TrimSpace(string(out)), "\n") {
		f := strings.Split(line, "\t")
		if len(f) != 5 || (f[2] == "0" && f[3] == "0") {
			continue
		}
		name := strings.TrimPrefix(strings.TrimPrefix(f[0], f[4]), "/")
		if name == "" {
			name = filepath.Base(f[0])
		}
		if seen[name] {
			continue
		}
		seen[name] = true
		pkgs = append(pkgs, Package{ImportPath: f[0], Dir: f[1], Name: name})
	}
	if len(pkgs) == 0 {
		return nil, fmt.Errorf("kmatrix: no package with tests in %s", strings.Join(patterns, " "))
	}
	return pkgs, nil
}

// fileName turns a package name into one path element.
func fileName(name string) string { return strings.ReplaceAll(name, "/", "_") }

// BuildTests compiles each package's test binary for arch into dir with
// CGO_ENABLED=0 go test -c.
func BuildTests(ctx context.Context, arch, dir string, pkgs []Package) error {
	for i := range pkgs {
		p := &pkgs[i]
		p.Binary = filepath.Join(dir, fileName(p.Name)+".test")
		cmd := exec.CommandContext(ctx, "go", "test", "-c", "-o", p.Binary, p.ImportPath)
		cmd.Env = goEnv(arch)
		if out, err := cmd.CombinedOutput(); err != nil {
			return fmt.Errorf("go test -c %s: %w\n%s", p.ImportPath, err, bytes.TrimSpace(out))
		}
	}
	return nil
}

// BuildCommands compiles main packages (go list patterns) for arch into
// dir, each named after its directory, as the VM's tests find them: in
// /kmatrix/bin, on PATH (testenv.BuildGo looks there in the VM). It
// returns the binaries' paths.
func BuildCommands(ctx context.Context, arch, dir string, patterns []string) ([]string, error) {
	var bins []string
	for _, p := range patterns {
		bin := filepath.Join(dir, filepath.Base(p))
		cmd := exec.CommandContext(ctx, "go", "build", "-trimpath", "-o", bin, p)
		cmd.Env = goEnv(arch)
		if out, err := cmd.CombinedOutput(); err != nil {
			return nil, fmt.Errorf("go build %s: %w\n%s", p, err, bytes.TrimSpace(out))
		}
		bins = append(bins, bin)
	}
	return bins, nil
}

// BuildInit compiles the static /init for arch into path.
func BuildInit(ctx context.Context, arch, path string) error {
	cmd := exec.CommandContext(ctx, "go", "build", "-trimpath", "-o", path, InitPackage)
	cmd.Env = goEnv(arch)
	if out, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("go build %s: %w\n%s", InitPackage, err, bytes.TrimSpace(out))
	}
	return nil
}

// Paths inside the initramfs.
const (
	vmBinDir    = "/kmatrix/bin"
	vmPkgDir    = "/kmatrix/pkg"
	vmModuleDir = "/kmatrix/modules" // then <release>/<module>.ko
)

// WriteInitramfs packs /init, the test binaries, each package's source
// directory, the commands (next to the test binaries), the kernels' modules (one initramfs serves every kernel:
// /init loads those of the release it runs on) and the guest configuration
// into an uncompressed newc archive at path (uncompressed because
// decompressing under emulation costs more than reading the larger file).
// When files is set, that directory's tree is packed at / as well.
func WriteInitramfs(path, initBin string, pkgs []Package, commands []string, files string, kernels []Kernel, cfg guest.Config) (err error) {
	f, err := os.Create(path)
	if err != nil {
		return fmt.Errorf("create initramfs: %w", err)
	}
	defer func() {
		if cerr := f.Close(); err == nil {
			err = cerr
		}
	}()
	w := cpio.NewWriter(f)
	for _, d := range []string{"dev", "proc", "sys", "tmp", "run", "root", "kmatrix", vmBinDir, vmPkgDir, vmModuleDir} {
		if err := w.Dir(d, 0o755); err != nil {
			return err
		}
	}
	// The kernel opens /dev/console for init's stdio before devtmpfs exists.
	if err := w.CharDev("dev/console", 0o600, 5, 1); err != nil {
		return err
	}
	if err := addFile(w, "init", initBin, 0o755); err != nil {
		return err
	}
	for _, p := range pkgs {
		if err := addFile(w, filepath.Join(vmBinDir, filepath.Base(p.Binary)), p.Binary, 0o755); err != nil {
			return err
		}
		if err := addTree(w, p.Dir, filepath.Join(vmPkgDir, fileName(p.Name))); err != nil {
			return fmt.Errorf("pack the source directory of %s: %w", p.ImportPath, err)
		}
	}
	for _, c := range commands {
		if err := addFile(w, filepath.Join(vmBinDir, filepath.Base(c)), c, 0o755); err != nil {
			return err
		}
	}
	if files != "" {
		if err := addRoot(w, files); err != nil {
			return fmt.Errorf("pack %s at the guest's /: %w", files, err)
		}
	}
	done := map[string]bool{}
	for _, k := range kernels {
		if done[k.Release] || len(k.Modules) == 0 {
			continue
		}
		done[k.Release] = true
		if err := w.Dir(filepath.Join(vmModuleDir, k.Release), 0o755); err != nil {
			return err
		}
		for _, m := range k.Modules {
			if err := addFile(w, moduleInVM(k, m), m, 0o644); err != nil {
				return err
			}
		}
	}
	js, err := jsonConfig(cfg)
	if err != nil {
		return err
	}
	if err := w.Bytes(guest.ConfigPath, 0o644, js); err != nil {
		return err
	}
	return w.Close()
}

func addFile(w *cpio.Writer, name, src string, perm uint32) error {
	f, err := os.Open(src)
	if err != nil {
		return fmt.Errorf("pack %s: %w", src, err)
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return err
	}
	return w.File(name, perm, fi.Size(), f)
}

// Limits on the source tree packed for each package: it is there for the
// files tests open (testdata/, headers), not for build products.
const (
	maxTreeFile  = 16 << 20
	maxTreeTotal = 64 << 20
)

// addTree copies a package's source directory (files, directories,
// symlinks) so the test binary runs where go test would run it. Hidden
// entries and files over maxTreeFile are left out; a tree over
// maxTreeTotal is an error.
func addTree(w *cpio.Writer, src, dst string) error {
	var total int64
	return filepath.WalkDir(src, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(src, p)
		if rel != "." && strings.HasPrefix(d.Name(), ".") {
			if d.IsDir() {
				return filepath.SkipDir
			}
			return nil
		}
		name := filepath.Join(dst, rel)
		fi, err := d.Info()
		if err != nil {
			return err
		}
		switch {
		case d.IsDir():
			return w.Dir(name, uint32(fi.Mode().Perm()))
		case fi.Mode()&fs.ModeSymlink != 0:
			t, err := os.Readlink(p)
			if err != nil {
				return err
			}
			return w.Symlink(name, t)
		case fi.Mode().IsRegular() && fi.Size() <= maxTreeFile:
			if total += fi.Size(); total > maxTreeTotal {
				return fmt.Errorf("%s holds more than %d MiB of files: test it from a smaller directory", src, maxTreeTotal>>20)
			}
			return addFile(w, name, p, uint32(fi.Mode().Perm()))
		}
		return nil
	})
}

// addRoot packs the entries of the directory src at the archive's root,
// each as addTree packs a package's directory.
func addRoot(w *cpio.Writer, src string) error {
	ents, err := os.ReadDir(src)
	if err != nil {
		return err
	}
	for _, e := range ents {
		if err := addTree(w, filepath.Join(src, e.Name()), "/"+e.Name()); err != nil {
			return err
		}
	}
	return nil
}

// moduleInVM is where the initramfs holds kernel k's cached module file.
func moduleInVM(k Kernel, file string) string {
	return filepath.Join(vmModuleDir, k.Release, filepath.Base(file))
}

// guestConfig describes the run for /init.
func guestConfig(pkgs []Package, kernels []Kernel, testArgs, env []string, timeout time.Duration) guest.Config {
	cfg := guest.Config{Env: env, Timeout: timeout}
	for _, k := range kernels {
		for _, m := range k.Modules {
			if cfg.Modules == nil {
				cfg.Modules = map[string][]string{}
			}
			cfg.Modules[k.Release] = append(cfg.Modules[k.Release], moduleInVM(k, m))
		}
	}
	for _, p := range pkgs {
		cfg.Binaries = append(cfg.Binaries, guest.Binary{
			Name: p.Name,
			Path: filepath.Join(vmBinDir, filepath.Base(p.Binary)),
			Dir:  filepath.Join(vmPkgDir, fileName(p.Name)),
			Args: testArgs,
		})
	}
	return cfg
}
