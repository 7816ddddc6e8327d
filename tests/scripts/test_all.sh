#!/usr/bin/env bash
# make test PG=N / PG=all: every suite against each PostgreSQL major version
# and, for PG=all (CI), the Debian package of each, built and installed into
# a clean system.
#
#   test_all.sh 17          the suites against PostgreSQL 17 (trixie chroot)
#   test_all.sh all         15 on the host, 17 and 18 in chroots, then the
#                           package of each (build, apt-get install, run)
#
# Each version's run is tests/scripts/test.sh (on the host for 15, inside
# the chroot otherwise, see chroot.sh); its closing "total:" line is
# renamed "pgN:" and the single closing line sums them all:
# "total: N passed, N failed".
#
# To keep a cold run short on two cores, the chroots are made (debootstrap,
# apt-get: mostly waiting on the network and the disk) while the host's
# suites run, and the chroot suites of 17 and 18 run side by side
# (RVBBIT_JOBS=1 runs them one after the other).  Every run's output goes
# to its own log, printed in order when all are done.
set -uo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
RV_ROOT="$(cd "$here/../.." && pwd)"
HOST_MAJOR=15
CHROOT_MAJORS=(17 18)

versions=("$@")
[ ${#versions[@]} -eq 0 ] && versions=(all)
with_deb=0
if [ "${versions[*]}" = all ]; then
  versions=("$HOST_MAJOR" "${CHROOT_MAJORS[@]}")
  with_deb=1
fi

logs=$(mktemp -d /tmp/rvbbit-test-all.XXXXXX)
PIDS=()
# stop what we started in the background (by pid) if we are interrupted
cleanup() {
  local p
  for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null; done
  for p in "${PIDS[@]}"; do wait "$p" 2>/dev/null; done
  rm -rf "$logs"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# timed NAME CMD...: run CMD with its output in $logs/NAME.log and its
# elapsed seconds in $logs/NAME.time
timed() {
  local name="$1" start rc; shift
  start=$(date +%s)
  "$@" >"$logs/$name.log" 2>&1
  rc=$?
  echo $(($(date +%s) - start)) >"$logs/$name.time"
  return $rc
}

# wait_all: wait for the background runs, forget their pids
wait_all() {
  local p
  for p in "${PIDS[@]}"; do wait "$p"; done
  PIDS=()
}

# deb_run N: build the package for N, then install and run it
deb_run() {
  local v="$1"
  if [ "$v" = "$HOST_MAJOR" ]; then
    bash "$here/deb.sh" build "$v" "$RV_ROOT/.build/deb" || return 1
    ls "$RV_ROOT/.build/deb/postgresql-$v-rvbbit_"*.deb
  else
    bash "$here/chroot.sh" "$v" deb || return 1
  fi
  bash "$here/chroot.sh" "$v" deb-test
}

order=()
chroots=()
for v in "${versions[@]}"; do
  [ "$v" = "$HOST_MAJOR" ] || chroots+=("$v")
done

# 1. the chroots are made while the host's suites run
for v in "${chroots[@]}"; do
  timed "prepare-$v" bash "$here/chroot.sh" "$v" prepare &
  PIDS+=($!)
done
if [ "$with_deb" -eq 1 ]; then
  # the clean base system the host's package is installed into
  timed "prepare-base-$HOST_MAJOR" bash "$here/chroot.sh" "$HOST_MAJOR" base &
  PIDS+=($!)
fi
for v in "${versions[@]}"; do
  if [ "$v" = "$HOST_MAJOR" ]; then
    echo "== PostgreSQL $v (host)"
    timed "pg$v" env PG_MAJOR="$v" bash "$here/test.sh"
    order+=("pg$v")
    cat "$logs/pg$v.log" | sed "s/^total:/pg$v:/"
  fi
done
wait_all

# 2. the chroot suites.  With the host's run in the same invocation, the
# unit tests, fuzz targets and the mock's self-test run there only: they
# build the pure modules (src/template.c, jsonschema.c, ... which never
# include a PostgreSQL header) with ASan, or test the Python mock, so they
# test nothing that depends on the server's version (the mock itself
# serves every chroot's regress and TAP tests).  make test PG=N alone runs
# every suite, these included.
chroot_suites="${RVBBIT_SUITES:-}"
if [ -z "$chroot_suites" ] && [[ " ${versions[*]} " == *" $HOST_MAJOR "* ]]; then
  chroot_suites="regress tap"
fi
for v in "${chroots[@]}"; do
  if [ "${RVBBIT_JOBS:-2}" -gt 1 ]; then
    RVBBIT_SUITES="$chroot_suites" timed "pg$v" bash "$here/chroot.sh" "$v" test &
    PIDS+=($!)
  else
    RVBBIT_SUITES="$chroot_suites" timed "pg$v" bash "$here/chroot.sh" "$v" test
  fi
  order+=("pg$v")
done
wait_all
for v in "${chroots[@]}"; do
  echo "== PostgreSQL $v (chroot)"
  sed -n '/^== debootstrap\|failed$/p' "$logs/prepare-$v.log"
  sed "s/^total:/pg$v:/" "$logs/pg$v.log"
done

# 3. the packages: built (on the host for its own major, in the chroot
# otherwise), installed with apt-get into a clean base system, run
if [ "$with_deb" -eq 1 ]; then
  for v in "${versions[@]}"; do
    timed "deb$v" deb_run "$v" &
    PIDS+=($!)
    order+=("deb$v")
  done
  wait_all
  for v in "${versions[@]}"; do
    echo "== Debian package for PostgreSQL $v"
    grep -q '^deb: [0-9]* passed' "$logs/deb$v.log" || echo "deb: 0 passed, 1 failed" >>"$logs/deb$v.log"
    sed "s/^deb:/deb$v:/" "$logs/deb$v.log"
  done
fi

# the sum of every run's closing line
echo "== summary"
pass=0
fail=0
for name in "${order[@]}"; do
  line=$(grep -E '^(total|deb): [0-9]+ passed, [0-9]+ failed' "$logs/$name.log" | tail -n 1)
  p=$(echo "$line" | sed -n 's/^[a-z]*: \([0-9]*\) passed, \([0-9]*\) failed/\1/p')
  f=$(echo "$line" | sed -n 's/^[a-z]*: \([0-9]*\) passed, \([0-9]*\) failed/\2/p')
  # a run that printed no closing line failed
  [ -z "$p" ] && { p=0; f=1; }
  pass=$((pass + p))
  fail=$((fail + f))
  printf '%-8s %d passed, %d failed (%ss)\n' "$name:" "$p" "$f" "$(cat "$logs/$name.time" 2>/dev/null || echo ?)"
done
for t in "$logs"/prepare-*.time; do
  [ -f "$t" ] && printf '%-8s %ss\n' "$(basename "$t" .time):" "$(cat "$t")"
done
echo "total: $pass passed, $fail failed"
[ "$fail" -eq 0 ]
