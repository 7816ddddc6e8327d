#!/usr/bin/env bash
# make bench: the rvbbit benchmark harness.
#
# Starts the mock provider and a throwaway cluster (own directory under /tmp,
# a free port), warms the worker up, then measures rvbbit.map against the
# same requests sent by `curl --parallel` (the ceiling):
#
#   latency runs   mock latency BENCH_LATENCY_MS (100), N = BENCH_N (2000)
#                  rows at parallel BENCH_PARALLEL ("10 50 200 1000"); a
#                  run has at least 10 x parallel rows (10,000 at 1,000)
#   zero latency   N = BENCH_N0 (20000) at parallel BENCH_PARALLEL0 ("50 200")
#   first row      time to the first row of a cursor over a 1,000-row MAP
#                  at 1 s latency, PARALLEL 10 (BENCH_TTFR_N, BENCH_TTFR_MS)
#   nginx          throughput at 0 ms against nginx's fixed chat completion
#                  over HTTP/1.1 and TLS + HTTP/2, beside curl on the same
#                  nginx (BENCH_NGINX_N, BENCH_NGINX_PAR; BENCH_SKIP_NGINX=1)
#   fair sharing   20 sessions x PARALLEL 10 at once against one session at
#                  PARALLEL 200 (BENCH_FAIR_SESSIONS, BENCH_FAIR_N)
#   memory         private memory (RssAnon, sampled every 50 ms) and peak
#                  RSS (VmHWM) of the backend and the worker running a MAP
#                  over BENCH_MEM_N (100000) rows at zero latency, parallel
#                  200, and over a tenth of that; BENCH_SKIP_MEM=1 skips it
#
# It prints figures and asserts nothing about them.  It exits non-zero only
# when something could not run: a build or start-up failure, a query error,
# rows without a result, or requests the mock did not answer with 200.
# Everything it starts is stopped on exit, also when interrupted.
# KEEP_BENCH_DIR=1 keeps the work directory (server and mock logs).
set -uo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
bash "$here/../scripts/deps.sh" || exit 1
. "$here/../scripts/common.sh"

BENCH_N=${BENCH_N:-2000}
BENCH_N0=${BENCH_N0:-20000}
BENCH_MEM_N=${BENCH_MEM_N:-100000}
BENCH_SKIP_MEM=${BENCH_SKIP_MEM:-0}
BENCH_LATENCY_MS=${BENCH_LATENCY_MS:-100}
BENCH_PARALLEL=${BENCH_PARALLEL:-"10 50 200 1000"}
BENCH_PARALLEL0=${BENCH_PARALLEL0:-"50 200"}
BENCH_MEM_PARALLEL=${BENCH_MEM_PARALLEL:-200}

# the inline cascade: one cell whose prompt is the row's text column
CASCADE='cells: [{name: say, instructions: "{{ input.text }}"}]'

work=""
PG_PORT=""
PROBLEMS=0

cleanup() {
  trap - EXIT INT TERM
  [ -n "${ng_pid:-}" ] && kill "$ng_pid" 2>/dev/null
  [ -n "$work" ] && pg_stop "$work/pg"
  mock_stop
  if [ -n "$work" ]; then
    if [ -n "${KEEP_BENCH_DIR:-}" ]; then
      echo "work directory kept: $work"
    else
      rm -rf "$work"
    fi
  fi
}
trap cleanup EXIT
trap 'echo "interrupted" >&2; exit 130' INT
trap 'echo "terminated" >&2; exit 143' TERM

die() {
  echo "bench: $*" >&2
  exit 1
}

# psql as the superuser over the cluster's socket; -X ignores ~/.psqlrc
pg_sql() {
  # the server's own psql, not Debian's wrapper (a Perl program that takes
  # about 50 ms of CPU to start: 20 of them at once distort the fair run)
  "$PG_BINDIR/psql" -X -q -At -v ON_ERROR_STOP=1 -h "$work/pg" -p "$PG_PORT" -U postgres -d postgres "$@"
}

now() { date +%s.%N; }

# calc EXPR: floating-point arithmetic (awk), printed with %.6g unless given
calc() { awk "BEGIN { printf \"%.6g\", $1 }"; }

mock_url() { echo "http://127.0.0.1:$MOCK_PORT$1"; }

mock_reset() {
  curl -sf -X POST "$(mock_url /reset)" >/dev/null || die "mock /reset failed"
}

mock_latency() {
  curl -sf -X POST -H "Content-Type: application/json" \
    --data "{\"latency_ms\": $1}" "$(mock_url /config)" >/dev/null ||
    die "mock /config failed"
}

# mock_stats: prints "requests max_in_flight ok_200"
mock_stats() {
  curl -sf "$(mock_url /stats)" | "$PYTHON" -c '
import json, sys
d = json.load(sys.stdin)
print(d["requests"], d["max_in_flight"], d["by_status"].get("200", 0))' ||
    die "mock /stats failed"
}

