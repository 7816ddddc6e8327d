#!/usr/bin/env bash
# tests/bench/profile.sh: instructions per MAP row, counted by callgrind.
#
# Runs the whole server under valgrind --tool=callgrind (every forked
# backend and worker writes its own profile at exit), against Debian's nginx
# returning a fixed chat completion at 0 ms, with caching and call logging
# on.  Two MAPs, over PROFILE_N0 (200) and PROFILE_N0 + PROFILE_N (2,200)
# rows, each in a fresh session served by a fresh worker
# (rvbbit.worker_idle_timeout = 1 s, rvbbit.workers_per_database = 1);
# the cache and the call log are emptied before each.  The difference of
# the two profiles divided by PROFILE_N is the cost of one row, without the
# start-up of the backend and the worker.  Instruction counts do not depend
# on the machine's load: two runs of the same build give about the same
# figures (within a few hundred instructions per row).
#
# Prints the backend's and the worker's instructions per row, then the
# worker's top functions (inclusive and self).  Takes about a minute.
#   PROFILE_N (2000), PROFILE_N0 (200), PROFILE_PAR (50), PROFILE_TOP (25)
#   KEEP_PROFILE_DIR=1 keeps the callgrind files (callgrind_annotate them).
set -uo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
. "$here/../scripts/common.sh"

N=${PROFILE_N:-2000}
N0=${PROFILE_N0:-200}
PAR=${PROFILE_PAR:-50}
TOP=${PROFILE_TOP:-25}
command -v valgrind >/dev/null || { echo "profile: valgrind is not installed" >&2; exit 1; }
[ -x /usr/sbin/nginx ] || { echo "profile: nginx is not installed (tests/scripts/deps.sh)" >&2; exit 1; }

work=$(mktemp -d /tmp/rvbbit-profile.XXXXXX)
chmod 755 "$work"
ng_pid=""
vg_pid=""
cleanup() {
  [ -n "$vg_pid" ] && kill -0 "$vg_pid" 2>/dev/null &&
    as_pg "$PG_BINDIR/pg_ctl" -D "$work/pg/data" -m fast -w stop >/dev/null 2>&1
  [ -n "$ng_pid" ] && kill "$ng_pid" 2>/dev/null
  if [ -n "${KEEP_PROFILE_DIR:-}" ]; then echo "kept: $work"; else rm -rf "$work"; fi
}
trap cleanup EXIT

build_only || { echo "profile: build failed" >&2; exit 1; }
private_install "$work/inst" || { echo "profile: private install failed" >&2; exit 1; }

mkdir -p "$work/ng/tmp" "$work/cg"
chmod 777 "$work/cg"
ng_port=$(free_port)
pg_port=$(free_port)
reply='{"id":"fixed","object":"chat.completion","created":1,"model":"m","choices":[{"index":0,"message":{"role":"assistant","content":"ok"},"finish_reason":"stop"}],"usage":{"prompt_tokens":3,"completion_tokens":1,"total_tokens":4}}'
cat >"$work/ng/nginx.conf" <<NGINX
worker_processes 1;
daemon off;
pid $work/ng/nginx.pid;
error_log $work/ng/error.log warn;
events { worker_connections 4096; }
http {
    client_body_temp_path $work/ng/tmp/body; proxy_temp_path $work/ng/tmp/proxy;
    fastcgi_temp_path $work/ng/tmp/fastcgi; uwsgi_temp_path $work/ng/tmp/uwsgi; scgi_temp_path $work/ng/tmp/scgi;
    access_log off;
    keepalive_requests 1000000;
    server { listen 127.0.0.1:$ng_port;
             location / { default_type application/json; return 200 '$reply'; } }
}
NGINX
/usr/sbin/nginx -e "$work/ng/error.log" -p "$work/ng" -c "$work/ng/nginx.conf" >"$work/ng/out" 2>&1 &
ng_pid=$!

pg_init "$work/pg" "$pg_port" "rvbbit.api_base = 'http://127.0.0.1:$ng_port/v1'
rvbbit.default_model = 'mock/bench'
rvbbit.workers_per_database = 1
rvbbit.worker_idle_timeout = 1
rvbbit.max_concurrency = 1000
rvbbit.max_connections_per_worker = 1000
autovacuum = off"
(cd "$work/cg" && as_pg valgrind --tool=callgrind --callgrind-out-file="$work/cg/cg.%p" \
  "$PG_BINDIR/postgres" -D "$work/pg/data" >"$work/pg/server.log" 2>&1) &
