package kmatrix

import (
	"bufio"
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"time"
)

// Suite is one suite of Debian's archive.
type Suite struct {
	Security bool   // in the security archive (debian-security), not the main one
	Name     string // e.g. bookworm, bookworm-security
}

// ArchiveKernel is a kernel line fetched from Debian's archive directly:
// Pattern is as in Series, Suites are searched for its newest build.
type ArchiveKernel struct {
	Pattern *regexp.Regexp
	Suites  []Suite
}

// ArchiveSeries maps an architecture and a matrix name to the kernels
// fetched straight from Debian's archive rather than with the host's APT:
// another architecture's (APT here knows amd64 only, and teaching it arm64
// would change the host's APT state) and another release's (bullseye is not
// in the host's sources). The arm64 kernels are the same lines as amd64's
// Series; 5.10 is bullseye's, the oldest kernel the matrix boots and the
// first without bpf_loop.
var ArchiveSeries = map[string]map[string]ArchiveKernel{
	"amd64": {
		"5.10": {regexp.MustCompile(`^linux-image-(5\.10\.0-([0-9]+)-cloud-amd64)$`),
			[]Suite{{false, "bullseye"}, {true, "bullseye-security"}}},
	},
	"arm64": {
		"6.1": {regexp.MustCompile(`^linux-image-(6\.1\.0-([0-9]+)-cloud-arm64)$`),
			[]Suite{{false, "bookworm"}, {true, "bookworm-security"}}},
		"6.12": {regexp.MustCompile(`^linux-image-(6\.12\.([0-9]+)\+deb12-cloud-arm64)$`),
			[]Suite{{false, "bookworm"}, {true, "bookworm-security"}}},
	},
}

// archiveKernelFor returns the archive line a name (series or package)
// belongs to on arch, if any.
func archiveKernelFor(arch, name string) (ArchiveKernel, bool) {
	if ak, ok := ArchiveSeries[arch][name]; ok {
		return ak, true
	}
	for _, ak := range ArchiveSeries[arch] {
		if ak.Pattern.MatchString(name) {
			return ak, true
		}
	}
	return ArchiveKernel{}, false
}

// Archive is where kernels of ArchiveSeries come from: the mirrors and the
// keyring of the host's Debian sources, so that the same mirror (and proxy
// rules) serve both.
type Archive struct {
	Main     string // base URL of the main archive, e.g. http://deb.debian.org/debian
	Security string // base URL of the security archive
	Keyring  string // OpenPGP keyring that signs the suites' InRelease files
}

// DefaultArchive is used for what the host's sources do not name.
var DefaultArchive = Archive{
	Main:     "http://deb.debian.org/debian",
	Security: "http://deb.debian.org/debian-security",
	Keyring:  "/usr/share/keyrings/debian-archive-keyring.gpg",
}

// HostArchive reads the host's APT sources (sources.list and
// sources.list.d's .list and .sources files) and returns the mirror of its
// Debian suites, the mirror of its -security suites and the Signed-By
// keyring of the former; DefaultArchive fills what they lack.
func HostArchive() Archive {
	files := []string{"/etc/apt/sources.list"}
	for _, g := range []string{"*.list", "*.sources"} {
		m, _ := filepath.Glob(filepath.Join("/etc/apt/sources.list.d", g))
		files = append(files, m...)
	}
	var a Archive
	for _, f := range files {
		b, err := os.ReadFile(f)
		if err != nil {
			continue
		}
		for _, e := range parseSources(string(b), strings.HasSuffix(f, ".sources")) {
			e.apply(&a)
		}
	}
	if a.Main == "" {
		a.Main = DefaultArchive.Main
	}
	if a.Security == "" {
		a.Security = DefaultArchive.Security
	}
	if a.Keyring == "" {
		a.Keyring = DefaultArchive.Keyring
	}
	return a
}

// sourceEntry is one APT source: a URI, its suites and its keyring.
type sourceEntry struct {
	uri, signedBy string
	suites        []string
}

// apply takes the first Debian binary source for each of a's fields.
func (e sourceEntry) apply(a *Archive) {
	for _, s := range e.suites {
		switch {
		case strings.HasSuffix(s, "-security"):
			if a.Security == "" {
				a.Security = e.uri
			}
		case !strings.Contains(s, "-") && strings.Contains(e.uri, "debian"):
			if a.Main == "" {
				a.Main = e.uri
				if strings.HasPrefix(e.signedBy, "/") {
					a.Keyring = e.signedBy
				}
			}
		}
	}
}