# map_query N PARALLEL: the measured statement.  It returns the row count,
# the rows without a result and the time spent inside the server (the
# projection runs after the aggregate has consumed every row).
map_query() {
  local n="$1" par="$2"
  local cascade_lit=${CASCADE//\'/\'\'}
  local opts=${MAP_OPTS:-'{"cache": false}'}
  # MAP_OPTS (default: no cache); MAP_TAG makes the inputs new (cache misses)
  # MAP_FROM=table reads the rows from that table (n, text) instead of
  # generate_series, which keeps its rows in a tuplestore of up to work_mem
  local using="SELECT n, ''x${MAP_TAG:-}'' || n AS text FROM generate_series(1, $n) n"
  [ -n "${MAP_FROM:-}" ] && using="SELECT n, text FROM $MAP_FROM WHERE n <= $n"
  cat <<SQL
SELECT count(*), count(*) FILTER (WHERE result IS NULL),
       extract(epoch FROM clock_timestamp() - statement_timestamp())
FROM rvbbit.map('$cascade_lit',
                '$using',
                $par, '$opts') AS t(n int, text text, result jsonb);
SQL
}

# run_map N PARALLEL: sets MAP_SQL_S, MAP_PSQL_S, MAP_ROWS, MAP_NULLS
run_map() {
  local n="$1" par="$2" out t0 t1
  t0=$(now)
  out=$(map_query "$n" "$par" | pg_sql -F ' ' 2>"$work/psql.err") || {
    cat "$work/psql.err" >&2
    die "MAP over $n rows at parallel $par failed"
  }
  t1=$(now)
  read -r MAP_ROWS MAP_NULLS MAP_SQL_S <<<"$out"
  MAP_PSQL_S=$(calc "$t1 - $t0")
}

# curl_config N [URL TAG EXTRA]: a curl config file with N chat requests, one
# per "next".  EXTRA (options such as --http2 --cacert FILE) is written into
# every block: "next" resets the options of the command line, so given there
# they would apply to the first request only (and over TLS the others then
# fail certificate verification, slowly: that was the "hanging" h2 row).
curl_config() {
  local n="$1" url="${2:-$(mock_url /v1/chat/completions)}" tag="${3:-mock}" extra="${4:-}"
  local file="$work/curl-$tag-$1.cfg"
  if [ ! -s "$file" ]; then
    awk -v n="$n" -v url="$url" -v extra="$extra" 'BEGIN {
      ne = split(extra, ex, " ")
      for (i = 1; i <= n; i++) {
        if (i > 1) print "next"
        printf "url = \"%s\"\n", url
        for (j = 1; j <= ne; j++) {
          # an option and its argument go on one line
          if (j < ne && ex[j + 1] !~ /^-/) { printf "%s \"%s\"\n", ex[j], ex[j + 1]; j++ }
          else print ex[j]
        }
        print "-X POST"
        print "-H \"Content-Type: application/json\""
        printf "data = \"{\\\"model\\\":\\\"mock/bench\\\",\\\"messages\\\":[{\\\"role\\\":\\\"user\\\",\\\"content\\\":\\\"x%d\\\"}]}\"\n", i
        print "-o /dev/null"
        print "-s"
        print "-w \"%{http_code}\\n\""
      }
    }' >"$file"
  fi
  echo "$file"
}

# run_curl N PARALLEL: sets CURL_S, CURL_OK (responses with status 200)
run_curl() {
  local n="$1" par="$2" cfg t0 t1 k i pids=()
  # curl 7.88 caps --parallel-max at 300: above 250, k processes share the
  # requests and the parallelism (k divides both; the bench's values do)
  k=$(( (par + 249) / 250 ))
  cfg=$(curl_config "$((n / k))" "${CURL_URL:-}" "${CURL_TAG:-mock}" "${CURL_EXTRA:-}")
  t0=$(now)
  for i in $(seq 1 "$k"); do
    curl --no-progress-meter --parallel --parallel-immediate --parallel-max "$((par / k))" \
      -K "$cfg" >"$work/curl.codes.$i" 2>"$work/curl.err.$i" &
    pids+=($!)
  done
  wait "${pids[@]}"
  t1=$(now)
  cat "$work"/curl.codes.* >"$work/curl.codes"
  cat "$work"/curl.err.* >"$work/curl.err"
  rm -f "$work"/curl.codes.* "$work"/curl.err.*
  CURL_S=$(calc "$t1 - $t0")
  CURL_OK=$(grep -c '^200$' "$work/curl.codes")
  if [ "$CURL_OK" -ne "$n" ]; then
    echo "bench: curl got $CURL_OK of $n answers with status 200" >&2
    sort "$work/curl.codes" | uniq -c | head >&2
    head -5 "$work/curl.err" >&2
    PROBLEMS=$((PROBLEMS + 1))
  fi
}

HDR_FMT='%-6s %6s %4s | %7s %7s %8s %7s %5s %5s | %7s %8s %5s | %6s\n'
ROW_FMT='%-6s %6s %4s | %7.3f %7.3f %8.0f %7s %5s %5s | %7.3f %8.0f %5s | %6.2f\n'

print_header() {
  printf "$HDR_FMT" mode N par "MAP s" "psql s" "rows/s" "ideal s" eff "MAP" \
    "curl s" "req/s" curl "MAP/"
  printf "$HDR_FMT" "" "" "" "" "" "" "" "" "maxfl" "" "" "maxfl" "curl"
  printf '%s\n' "$(printf '%.0s-' $(seq 1 104))"
}

