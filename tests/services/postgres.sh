#!/usr/bin/env bash
# A throw-away PostgreSQL server on loopback for the test suite.
#
#   tests/services/postgres.sh start   install (Debian packages) if needed, start, print the store URL
#   tests/services/postgres.sh stop    stop the server and delete its data
#   tests/services/postgres.sh url     print the store URL
#   tests/services/postgres.sh pause   stop the server but keep its data (`start` brings it back)
#
# LSBENCH_PG_DIR and LSBENCH_PG_PORT select another instance, e.g. a private one for a test that stops its server.
#
# The server listens on 127.0.0.1 only and runs as the `postgres` user (PostgreSQL refuses to run as root). TCP
# logins need a password (scram-sha-256), so the tests see a real secret in the URL -- and can check that it never
# leaks into output, logs or generated files. The password file is created readable by its owner only.
set -euo pipefail

dir=${LSBENCH_PG_DIR:-/tmp/lsbench-postgres}
port=${LSBENCH_PG_PORT:-55432}
database=lsbench_test
user=lsbench

pg_bin() {
  local bin
  bin=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1)
  [[ -n $bin && -x $bin/initdb ]] || return 1
  echo "$bin"
}

install() {
  pg_bin >/dev/null && return 0
  echo "installing PostgreSQL (Debian packages)" >&2
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq >&2
  apt-get install -y -qq postgresql >&2
}

password() {
  if [[ ! -s $dir/password ]]; then
    mkdir -p "$dir"
    (umask 077 && head -c 18 /dev/urandom | base64 | tr -d '/+=' > "$dir/password")
  fi
  cat "$dir/password"
}

url() {
  echo "postgresql+psycopg://$user:$(password)@127.0.0.1:$port/$database"
}

as_postgres() {
  runuser -u postgres -- "$@"
}

start() {
  install
  local bin
  bin=$(pg_bin)
  mkdir -p "$dir"
  chown postgres "$dir"
  if ! as_postgres "$bin/pg_ctl" -D "$dir/data" status >/dev/null 2>&1; then
    if [[ ! -f $dir/data/PG_VERSION ]]; then
      rm -rf "$dir/data"
      as_postgres "$bin/initdb" -D "$dir/data" -U postgres --auth-local=trust --auth-host=scram-sha-256 \
        -E UTF8 --no-sync >/dev/null
    fi
    as_postgres "$bin/pg_ctl" -D "$dir/data" -l "$dir/server.log" -w -t 60 \
      -o "-c listen_addresses=127.0.0.1 -p $port -k $dir -c fsync=off -c max_connections=300" start >/dev/null
  fi
  local secret
  secret=$(password)
  as_postgres "$bin/psql" -h "$dir" -p "$port" -U postgres -d postgres -qAt -v ON_ERROR_STOP=1 <<SQL >/dev/null
DO \$\$ BEGIN
  IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = '$user') THEN CREATE ROLE $user LOGIN; END IF;
END \$\$;
ALTER ROLE $user PASSWORD '$secret' CREATEDB;
SQL
  if [[ -z $(as_postgres "$bin/psql" -h "$dir" -p "$port" -U postgres -d postgres -qAt \
        -c "SELECT 1 FROM pg_database WHERE datname = '$database'") ]]; then
    as_postgres "$bin/createdb" -h "$dir" -p "$port" -U postgres -O "$user" "$database"
  fi
  url
}

stop() {
  local bin
  bin=$(pg_bin) || return 0
  if [[ -d $dir/data ]]; then
    as_postgres "$bin/pg_ctl" -D "$dir/data" -m fast -w stop >/dev/null 2>&1 || true
  fi
  rm -rf "$dir"
}

pause() {
  local bin
  bin=$(pg_bin)
  as_postgres "$bin/pg_ctl" -D "$dir/data" -m fast -w stop >/dev/null
}

case ${1:-} in
  start) start ;;
  stop) stop ;;
  url) url ;;
  pause) pause ;;
  *) echo "usage: $0 start|stop|url|pause" >&2; exit 2 ;;
esac
