#!/usr/bin/env bash
# Install the Debian packages rvbbit needs to build and test, when missing.
# Runs as root (CI, a fresh machine, a test chroot) or with sudo available.
# The PostgreSQL major version is PG_MAJOR (default 15, the host's).
#
#   deps.sh           what building and testing rvbbit needs
#   deps.sh PKG...    only these packages (e.g. debootstrap for the chroots)
#
# Several of these may run at once (make test PG=all prepares chroots while
# the host's suites start): one lock serializes them, and apt waits for
# dpkg's own lock instead of failing when another apt holds it.
set -euo pipefail
m="${PG_MAJOR:-15}"
if [ $# -gt 0 ]; then
  pkgs=("$@")
else
pkgs=(build-essential pkg-config "postgresql-$m" "postgresql-server-dev-$m"
      "postgresql-$m-cron" libcurl4-openssl-dev libjson-c-dev libyaml-dev libkrb5-dev
      libipc-run-perl libdbd-pg-perl libio-socket-ssl-perl python3 python3-psycopg2 curl ca-certificates util-linux
      nginx openssl libssl-dev libpostgresql-jdbc-java default-jdk-headless)
fi
missing=()
for p in "${pkgs[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  SUDO=""; [ "$(id -u)" -ne 0 ] && SUDO="sudo"
  echo "rvbbit: installing ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  exec {depslock}>/tmp/rvbbit-deps.lock
  flock "$depslock"
  wait_lock=(-o DPkg::Lock::Timeout=900)
  $SUDO apt-get "${wait_lock[@]}" update -qq
  # the server package's post-install creates a "main" cluster; we never use it
  $SUDO apt-get "${wait_lock[@]}" install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
  exec {depslock}>&-
fi