# bench_row MODE N PARALLEL LATENCY_MS: one MAP run and one curl run
bench_row() {
  local mode="$1" n="$2" par="$3" lat="$4"
  local req mif ok ideal eff map_mif curl_mif
  mock_reset
  run_map "$n" "$par"
  read -r req mif ok <<<"$(mock_stats)"
  map_mif=$mif
  if [ "$MAP_ROWS" -ne "$n" ] || [ "$MAP_NULLS" -ne 0 ] || [ "$ok" -ne "$n" ]; then
    echo "bench: MAP returned $MAP_ROWS rows ($MAP_NULLS without a result);" \
      "the mock saw $req requests, $ok answered 200" >&2
    PROBLEMS=$((PROBLEMS + 1))
  fi
  mock_reset
  run_curl "$n" "$par"
  read -r req curl_mif ok <<<"$(mock_stats)"
  if [ "$lat" -gt 0 ]; then
    ideal=$(calc "int(($n + $par - 1) / $par) * $lat / 1000")
    eff=$(awk "BEGIN { printf \"%.2f\", $ideal / $MAP_SQL_S }")
    ideal=$(awk "BEGIN { printf \"%.3f\", $ideal }")
  else
    ideal="-"
    eff="-"
  fi
  printf "$ROW_FMT" "$mode" "$n" "$par" "$MAP_SQL_S" "$MAP_PSQL_S" \
    "$(calc "$n / $MAP_SQL_S")" "$ideal" "$eff" "$map_mif" \
    "$CURL_S" "$(calc "$n / $CURL_S")" "$curl_mif" "$(calc "$MAP_SQL_S / $CURL_S")"
  if [ "$lat" -gt 0 ]; then
    summary "MAP wall s, $n rows, ${lat} ms, parallel $par" "$(printf '%.3f' "$MAP_SQL_S")" \
      "$(printf '%.3f' "$CURL_S")" "$(printf '%.3f' "$(calc "$MAP_SQL_S / $CURL_S")")" "curl on the mock / x curl's time"
  else
    summary "MAP rows/s, $n rows, 0 ms mock, parallel $par" "$(calc "int($n / $MAP_SQL_S)")" \
      "$(calc "int($n / $CURL_S)")" "$(printf '%.3f' "$(calc "$CURL_S / $MAP_SQL_S")")" "curl on the mock / x curl's rate"
  fi
}

# The summary table printed last: one line per figure, beside the ceiling
# it is compared with in this same run and their ratio, so that two runs
# (before and after a change) can be compared line by line even on a
# machine whose load differs between runs.
SUMMARY=()
summary() {
  SUMMARY+=("$(printf '%-46s %11s %11s %7s  %s' "$1" "$2" "$3" "$4" "$5")")
}
print_summary() {
  echo
  echo "== summary: each figure against its ceiling in this run"
  printf '%-46s %11s %11s %7s  %s\n' "figure" "rvbbit" "ceiling" "ratio" "ceiling is / ratio means"
  printf '%s\n' "$(printf '%.0s-' $(seq 1 110))"
  printf '%s\n' "${SUMMARY[@]}"
}

worker_count() {
  pg_sql -c "SELECT count(*) FROM pg_stat_activity WHERE backend_type = 'rvbbit worker'"
}

# status_kb PID FIELD: a field of /proc/PID/status in kB (empty when gone)
status_kb() {
  awk -v f="$2:" '$1 == f { print $2 }' "/proc/$1/status" 2>/dev/null
}

# mem_run N: one psql session running a MAP over N rows.  Peak RSS (VmHWM)
# counts the shared buffers a process has touched: the worker writes a
# call-log row and index entries per row, so its VmHWM grows with the
# rows while its private memory does not.  So besides VmHWM this samples
# each process's private memory (RssAnon) every 50 ms and keeps the peak.
# Sets MEM_BACKEND_KB, MEM_WORKER_KB (private peaks), MEM_AFTER_KB (the
# backend's VmHWM).
mem_run() {
  local n="$1" i psql_pid bpid="" wpid="" v
  local b_anon=0 w_anon=0 b_hwm=0 b_shm=0 b_before=""
  # a fresh worker, so that its peak is this run's
  pg_sql -c "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE backend_type = 'rvbbit worker'" >/dev/null
  for i in $(seq 1 100); do
    [ "$(worker_count)" = 0 ] && break
    sleep 0.1
  done
  PGAPPNAME=rvbbit_bench_mem pg_sql -F ' ' >"$work/mem.out" 2>"$work/psql.err" <<SQL &
SELECT pg_sleep(0.3);
$(map_query "$n" "$BENCH_MEM_PARALLEL")
SQL
  psql_pid=$!
  while kill -0 "$psql_pid" 2>/dev/null; do
    [ -z "$bpid" ] && bpid=$(pg_sql -c "SELECT pid FROM pg_stat_activity WHERE application_name = 'rvbbit_bench_mem' LIMIT 1")
    [ -z "$wpid" ] && wpid=$(pg_sql -c "SELECT pid FROM pg_stat_activity WHERE backend_type = 'rvbbit worker' LIMIT 1")
    if [ -n "$bpid" ]; then
      v=$(status_kb "$bpid" RssAnon)
      if [ -n "$v" ]; then
        [ -z "$b_before" ] && b_before=$(status_kb "$bpid" VmHWM)
        [ "$v" -gt "$b_anon" ] && b_anon=$v
        b_hwm=$(status_kb "$bpid" VmHWM || echo "$b_hwm")
        b_shm=$(status_kb "$bpid" RssShmem || echo "$b_shm")
      fi
    fi
    if [ -n "$wpid" ]; then
      v=$(status_kb "$wpid" RssAnon)
      [ -n "$v" ] && [ "$v" -gt "$w_anon" ] && w_anon=$v
    fi
    sleep 0.05
  done
  wait "$psql_pid" || {
    cat "$work/psql.err" >&2
    die "memory run over $n rows failed"
  }
  local rows nulls secs w_hwm w_shm
  read -r rows nulls secs <<<"$(grep -v '^$' "$work/mem.out" | tail -1)"
  if [ "$rows" -ne "$n" ] || [ "$nulls" -ne 0 ]; then
    echo "bench: memory MAP returned $rows rows ($nulls without a result)" >&2
    PROBLEMS=$((PROBLEMS + 1))
  fi
  w_hwm=$(status_kb "$wpid" VmHWM)
  w_shm=$(status_kb "$wpid" RssShmem)
  printf '%8s rows  parallel %-4s %7.3f s  backend: private peak %5.1f MB; VmHWM %5.1f MB (%.1f MB before the MAP), %.1f MB of it shared memory\n' \
    "$n" "$BENCH_MEM_PARALLEL" "$secs" "$(calc "$b_anon / 1024")" "$(calc "$b_hwm / 1024")" \
    "$(calc "${b_before:-0} / 1024")" "$(calc "$b_shm / 1024")"
  printf '%8s %s\n' "" "worker $wpid: private peak $(printf '%.1f' "$(calc "$w_anon / 1024")") MB; VmHWM $(printf '%.1f' "$(calc "${w_hwm:-0} / 1024")") MB, $(printf '%.1f' "$(calc "${w_shm:-0} / 1024")") MB of it shared memory (shared buffers it wrote)"
  MEM_AFTER_KB=$b_hwm
  MEM_BACKEND_KB=$b_anon
  MEM_WORKER_KB=$w_anon
}

