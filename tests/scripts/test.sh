#!/usr/bin/env bash
# make test: install what is missing, build with -Werror, install, and run
# every suite: unit tests, fuzz targets (bounded), the mock's self-test,
# pg_regress against a temporary instance, TAP tests, the client test.
# Prints each suite apart (unit, fuzz runs, mock self-test, regress files,
# tap) and one closing line "total: N passed, N failed" that counts the
# extension's own checks only: unit tests, pg_regress files (one each) and
# TAP tests.  Fuzz runs and the mock's self-test are printed but not
# counted, except that a failure there is one failed check in the total.
set -uo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
bash "$here/deps.sh" || exit 1
. "$here/common.sh"

work=$(mktemp -d /tmp/rvbbit-test.XXXXXX)
chmod 755 "$work"
TOTAL_PASS=0
TOTAL_FAIL=0
FAILED_SUITES=()

cleanup() {
  mock_stop
  [ -n "${KEEP_TEST_DIR:-}" ] || rm -rf "$work"
}
trap cleanup EXIT

# record SUITE PASSED FAILED [NOTE]: a suite counted in the total
record() {
  TOTAL_PASS=$((TOTAL_PASS + $2))
  TOTAL_FAIL=$((TOTAL_FAIL + $3))
  [ "$3" -gt 0 ] && FAILED_SUITES+=("$1")
  printf '%-16s %d passed, %d failed%s\n' "$1:" "$2" "$3" "${4:+ ($4)}"
}

# report SUITE PASSED FAILED NOTE: printed, not counted in the total; a
# failure still fails the run as one failed check
report() {
  [ "$3" -gt 0 ] && { TOTAL_FAIL=$((TOTAL_FAIL + 1)); FAILED_SUITES+=("$1"); }
  printf '%-16s %d passed, %d failed (%s)\n' "$1:" "$2" "$3" "$4"
}

echo "== build (warnings are errors), installed into a private copy of the server"
if ! { build_only && private_install "$work/inst"; }; then
  echo "build failed"
  make -C "$RV_ROOT" PG_CONFIG="$PG_CONFIG" COPT="-Werror" 2>&1 | grep -E "error|warning" | head -30
  echo "total: 0 passed, 1 failed"
  exit 1
fi

# RVBBIT_SUITES limits the run (for development): e.g. "regress tap"
want() { [ -z "${RVBBIT_SUITES:-}" ] || [[ " $RVBBIT_SUITES " == *" $1 "* ]]; }

if want unit; then
echo "== unit tests and fuzz targets"
make -C "$RV_ROOT/tests/unit" -s clean >/dev/null
if make -C "$RV_ROOT/tests/unit" -s all >"$work/unit-build.log" 2>&1; then
  UNIT_PASS=0; UNIT_FAIL=0
  for t in test_template test_jsonschema test_cascade test_llm test_syntax test_gateway; do
    (cd "$RV_ROOT/tests/unit" && ./$t >"$work/$t.log" 2>&1)
    line=$(tail -n 1 "$work/$t.log")
    p=$(echo "$line" | sed -n 's/.*: \([0-9]*\) passed, \([0-9]*\) failed.*/\1/p')
    f=$(echo "$line" | sed -n 's/.*: \([0-9]*\) passed, \([0-9]*\) failed.*/\2/p')
    [ -z "$p" ] && { p=0; f=1; tail -20 "$work/$t.log"; }
    [ "$f" != 0 ] && grep -E '^not ok|^#|runtime error|ERROR' "$work/$t.log" | head -20
    printf '  %-14s %d passed, %d failed\n' "$t:" "$p" "$f"
    UNIT_PASS=$((UNIT_PASS + p)); UNIT_FAIL=$((UNIT_FAIL + f))
  done
  record unit "$UNIT_PASS" "$UNIT_FAIL"
  if make -C "$RV_ROOT/tests/unit" -s fuzz FUZZ_SECONDS="${FUZZ_SECONDS:-8}" >"$work/fuzz.log" 2>&1; then
    report "fuzz runs" "$(grep -c 'no crash' "$work/fuzz.log")" 0 "one per fuzz target, not counted in total"
  else
    tail -30 "$work/fuzz.log"
    report "fuzz runs" "$(grep -c 'no crash' "$work/fuzz.log")" 1 "one per fuzz target, not counted in total"
  fi
else
  tail -30 "$work/unit-build.log"
  record unit 0 1
fi
fi

if want mock; then
echo "== mock provider self-test"
"$PYTHON" "$RV_ROOT/tests/mock/test_mock.py" >"$work/mock-test.log" 2>&1
line=$(grep -E '^mock: [0-9]+ passed' "$work/mock-test.log" | tail -1)
p=$(echo "$line" | sed -n 's/mock: \([0-9]*\) passed, \([0-9]*\) failed/\1/p')
f=$(echo "$line" | sed -n 's/mock: \([0-9]*\) passed, \([0-9]*\) failed/\2/p')
[ -z "$p" ] && { p=0; f=1; tail -30 "$work/mock-test.log"; }
report "mock self-test" "$p" "$f" "the mock provider's own tests, not counted in total"
fi

