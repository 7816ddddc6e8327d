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

case "$action" in
  deps) deps ;;
  *) echo "deb.sh: unknown action '$action'" >&2; exit 2 ;;
esac