# ---------------------------------------------------------------------------

work=$(mktemp -d /tmp/rvbbit-bench.XXXXXX)
chmod 755 "$work"

# a private copy of the server with this build in it (common.sh), as the
# tests do: nothing is installed into the system's directories
echo "== build, installed into a private copy of the server"
build_only || die "build failed (run make -C $RV_ROOT to see why)"
private_install "$work/inst" || die "private install failed"

mock_start "$work/mock" --latency-ms "$BENCH_LATENCY_MS" || die "the mock did not start"
PG_PORT=$(free_port)
GW_PORT=$(free_port)
# the gateway step measures the relay alone: this throwaway cluster trusts
# loopback, so the gateway is told to let trust sessions through
pg_init "$work/pg" "$PG_PORT" "rvbbit.api_base = 'http://127.0.0.1:$MOCK_PORT/v1'
rvbbit.gateway_port = $GW_PORT
rvbbit.gateway_listen_addresses = '127.0.0.1'
rvbbit.gateway_allow_trust = on
rvbbit.default_model = 'mock/bench'
rvbbit.max_concurrency = 1000
rvbbit.max_connections_per_worker = 1000" || die "initdb failed"
pg_start "$work/pg" || {
  tail -20 "$work/pg/server.log" >&2
  die "the server did not start"
}
pg_sql -c "CREATE EXTENSION rvbbit" || die "CREATE EXTENSION failed"

echo "== setup"
echo "postgres $(pg_sql -c 'SHOW server_version'), port $PG_PORT; mock pid $MOCK_PID, port $MOCK_PORT;" \
  "$(nproc) CPUs; $(curl --version | head -1 | cut -d' ' -f1-2)"
echo "rvbbit.max_concurrency = $(pg_sql -c 'SHOW rvbbit.max_concurrency')," \
  "rvbbit.max_connections_per_worker = $(pg_sql -c 'SHOW rvbbit.max_connections_per_worker')," \
  "rvbbit.workers_per_database = $(pg_sql -c 'SHOW rvbbit.workers_per_database')"
echo "rvbbit workers before the warm-up: $(worker_count)"
run_map 100 50
[ "$MAP_ROWS" -eq 100 ] && [ "$MAP_NULLS" -eq 0 ] || {
  echo "bench: warm-up MAP returned $MAP_ROWS rows ($MAP_NULLS without a result)" >&2
  PROBLEMS=$((PROBLEMS + 1))
}
echo "warm-up: MAP over 100 rows at parallel 50 took $(printf '%.3f' "$MAP_SQL_S") s" \
  "(latency $BENCH_LATENCY_MS ms)"
echo "rvbbit workers after the warm-up: $(worker_count)"

# BENCH_GATEWAY_ONLY=1: only the gateway overhead step below
if [ "${BENCH_GATEWAY_ONLY:-0}" != 1 ]; then
echo
echo "== MAP against curl --parallel (mock latency $BENCH_LATENCY_MS ms, then 0 ms)"
print_header
for p in $BENCH_PARALLEL; do
  bench_row "${BENCH_LATENCY_MS}ms" "$(( BENCH_N > 10 * p ? BENCH_N : 10 * p ))" "$p" "$BENCH_LATENCY_MS"
done
mock_latency 0
for p in $BENCH_PARALLEL0; do
  bench_row "0ms" "$BENCH_N0" "$p" 0
done
echo "rvbbit workers after the runs: $(worker_count)"

# BATCH: requests and tokens per row for BATCH 1, 5 and 20 (zero latency,
# BENCH_BATCH_N rows, parallel 10), from the mock's counters
echo
echo "== MAP BATCH (mock latency 0 ms, ${BENCH_BATCH_N:=1000} rows, parallel 10)"
pg_sql -c "SELECT rvbbit.create_cascade('bench_batch', \$\$
cells:
  - name: label
    instructions: \"Label each item, in order: {{ rows | tojson }}\"
    output_schema: {type: object, properties: {label: {type: string}}, required: [label]}
