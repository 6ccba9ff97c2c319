package kmatrix

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"sync/atomic"
	"testing"
)

func TestParseSources(t *testing.T) {
	// This host's /etc/apt/sources.list.d/debian.sources, with a disabled
	// and a deb-src entry that must not count.
	deb822 := `Types: deb
# http://snapshot.debian.org/archive/debian/20250520T000000Z
URIs: http://mirror.example/debian/
Suites: bookworm bookworm-updates
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg

Types: deb-src
URIs: http://src.example/debian-security
Suites: bookworm-security
Components: main

Types: deb
URIs: http://off.example/debian-security
Suites: bookworm-security
Enabled: no

Types: deb
URIs: http://sec.example/debian-security
Suites: bookworm-security
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg
`
	var a Archive
	for _, e := range parseSources(deb822, true) {
		e.apply(&a)
	}
	want := Archive{Main: "http://mirror.example/debian", Security: "http://sec.example/debian-security", Keyring: "/usr/share/keyrings/debian-archive-keyring.gpg"}
	if a != want {
		t.Errorf("deb822: %+v, want %+v", a, want)
	}

	oneLine := `# deb http://commented.example/debian bookworm main
deb-src http://src.example/debian bookworm main
deb [arch=amd64 signed-by=/k.gpg] http://m.example/debian/ bookworm main
deb http://s.example/debian-security bookworm-security main
deb https://packages.cloud.google.com/apt cloud-sdk-bookworm main
`
	a = Archive{}
	for _, e := range parseSources(oneLine, false) {
		e.apply(&a)
	}
	want = Archive{Main: "http://m.example/debian", Security: "http://s.example/debian-security", Keyring: "/k.gpg"}
	if a != want {
		t.Errorf("one-line: %+v, want %+v", a, want)
	}
}

func TestReleaseHash(t *testing.T) {
	sum := strings.Repeat("ab", 32)
	release := "Origin: Debian\nMD5Sum:\n " + strings.Repeat("cd", 16) + " 99 main/binary-arm64/Packages.xz\nSHA256:\n " +
		strings.Repeat("ef", 32) + " 5 main/binary-arm64/Packages\n " + sum + "  8689464 main/binary-arm64/Packages.xz\n"
	got, size, err := releaseHash([]byte(release), "main/binary-arm64/Packages.xz")
	if err != nil || got != sum || size != 8689464 {
		t.Errorf("releaseHash = %s %d %v, want %s 8689464", got, size, err, sum)
	}
	if _, _, err := releaseHash([]byte(release), "main/binary-amd64/Packages.xz"); !errors.Is(err, ErrArchive) {
		t.Errorf("absent index: %v, want ErrArchive", err)
	}
}

func TestParsePackages(t *testing.T) {
	idx := `Package: linux-image-6.1.0-57-cloud-arm64
Source: linux-signed-arm64 (6.1.192+3)
Version: 6.1.192-3
Filename: pool/updates/main/l/linux-signed-arm64/linux-image-6.1.0-57-cloud-arm64_6.1.192-3_arm64.deb
Size: 21351316
SHA256: 51952bf54e96b0bc6263fb51a47b79e206dca0213cd5421162bc55cddbd6e51e
Description: Linux 6.1 for arm64 cloud
 A continuation line: Filename: not/this.deb

Package: zlib1g
Filename: pool/main/z/zlib/zlib1g.deb
SHA256: 00

Package: linux-image-6.1.0-58-cloud-arm64
Filename: pool/no-hash.deb
`
	got, err := parsePackages(strings.NewReader(idx), "http://m/debian-security")
	want := []debInfo{{
		Package:  "linux-image-6.1.0-57-cloud-arm64",
		Filename: "pool/updates/main/l/linux-signed-arm64/linux-image-6.1.0-57-cloud-arm64_6.1.192-3_arm64.deb",
		SHA256:   "51952bf54e96b0bc6263fb51a47b79e206dca0213cd5421162bc55cddbd6e51e",
		Size:     21351316,
		base:     "http://m/debian-security",
	}}
	if err != nil || !reflect.DeepEqual(got, want) {
		t.Errorf("parsePackages = %+v, %v; want %+v", got, err, want)
	}
}

func TestFetchVerified(t *testing.T) {
	body := []byte("a kernel package")
	h := sha256.Sum256(body)
	sum := hex.EncodeToString(h[:])
	var gets atomic.Int32
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		gets.Add(1)
		if r.URL.Path == "/missing" {
			http.NotFound(w, r)
			return
		}
		w.Write(body)
	}))
	t.Cleanup(srv.Close)
	dir := t.TempDir()
	ctx := context.Background()
	p := filepath.Join(dir, "k.deb")

	if err := fetchVerified(ctx, srv.URL+"/k", p, strings.Repeat("0", 64), int64(len(body))); !errors.Is(err, ErrArchive) || !strings.Contains(err.Error(), "SHA256") {
		t.Errorf("wrong hash: %v, want ErrArchive naming the SHA256", err)
	}
	if err := fetchVerified(ctx, srv.URL+"/k", p, sum, int64(len(body))+1); !errors.Is(err, ErrArchive) {
		t.Errorf("wrong size: %v, want ErrArchive", err)
	}
	if err := fetchVerified(ctx, srv.URL+"/missing", p, sum, 0); !errors.Is(err, ErrArchive) || !strings.Contains(err.Error(), "404") {
		t.Errorf("404: %v, want ErrArchive with the status", err)
	}
	if _, err := os.Stat(p); !os.IsNotExist(err) {
		t.Fatalf("a failed fetch left %s: %v", p, err)
	}
	if err := fetchVerified(ctx, srv.URL+"/k", p, sum, int64(len(body))); err != nil {
		t.Fatal(err)
	}
	if b, err := os.ReadFile(p); err != nil || string(b) != string(body) {
		t.Fatalf("fetched %q, %v", b, err)
	}
	n := gets.Load()
	if err := fetchVerified(ctx, srv.URL+"/k", p, sum, int64(len(body))); err != nil || gets.Load() != n {
		t.Errorf("cached file with the right hash: %v, %d more requests, want none", err, gets.Load()-n)
	}
	if ents, _ := os.ReadDir(dir); len(ents) != 1 {
		t.Errorf("dir holds %d entries, want only k.deb (temporaries removed)", len(ents))
	}
}
