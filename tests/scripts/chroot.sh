#!/usr/bin/env bash
# Run rvbbit's tests (or build its Debian package) against a PostgreSQL major
# version the host does not have, in a Debian chroot that carries it.
#
#   chroot.sh MAJOR base       make (once) the release's base system only
#   chroot.sh MAJOR prepare    make (once) and update the cached chroot
#   chroot.sh MAJOR test       every suite (tests/scripts/test.sh) in it
#   chroot.sh MAJOR build      only compile (make -k, warnings are errors)
#   chroot.sh MAJOR deb        build postgresql-MAJOR-rvbbit_*.deb in it
#   chroot.sh MAJOR deb-test   install that package into a clean copy of the
#                              release's base system and run it
#   chroot.sh MAJOR shell      an interactive shell in it
#
# The chroot is made with debootstrap (minbase) under the checkout's ignored
# .build/ directory and reused; deps.sh installs the server, its headers,
# pg_cron and the build/test dependencies for MAJOR inside it.  The checkout
# is bind-mounted read-only at /rvbbit and copied to /tmp/rvbbit-src inside
# the chroot before building, so a chroot run never writes to the checkout
# and can run while the host suites build in it.  Every mount is undone and
# every process left in the chroot is stopped on exit, whatever happens.
# Must run as root (debootstrap, mount, chroot).
set -uo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
RV_ROOT="$(cd "$here/../.." && pwd)"

major="${1:-}"
action="${2:-test}"

# the Debian release that carries each major (RVBBIT_SUITE overrides)
case "$major" in
  15) suite=bookworm ;;
  17) suite=trixie ;;
  18) suite=sid ;;
  *) echo "chroot.sh: no Debian release known for PostgreSQL '$major' (use 15, 17 or 18)" >&2
     exit 2 ;;
esac
suite="${RVBBIT_SUITE:-$suite}"
mirror="${RVBBIT_MIRROR:-http://deb.debian.org/debian}"
build="$RV_ROOT/.build"
root="$build/chroot-$suite"
base="$build/base-$suite.tar"

if [ "$(id -u)" -ne 0 ]; then
  echo "chroot.sh: must run as root (debootstrap, mount and chroot need it)" >&2
  exit 2
fi
mkdir -p "$build"

MOUNTS=()