\$\$)" >/dev/null || die "could not create the batch cascade"
printf '%-8s %8s %10s %14s %14s %8s\n' "batch" "rows" "requests" "requests/row" "tokens/row" "MAP s"
for b in 1 5 20; do
  mock_reset
  t0=$(now)
  got=$(pg_sql -c "SELECT count(label) FROM rvbbit.map('bench_batch',
           'SELECT n, ''item '' || n AS text FROM generate_series(1, $BENCH_BATCH_N) n', 10,
           '{\"batch\": $b, \"cache\": false, \"unpack\": true}') AS t(n int, text text, label text)") \
    || die "batch $b failed"
  t1=$(now)
  read -r reqs toks <<<"$(curl -s "$(mock_url /stats)" | "$PYTHON" -c 'import json,sys; d=json.load(sys.stdin); print(d["requests"], d["tokens"]["prompt"] + d["tokens"]["completion"])')"
  [ "$got" -eq "$BENCH_BATCH_N" ] || { echo "bench: batch $b returned $got labels" >&2; PROBLEMS=$((PROBLEMS + 1)); }
  printf '%-8s %8s %10s %14.3f %14.1f %8.3f\n' "$b" "$BENCH_BATCH_N" "$reqs" \
    "$(calc "$reqs / $BENCH_BATCH_N")" "$(calc "$toks / $BENCH_BATCH_N")" "$(calc "$t1 - $t0")"
done

