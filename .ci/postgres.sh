# shellcheck shell=bash
# A throwaway PostgreSQL server on localhost for the multi-worker sweep tests.
#
# SOURCED by .ci/run (under `set -euo pipefail`); also usable by hand:
#   bash -c 'set -euo pipefail; source .ci/postgres.sh; psql "${HAMGRAPH_TEST_POSTGRES_URL/+psycopg/}" -c "select 1"'
#
# - installs the OS package `postgresql` when initdb / pg_ctl are missing (Debian/Ubuntu apt);
# - initdb's a fresh cluster in a temp dir owned by an unprivileged user (the server refuses to
#   run as root): `postgres` when we are root (created if missing), else the current user;
# - starts it on 127.0.0.1 on the first free port from $HAMGRAPH_PG_PORT (default 54329), with
#   its unix socket in the temp dir, trust auth, and no fsync (a test server);
# - creates the database hamgraph_test and exports
#   HAMGRAPH_TEST_POSTGRES_URL=postgresql+psycopg://postgres@127.0.0.1:PORT/hamgraph_test;
# - stops the server and removes the temp dir on exit (`pg_stop`, chained before any EXIT trap
#   that was already set).
# Any failure stops the sourcing script (set -e): CI configured for PostgreSQL must not
# silently run without it.

_pg_find_bin() {
  local dir
  if command -v initdb >/dev/null 2>&1 && command -v pg_ctl >/dev/null 2>&1; then
    dirname "$(readlink -f "$(command -v pg_ctl)")"
    return 0
  fi
  for dir in $(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V -r); do
    if [ -x "$dir/initdb" ] && [ -x "$dir/pg_ctl" ]; then
      echo "$dir"
      return 0
    fi
  done
  return 1
}

_pg_port_free() {  # nothing accepts TCP connections on 127.0.0.1:$1
  ! (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null
}

_pg_as_user() {  # run a command as the server's unprivileged user
  if [ "$(id -u)" -eq 0 ]; then
    if command -v runuser >/dev/null 2>&1; then
      runuser -u "$PG_USER" -- "$@"
    else
      su -s /bin/sh "$PG_USER" -c "$(printf '%q ' "$@")"
    fi
  else
    "$@"
  fi
}

pg_stop() {
  if [ -n "${PG_TMP:-}" ] && [ -d "$PG_TMP" ]; then
    if [ -f "$PG_TMP/data/postmaster.pid" ]; then
      _pg_as_user "$PG_BIN/pg_ctl" -D "$PG_TMP/data" -m immediate -w stop >/dev/null 2>&1 || true
    fi
    rm -rf "$PG_TMP"
  fi
  PG_TMP=""
}

PG_BIN="$(_pg_find_bin || true)"
if [ -z "$PG_BIN" ]; then
  echo "postgres.sh: initdb/pg_ctl not found; installing the OS package postgresql" >&2
  if [ "$(id -u)" -eq 0 ]; then
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postgresql >/dev/null
  else
    sudo apt-get update -qq && sudo DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postgresql >/dev/null
  fi
  PG_BIN="$(_pg_find_bin)"
fi

if [ "$(id -u)" -eq 0 ]; then
  PG_USER=postgres
  if ! id "$PG_USER" >/dev/null 2>&1; then
    useradd --system --no-create-home --shell /usr/sbin/nologin "$PG_USER"
  fi
else
  PG_USER="$(id -un)"
fi

PG_TMP="$(mktemp -d "${TMPDIR:-/tmp}/hamgraph-pg.XXXXXX")"
chmod 755 "$PG_TMP"
if [ "$(id -u)" -eq 0 ]; then chown "$PG_USER" "$PG_TMP"; fi

_pg_prev_exit_trap="$(trap -p EXIT | sed -E "s/^trap -- '(.*)' EXIT\$/\\1/")"
# shellcheck disable=SC2064  # expand the previous trap now
trap "pg_stop; ${_pg_prev_exit_trap}" EXIT

PG_PORT="${HAMGRAPH_PG_PORT:-54329}"
while ! _pg_port_free "$PG_PORT"; do
  PG_PORT=$((PG_PORT + 1))
done

(cd / && _pg_as_user "$PG_BIN/initdb" -D "$PG_TMP/data" -U postgres --auth=trust \
  --encoding=UTF8 --no-locale >"$PG_TMP/initdb.log" 2>&1) || {
  cat "$PG_TMP/initdb.log" >&2
  echo "postgres.sh: initdb failed" >&2
  false
}
(cd / && _pg_as_user "$PG_BIN/pg_ctl" -D "$PG_TMP/data" -l "$PG_TMP/server.log" -w -t 60 \
  -o "-c listen_addresses=127.0.0.1 -p $PG_PORT -k $PG_TMP -c fsync=off -c synchronous_commit=off -c full_page_writes=off -c max_connections=200" \
  start >/dev/null) || {
  cat "$PG_TMP/server.log" >&2 || true
  echo "postgres.sh: the server did not start" >&2
  false
}

_pg_ready=0
for _ in $(seq 1 60); do
  if pg_isready -q -h 127.0.0.1 -p "$PG_PORT" 2>/dev/null \
    || "$PG_BIN/pg_isready" -q -h 127.0.0.1 -p "$PG_PORT" 2>/dev/null; then
    _pg_ready=1
    break
  fi
  sleep 0.5
done
if [ "$_pg_ready" -ne 1 ]; then
  cat "$PG_TMP/server.log" >&2 || true
  echo "postgres.sh: the server is not ready on 127.0.0.1:$PG_PORT" >&2
  false
fi

"$PG_BIN/psql" -q -h 127.0.0.1 -p "$PG_PORT" -U postgres -d postgres \
  -c "CREATE DATABASE hamgraph_test" >/dev/null

export HAMGRAPH_TEST_POSTGRES_URL="postgresql+psycopg://postgres@127.0.0.1:${PG_PORT}/hamgraph_test"
echo "HAMGRAPH_TEST_POSTGRES_URL=$HAMGRAPH_TEST_POSTGRES_URL (server in $PG_TMP)"
