#!/usr/bin/env bash
# make test-repeat N=5: run the TAP suites N times in a row on a loaded
# machine and report every test that failed in any run.
#
# The build is installed once into a private copy of the server (as in
# make test).  A CPU hog, one busy loop per core, runs for the whole time
# and is stopped by pid at exit.  Each run is "prove -v" over the TAP files
# (RVBBIT_TAP selects some); a failed test is reported as
# "run I: FILE: not ok N - NAME", a file that died without a failed test
# as "run I: FILE: exited with failure".  The last line is
# "test-repeat: P of N runs passed" and the exit status is 0 only when
# every run passed.
set -uo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
bash "$here/deps.sh" || exit 1
. "$here/common.sh"

runs="${1:-${N:-5}}"
case "$runs" in ''|*[!0-9]*|0) echo "usage: test-repeat.sh N (N >= 1)"; exit 2;; esac

work=$(mktemp -d /tmp/rvbbit-repeat.XXXXXX)
chmod 755 "$work"
HOG_PIDS=()

cleanup() {
  local p
  for p in "${HOG_PIDS[@]}"; do
    kill "$p" 2>/dev/null
    wait "$p" 2>/dev/null
  done
  HOG_PIDS=()
  [ -n "${KEEP_TEST_DIR:-}" ] || rm -rf "$work"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

echo "== build (warnings are errors), installed into a private copy of the server"
if ! { build_only && private_install "$work/inst"; }; then
  echo "build failed"
  echo "test-repeat: 0 of $runs runs passed"
  exit 1
fi
cp -a "$RV_ROOT" "$work/tree"
rm -rf "$work/tree/.git"
chown -R postgres: "$work" 2>/dev/null || true

cores=$(nproc 2>/dev/null || echo 2)
for _ in $(seq 1 "$cores"); do
  ( trap - INT TERM; while :; do :; done ) &
  HOG_PIDS+=($!)
done
echo "== CPU hog: $cores busy loops (pids ${HOG_PIDS[*]})"

passed=0
failures=()
for i in $(seq 1 "$runs"); do
  log="$work/run-$i.log"
  # each run starts without the nodes (and logs) of the last one: a failed
  # TAP file keeps its data directory, which the next run would trip over
  rm -rf "$work/tree/tmp_check"
  (cd "$work/tree" && as_pg env PATH="$PG_BINDIR:$PATH" PG_REGRESS="$PG_REGRESS" \
      RV_ROOT="$work/tree" PYTHON="$PYTHON" \
      prove -v -I "$PG_PERL" -I "$work/tree/tests/t" ${RVBBIT_TAP:-tests/t/*.pl} >"$log" 2>&1)
  rc=$?
  # per test: the "not ok" lines of each file (TODO tests excluded)
  run_fail=$(awk -v run="$i" '
    /^tests\/t\/[^ ]+\.pl \.+/ { file = $1; next }
    /^not ok / && !/# TODO/ { print "run " run ": " file ": " $0 }' "$log")
  # files that failed without a "not ok" (died, bad plan, bail out)
  for f in $(sed -n 's/^\(tests\/t\/[^ ]*\.pl\) *(Wstat: .* Tests: [0-9]* Failed: \([0-9]*\)).*/\1 \2/p' "$log" \
             | awk '$2 == 0 {print $1}'); do
    run_fail+="${run_fail:+$'\n'}run $i: $f: exited with failure"
  done
  if grep -q '^Bailout called' "$log"; then
    run_fail+="${run_fail:+$'\n'}run $i: $(grep '^Bailout called' "$log" | head -1)"
  fi
  [ $rc -ne 0 ] && [ -z "$run_fail" ] && run_fail="run $i: prove failed (exit $rc)"
  summary=$(sed -n 's/^Files=\([0-9]*\), Tests=\([0-9]*\),.*/\1 files, \2 tests/p' "$log")
  if [ -z "$run_fail" ]; then
    passed=$((passed + 1))
    echo "run $i: PASS (${summary:-no summary})"
  else
    echo "run $i: FAIL (${summary:-no summary})"
    echo "$run_fail" | sed 's/^/  /'
    failures+=("$run_fail")
    cp "$log" "/tmp/rvbbit-repeat-run-$i.log" 2>/dev/null && echo "  log: /tmp/rvbbit-repeat-run-$i.log"
    rm -rf "/tmp/rvbbit-repeat-run-$i-server-logs"
    cp -r "$work/tree/tmp_check/log" "/tmp/rvbbit-repeat-run-$i-server-logs" 2>/dev/null &&
      echo "  server logs: /tmp/rvbbit-repeat-run-$i-server-logs"
  fi
done

if [ ${#failures[@]} -gt 0 ]; then
  echo "== tests that failed in any run"
  printf '%s\n' "${failures[@]}" | sed 's/^run [0-9]*: //' | sort | uniq -c | sort -rn
fi
echo "test-repeat: $passed of $runs runs passed"
[ "$passed" -eq "$runs" ]
