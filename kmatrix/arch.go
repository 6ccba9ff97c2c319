package kmatrix

import (
	"errors"
	"fmt"
	"sort"
	"strings"
)

// Arch is what differs between the guest architectures: the Go and Debian
// architecture name, QEMU's binary, package and machine, and the console.
type Arch struct {
	Name        string   // GOARCH and Debian architecture: amd64, arm64
	QEMU        string   // default QEMU binary
	QEMUPackage string   // the Debian package that provides QEMU
	Machine     []string // QEMU arguments that choose the machine and CPU
	Console     string   // the kernel's console device
	// ConsoleConfig is the kernel option that makes Console a console
	// (built in: the initramfs carries no modules).
	ConsoleConfig string
	// DefaultKernels is the matrix run when -kernels is not given.
	DefaultKernels []string
}

// Arches are the guest architectures kmatrix can boot. Both are emulated
// (TCG, never KVM: the KVM here cannot run these kernels). On arm64,
// pauth-impdef swaps the architected pointer-authentication cipher (QARMA,
// costly to emulate, and every kernel function return checks it) for
// QEMU's cheaper implementation-defined one; the guest sees the same
// feature.
var Arches = map[string]Arch{
	"amd64": {
		Name:           "amd64",
		QEMU:           "qemu-system-x86_64",
		QEMUPackage:    "qemu-system-x86",
		Machine:        []string{"-accel", "tcg,thread=multi", "-cpu", "max"},
		Console:        "ttyS0",
		ConsoleConfig:  "CONFIG_SERIAL_8250_CONSOLE",
		DefaultKernels: []string{"6.1", "6.12"},
	},
	"arm64": {
		Name:           "arm64",
		QEMU:           "qemu-system-aarch64",
		QEMUPackage:    "qemu-system-arm",
		Machine:        []string{"-M", "virt", "-accel", "tcg,thread=multi", "-cpu", "max,pauth-impdef=on"},
		Console:        "ttyAMA0",
		ConsoleConfig:  "CONFIG_SERIAL_AMBA_PL011_CONSOLE",
		DefaultKernels: []string{"6.1", "6.12"},
	},
}

// ErrUnknownArch is returned for an architecture not in Arches.
var ErrUnknownArch = errors.New("kmatrix: unknown architecture")

// LookupArch returns the architecture called name.
func LookupArch(name string) (Arch, error) {
	if a, ok := Arches[name]; ok {
		return a, nil
	}
	known := make([]string, 0, len(Arches))
	for k := range Arches {
		known = append(known, k)
	}
	sort.Strings(known)
	return Arch{}, fmt.Errorf("%w %q: use one of %s", ErrUnknownArch, name, strings.Join(known, ", "))
}

// ErrNoQEMU is returned, wrapped with the package to install, when the
// architecture's QEMU is not installed.
var ErrNoQEMU = errors.New("kmatrix: QEMU not found")

func noQEMU(a Arch, bin string) error {
	return fmt.Errorf("%w: %s: install Debian package %s (apt-get install -y --no-install-recommends %s)", ErrNoQEMU, bin, a.QEMUPackage, a.QEMUPackage)
}
