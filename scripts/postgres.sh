#!/usr/bin/env bash
# A throw-away PostgreSQL server for the registry's tests, on a free loopback port.
#   scripts/postgres.sh start DIR   installs Debian's postgresql if missing, creates a cluster in
#                                   DIR (trust auth, 127.0.0.1 only), starts it and prints its URL
#   scripts/postgres.sh stop DIR    stops it (DIR can then be deleted)
# initdb refuses to run as root: as root, the cluster belongs to the postgres user.
set -euo pipefail
cmd="${1:-}"
dir="${2:-}"
if [[ -z "$cmd" || -z "$dir" ]]; then
  echo "usage: $0 start|stop DIR" >&2
  exit 2
fi

find_bin() {
  local found
  found="$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1 || true)"
  echo "$found"
}

as_owner() {
  if [[ "$(id -u)" == 0 ]]; then
    su postgres -s /bin/sh -c "$1"
  else
    sh -c "$1"
  fi
}

case "$cmd" in
  start)
    bin="$(find_bin)"
    if [[ -z "$bin" || ! -x "$bin/initdb" ]]; then
      echo "installing postgresql (Debian package)" >&2
      export DEBIAN_FRONTEND=noninteractive
      apt-get update -qq >&2
      apt-get install -y -qq postgresql >&2
      bin="$(find_bin)"
    fi
    mkdir -p "$dir"
    dir="$(cd "$dir" && pwd)"
    if [[ "$(id -u)" == 0 ]]; then
      chown postgres "$dir"
    fi
    port="$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')"
    as_owner "'$bin/initdb' -D '$dir/data' -A trust -U mycelium >'$dir/initdb.log' 2>&1"
    as_owner "'$bin/pg_ctl' -D '$dir/data' -o \"-p $port -k '$dir' -h 127.0.0.1\" -l '$dir/log' -w start >/dev/null"
    as_owner "'$bin/createdb' -h 127.0.0.1 -p $port -U mycelium reg"
    echo "postgresql://mycelium@127.0.0.1:$port/reg"
    ;;
  stop)
    bin="$(find_bin)"
    if [[ -d "$dir/data" ]]; then
      as_owner "'$bin/pg_ctl' -D '$dir/data' -m fast -w stop >/dev/null" || true
    fi
    ;;
  *)
    echo "usage: $0 start|stop DIR" >&2
    exit 2
    ;;
esac
