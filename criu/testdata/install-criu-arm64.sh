#!/usr/bin/env bash
# Prepares, on an x86 host, what the CRIU companion's tests need inside
# kmatrix's arm64 guests, idempotently, without running any arm64 code:
# Debian's arm64 CRIU with its libraries, a shell for CRIU's action script,
# and tree.c built for arm64. The result is a directory tree that kmatrix
# packs at the guest's / (its -files flag):
#
#   bin/busybox, bin/sh, bin/sleep  busybox-static (the others link to
#                                   it): CRIU runs action scripts with
#                                   sh -c, the tests' wrappers are #!/bin/sh
#                                   scripts, TestHelperRefusesOtherUsers
#                                   runs sleep
#   var/cache/semundo-criu/criu     wrapper running CRIU through its own
#                                   loader, where findCRIU looks by default
#   var/cache/semundo-criu/arm64/   the loader, usr/sbin/criu and the shared
#                                   libraries it needs (the NEEDED closure)
#   var/cache/semundo-criu/tree     tree.c, static, for aarch64
#
# The packages come from `debootstrap --foreign --arch=arm64` (its first
# stage only downloads and unpacks, so the host's APT state is untouched:
# no dpkg --add-architecture); tree.c is built with Debian's
# gcc-aarch64-linux-gnu and libc6-dev-arm64-cross (installed with apt-get
# when missing).
#
# The suite is sid for its CRIU 4.2: trixie's 4.1.1 builds its restorer
# with Debian's -mbranch-protection=standard, and restoring the tasks' PAC
# keys then breaks the restorer's own signed return addresses: every
# restored task stopped on SIGSEGV and criu restore waited for them for
# good (CRIU issue 2709, fixed in 4.2 by building that code without branch
# protection).
#
# Usage: install-criu-arm64.sh [CACHE]   (default /var/cache/semundo-criu-arm64)
# Environment: SEMUNDO_CRIU_ARM64_SUITE (default sid), SEMUNDO_DEBIAN_MIRROR
# (default http://deb.debian.org/debian).
# Prints the directory to pack (CACHE/files) on stdout.
set -euo pipefail
cache=${1:-/var/cache/semundo-criu-arm64}
suite=${SEMUNDO_CRIU_ARM64_SUITE:-sid}
mirror=${SEMUNDO_DEBIAN_MIRROR:-http://deb.debian.org/debian}
here=$(cd "$(dirname "$0")" && pwd)

say() { printf 'install-criu-arm64.sh: %s\n' "$*" >&2; }

need() {
  local tool=$1 pkg=$2
  command -v "$tool" >/dev/null && return
  say "installing $pkg for $tool"
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "$pkg" >/dev/null
}
need debootstrap debootstrap
need readelf binutils
need aarch64-linux-gnu-gcc gcc-aarch64-linux-gnu
# The compiler only recommends its C library: without it tree.c finds the
# host's headers and fails (bits/wordsize.h).
if [ ! -e /usr/aarch64-linux-gnu/include/stdio.h ]; then
  say "installing libc6-dev-arm64-cross for aarch64-linux-gnu-gcc"
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends libc6-dev-arm64-cross >/dev/null
fi
mkdir -p "$cache"

# The first stage: packages downloaded into $cache/$suite-foreign, into a
# temporary directory first so that an interrupted run is retried whole.
foreign=$cache/$suite-foreign
debs=$foreign/var/cache/apt/archives
if ! compgen -G "$debs/criu_*_arm64.deb" >/dev/null; then
  log=$cache/debootstrap-$suite.log
  say "debootstrap --foreign --arch=arm64 --variant=minbase --include=criu,busybox-static $suite (log $log)"
  tmp=$(mktemp -d "$cache/$suite-foreign.XXXXXX")
  if ! timeout -k 10 900 debootstrap --foreign --arch=arm64 --variant=minbase --include=criu,busybox-static "$suite" "$tmp" "$mirror" >"$log" 2>&1; then
    rm -rf "$tmp"
    say "debootstrap failed: $(grep -E '^E: ' "$log" | tail -n 1 || true) (log: $log)"
    exit 1
  fi
  rm -rf "$foreign"
  mv "$tmp" "$foreign"
fi

# Every downloaded package unpacked into one tree (the first stage
# unpacked only some), to look the libraries up in.
root=$cache/$suite-root
if [[ ! -x $root/usr/sbin/criu ]]; then
  tmp=$(mktemp -d "$cache/$suite-root.XXXXXX")
  for d in "$debs"/*.deb; do
    dpkg-deb -x "$d" "$tmp"
  done
  rm -rf "$root"
  mv "$tmp" "$root"
fi

# libfile SONAME prints the file in the tree that the loader would load.
libfile() {
  local d
  for d in usr/lib/aarch64-linux-gnu lib/aarch64-linux-gnu usr/lib lib; do
    if [[ -e $root/$d/$1 ]]; then
      printf '%s\n' "$root/$d/$1"
      return
    fi
  done
  say "no $1 in $root"
  exit 1
}

out=$cache/files
tmp=$(mktemp -d "$cache/files.XXXXXX")
dst=$tmp/var/cache/semundo-criu
mkdir -p "$tmp/bin" "$dst/arm64/lib" "$dst/arm64/usr/sbin"
cp "$root/usr/bin/busybox" "$tmp/bin/busybox"
ln -s busybox "$tmp/bin/sh"
ln -s busybox "$tmp/bin/sleep"
cp "$root/usr/sbin/criu" "$dst/arm64/usr/sbin/criu"
cp -L "$root/usr/lib/ld-linux-aarch64.so.1" "$dst/arm64/ld-linux-aarch64.so.1"

# The NEEDED closure of criu, breadth first, each library copied under its
# soname (symbolic links resolved).
queue=("$root/usr/sbin/criu")
declare -A seen=([ld-linux-aarch64.so.1]=1)
while ((${#queue[@]})); do
  f=${queue[0]}
  queue=("${queue[@]:1}")
  while read -r soname; do
    [[ -n ${seen[$soname]:-} ]] && continue
    seen[$soname]=1
    lib=$(libfile "$soname")
    cp -L "$lib" "$dst/arm64/lib/$soname"
    queue+=("$lib")
  done < <(readelf -d "$f" | sed -n 's/.*(NEEDED).*\[\(.*\)\]/\1/p')
done

cat >"$dst/criu" <<WRAP
#!/bin/sh
# CRIU from Debian $suite's arm64 packages, run through its own loader
# (made by install-criu-arm64.sh for kmatrix's arm64 guests).
exec /var/cache/semundo-criu/arm64/ld-linux-aarch64.so.1 --library-path /var/cache/semundo-criu/arm64/lib /var/cache/semundo-criu/arm64/usr/sbin/criu "\$@"
WRAP
chmod 755 "$dst/criu"

aarch64-linux-gnu-gcc -static -O1 -Wall -pthread -o "$dst/tree" "$here/tree.c"

rm -rf "$out"
mv "$tmp" "$out"
chmod 755 "$out"
say "CRIU $(dpkg-deb -f "$debs"/criu_*_arm64.deb Version), busybox $(dpkg-deb -f "$debs"/busybox-static_*_arm64.deb Version), $(du -sh "$out" | cut -f1) in $out"
printf '%s\n' "$out"
