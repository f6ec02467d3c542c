#!/bin/sh
# The official postgres image's entrypoint, in short: on first start (no PG_VERSION) it runs
# initdb with POSTGRES_USER/POSTGRES_PASSWORD, opens the network with password auth,
# creates POSTGRES_DB, runs /docker-entrypoint-initdb.d, then execs the command as postgres.
# The password goes to initdb through a private file, never a command line or the log;
# each of POSTGRES_PASSWORD/USER/DB/INITDB_ARGS may come from a file instead (VAR_FILE).
set -eu

log() { printf '%s\n' "$*" >&2; }

case "${1:-postgres}" in -*) set -- postgres "$@" ;; esac
[ "$#" -gt 0 ] || set -- postgres
[ "$1" = postgres ] || exec "$@"

PGDATA="${PGDATA:-/var/lib/postgresql/data}"
export PGDATA

if [ "$(id -u)" = 0 ]; then
  mkdir -p "$PGDATA" /var/run/postgresql
  chmod 00700 "$PGDATA" || :
  find "$PGDATA" ! -user postgres -exec chown postgres:postgres '{}' +
  chown postgres:postgres /var/run/postgresql
  chmod 3777 /var/run/postgresql
  exec setpriv --reuid=postgres --regid=postgres --init-groups "$0" "$@"
fi

# file_env VAR: VAR's value from the file VAR_FILE names, as the official image's does
# shellcheck source=../_shared/file-env.sh
. /usr/local/lib/vpsctl/file-env.sh

file_env POSTGRES_PASSWORD
file_env POSTGRES_USER
file_env POSTGRES_DB
file_env POSTGRES_INITDB_ARGS

if [ ! -s "$PGDATA/PG_VERSION" ]; then
  if [ -z "${POSTGRES_PASSWORD:-}" ] && [ "${POSTGRES_HOST_AUTH_METHOD:-}" != trust ]; then
    cat >&2 <<'EOE'
Error: Database is uninitialized and superuser password is not specified.
       You must specify POSTGRES_PASSWORD to a non-empty value for the
       superuser. For example, "-e POSTGRES_PASSWORD=password" on "docker run".

       You may also use "POSTGRES_HOST_AUTH_METHOD=trust" to allow all
       connections without a password. This is *not* recommended.

       See PostgreSQL documentation about "trust":
       https://www.postgresql.org/docs/current/auth-trust.html
EOE
    exit 1
  fi
  user="${POSTGRES_USER:-postgres}"
  db="${POSTGRES_DB:-$user}"
  pwfile="$(mktemp)"
  chmod 600 "$pwfile"
  printf '%s\n' "${POSTGRES_PASSWORD:-}" >"$pwfile"
  # shellcheck disable=SC2086 # POSTGRES_INITDB_ARGS is a list of options, as upstream
  initdb --username="$user" --pwfile="$pwfile" --encoding=UTF8 --locale-provider=libc \
    --locale=C.UTF-8 ${POSTGRES_INITDB_ARGS:-} -D "$PGDATA" >/dev/null
  rm -f "$pwfile"
  printf "\nlisten_addresses = '*'\n" >>"$PGDATA/postgresql.conf"
  printf '\nhost all all all %s\n' "${POSTGRES_HOST_AUTH_METHOD:-scram-sha-256}" >>"$PGDATA/pg_hba.conf"

  pg_ctl -D "$PGDATA" -o "-c listen_addresses='' -p 5432" -w -s start
  export PGUSER="$user"
  if [ "$db" != postgres ]; then
    printf 'CREATE DATABASE :"db";\n' | psql -q -v ON_ERROR_STOP=1 --no-password --no-psqlrc \
      --dbname postgres --set db="$db"
  fi
  for f in /docker-entrypoint-initdb.d/*; do
    case "$f" in
      *.sh) log "running $f"; . "$f" ;;
      *.sql) log "running $f"; psql -v ON_ERROR_STOP=1 --no-password --no-psqlrc --dbname "$db" -f "$f" ;;
      *.sql.gz) log "running $f"; gunzip -c "$f" | psql -v ON_ERROR_STOP=1 --no-password --no-psqlrc --dbname "$db" ;;
      *) if [ -e "$f" ]; then log "ignoring $f"; fi ;;
    esac
  done
  unset PGUSER
  pg_ctl -D "$PGDATA" -m fast -w -s stop
  log ""
  log "PostgreSQL init process complete; ready for start up."
  log ""
else
  log ""
  log "PostgreSQL Database directory appears to contain a database; Skipping initialization"
  log ""
fi

exec "$@"
