#!/usr/bin/env bash
# Shared helpers of the rvbbit test, demo and benchmark scripts.
# Source it; it defines functions and nothing runs.

RV_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
PG_MAJOR="${PG_MAJOR:-15}"
PG_BINDIR=/usr/lib/postgresql/$PG_MAJOR/bin
PG_CONFIG="$PG_BINDIR/pg_config"
PG_REGRESS=/usr/lib/postgresql/$PG_MAJOR/lib/pgxs/src/test/regress/pg_regress
PG_PERL=/usr/lib/postgresql/$PG_MAJOR/lib/pgxs/src/test/perl
# Debian's own python has psycopg2; the mock needs only the standard library
PYTHON=/usr/bin/python3
[ -x "$PYTHON" ] || PYTHON=python3

# as_pg CMD...: run a command as the postgres user (PostgreSQL refuses root)
as_pg() {
  if [ "$(id -u)" -eq 0 ]; then
    runuser -u postgres -- "$@"
  else
    "$@"
  fi
}

# build_install: build warning-free (-Werror) and install as root
build_install() {
  local sudo=""
  [ "$(id -u)" -ne 0 ] && sudo="sudo"
  make -C "$RV_ROOT" -s PG_CONFIG="$PG_CONFIG" COPT="-Werror" -j2 >/dev/null
  $sudo make -C "$RV_ROOT" -s PG_CONFIG="$PG_CONFIG" install >/dev/null
}

# build_only: build warning-free (-Werror), install nothing
build_only() {
  make -C "$RV_ROOT" -s PG_CONFIG="$PG_CONFIG" COPT="-Werror" -j2 >/dev/null
}

# private_install DIR: a private copy of the PostgreSQL server binaries with
# this build installed into it (PostgreSQL finds its share and lib
# directories relative to its own binary), so a test run never writes to the
# system's extension directory and concurrent runs from different checkouts
# cannot load each other's library.  Points PG_BINDIR, PG_REGRESS and
# PG_PERL at the copy.
private_install() {
  local dir="$1"
  rm -rf "$dir"
  mkdir -p "$dir/usr/lib/postgresql" "$dir/usr/share/postgresql"
  cp -a "/usr/lib/postgresql/$PG_MAJOR" "$dir/usr/lib/postgresql/"
  cp -a "/usr/share/postgresql/$PG_MAJOR" "$dir/usr/share/postgresql/"
  make -C "$RV_ROOT" -s PG_CONFIG="$PG_CONFIG" DESTDIR="$dir" install >/dev/null || return 1
  PG_BINDIR="$dir/usr/lib/postgresql/$PG_MAJOR/bin"
  PG_REGRESS="$dir/usr/lib/postgresql/$PG_MAJOR/lib/pgxs/src/test/regress/pg_regress"
  PG_PERL="$dir/usr/lib/postgresql/$PG_MAJOR/lib/pgxs/src/test/perl"
  export PG_BINDIR PG_REGRESS PG_PERL
}

# mock_start DIR [ARGS...]: start the mock provider; sets MOCK_PORT, MOCK_PID
mock_start() {
  local dir="$1"; shift
  mkdir -p "$dir"
  rm -f "$dir/mock.port"
  "$PYTHON" "$RV_ROOT/tests/mock/mock_llm.py" --host 127.0.0.1 --port 0 \
      --port-file "$dir/mock.port" --pid-file "$dir/mock.pid" "$@" \
      >"$dir/mock.log" 2>&1 &
  MOCK_PID=$!
  local i
  for i in $(seq 1 200); do
    [ -s "$dir/mock.port" ] && break
    kill -0 "$MOCK_PID" 2>/dev/null || { cat "$dir/mock.log"; return 1; }
    sleep 0.05
  done
  MOCK_PORT=$(cat "$dir/mock.port")
  export MOCK_PORT MOCK_PID
}

mock_stop() {
  if [ -n "${MOCK_PID:-}" ] && kill -0 "$MOCK_PID" 2>/dev/null; then
    kill "$MOCK_PID" 2>/dev/null
    wait "$MOCK_PID" 2>/dev/null || true
  fi
  MOCK_PID=""
}

# free_port: a TCP port nobody listens on
free_port() {
  "$PYTHON" -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1]); s.close()'
}

# pg_init DIR PORT [CONF-LINES]: a throwaway cluster owned by postgres
pg_init() {
  local dir="$1" port="$2" conf="${3:-}"
  rm -rf "$dir"
  mkdir -p "$dir"
  chown postgres: "$dir" 2>/dev/null || true
  as_pg "$PG_BINDIR/initdb" -D "$dir/data" -U postgres -A trust --no-sync >/dev/null
  cat >>"$dir/data/postgresql.conf" <<CONF
port = $port
listen_addresses = '127.0.0.1'
unix_socket_directories = '$dir'
shared_preload_libraries = 'rvbbit'
max_worker_processes = 32
fsync = off
$conf
CONF
}

pg_start() {
  local dir="$1"
  as_pg "$PG_BINDIR/pg_ctl" -D "$dir/data" -l "$dir/server.log" -w -t 60 start >/dev/null
}

pg_stop() {
  local dir="$1"
  [ -f "$dir/data/postmaster.pid" ] && as_pg "$PG_BINDIR/pg_ctl" -D "$dir/data" -m fast -w stop >/dev/null 2>&1 || true
}
