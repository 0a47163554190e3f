#!/usr/bin/env bash
# The official image's contract, reduced to what docker-compose.yml uses: on an empty PGDATA,
# initdb with POSTGRES_USER/POSTGRES_PASSWORD (scram-sha-256 over TCP), create POSTGRES_DB,
# run /docker-entrypoint-initdb.d/*.sql once; then exec `postgres "$@"`.
set -euo pipefail

if [ "${1:-}" != postgres ]; then
  exec "$@"
fi
shift
user=${POSTGRES_USER:-postgres}
db=${POSTGRES_DB:-$user}

if [ ! -s "$PGDATA/PG_VERSION" ]; then
  : "${POSTGRES_PASSWORD:?POSTGRES_PASSWORD must be set}"
  pwfile=$(mktemp)
  printf '%s\n' "$POSTGRES_PASSWORD" >"$pwfile"
  initdb -D "$PGDATA" -U "$user" --pwfile="$pwfile" --encoding=UTF8 --locale=C.UTF-8 \
    --auth-local=trust --auth-host=scram-sha-256 >/dev/null
  rm -f "$pwfile"
  # A private server on the unix socket only, so nobody connects before the init scripts ran.
  pg_ctl -D "$PGDATA" -o "-c listen_addresses=''" -w start >/dev/null
  psql=(psql -v ON_ERROR_STOP=1 --no-psqlrc -q -U "$user")
  if [ "$db" != postgres ]; then
    "${psql[@]}" -d postgres -c "CREATE DATABASE \"$db\""
  fi
  for script in /docker-entrypoint-initdb.d/*; do
    case "$script" in
      *.sql) echo "entrypoint: running $script"; "${psql[@]}" -d "$db" -f "$script" ;;
      *.sh) echo "entrypoint: sourcing $script"; . "$script" ;;
      *) ;;
    esac
  done
  pg_ctl -D "$PGDATA" -m fast -w stop >/dev/null
  echo "entrypoint: initialised $PGDATA"
fi
exec postgres -D "$PGDATA" "$@"