// parseSources parses one APT sources file, one-line style or deb822
// (.sources), keeping the "deb" entries.
func parseSources(text string, deb822 bool) []sourceEntry {
	var out []sourceEntry
	if !deb822 {
		for _, line := range strings.Split(text, "\n") {
			line, _, _ = strings.Cut(line, "#")
			f := strings.Fields(line)
			if len(f) < 3 || f[0] != "deb" {
				continue
			}
			e := sourceEntry{}
			i := 1
			if strings.HasPrefix(f[1], "[") {
				for ; i < len(f); i++ {
					opt := strings.Trim(f[i], "[]")
					if k, v, ok := strings.Cut(opt, "="); ok && k == "signed-by" {
						e.signedBy = v
					}
					if strings.HasSuffix(f[i], "]") {
						i++
						break
					}
				}
			}
			if i+1 < len(f) {
				e.uri, e.suites = strings.TrimRight(f[i], "/"), []string{f[i+1]}
				out = append(out, e)
			}
		}
		return out
	}
	for _, stanza := range strings.Split(text, "\n\n") {
		fields := map[string]string{}
		for _, line := range strings.Split(stanza, "\n") {
			if strings.HasPrefix(line, "#") || strings.HasPrefix(line, " ") {
				continue
			}
			if k, v, ok := strings.Cut(line, ":"); ok {
				fields[strings.ToLower(k)] = strings.TrimSpace(v)
			}
		}
		if !strings.Contains(" "+fields["types"]+" ", " deb ") || fields["enabled"] == "no" {
			continue
		}
		for _, uri := range strings.Fields(fields["uris"]) {
			out = append(out, sourceEntry{uri: strings.TrimRight(uri, "/"), signedBy: fields["signed-by"], suites: strings.Fields(fields["suites"])})
		}
	}
	return out
}

// debInfo is a package's entry in a Packages index.
type debInfo struct {
	Package, Filename, SHA256 string
	Size                      int64
	base                      string // archive the Filename is relative to
}

// ErrArchive is returned when Debian's archive cannot be read or what it
// sends does not verify.
var ErrArchive = errors.New("kmatrix: Debian archive")

var httpClient = &http.Client{Timeout: 10 * time.Minute}

// httpGet fetches url into w.
func httpGet(ctx context.Context, url string, w io.Writer) error {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return err
	}
	resp, err := httpClient.Do(req)
	if err != nil {
		return fmt.Errorf("%w: %w", ErrArchive, err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("%w: GET %s: %s", ErrArchive, url, resp.Status)
	}
	if _, err := io.Copy(w, resp.Body); err != nil {
		return fmt.Errorf("%w: GET %s: %w", ErrArchive, url, err)
	}
	return nil
}

// releaseHash returns the SHA256 and size that a verified InRelease gives
// for path (e.g. main/binary-arm64/Packages.xz).
func releaseHash(release []byte, path string) (string, int64, error) {
	in := false
	for _, line := range strings.Split(string(release), "\n") {
		if !strings.HasPrefix(line, " ") {
			in = line == "SHA256:"
			continue
		}
		f := strings.Fields(line)
		if in && len(f) == 3 && f[2] == path {
			n, err := strconv.ParseInt(f[1], 10, 64)
			if err != nil || len(f[0]) != 64 {
				break
			}
			return f[0], n, nil
		}
	}
	return "", 0, fmt.Errorf("%w: the Release file lists no SHA256 for %s", ErrArchive, path)
}

// parsePackages returns the linux-image-* entries of a Packages index.
func parsePackages(r io.Reader, base string) ([]debInfo, error) {
	var out []debInfo
	var cur debInfo
	flush := func() {
		if strings.HasPrefix(cur.Package, "linux-image-") && cur.Filename != "" && cur.SHA256 != "" {
			cur.base = base
			out = append(out, cur)
		}
		cur = debInfo{}
	}
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for sc.Scan() {
		line := sc.Text()
		if line == "" {
			flush()
			continue
		}
		k, v, ok := strings.Cut(line, ": ")
		if !ok {
			continue
		}
		switch k {
		case "Package":
			cur.Package = v
		case "Filename":
			cur.Filename = v
		case "SHA256":
			cur.SHA256 = v
		case "Size":
			cur.Size, _ = strconv.ParseInt(v, 10, 64)
		}
	}
	flush()
	return out, sc.Err()
}

// fileSHA256 returns the hex SHA256 of a file.
func fileSHA256(path string) (string, error) {
	f, err := os.Open(path)
	if err != nil {
		return "", err
	}
	defer f.Close()
	h := sha256.New()
	if _, err := io.Copy(h, f); err != nil {
		return "", err
	}
	return hex.EncodeToString(h.Sum(nil)), nil
}

