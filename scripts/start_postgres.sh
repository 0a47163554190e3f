#!/usr/bin/env bash
# Start a local PostgreSQL for tests and development; safe to run again at any time.
#
#   eval "$(scripts/start_postgres.sh)"     # installs if missing, starts, prints exports
#   scripts/start_postgres.sh --stop        # stops the cluster it would start
#
# Installs PostgreSQL from Debian when it is missing, starts the newest installed cluster,
# waits until it accepts connections, creates the role and the test databases when they are
# missing, then prints `export NAME=URL` lines on stdout (everything else goes to stderr).
# Overrides: PG_USER, PG_PASSWORD, PG_HOST (default 127.0.0.1), PG_DATABASES.
set -euo pipefail

PG_USER="${PG_USER:-mlops}"
PG_PASSWORD="${PG_PASSWORD:-mlops}"
PG_HOST="${PG_HOST:-127.0.0.1}"
PG_DATABASES="${PG_DATABASES:-mlops_test mlflow_test dagster_test}"

# shellcheck source=scripts/lib/daemons.sh
source "$(dirname "$0")/lib/daemons.sh"
need_root "installing and starting PostgreSQL" "$@"

for name in PG_USER PG_PASSWORD; do
  [[ "${!name}" =~ ^[A-Za-z0-9_]+$ ]] || die "$name may only hold letters, digits and _"
done
for db in $PG_DATABASES; do
  [[ "$db" =~ ^[A-Za-z0-9_]+$ ]] || die "database name '$db' may only hold letters, digits and _"
done

serialise

install_postgres() {
  log "PostgreSQL is not installed; installing it from Debian (apt-get)"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq >&2
  apt-get install -y -qq postgresql >&2 9>&-
}

newest_version() {
  # Newest PostgreSQL major version with server binaries installed.
  local dir
  dir="$(ls -d /usr/lib/postgresql/*/bin/postgres 2>/dev/null | sort -V | tail -n1 || true)"
  [[ -n "$dir" ]] || return 1
  basename "$(dirname "$(dirname "$dir")")"
}

if ! command -v pg_ctlcluster >/dev/null 2>&1 || ! newest_version >/dev/null; then
  install_postgres
fi
PG_VERSION="$(newest_version)" || die "no PostgreSQL server found after installing"

# The 'main' cluster of that version; create it when the package did not (e.g. removed).
if ! pg_lsclusters -h | awk -v v="$PG_VERSION" '$1 == v && $2 == "main" {found=1} END {exit !found}'; then
  log "creating cluster $PG_VERSION/main"
  pg_createcluster "$PG_VERSION" main >&2
fi
PG_PORT="$(pg_lsclusters -h | awk -v v="$PG_VERSION" '$1 == v && $2 == "main" {print $3}')"
STATUS="$(pg_lsclusters -h | awk -v v="$PG_VERSION" '$1 == v && $2 == "main" {print $4}')"

if [[ "${1:-}" == "--stop" ]]; then
  if [[ "$STATUS" == online* ]]; then
    log "stopping cluster $PG_VERSION/main"
    pg_ctlcluster "$PG_VERSION" main stop >&2 9>&-
  else
    log "cluster $PG_VERSION/main is not running"
  fi
  exit 0
fi

# Containers often lack the tmpfiles.d setup that creates the socket directory.
install -d -o postgres -g postgres -m 2775 /var/run/postgresql

if [[ "$STATUS" != online* ]]; then
  log "starting cluster $PG_VERSION/main on port $PG_PORT"
  # The server holds none of our descriptors (lib/daemons.sh).
  (
    close_inherited_fds
    exec pg_ctlcluster "$PG_VERSION" main start >&2
  )
else
  log "cluster $PG_VERSION/main already running on port $PG_PORT"
fi

for _ in $(seq 1 60); do
  if pg_isready -q -h "$PG_HOST" -p "$PG_PORT"; then
    break
  fi
  sleep 0.5
done
pg_isready -q -h "$PG_HOST" -p "$PG_PORT" || die "PostgreSQL did not accept connections on $PG_HOST:$PG_PORT within 30 s (see /var/log/postgresql/postgresql-$PG_VERSION-main.log)"

psql_admin() {
  runuser -u postgres -- psql -X -q -v ON_ERROR_STOP=1 -p "$PG_PORT" -d postgres "$@"
}

if [[ "$(psql_admin -tAc "SELECT 1 FROM pg_roles WHERE rolname = '$PG_USER'")" != "1" ]]; then
  log "creating role $PG_USER"
  psql_admin -c "CREATE ROLE \"$PG_USER\" LOGIN PASSWORD '$PG_PASSWORD' CREATEDB"
else
  # Keep the password in step with what this script prints.
  psql_admin -c "ALTER ROLE \"$PG_USER\" LOGIN PASSWORD '$PG_PASSWORD'"
fi

for db in $PG_DATABASES; do
  if [[ "$(psql_admin -tAc "SELECT 1 FROM pg_database WHERE datname = '$db'")" != "1" ]]; then
    log "creating database $db"
    psql_admin -c "CREATE DATABASE \"$db\" OWNER \"$PG_USER\""
  fi
done

# Prove the printed credentials work over TCP (password auth), not just the admin socket.
PGPASSWORD="$PG_PASSWORD" psql -X -q -h "$PG_HOST" -p "$PG_PORT" -U "$PG_USER" \
  -d "$(echo "$PG_DATABASES" | awk '{print $1}')" -tAc "SELECT 1" >/dev/null \
  || die "cannot log in as $PG_USER over TCP; check pg_hba.conf"

log "ready: PostgreSQL $PG_VERSION on $PG_HOST:$PG_PORT, databases: $PG_DATABASES"
base="$PG_USER:$PG_PASSWORD@$PG_HOST:$PG_PORT"
for db in $PG_DATABASES; do
  case "$db" in
    mlops_test) echo "export MLOPS_TEST_PG_URL=postgresql+psycopg2://$base/$db" ;;
    mlflow_test) echo "export MLFLOW_TEST_PG_URL=postgresql+psycopg2://$base/$db" ;;
    # dagster-postgres needs psycopg2 named: SQLAlchemy 2.1 maps plain postgresql:// to
    # psycopg 3, whose server-side parameters break dagster-postgres' NOTIFY.
    dagster_test) echo "export DAGSTER_TEST_PG_URL=postgresql+psycopg2://$base/$db" ;;
    *) echo "export PG_URL_$(echo "$db" | tr '[:lower:]' '[:upper:]')=postgresql+psycopg2://$base/$db" ;;
  esac
done