echo "== pg_regress (temporary instance, library preloaded)"
# a copy of the tree the postgres user can write in
# (without .git, build/ (the cache of make test-real-server) and .build/
# (the cached chroots of make test PG=N))
mkdir -p "$work/tree"
tar -C "$RV_ROOT" --exclude=./.git --exclude=./build --exclude=./.build -cf - . | tar -C "$work/tree" -xf -
chown -R postgres: "$work"
mock_start "$work/mock" --fixtures "$RV_ROOT/tests/mock/fixtures/demo.json"
chown -R postgres: "$work/mock"
cat >"$work/tree/tests/rvbbit_test.conf" <<CONF
shared_preload_libraries = 'rvbbit'
rvbbit.api_base = 'http://127.0.0.1:$MOCK_PORT/v1'
rvbbit.default_model = 'mock/default'
rvbbit.cascade_path = '$work/tree/tests/cascades'
rvbbit.worker_idle_timeout = 10
max_worker_processes = 32
CONF
if want regress; then
(cd "$work/tree" && as_pg env MOCK_PORT="$MOCK_PORT" "$PG_REGRESS" --inputdir=. \
    --bindir="$PG_BINDIR" --temp-instance=./tmp_check \
    --temp-config=./tests/rvbbit_test.conf \
    $(sed -n 's/^REGRESS = //p' Makefile) >"$work/regress.log" 2>&1)
rc=$?
cat "$work/regress.log" | grep -E '^(ok|not ok|test | [a-z_]+ +\.\.\.)|tests passed|failed' | head -40
n=$(grep -cE '^(ok|not ok|test )|^ [a-z_]+ +\.\.\.' "$work/regress.log")
nf=$(grep -cE '^not ok|FAILED|failed \(' "$work/regress.log")
[ $rc -ne 0 ] && [ "$nf" -eq 0 ] && nf=1
if [ $rc -ne 0 ] && [ -f "$work/tree/regression.diffs" ]; then
  head -150 "$work/tree/regression.diffs"
  cp "$work/tree/regression.diffs" /tmp/rvbbit-regression.diffs 2>/dev/null || true
fi
record "regress files" $((n - nf)) "$nf" "each pg_regress file counts as one"
fi
mock_stop

echo "== TAP tests"
if want tap && ls "$RV_ROOT"/tests/t/*.pl >/dev/null 2>&1; then
  # The suites of 17 and 18 run side by side in chroots that share the
  # host's network but not PostgreSQL::Test::Cluster's port reservations
  # (each has its own PG_TEST_PORT_DIR, written by its own postgres uid), so
  # each major takes its TCP ports from its own slice of the range
  # 10200-32767 (RvTest.pm): a port one suite has reserved but not yet
  # bound is never handed to another.
  case "$PG_MAJOR" in
    15) port_slice=10200 ;;
    17) port_slice=17700 ;;
    18) port_slice=25200 ;;
    *) port_slice= ;;
  esac
  (cd "$work/tree" && as_pg env PATH="$PG_BINDIR:$PATH" PG_REGRESS="$PG_REGRESS" \
      RV_ROOT="$work/tree" PYTHON="$PYTHON" RV_PORT_SLICE="$port_slice" \
      prove -I "$PG_PERL" -I "$work/tree/tests/t" ${RVBBIT_TAP:-tests/t/*.pl} >"$work/tap.log" 2>&1)
  rc=$?
  grep -E '^tests/t|^Files=|^Result' "$work/tap.log"
  n=$(sed -n 's/^Files=.*Tests=\([0-9]*\),.*/\1/p' "$work/tap.log")
  # failed tests from prove's summary; a file that died after its last
  # passing test (Failed: 0) is one failed check more
  nf=$(sed -n 's/^tests\/t\/[^ ]*\.pl *(Wstat: .* Failed: \([0-9]*\)).*/\1/p' "$work/tap.log" | awk '{s+=$1} END {print s+0}')
  nd=$(grep -cE '^tests/t/[^ ]+\.pl +\(Wstat: .* Failed: 0\)' "$work/tap.log")
  [ -z "$n" ] && n=0
  np=$((n > nf ? n - nf : 0))
  nf=$((nf + nd))
  [ $rc -ne 0 ] && [ "$nf" -eq 0 ] && nf=1
  if [ $rc -ne 0 ]; then
    tail -60 "$work/tap.log"
    for l in "$work"/tree/tmp_check/log/*.log; do [ -f "$l" ] && { echo "--- $l"; tail -40 "$l"; }; done
  fi
  record tap "$np" "$nf"
fi

if [ ${#FAILED_SUITES[@]} -gt 0 ]; then
  echo "failed suites: ${FAILED_SUITES[*]}"
fi
echo "total: $TOTAL_PASS passed, $TOTAL_FAIL failed"
[ "$TOTAL_FAIL" -eq 0 ]