vg_pid=$!

P() { as_pg psql -X -q -At -v ON_ERROR_STOP=1 -h "$work/pg" -p "$pg_port" -U postgres -d postgres "$@"; }
for _ in $(seq 1 200); do P -c "CREATE EXTENSION rvbbit" 2>/dev/null && break; sleep 0.3; done
P -c "SELECT 1 FROM pg_extension WHERE extname = 'rvbbit'" | grep -q 1 ||
  { tail "$work/pg/server.log" >&2; echo "profile: the server did not start" >&2; exit 1; }

Q="SELECT count(*) FILTER (WHERE result IS NOT NULL) FROM rvbbit.map('cells: [{name: say, instructions: \"{{ input.text }}\"}]', 'SELECT n, ''x'' || n AS text FROM generate_series(1, NN) n', $PAR) AS t(n int, text text, result jsonb);"
no_worker() {
  local i
  for i in $(seq 1 240); do
    [ "$(P -c "SELECT count(*) FROM pg_stat_activity WHERE backend_type = 'rvbbit worker'")" = 0 ] && return 0
    sleep 0.5
  done
  echo "profile: the worker did not exit" >&2
  exit 1
}
# one ROWS: prints "backend-pid worker-pid rows-with-a-result"
one() {
  P -c "TRUNCATE rvbbit.cache, rvbbit.call_log" >/dev/null
  no_worker
  P <<SQL | tr '\n' ' '
SELECT pg_backend_pid();
${Q/NN/$1}
SELECT pid FROM pg_stat_activity WHERE backend_type = 'rvbbit worker';
SQL
  no_worker
}
read -r b0 ok0 w0 <<<"$(one "$N0")"
read -r b1 ok1 w1 <<<"$(one $((N0 + N)))"
as_pg "$PG_BINDIR/pg_ctl" -D "$work/pg/data" -m fast -w stop >/dev/null
wait "$vg_pid"
vg_pid=""
[ "$ok0" = "$N0" ] && [ "$ok1" = $((N0 + N)) ] ||
  { echo "profile: rows without a result ($ok0 of $N0, $ok1 of $((N0 + N)))" >&2; exit 1; }

"$PYTHON" - "$work/cg" "$b0" "$b1" "$w0" "$w1" "$N" "$TOP" <<'PY'
import re, subprocess, sys
d, b0, b1, w0, w1, n, top = sys.argv[1:8]
n, top = int(n), int(top)
def total(pid):
    # the last "totals:" line: a forked process's "summary:" is its parent's
    tot = [l for l in open(f"{d}/cg.{pid}") if l.startswith("totals:")]
    return int(tot[-1].split()[1])
def funcs(pid, incl):
    out = subprocess.run(["callgrind_annotate", "--threshold=100", "--tree=none",
                          "--inclusive=" + ("yes" if incl else "no"), f"{d}/cg.{pid}"],
                         capture_output=True, text=True).stdout
    f = {}
    for line in out.splitlines():
        m = re.match(r"\s*([\d,]+) \([^)]*\)\s+(\S*?):(\S+) \[(.*)\]$", line)
        if m:
            k = m.group(3) + " [" + m.group(4).split("/")[-1] + "]"
            f[k] = f.get(k, 0) + int(m.group(1).replace(",", ""))
    return f
print(f"instructions per row ({n} rows: the run over {n} more rows minus the other)")
print(f"  backend {(total(b1) - total(b0)) / n:10.0f}")
print(f"  worker  {(total(w1) - total(w0)) / n:10.0f}")
for incl in (True, False):
    a, b = funcs(w0, incl), funcs(w1, incl)
    rows = sorted((((b.get(k, 0) - a.get(k, 0)) / n, k) for k in set(a) | set(b)), reverse=True)
    print(f"worker, per row, {'inclusive' if incl else 'self'}:")
    for v, k in rows[:top]:
        print(f"  {v:10.0f}  {k}")
PY
