#!/usr/bin/env bash
# The Debian package postgresql-N-rvbbit, built with Debian's PostgreSQL
# extension tooling (pg_buildext from postgresql-server-dev-all, debhelper).
#
#   deb.sh deps                 install the packaging tools, when missing
#   deb.sh build N OUTDIR       build postgresql-N-rvbbit_<version>_amd64.deb
#   deb.sh test N DEB           install DEB with apt-get into this (clean)
#                               system, preload it, CREATE EXTENSION rvbbit
#                               and one rvbbit.run against the mock provider
# Runs as root (in a chroot made by chroot.sh, or on a Debian host).
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
RV_ROOT="$(cd "$here/../.." && pwd)"
action="${1:-}"

# deps: the packaging tools
deps() {
  local pkgs=(debhelper postgresql-server-dev-all dpkg-dev fakeroot) missing=() p
  for p in "${pkgs[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
  done
  if [ ${#missing[@]} -gt 0 ]; then
    echo "rvbbit: installing ${missing[*]}"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
  fi
}

# build N OUTDIR: the package for PostgreSQL N from a copy of the checkout
build() {
  local major="$1" out="$2" version work src
  deps
  grep -qx "$major" "$RV_ROOT/debian/pgversions" || {
    echo "deb.sh: PostgreSQL $major is not in debian/pgversions" >&2; return 1; }
  [ -x "/usr/lib/postgresql/$major/bin/pg_config" ] || {
    echo "deb.sh: postgresql-server-dev-$major is not installed" >&2; return 1; }
  version=$(dpkg-parsechangelog -l "$RV_ROOT/debian/changelog" -S Version)
  work=$(mktemp -d /tmp/rvbbit-deb.XXXXXX)
  src="$work/rvbbit-$version"
  mkdir -p "$src"
  tar -C "$RV_ROOT" --exclude=./.git --exclude=./.build --exclude='*.o' \
      --exclude='*.so' --exclude='*.bc' --exclude=./tmp_check --exclude=./results \
      -cf - . | tar -C "$src" -xf -
  # only the requested major: pg_buildext builds for the versions both
  # supported here (PG_SUPPORTED_VERSIONS) and listed in debian/pgversions
  export PG_SUPPORTED_VERSIONS="$major"
  (cd "$src" && pg_buildext updatecontrol && dpkg-buildpackage -b -us -uc) \
      >"$work/build.log" 2>&1 || { tail -40 "$work/build.log"; return 1; }
  mkdir -p "$out"
  rm -f "$out/postgresql-$major-rvbbit_"*.deb
  cp "$work/postgresql-$major-rvbbit_${version}_"*.deb "$out/" || return 1
  rm -rf "$work"
}

# test N DEB: apt-get install the package (and what it depends on) into
# this system, preload it in a new cluster, CREATE EXTENSION rvbbit and
# run one cascade against the mock provider.  Prints "deb: N passed, N
# failed" and fails when a check fails.
test_deb() {
  local major="$1" deb="$2" dir port mockpid bindir pass=0 fail=0 out
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq >/dev/null
  if ! apt-get install -y -qq "$deb" python3 >/tmp/rvbbit-deb-install.log 2>&1; then
    tail -20 /tmp/rvbbit-deb-install.log
    echo "deb: 0 passed, 1 failed"; return 1
  fi
  # check NAME CONDITION...: one assertion
  check() {
    local name="$1"; shift
    if "$@"; then pass=$((pass + 1)); echo "ok - $name"
    else fail=$((fail + 1)); echo "not ok - $name"; fi
  }
  bindir="/usr/lib/postgresql/$major/bin"
  check "the package installs postgresql-$major" test -x "$bindir/postgres"
  check "the library is in the server's lib directory" test -f "/usr/lib/postgresql/$major/lib/rvbbit.so"
  check "the example cascades are installed" test -f "/usr/share/postgresql/$major/extension/rvbbit_cascades/extract_brand.yaml"

  dir=$(mktemp -d /tmp/rvbbit-debtest.XXXXXX)
  chmod 755 "$dir"; chown postgres: "$dir"
  python3 "$RV_ROOT/tests/mock/mock_llm.py" --host 127.0.0.1 --port 0 \
      --port-file "$dir/mock.port" >"$dir/mock.log" 2>&1 &
  mockpid=$!
  for _ in $(seq 1 200); do [ -s "$dir/mock.port" ] && break; sleep 0.05; done
  port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
  runuser -u postgres -- "$bindir/initdb" -D "$dir/data" -U postgres -A trust --no-sync >/dev/null
  cat >>"$dir/data/postgresql.conf" <<CONF
port = $port
listen_addresses = ''
unix_socket_directories = '$dir'
shared_preload_libraries = 'rvbbit'
rvbbit.api_base = 'http://127.0.0.1:$(cat "$dir/mock.port")/v1'
rvbbit.default_model = 'mock/default'
CONF
  if runuser -u postgres -- "$bindir/pg_ctl" -D "$dir/data" -l "$dir/server.log" -w -t 60 start >/dev/null; then
    pass=$((pass + 1)); echo "ok - the server starts with rvbbit preloaded"
    out=$(runuser -u postgres -- "$bindir/psql" -X -At -h "$dir" -p "$port" -d postgres \
          -c "CREATE EXTENSION rvbbit" \
          -c "SELECT extversion FROM pg_extension WHERE extname = 'rvbbit'" \
          -c "SELECT rvbbit.run(\$c\$cells: [{name: say, instructions: \"{{ input.text }}\"}]\$c\$, '{\"text\": \"from the package\"}')" 2>&1)
    echo "$out" | sed 's/^/# /'
    check "CREATE EXTENSION rvbbit installs version $(sed -n "s/^default_version = '\(.*\)'/\1/p" "$RV_ROOT/rvbbit.control")" \
        grep -qx "$(sed -n "s/^default_version = '\(.*\)'/\1/p" "$RV_ROOT/rvbbit.control")" <<<"$out"
    check "rvbbit.run answers through the mock provider" grep -qx '"re: from the package"' <<<"$out"
    runuser -u postgres -- "$bindir/pg_ctl" -D "$dir/data" -m fast -w stop >/dev/null
  else
    fail=$((fail + 1)); echo "not ok - the server starts with rvbbit preloaded"
    tail -20 "$dir/server.log"
  fi
  kill "$mockpid" 2>/dev/null; wait "$mockpid" 2>/dev/null
  rm -rf "$dir"
  echo "deb: $pass passed, $fail failed"
  [ "$fail" -eq 0 ]
}

case "$action" in
  deps) deps ;;
  build) build "${2:?major}" "${3:?output directory}" ;;
  test) test_deb "${2:?major}" "${3:?package file}" ;;
  *) echo "deb.sh: unknown action '$action'" >&2; exit 2 ;;
esac
