package main

import (
	"errors"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/semundo/semundo/kmatrix"
)

func TestParse(t *testing.T) {
	var out strings.Builder
	c, err := parse([]string{"-arch", "arm64", "-short", "-skip", "TestA|TestB", "./reader/", "./inject/", "--", "-test.v"}, &out)
	if err != nil {
		t.Fatalf("parse: %v\n%s", err, out.String())
	}
	o := c.opts
	if o.Arch != "arm64" || !reflect.DeepEqual(o.Kernels, []string{"6.1", "6.12"}) || o.Skip != "TestA|TestB" {
		t.Errorf("arch %q kernels %q skip %q, want arm64 with 6.1,6.12", o.Arch, o.Kernels, o.Skip)
	}
	if !reflect.DeepEqual(o.Packages, []string{"./reader/", "./inject/"}) || !reflect.DeepEqual(o.TestArgs, []string{"-test.v", "-test.short"}) {
		t.Errorf("packages %q test args %q", o.Packages, o.TestArgs)
	}
	if o.QEMU != "" || o.Timeout != 3*time.Minute || o.SMP != 2 || o.Memory != "2G" {
		t.Errorf("defaults: qemu %q (empty: the arch's) timeout %v smp %d m %q", o.QEMU, o.Timeout, o.SMP, o.Memory)
	}

	if o.Files != "" || o.Modules != nil {
		t.Errorf("defaults: files %q modules %q, want none", o.Files, o.Modules)
	}
	c, err = parse([]string{"-arch", "arm64", "-files", "/var/cache/semundo-criu-arm64/files", "-modules", "nfnetlink", "./criu/"}, &out)
	if err != nil {
		t.Fatal(err)
	}
	if c.opts.Files != "/var/cache/semundo-criu-arm64/files" || !reflect.DeepEqual(c.opts.Modules, []string{"nfnetlink"}) {
		t.Errorf("-files and -modules: files %q modules %q", c.opts.Files, c.opts.Modules)
	}

	c, err = parse([]string{"-kernels", " 5.10 , linux-image-6.1.0-57-cloud-amd64,"}, &out)
	if err != nil {
		t.Fatal(err)
	}
	if c.opts.Arch != "amd64" || !reflect.DeepEqual(c.opts.Kernels, []string{"5.10", "linux-image-6.1.0-57-cloud-amd64"}) ||
		!reflect.DeepEqual(c.opts.Packages, DefaultPackages) {
		t.Errorf("arch %q kernels %q packages %q", c.opts.Arch, c.opts.Kernels, c.opts.Packages)
	}
}

func TestParseErrors(t *testing.T) {
	for _, args := range [][]string{
		{"-kernels", ","},
		{"-timeout", "0"},
		{"-smp", "0"},
		{"-nope"},
	} {
		var out strings.Builder
		if _, err := parse(args, &out); !errors.Is(err, errUsage) || !strings.Contains(out.String(), "usage: kmatrix") {
			t.Errorf("parse(%q) = %v, want errUsage after the usage:\n%s", args, err, out.String())
		}
	}
	var out strings.Builder
	if _, err := parse([]string{"-arch", "s390x"}, &out); !errors.Is(err, kmatrix.ErrUnknownArch) {
		t.Errorf("-arch s390x: %v, want ErrUnknownArch", err)
	}
}
