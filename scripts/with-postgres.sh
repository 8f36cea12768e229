#!/usr/bin/env bash
# Runs a command with DATABASE_URL pointing at a PostgreSQL the tests may use:
#   1. DATABASE_URL, when it is set;
#   2. else the server on 127.0.0.1:5432, when one answers;
#   3. else a throwaway cluster of our own (installing PostgreSQL with apt when root and missing),
#      stopped and deleted when the command ends.
# It says which one it used.
set -euo pipefail

reachable() { (exec 3<>"/dev/tcp/$1/$2") 2>/dev/null; }

if [[ -n "${DATABASE_URL:-}" ]]; then
  echo "with-postgres: using DATABASE_URL" >&2
  exec "$@"
fi

if reachable 127.0.0.1 5432; then
  export DATABASE_URL="postgres://postgres@127.0.0.1:5432/postgres"
  echo "with-postgres: using the PostgreSQL server on 127.0.0.1:5432" >&2
  exec "$@"
fi

pg_bin() { ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1; }
if [[ -z "$(pg_bin)" ]]; then
  if [[ "$(id -u)" != 0 ]] || ! command -v apt-get >/dev/null; then
    echo "with-postgres: no PostgreSQL reachable and cannot install one: set DATABASE_URL" >&2
    exit 1
  fi
  echo "with-postgres: installing PostgreSQL with apt-get" >&2
  apt-get update -qq >&2
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postgresql >&2
fi
bin="$(pg_bin)"
port=55432
dir="$(mktemp -d /tmp/cellplane-pg.XXXXXX)"
run_as=()
if [[ "$(id -u)" == 0 ]]; then
  # initdb and postgres refuse to run as root.
  id postgres >/dev/null 2>&1 || useradd --system --no-create-home postgres
  chown postgres "$dir"
  run_as=(runuser -u postgres --)
fi
cleanup() {
  "${run_as[@]}" "$bin/pg_ctl" -D "$dir/data" -m immediate stop >/dev/null 2>&1 || true
  rm -rf "$dir"
}
trap cleanup EXIT
"${run_as[@]}" "$bin/initdb" -D "$dir/data" -U postgres --auth=trust >/dev/null
"${run_as[@]}" "$bin/pg_ctl" -D "$dir/data" -l "$dir/log" -w \
  -o "-p $port -k $dir -c listen_addresses=127.0.0.1 -c max_connections=200" start >/dev/null
export DATABASE_URL="postgres://postgres@127.0.0.1:$port/postgres"
echo "with-postgres: started a throwaway PostgreSQL on 127.0.0.1:$port" >&2
"$@"