# == stream: time to first row and fair sharing ==
# time to first row: a cursor over a BENCH_TTFR_N-row MAP at BENCH_TTFR_MS
# latency, PARALLEL 10; FETCH 1 returns once the first row is done
echo
echo "== time to first row (${BENCH_TTFR_N:=1000} rows, mock latency ${BENCH_TTFR_MS:=1000} ms, parallel 10)"
mock_latency "$BENCH_TTFR_MS"
mock_reset
cascade_lit=${CASCADE//\'/\'\'}
ttfr=$(pg_sql 2>"$work/psql.err" <<SQL
BEGIN;
SELECT clock_timestamp() AS t0 \gset
DECLARE c NO SCROLL CURSOR FOR SELECT n, result FROM rvbbit.map('$cascade_lit',
  'SELECT n, ''first'' || n AS text FROM generate_series(1, $BENCH_TTFR_N) n', 10, '{"cache": false}')
  AS t(n int, text text, result jsonb);
FETCH 1 FROM c \g /dev/null
SELECT extract(epoch FROM clock_timestamp() - :'t0'::timestamptz);
CLOSE c;
COMMIT;
SQL
) || { cat "$work/psql.err" >&2; die "time to first row run failed"; }
read -r reqs _ _ <<<"$(mock_stats)"
printf 'first row after %.3f s (one call is %.3f s); requests sent by the end: %s of %s\n' \
  "$ttfr" "$(calc "$BENCH_TTFR_MS / 1000")" "$reqs" "$BENCH_TTFR_N"
summary "first row s, $BENCH_TTFR_N rows, ${BENCH_TTFR_MS} ms, parallel 10" "$(printf '%.3f' "$ttfr")" \
  "$(printf '%.3f' "$(calc "$BENCH_TTFR_MS / 1000")")" "$(printf '%.3f' "$(calc "$ttfr * 1000 / $BENCH_TTFR_MS")")" "one call's latency / x it"

# fair sharing: BENCH_FAIR_SESSIONS sessions at once, each PARALLEL 10
# over BENCH_FAIR_N rows, against one session at PARALLEL sessions x 10
# over all their rows (mock latency BENCH_LATENCY_MS)
: "${BENCH_FAIR_SESSIONS:=20}" "${BENCH_FAIR_N:=200}"
echo
echo "== fair sharing ($BENCH_FAIR_SESSIONS sessions x parallel 10 x $BENCH_FAIR_N rows, mock latency $BENCH_LATENCY_MS ms)"
mock_latency "$BENCH_LATENCY_MS"
mock_reset
# every session connects first and starts its MAP at the same instant
# (pg_sleep_until), and prints when its statement started and ended by the
# server's clock: "together" is the first start to the last end, so client
# start-up is not in it (the one-session figure has none either)
fair_at=$(awk -v t="$(date +%s.%N)" 'BEGIN { printf "%.3f", t + 2 }')
fair_pids=()
for i in $(seq 1 "$BENCH_FAIR_SESSIONS"); do
  ({ echo "SELECT pg_sleep_until(to_timestamp($fair_at)) \\g /dev/null"
     map_query "$BENCH_FAIR_N" 10 | sed 's/^SELECT count/SELECT extract(epoch FROM statement_timestamp()), extract(epoch FROM clock_timestamp()), count/'
   } | pg_sql -F ' ' >"$work/fair.$i" 2>"$work/fair.$i.err") &
  fair_pids+=($!)
done
# only these: a bare wait would also wait for the mock
wait "${fair_pids[@]}"
# each line: start end rows nulls seconds
fair_wall=$(cat "$work"/fair.[0-9]* | awk 'NR == 1 { a = $1; b = $2 } { if ($1 < a) a = $1; if ($2 > b) b = $2 }
  END { printf "%.6f", b - a }')
fair_times=$(for i in $(seq 1 "$BENCH_FAIR_SESSIONS"); do awk '{print $5}' "$work/fair.$i"; done)
fair_bad=$(for i in $(seq 1 "$BENCH_FAIR_SESSIONS"); do awk -v n="$BENCH_FAIR_N" 'NF != 5 || $3 != n || $4 != 0' "$work/fair.$i"; done | wc -l)
[ "$fair_bad" -eq 0 ] || { echo "bench: $fair_bad fair-sharing sessions did not complete" >&2; PROBLEMS=$((PROBLEMS + 1)); }
fmin=$(sort -g <<<"$fair_times" | head -1)
fmax=$(sort -g <<<"$fair_times" | tail -1)
mock_reset
run_map "$((BENCH_FAIR_SESSIONS * BENCH_FAIR_N))" "$((BENCH_FAIR_SESSIONS * 10))"
printf 'sessions: fastest %.3f s, slowest %.3f s (slowest/fastest %.2f); all together %.3f s\n' \
  "$fmin" "$fmax" "$(calc "$fmax / $fmin")" "$fair_wall"
printf 'one session, parallel %s over %s rows: %.3f s (together/one session %.2f)\n' \
  "$((BENCH_FAIR_SESSIONS * 10))" "$((BENCH_FAIR_SESSIONS * BENCH_FAIR_N))" "$MAP_SQL_S" \
  "$(calc "$fair_wall / $MAP_SQL_S")"
summary "fair: slowest session s ($BENCH_FAIR_SESSIONS x parallel 10)" "$(printf '%.3f' "$fmax")" \
  "$(printf '%.3f' "$fmin")" "$(printf '%.3f' "$(calc "$fmax / $fmin")")" "the fastest session / x it"
summary "fair: all sessions together, wall s" "$(printf '%.3f' "$fair_wall")" \
  "$(printf '%.3f' "$MAP_SQL_S")" "$(printf '%.3f' "$(calc "$fair_wall / $MAP_SQL_S")")" "one session at parallel $((BENCH_FAIR_SESSIONS * 10)) / x it"
mock_latency 0
# == end stream ==

# == stream: nginx ceiling at 0 ms, HTTP/1.1 and TLS + HTTP/2 ==
if [ -x /usr/sbin/nginx ] && [ "${BENCH_SKIP_NGINX:-0}" != 1 ]; then
  echo
  echo "== MAP against curl on nginx (fixed chat completion, ${BENCH_NGINX_N:=20000} rows, parallel ${BENCH_NGINX_PAR:=200})"
  ng="$work/nginx"
  mkdir -p "$ng/tmp"
  openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes \
    -keyout "$ng/key.pem" -out "$ng/cert.pem" -days 2 -subj /CN=127.0.0.1 \
    -addext 'subjectAltName=IP:127.0.0.1' 2>/dev/null || die "openssl failed"
  chmod 644 "$ng/cert.pem"
  ng_plain=$(free_port)
  ng_tls=$(free_port)
  reply='{"id":"fixed","object":"chat.completion","created":1,"model":"m","choices":[{"index":0,"message":{"role":"assistant","content":"ok"},"finish_reason":"stop"}],"usage":{"prompt_tokens":3,"completion_tokens":1,"total_tokens":4}}'
  cat >"$ng/nginx.conf" <<NGINX
worker_processes 1;
daemon off;
pid $ng/nginx.pid;
error_log $ng/error.log warn;
events { worker_connections 4096; }
http {
    client_body_temp_path $ng/tmp/body; proxy_temp_path $ng/tmp/proxy;
    fastcgi_temp_path $ng/tmp/fastcgi; uwsgi_temp_path $ng/tmp/uwsgi; scgi_temp_path $ng/tmp/scgi;
    access_log off;
    keepalive_requests 1000000;
    server { listen 127.0.0.1:$ng_plain;
             location / { default_type application/json; return 200 '$reply'; } }
    server { listen 127.0.0.1:$ng_tls ssl http2;
             ssl_certificate $ng/cert.pem; ssl_certificate_key $ng/key.pem;
             http2_max_concurrent_streams 256;
             location / { default_type application/json; return 200 '$reply'; } }
}
NGINX
  /usr/sbin/nginx -e "$ng/error.log" -p "$ng" -c "$ng/nginx.conf" >"$ng/out" 2>&1 &
  ng_pid=$!
  for _ in $(seq 1 100); do [ -s "$ng/nginx.pid" ] && break; sleep 0.1; done
  [ -s "$ng/nginx.pid" ] || { cat "$ng/out" >&2; die "nginx did not start"; }
  pg_sql -c "ALTER SYSTEM SET rvbbit.ca_file = '$ng/cert.pem'" -c "SELECT pg_reload_conf()" >/dev/null
  # workers read rvbbit.ca_file when they start: end the idle ones
  pg_sql -c "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity WHERE backend_type = 'rvbbit worker'" >/dev/null
  sleep 1
  printf '%-6s %6s %4s | %7s %8s | %7s %8s | %8s\n' proto N par "MAP s" "rows/s" "curl s" "req/s" "MAP/curl"
  for proto in http1 h2tls; do
    if [ "$proto" = http1 ]; then
      base="http://127.0.0.1:$ng_plain/v1"; extra="--http1.1"
    else
      base="https://127.0.0.1:$ng_tls/v1"; extra="--http2 --cacert $ng/cert.pem"
    fi
    PGOPTIONS="-c rvbbit.api_base=$base" run_map 200 50   # warm-up (and the HTTP/2 probe)
    # cache and call log on, as a user runs it: every row a new input, so
    # each is looked up, missed, sent, cached and logged
    MAP_OPTS='{}' MAP_TAG="$proto-" PGOPTIONS="-c rvbbit.api_base=$base" \
      run_map "$BENCH_NGINX_N" "$BENCH_NGINX_PAR"
    if [ "$MAP_ROWS" -ne "$BENCH_NGINX_N" ] || [ "$MAP_NULLS" -ne 0 ]; then
      echo "bench: nginx $proto MAP returned $MAP_ROWS rows ($MAP_NULLS without a result)" >&2
      PROBLEMS=$((PROBLEMS + 1))
    fi
    CURL_URL="$base/chat/completions" CURL_TAG="$proto" CURL_EXTRA="$extra" \
      run_curl "$BENCH_NGINX_N" "$BENCH_NGINX_PAR"
    printf '%-6s %6s %4s | %7.3f %8.0f | %7.3f %8.0f | %8.2f\n' "$proto" "$BENCH_NGINX_N" "$BENCH_NGINX_PAR" \
      "$MAP_SQL_S" "$(calc "$BENCH_NGINX_N / $MAP_SQL_S")" "$CURL_S" "$(calc "$BENCH_NGINX_N / $CURL_S")" \
      "$(calc "$MAP_SQL_S / $CURL_S")"
    summary "nginx $proto rows/s, $BENCH_NGINX_N rows, parallel $BENCH_NGINX_PAR" "$(calc "int($BENCH_NGINX_N / $MAP_SQL_S)")" \
      "$(calc "int($BENCH_NGINX_N / $CURL_S)")" "$(printf '%.3f' "$(calc "$CURL_S / $MAP_SQL_S")")" "curl on nginx / x curl's rate"
  done
  h2_rate=$(calc "$BENCH_NGINX_N / $MAP_SQL_S")

  # PARALLEL 5,000 over HTTP/2 with the server under a 1,024-file limit:
  # the streams share a few connections, so every row must come back and
  # the rate should stay near the PARALLEL 200 one (its ceiling here)
  : "${BENCH_H2_PAR:=5000}"
  echo
  echo "== PARALLEL $BENCH_H2_PAR over TLS + HTTP/2, server restarted with ulimit -n 1024"
  pg_stop "$work/pg"
  ( ulimit -n 1024 && pg_start "$work/pg" ) || die "the server did not restart under ulimit -n 1024"
  pg_sql -c "ALTER SYSTEM SET rvbbit.max_concurrency = $BENCH_H2_PAR" -c "SELECT pg_reload_conf()" >/dev/null
  base="https://127.0.0.1:$ng_tls/v1"
  PGOPTIONS="-c rvbbit.api_base=$base" run_map 200 50
  h2_n=$(( BENCH_NGINX_N > 4 * BENCH_H2_PAR ? BENCH_NGINX_N : 4 * BENCH_H2_PAR ))
  MAP_OPTS='{}' MAP_TAG="h2big-" PGOPTIONS="-c rvbbit.api_base=$base" run_map "$h2_n" "$BENCH_H2_PAR"
  wlim=$(pg_sql -c "SELECT (regexp_match(pg_read_file('/proc/' || pid || '/limits'), 'Max open files\s+(\d+)'))[1]
                    FROM pg_stat_activity WHERE backend_type = 'rvbbit worker' LIMIT 1")
  printf '%s rows at parallel %s: %s returned, %s without a result, %.3f s, %.0f rows/s (worker open-file limit %s)\n' \
    "$h2_n" "$BENCH_H2_PAR" "$MAP_ROWS" "$MAP_NULLS" "$MAP_SQL_S" "$(calc "$h2_n / $MAP_SQL_S")" "${wlim:-?}"
  if [ "$MAP_ROWS" -ne "$h2_n" ] || [ "$MAP_NULLS" -ne 0 ]; then
    echo "bench: PARALLEL $BENCH_H2_PAR over HTTP/2 returned $MAP_ROWS rows ($MAP_NULLS without a result)" >&2
    PROBLEMS=$((PROBLEMS + 1))
  fi
  summary "h2tls rows/s, $h2_n rows, parallel $BENCH_H2_PAR, 1024 files" "$(calc "int($h2_n / $MAP_SQL_S)")" \
    "$(calc "int($h2_rate)")" "$(printf '%.3f' "$(calc "$h2_n / $MAP_SQL_S / $h2_rate")")" "MAP at parallel $BENCH_NGINX_PAR over h2 / x its rate"
  pg_sql -c "ALTER SYSTEM RESET rvbbit.max_concurrency" -c "SELECT pg_reload_conf()" >/dev/null

  kill "$ng_pid" 2>/dev/null
  wait "$ng_pid" 2>/dev/null
  pg_sql -c "ALTER SYSTEM RESET rvbbit.ca_file" -c "SELECT pg_reload_conf()" >/dev/null
fi
# == end stream ==

if [ "$BENCH_SKIP_MEM" != 1 ]; then
  echo
  echo "== backend and worker memory (mock latency 0 ms; a fresh session and worker for each run)"
  small=$((BENCH_MEM_N / 10))
  MEM_AFTER_KB="" MEM_BACKEND_KB="" MEM_WORKER_KB=""
  # the rows come from a table: a generate_series in the USING query would
  # add its own tuplestore (up to work_mem, 4 MB) to the backend's figure
  pg_sql -c "SET client_min_messages = warning" -c "DROP TABLE IF EXISTS bench_mem_src" -c "CREATE TABLE bench_mem_src AS SELECT n, 'x' || n AS text FROM generate_series(1, $BENCH_MEM_N) n" -c "VACUUM ANALYZE bench_mem_src" ||
    die "could not create the memory run's table"
  export MAP_FROM=bench_mem_src
  [ "$small" -ge 1 ] && mem_run "$small"
  small_kb=$MEM_AFTER_KB small_bkb=$MEM_BACKEND_KB small_wkb=$MEM_WORKER_KB
  mem_run "$BENCH_MEM_N"
  unset MAP_FROM
  if [ -n "$small_kb" ]; then
    summary "backend private peak MB, $BENCH_MEM_N vs $small rows" "$(printf '%.1f' "$(calc "$MEM_BACKEND_KB / 1024")")" \
      "$(printf '%.1f' "$(calc "$small_bkb / 1024")")" "$(printf '%.3f' "$(calc "$MEM_BACKEND_KB / $small_bkb")")" "$small rows / 1.0 is flat"
    summary "worker private peak MB, $BENCH_MEM_N vs $small rows" "$(printf '%.1f' "$(calc "$MEM_WORKER_KB / 1024")")" \
      "$(printf '%.1f' "$(calc "$small_wkb / 1024")")" "$(printf '%.3f' "$(calc "$MEM_WORKER_KB / $small_wkb")")" "$small rows / 1.0 is flat"
    summary "backend VmHWM MB, $BENCH_MEM_N vs $small rows" "$(printf '%.1f' "$(calc "$MEM_AFTER_KB / 1024")")" \
      "$(printf '%.1f' "$(calc "$small_kb / 1024")")" "$(printf '%.3f' "$(calc "$MEM_AFTER_KB / $small_kb")")" "$small rows / 1.0 is flat"
  fi
  # the USING query alone in a fresh session
  plain_kb=$(pg_sql 2>"$work/psql.err" <<SQL
SELECT pg_backend_pid() AS bpid \gset
SELECT count(*), max(text) FROM bench_mem_src \g /dev/null
SELECT (regexp_match(pg_read_file('/proc/' || :bpid || '/status'), 'VmHWM:\s+(\d+) kB'))[1];
SQL
  ) || die "the plain USING query failed"
  printf '%8s rows  the USING query alone: backend VmHWM %6.1f MB\n' "$BENCH_MEM_N" "$(calc "$plain_kb / 1024")"
  summary "backend VmHWM MB, $BENCH_MEM_N rows vs no MAP" "$(printf '%.1f' "$(calc "$MEM_AFTER_KB / 1024")")" \
    "$(printf '%.1f' "$(calc "$plain_kb / 1024")")" "$(printf '%.3f' "$(calc "$MEM_AFTER_KB / $plain_kb")")" "the USING query alone / x it"
fi

fi # BENCH_GATEWAY_ONLY

# the gateway's overhead on plain queries: pgbench, direct and through the
# gateway, alternating, in the same run (same server, same data)
pgb() {
  "$PG_BINDIR/pgbench" -n -T "$BENCH_PGBENCH_S" -c "$BENCH_PGBENCH_C" -j 2 -h 127.0.0.1 -U postgres "$@" postgres 2>&1
}

# gw_run LABEL PGBENCH-ARGS...: direct, gateway, direct, gateway; prints each
# run and the ratio of the means (gateway tps / direct tps)
gw_run() {
  local label="$1" path port out tps lat sum_d=0 sum_g=0 n_d=0 n_g=0
  shift
  for path in direct gateway direct gateway; do
    port=$PG_PORT; [ "$path" = gateway ] && port=$GW_PORT
    out=$(pgb -p "$port" "$@")
    tps=$(echo "$out" | sed -n 's/^tps = \([0-9.]*\).*/\1/p')
    lat=$(echo "$out" | sed -n 's/^latency average = \([0-9.]*\) ms/\1/p')
    [ -n "$tps" ] || {
      echo "bench: pgbench $label ($path) failed: $out" >&2
      PROBLEMS=$((PROBLEMS + 1))
      continue
    }
    printf '%-26s %-8s %12.0f %12s\n' "$label" "$path" "$tps" "$lat"
    if [ "$path" = direct ]; then
      sum_d=$(calc "$sum_d + $tps"); n_d=$((n_d + 1))
    else
      sum_g=$(calc "$sum_g + $tps"); n_g=$((n_g + 1))
    fi
  done
  if [ "$n_d" -gt 0 ] && [ "$n_g" -gt 0 ]; then
    printf '%-26s %-8s %12s %12s   gateway/direct tps = %.3f\n' "$label" "ratio" "" "" \
      "$(calc "($sum_g / $n_g) / ($sum_d / $n_d)")"
  fi
}

echo
echo "== gateway overhead: pgbench, ${BENCH_PGBENCH_S:=5} s a run, ${BENCH_PGBENCH_C:=4} clients, direct vs gateway"
echo "$(nproc) CPUs, load average $(cut -d' ' -f1-3 /proc/loadavg) (other work on the machine changes these figures)"
if "$PG_BINDIR/pgbench" -i -q -h 127.0.0.1 -p "$PG_PORT" -U postgres postgres >/dev/null 2>&1; then
  echo 'SELECT 1;' >"$work/select1.sql"
  printf '%-26s %-8s %12s %12s\n' "workload" "path" "tps" "latency ms"
  gw_run "-S, simple protocol" -S -M simple
  gw_run "-S, prepared (extended)" -S -M prepared
  gw_run "SELECT 1, simple protocol" -M simple -f "$work/select1.sql"
  gw_run "SELECT 1, connect each" -M simple -C -f "$work/select1.sql"
else
  echo "bench: pgbench -i failed" >&2
  PROBLEMS=$((PROBLEMS + 1))
fi

print_summary

if [ "$PROBLEMS" -gt 0 ]; then
  echo
  echo "bench: $PROBLEMS run(s) did not complete cleanly (see the messages above)" >&2
  exit 1
fi
exit 0