# stop_chroot_procs DIR: stop every process whose root directory is DIR
# (started by us in that chroot), TERM first, KILL after a grace period
stop_chroot_procs() {
  local dir="$1" sig pids p r i
  for sig in TERM KILL; do
    for i in $(seq 1 50); do
      pids=()
      for p in /proc/[0-9]*; do
        r=$(readlink "$p/root" 2>/dev/null) || continue
        [ "$r" = "$dir" ] && pids+=("${p#/proc/}")
      done
      [ ${#pids[@]} -eq 0 ] && return 0
      [ "$i" -eq 1 ] && kill -s "$sig" "${pids[@]}" 2>/dev/null
      sleep 0.1
    done
  done
}

# mount_in DIR: the mounts a test run needs inside the chroot DIR
mount_in() {
  local dir="$1"
  mkdir -p "$dir/proc" "$dir/dev/shm" "$dir/rvbbit"
  mount -t proc proc "$dir/proc" && MOUNTS+=("$dir/proc") || return 1
  # PostgreSQL's dynamic shared memory lives in /dev/shm
  mount -t tmpfs -o mode=1777,size=1g shm "$dir/dev/shm" && MOUNTS+=("$dir/dev/shm") || return 1
  mount --bind "$RV_ROOT" "$dir/rvbbit" && MOUNTS+=("$dir/rvbbit") || return 1
  mount -o remount,bind,ro "$dir/rvbbit" || return 1
  # debootstrap in a container may leave /dev without nodes
  local n
  for n in null zero full random urandom tty; do
    if [ ! -c "$dir/dev/$n" ]; then
      rm -f "$dir/dev/$n"; touch "$dir/dev/$n"
      mount --bind "/dev/$n" "$dir/dev/$n" && MOUNTS+=("$dir/dev/$n") || return 1
    fi
  done
  cp -L /etc/resolv.conf "$dir/etc/resolv.conf" 2>/dev/null || true
  # one package cache per release under .build/, shared by the release's
  # chroot and its clean copies (deb-test installs the same server packages)
  mkdir -p "$build/apt-$suite" "$dir/var/cache/apt/archives"
  mount --bind "$build/apt-$suite" "$dir/var/cache/apt/archives" && MOUNTS+=("$dir/var/cache/apt/archives") || return 1
}

# cleanup: stop what runs in the chroot, then undo the mounts, newest first
cleanup() {
  local i
  for d in "$root" "${clean_root:-}"; do
    [ -n "$d" ] && [ -d "$d" ] && stop_chroot_procs "$d"
  done
  for ((i = ${#MOUNTS[@]} - 1; i >= 0; i--)); do
    umount "${MOUNTS[$i]}" 2>/dev/null || umount -l "${MOUNTS[$i]}" 2>/dev/null || true
  done
  MOUNTS=()
  [ -n "${clean_root:-}" ] && rm -rf --one-file-system "$clean_root"
  [ -n "${lockfd:-}" ] && exec {lockfd}>&-
  return 0
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# in_chroot DIR CMD: run a shell command in the chroot DIR, clean environment
in_chroot() {
  local dir="$1"; shift
  env -i PATH=/usr/sbin:/usr/bin:/sbin:/bin HOME=/root LANG=C.UTF-8 \
      DEBIAN_FRONTEND=noninteractive PG_MAJOR="$major" \
      RVBBIT_SUITES="${RVBBIT_SUITES:-}" RVBBIT_TAP="${RVBBIT_TAP:-}" \
      FUZZ_SECONDS="${FUZZ_SECONDS:-}" \
      chroot "$dir" /bin/bash -c "$*"
}

# apt_conf DIR: apt settings of the chroot: sid's Release file may be past
# its Valid-Until date on a snapshot mirror; no recommends
apt_conf() {
  cat >"$1/etc/apt/apt.conf.d/90rvbbit" <<'CONF'
Acquire::Check-Valid-Until "false";
APT::Install-Recommends "false";
Dpkg::Use-Pty "false";
CONF
  # a stable release's point updates and security fixes (the host's own
  # packages, and the server a package built there depends on, come from them)
  case "$suite" in
    sid|unstable|testing) ;;
    *) cat >"$1/etc/apt/sources.list" <<LIST
deb $mirror $suite main
deb $mirror $suite-updates main
deb ${mirror%/debian}/debian-security $suite-security main
LIST
       ;;
  esac
  # no service starts inside the chroot (a package's postinst would try)
  printf '#!/bin/sh\nexit 101\n' >"$1/usr/sbin/policy-rc.d"
  chmod 755 "$1/usr/sbin/policy-rc.d"
}

# make_base: debootstrap the release once, saving the untouched base
# system (for deb-test) next to it
make_base() {
  [ -f "$root/.rvbbit-base" ] && return 0
  echo "== debootstrap $suite into $root (once; cached)"
  command -v debootstrap >/dev/null || bash "$here/deps.sh" debootstrap || return 1
  # an interrupted debootstrap may have left its /proc mounted
  mountpoint -q "$root.tmp/proc" && umount -l "$root.tmp/proc"
  rm -rf --one-file-system "$root" "$root.tmp"
  if ! debootstrap --variant=minbase "$suite" "$root.tmp" "$mirror" >"$build/debootstrap-$suite.log" 2>&1; then
    tail -n 20 "$build/debootstrap-$suite.log"
    echo "debootstrap of $suite failed"
    return 1
  fi
  apt_conf "$root.tmp"
  rm -rf "$root.tmp/var/cache/apt/archives/"*.deb
  tar -C "$root.tmp" -cf "$base.tmp" . && mv "$base.tmp" "$base"
  touch "$root.tmp/.rvbbit-base"
  mv "$root.tmp" "$root"
}

# prepare: the base system, then what MAJOR needs (a no-op when it is there)
prepare() {
  make_base || return 1
  apt_conf "$root"
  mount_in "$root" || return 1
  echo "== PostgreSQL $major and the build/test dependencies in the $suite chroot"
  in_chroot "$root" "bash /rvbbit/tests/scripts/deps.sh && bash /rvbbit/tests/scripts/deb.sh deps" \
      >"$build/deps-$suite.log" 2>&1 || { tail -30 "$build/deps-$suite.log"; return 1; }
  if [ ! -x "$root/usr/lib/postgresql/$major/bin/postgres" ]; then
    echo "PostgreSQL $major is not in $suite:"
    in_chroot "$root" "apt-cache search --names-only '^postgresql-[0-9]+\$'"
    return 1
  fi
}

# copy_tree DIR: the checkout (no .git, no build products) at DIR/tmp/rvbbit-src
copy_tree() {
  local dest="$1/tmp/rvbbit-src"
  rm -rf "$dest"; mkdir -p "$dest"
  tar -C "$RV_ROOT" --exclude=./.build --exclude=./.git --exclude='*.o' \
      --exclude='*.so' --exclude='*.bc' --exclude=./tmp_check --exclude=./results \
      -cf - . | tar -C "$dest" -xf -
}

exec {lockfd}>"$build/chroot-$suite.lock"
flock "$lockfd"

case "$action" in
  base)
    make_base
    ;;
  prepare)
    prepare
    ;;
  test)
    prepare || { echo "total: 0 passed, 1 failed"; exit 1; }
    copy_tree "$root"
    echo "== PostgreSQL $major ($suite chroot): $(in_chroot "$root" "/usr/lib/postgresql/$major/bin/postgres --version")"
    in_chroot "$root" "cd /tmp/rvbbit-src && bash tests/scripts/test.sh"
    ;;
  build)
    prepare || exit 1
    copy_tree "$root"
    in_chroot "$root" "cd /tmp/rvbbit-src && make -k -s COPT=-Werror PG_CONFIG=/usr/lib/postgresql/$major/bin/pg_config"
    ;;
  deb)
    prepare || exit 1
    copy_tree "$root"
    in_chroot "$root" "cd /tmp/rvbbit-src && bash tests/scripts/deb.sh build $major /tmp/rvbbit-deb" || exit 1
    mkdir -p "$build/deb"
    rm -f "$build/deb/postgresql-$major-rvbbit_"*.deb
    cp "$root"/tmp/rvbbit-deb/postgresql-"$major"-rvbbit_*.deb "$build/deb/" || exit 1
    ls "$build/deb/"postgresql-"$major"-rvbbit_*.deb
    ;;
  deb-test)
    # a clean copy of the base system: only the package and what it depends on
    debs=("$build/deb/"postgresql-"$major"-rvbbit_*.deb)
    [ -f "${debs[0]}" ] || { echo "no package: run 'make deb PG=$major' first"; exit 1; }
    make_base || exit 1
    clean_root=$(mktemp -d "$build/clean-$suite.XXXXXX")
    tar -C "$clean_root" -xf "$base"
    apt_conf "$clean_root"
    mount_in "$clean_root" || exit 1
    cp "${debs[@]}" "$clean_root/tmp/"
    copy_tree "$clean_root"
    in_chroot "$clean_root" "bash /tmp/rvbbit-src/tests/scripts/deb.sh test $major /tmp/$(basename "${debs[0]}")"
    exit $?
    ;;
  shell)
    prepare || exit 1
    in_chroot "$root" "exec bash -i"
    ;;
  *)
    echo "chroot.sh: unknown action '$action'" >&2
    exit 2
    ;;
esac
