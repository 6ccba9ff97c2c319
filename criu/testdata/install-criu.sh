#!/usr/bin/env bash
# Installs a CRIU >= 4.1 that works on this host, for semundo's CRIU
# companion tests, idempotently.
#
# The hosts run Debian 12, whose criu (3.17) fails its vdso check on kernels
# >= 6.13, so a newer Debian's criu is unpacked with debootstrap into a cache
# directory and run from the host through that tree's dynamic loader (not in
# a chroot: CRIU's mount checks must see the host's mounts). A given build
# does not work on every CPU: trixie's 4.1.1 crashes in its own code on an
# AMD EPYC with AVX-512 (a general protection fault in dmesg) and its dump
# then hangs, while sid's 4.2.x works there. So each candidate suite, in
# order, must pass a preflight: dump and restore a plain sleeping process,
# each step under a deadline. The first that passes becomes the wrapper
# $CACHE/criu, which the tests run (or $SEMUNDO_CRIU). When none passes,
# no wrapper is left and $CACHE/criu.refused holds one line saying why,
# which the tests quote instead of hanging on a broken CRIU.
#
# Trees are cached in $CACHE/SUITE: a re-run bootstraps nothing it already
# has, and only preflights again (a few seconds).
#
# Usage: install-criu.sh [CACHE]   (default /var/cache/semundo-criu)
# Environment: SEMUNDO_CRIU_SUITES (default "sid trixie"), SEMUNDO_DEBIAN_MIRROR
# (default http://deb.debian.org/debian), SEMUNDO_CRIU_STEP_TIMEOUT (seconds
# per preflight step, default 60).
# Exit status: 0 with a wrapper installed, 1 when every candidate was refused.
set -euo pipefail
cache=${1:-/var/cache/semundo-criu}
read -r -a suites <<<"${SEMUNDO_CRIU_SUITES:-sid trixie}"
mirror=${SEMUNDO_DEBIAN_MIRROR:-http://deb.debian.org/debian}
step_timeout=${SEMUNDO_CRIU_STEP_TIMEOUT:-60}
wrapper=$cache/criu
marker=$cache/criu.refused

say() { printf 'install-criu.sh: %s\n' "$*" >&2; }

mkdir -p "$cache"

# bootstrap SUITE: unpacks SUITE with criu into $cache/SUITE unless it is
# there already. On failure it sets reason.
bootstrap() {
  local suite=$1 root=$cache/$1 tmp log=$cache/debootstrap-$1.log
  [[ -x $root/usr/sbin/criu ]] && return 0
  if ! command -v debootstrap >/dev/null; then
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends debootstrap >/dev/null
  fi
  say "$suite: debootstrap --variant=minbase --include=criu $suite (about a minute; log $log)"
  # Into a temporary directory first, so an interrupted run is retried
  # whole instead of leaving a half tree that looks installed.
  tmp=$(mktemp -d "$cache/$suite.XXXXXX")
  if ! timeout -k 10 900 debootstrap --variant=minbase --include=criu "$suite" "$tmp" "$mirror" >"$log" 2>&1; then
    rm -rf "$tmp"
    reason="debootstrap of Debian $suite with criu from $mirror failed: $(grep -E '^E: ' "$log" | tail -n 1 || true) (log: $log)"
    return 1
  fi
  if [[ ! -x $tmp/usr/sbin/criu ]]; then
    rm -rf "$tmp"
    reason="Debian $suite's tree has no usr/sbin/criu after debootstrap (log: $log)"
    return 1
  fi
  chmod 755 "$tmp"
  rm -rf "$root"
  mv "$tmp" "$root"
}

# write_wrapper SUITE PATH: a script that runs SUITE's criu through the
# tree's own loader and libraries.
write_wrapper() {
  local root=$cache/$1
  cat >"$2.tmp" <<WRAP
#!/bin/sh
# CRIU from Debian $1 ($root), run on the host through its own loader.
# Chosen by install-criu.sh's preflight on $(date -u +%Y-%m-%dT%H:%MZ).
exec $root/lib64/ld-linux-x86-64.so.2 --library-path $root/usr/lib/x86_64-linux-gnu:$root/lib/x86_64-linux-gnu $root/usr/sbin/criu "\$@"
WRAP
  chmod 755 "$2.tmp"
  mv "$2.tmp" "$2"
}

# dmesg_mark prints the kernel log's last line, to find what came after it.
dmesg_mark() { dmesg 2>/dev/null | tail -n 1 || true; }

# crash_since MARK prints the first line after MARK (after the start of the
# log if MARK has rotated out) in which the kernel reports CRIU, or the
# loader it runs under, crashing.
crash_since() {
  dmesg 2>/dev/null | awk -v mark="$1" '
    { line[NR] = $0 } $0 == mark { m = NR }
    END {
      for (i = m + 1; i <= NR; i++)
        if (line[i] ~ /(criu|ld-linux)/ && line[i] ~ /(traps:|general protection|segfault|invalid opcode)/) { print line[i]; exit }
    }' || true
}

# state PID prints the state letter of PID ("" once it is reaped).
state() { awk '{ sub(/.*\) /, ""); print $1 }' "/proc/$1/stat" 2>/dev/null || true; }

# reap PID: kills PID, a disowned child of this shell (bash reaps it by
# itself), and waits until it is gone, at most 10 s.
reap() {
  local i
  kill -KILL "$1" 2>/dev/null || true
  for ((i = 0; i < 100; i++)); do
    [[ -z $(state "$1") ]] && return
    sleep 0.1
  done
  say "pid $1 still exists 10 s after SIGKILL"
}

# step_failed WHAT RC LOG: the reason a preflight step failed.
step_failed() {
  local what=$1 rc=$2 log=$3 err
  if ((rc == 124 || rc == 137)); then
    printf '%s did not finish in %ss; killed it' "$what" "$step_timeout"
    return
  fi
  err=$(grep -E 'Error|error' "$log" 2>/dev/null | tail -n 1 || true)
  printf '%s exited with status %s%s' "$what" "$rc" "${err:+ ($err)}"
}

# preflight CRIU SUITE: dumps and restores a plain sleeping process with
# CRIU, each step under a deadline. On failure it sets reason. Its logs
# stay in $cache/preflight-SUITE.
preflight() {
  local criu=$1 suite=$2 work mark pid rc crash rpid restorer i
  work=$(mktemp -d /tmp/semundo-criu-preflight.XXXXXX)
  mark=$(dmesg_mark)
  reason=
  # setsid: the target is a session of its own, as CRIU wants of a tree
  # root; its cwd is the scratch directory, its descriptors /dev/null.
  (cd "$work" && exec setsid sleep 1000 </dev/null >/dev/null 2>&1) &
  pid=$!
  # Disowned, so bash reaps it without a "Killed" report.
  disown "$pid"
  for ((i = 0; i < 100; i++)); do
    [[ $(cat "/proc/$pid/comm" 2>/dev/null) == sleep ]] && break
    sleep 0.05
  done
  mkdir "$work/img"
  rc=0
  timeout -k 5 "$step_timeout" "$criu" dump -t "$pid" -D "$work/img" -o dump.log -v4 </dev/null >"$work/dump.out" 2>&1 || rc=$?
  # criu dump kills its target on success; reap it so that the restore
  # can have its pid back (this host's pid 1 reaps no orphans).
  reap "$pid"
  if ((rc != 0)); then
    reason=$(step_failed "criu dump of a sleeping process" "$rc" "$work/img/dump.log")
  else
    # Without -d, criu restore stays the restored process's parent and
    # reaps it, so no orphan is left behind.
    timeout -k 5 "$step_timeout" "$criu" restore -D "$work/img" -o restore.log -v4 --pidfile "$work/restored.pid" </dev/null >"$work/restore.out" 2>&1 &
    restorer=$!
    rpid=
    for ((i = 0; i < step_timeout * 10 + 100; i++)); do
      rpid=$(cat "$work/restored.pid" 2>/dev/null || true)
      [[ -n $rpid ]] && break
      kill -0 "$restorer" 2>/dev/null || break
      sleep 0.1
    done
    # CRIU writes the pid file before the task runs on: give it a moment
    # to leave the restorer's code and sleep again.
    for ((i = 0; i < 50; i++)); do
      [[ -n $rpid && $(state "$rpid") == S && $(cat "/proc/$rpid/comm" 2>/dev/null) == sleep ]] && break
      sleep 0.1
    done
    if [[ -n $rpid && $(state "$rpid") == S && $(cat "/proc/$rpid/comm" 2>/dev/null) == sleep ]]; then
      kill -KILL "$rpid" 2>/dev/null || true
    fi
    rc=0
    wait "$restorer" || rc=$?
    if [[ -z $rpid ]]; then
      reason=$(step_failed "criu restore of a sleeping process" "$rc" "$work/img/restore.log")
    elif [[ $rpid != "$pid" ]]; then
      reason="criu restore gave the sleeping process pid $rpid instead of $pid"
    elif ! grep -q 'Restore finished successfully' "$work/img/restore.log" 2>/dev/null; then
      reason=$(step_failed "criu restore of a sleeping process" "$rc" "$work/img/restore.log")
    fi
    [[ -n $rpid ]] && kill -KILL "$rpid" 2>/dev/null || true
  fi
  crash=$(crash_since "$mark")
  if [[ -n $reason && -n $crash ]]; then
    reason="CRIU itself crashed: $reason; dmesg: $crash"
  elif [[ -n $crash ]]; then
    say "$suite: the preflight passed, but dmesg shows: $crash"
  fi
  rm -rf "$cache/preflight-$suite"
  mkdir -p "$cache/preflight-$suite"
  cp "$work"/*.out "$work"/img/*.log "$cache/preflight-$suite/" 2>/dev/null || true
  rm -rf "$work"
  [[ -z $reason ]]
}

# host_desc names the kernel and the CPU, since whether a CRIU build works
# depends on them.
host_desc() {
  awk -F': ' -v k="$(uname -r)" '
    /^model name/ && !m { m = $2 } /^cpu family/ && !f { f = $2 } /^model\t/ && !n { n = $2 }
    /^flags/ && !x { x = ($0 ~ / avx512f /) ? ", AVX-512" : "" }
    END { printf "kernel %s, %s family %s model %s%s", k, m, f, n, x }' /proc/cpuinfo
}

refused=()
chosen=
for suite in "${suites[@]}"; do
  reason=
  if ! bootstrap "$suite"; then
    refused+=("$suite: $reason")
    say "refused $suite: $reason"
    continue
  fi
  candidate=$cache/criu-$suite
  write_wrapper "$suite" "$candidate"
  version=$("$candidate" --version 2>/dev/null | awk '/^Version:/ { print $2 }' || true)
  start=$SECONDS
  if preflight "$candidate" "$suite"; then
    say "chose $suite's CRIU ${version:-(unknown version)}: it dumped and restored a sleeping process in $((SECONDS - start)) s"
    chosen=$suite
    break
  fi
  refused+=("$suite's CRIU ${version:-(unknown version)}: $reason")
  say "refused $suite's CRIU ${version:-(unknown version)}: $reason (logs: $cache/preflight-$suite)"
done

if [[ -z $chosen ]]; then
  rm -f "$wrapper"
  line="no CRIU passed the preflight on this host ($(host_desc)): $(
    sep=
    for r in "${refused[@]}"; do
      printf '%s%s' "$sep" "$r"
      sep='; '
    done
  )"
  printf '%s\n' "$line" >"$marker.tmp"
  mv "$marker.tmp" "$marker"
  say "$line"
  say "installed no wrapper; the reason is in $marker"
  exit 1
fi
write_wrapper "$chosen" "$wrapper"
rm -f "$marker"
for r in "${refused[@]}"; do
  say "(refused before it: $r)"
done
"$wrapper" --version