// fetchVerified downloads url to path unless path already has the SHA256
// want, checks size and SHA256, and renames it into place.
func fetchVerified(ctx context.Context, url, path, want string, size int64) error {
	if got, err := fileSHA256(path); err == nil && got == want {
		return nil
	}
	tmp, err := os.CreateTemp(filepath.Dir(path), ".fetch-")
	if err != nil {
		return err
	}
	defer os.Remove(tmp.Name())
	h := sha256.New()
	err = httpGet(ctx, url, io.MultiWriter(tmp, h))
	if cerr := tmp.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return err
	}
	fi, err := os.Stat(tmp.Name())
	if err != nil {
		return err
	}
	if got := hex.EncodeToString(h.Sum(nil)); got != want || (size > 0 && fi.Size() != size) {
		return fmt.Errorf("%w: %s: SHA256 %s and %d bytes, the signed index says %s and %d bytes", ErrArchive, url, got, fi.Size(), want, size)
	}
	if err := os.Chmod(tmp.Name(), 0o644); err != nil {
		return err
	}
	return os.Rename(tmp.Name(), path)
}

// suiteIndex returns the linux-image-* entries of one suite's Packages
// index for arch, from a cache of the index that the suite's signed
// InRelease file (checked with gpgv) still names.
func (f *Fetcher) suiteIndex(ctx context.Context, s Suite, arch string) ([]debInfo, error) {
	base := f.Archive.Main
	if s.Security {
		base = f.Archive.Security
	}
	dists := base + "/dists/" + s.Name
	dir := filepath.Join(f.CacheDir, ".index")
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, fmt.Errorf("create kernel cache: %w (choose another with -cache)", err)
	}
	var signed bytes.Buffer
	if err := httpGet(ctx, dists+"/InRelease", &signed); err != nil {
		return nil, err
	}
	gpgv := exec.CommandContext(ctx, "gpgv", "--keyring", f.Archive.Keyring, "--output", "-", "-")
	gpgv.Stdin = &signed
	var stderr bytes.Buffer
	gpgv.Stderr = &stderr
	release, err := gpgv.Output()
	if err != nil {
		return nil, fmt.Errorf("%w: %s/InRelease does not verify with %s: %w\n%s", ErrArchive, dists, f.Archive.Keyring, err, bytes.TrimSpace(stderr.Bytes()))
	}
	rel := "main/binary-" + arch + "/Packages.xz"
	sum, size, err := releaseHash(release, rel)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", dists, err)
	}
	idx := filepath.Join(dir, s.Name+"_"+arch+"_Packages.xz")
	if err := fetchVerified(ctx, dists+"/"+rel, idx, sum, size); err != nil {
		return nil, err
	}
	xz := exec.CommandContext(ctx, "xz", "-dc", idx)
	out, err := xz.StdoutPipe()
	if err != nil {
		return nil, err
	}
	if err := xz.Start(); err != nil {
		return nil, fmt.Errorf("xz -dc %s: %w (install Debian package xz-utils)", idx, err)
	}
	debs, perr := parsePackages(out, base)
	io.Copy(io.Discard, out)
	if err := xz.Wait(); err != nil {
		return nil, fmt.Errorf("xz -dc %s: %w", idx, err)
	}
	return debs, perr
}

// resolveArchive finds name's package in the archive: the newest build of
// a series, or the package named. Offline, a cached build serves.
func (f *Fetcher) resolveArchive(ctx context.Context, name string, ak ArchiveKernel) (debInfo, error) {
	var all []debInfo
	var ferr error
	for _, s := range ak.Suites {
		debs, err := f.suiteIndex(ctx, s, f.Arch.Name)
		if err != nil {
			ferr = err
			continue
		}
		all = append(all, debs...)
	}
	want := name
	if _, series := ArchiveSeries[f.Arch.Name][name]; series {
		names := make([]string, 0, len(all))
		for _, d := range all {
			names = append(names, d.Package)
		}
		want = pick(ak.Pattern, names)
		if want == "" && ferr != nil {
			if p := pick(ak.Pattern, f.cachedNames()); p != "" {
				f.logf("kmatrix: cannot read the archive (%v); using cached %s", ferr, p)
				return debInfo{Package: p}, nil
			}
		}
	}
	for _, d := range all {
		if d.Package == want {
			return d, nil
		}
	}
	if ferr != nil {
		return debInfo{}, ferr
	}
	var suites []string
	for _, s := range ak.Suites {
		suites = append(suites, s.Name)
	}
	return debInfo{}, fmt.Errorf("%w for %s (pattern %s) in %s of %s", ErrNoPackage, name, ak.Pattern, strings.Join(suites, ", "), f.Arch.Name)
}

// downloadArchive fetches a package's .deb from the archive, checks it
// against the signed index, and caches its vmlinuz and config.
func (f *Fetcher) downloadArchive(ctx context.Context, d debInfo) error {
	tmp, err := f.scratch()
	if err != nil {
		return err
	}
	defer os.RemoveAll(tmp)
	deb := filepath.Join(tmp, filepath.Base(d.Filename))
	if err := fetchVerified(ctx, d.base+"/"+d.Filename, deb, d.SHA256, d.Size); err != nil {
		return err
	}
	return f.unpack(ctx, tmp, deb, d.Package)
}
