#!/usr/bin/env bash
# Installs CRIU >= 4.1 for semundo's CRIU companion tests, idempotently.
#
# The hosts run Debian 12, whose criu (3.17) fails its vdso check on kernels
# >= 6.13. Debian 13's criu 4.1 works: it is unpacked with debootstrap into a
# cache directory and run from the host through that tree's dynamic loader
# (not in a chroot: CRIU's mount checks must see the host's mounts). The
# wrapper $CACHE/criu execs it; the tests find it there (or in $SEMUNDO_CRIU).
#
# Usage: install-criu.sh [CACHE]   (default /var/cache/semundo-criu)
set -euo pipefail
cache=${1:-/var/cache/semundo-criu}
root=$cache/trixie
wrapper=$cache/criu

if [[ ! -x $root/usr/sbin/criu ]]; then
  if ! command -v debootstrap >/dev/null; then
    export DEBIAN_FRONTEND=noninteractive
    apt-get install -y -qq --no-install-recommends debootstrap >/dev/null
  fi
  mkdir -p "$cache"
  # Into a temporary directory first, so an interrupted run is retried
  # whole instead of leaving a half tree that looks installed.
  tmp=$(mktemp -d "$cache/trixie.XXXXXX")
  trap 'rm -rf "$tmp"' EXIT
  debootstrap --variant=minbase --include=criu trixie "$tmp" >"$cache/debootstrap.log" 2>&1 || {
    tail -n 30 "$cache/debootstrap.log" >&2
    echo "install-criu.sh: debootstrap of Debian trixie with criu failed (log: $cache/debootstrap.log)" >&2
    exit 1
  }
  rm -rf "$root"
  mv "$tmp" "$root"
  trap - EXIT
fi

cat >"$wrapper.tmp" <<WRAP
#!/bin/sh
# CRIU from Debian trixie ($root), run on the host through its own loader.
exec $root/lib64/ld-linux-x86-64.so.2 --library-path $root/usr/lib/x86_64-linux-gnu:$root/lib/x86_64-linux-gnu $root/usr/sbin/criu "\$@"
WRAP
chmod 755 "$wrapper.tmp"
mv "$wrapper.tmp" "$wrapper"
"$wrapper" --version
