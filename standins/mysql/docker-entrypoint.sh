#!/bin/sh
# The official mysql image's entrypoint, for MariaDB: on first start (empty datadir) it
# creates the system tables, sets the root password (root@localhost and root@$MYSQL_ROOT_HOST),
# creates MYSQL_DATABASE and MYSQL_USER with MYSQL_PASSWORD, runs /docker-entrypoint-initdb.d,
# then execs the command. Secret values never reach the log or a command line; each of
# MYSQL_ROOT_PASSWORD/PASSWORD/USER/DATABASE/ROOT_HOST may come from a file (VAR_FILE).
set -eu

log() { printf '%s [Note] [Entrypoint]: %s\n' "$(date -u +%Y-%m-%dT%H:%M:%SZ)" "$*" >&2; }
warn() { printf '%s [Warn] [Entrypoint]: %s\n' "$(date -u +%Y-%m-%dT%H:%M:%SZ)" "$*" >&2; }
die() { printf '%s [ERROR] [Entrypoint]: %s\n' "$(date -u +%Y-%m-%dT%H:%M:%SZ)" "$*" >&2; exit 1; }

# An option as first argument means "mysqld OPTIONS", as in the official image.
case "${1:-mysqld}" in -*) set -- mysqld "$@" ;; esac
[ "$#" -gt 0 ] || set -- mysqld
case "$1" in
  mysqld | mariadbd) ;;
  *) exec "$@" ;;
esac

# file_env VAR: VAR's value from the file VAR_FILE names, as the official image's does
# shellcheck source=../_shared/file-env.sh
. /usr/local/lib/vpsctl/file-env.sh

file_env MYSQL_ROOT_HOST
file_env MYSQL_DATABASE
file_env MYSQL_USER
file_env MYSQL_PASSWORD
file_env MYSQL_ROOT_PASSWORD

DATADIR=/var/lib/mysql
SOCKET=/run/mysqld/mysqld.sock
mkdir -p "$DATADIR" /run/mysqld
chown mysql:mysql /run/mysqld
find "$DATADIR" ! -user mysql -exec chown mysql:mysql '{}' +

# SQL string literal: backslashes and quotes escaped.
sql_string() { printf "'%s'" "$(printf '%s' "$1" | sed -e 's/\\/\\\\/g' -e "s/'/\\\\'/g")"; }
# SQL identifier.
sql_ident() { printf '`%s`' "$(printf '%s' "$1" | sed -e 's/`/``/g')"; }

init_datadir() {
  root_pw="${MYSQL_ROOT_PASSWORD:-}"
  if [ -z "$root_pw" ] && [ -z "${MYSQL_ALLOW_EMPTY_PASSWORD:-}" ] && [ -z "${MYSQL_RANDOM_ROOT_PASSWORD:-}" ]; then
    die "Database is uninitialized and password option is not specified
    You need to specify one of the following as an environment variable:
    - MYSQL_ROOT_PASSWORD
    - MYSQL_ALLOW_EMPTY_PASSWORD
    - MYSQL_RANDOM_ROOT_PASSWORD"
  fi
  if [ "${MYSQL_USER:-}" = root ]; then
    die 'MYSQL_USER="root", MYSQL_USER and MYSQL_PASSWORD are for configuring a regular user and cannot be used for the root user
    Remove MYSQL_USER="root" and use one of the following to control the root user password:
    - MYSQL_ROOT_PASSWORD
    - MYSQL_ALLOW_EMPTY_PASSWORD
    - MYSQL_RANDOM_ROOT_PASSWORD'
  fi
  if [ -n "${MYSQL_RANDOM_ROOT_PASSWORD:-}" ] && [ -z "$root_pw" ]; then
    root_pw="$(head -c 24 /dev/urandom | base64 | tr -d '/+=')"
    log "GENERATED ROOT PASSWORD: $root_pw"
  fi

  log "Initializing database files"
  if ! out="$(mariadb-install-db --user=mysql --datadir="$DATADIR" --skip-test-db \
      --auth-root-authentication-method=normal --skip-name-resolve --rpm 2>&1)"; then
    printf '%s\n' "$out" >&2
    die "mariadb-install-db failed"
  fi
  log "Database files initialized"

  log "Starting temporary server"
  shift  # the temporary server gets the command's options, but never the network
  mariadbd --user=mysql --datadir="$DATADIR" "$@" --skip-networking \
    --socket="$SOCKET" --skip-log-bin >/dev/null 2>&1 &
  pid=$!
  i=0
  until mariadb-admin --socket="$SOCKET" -uroot --silent ping >/dev/null 2>&1; do
    i=$((i + 1))
    if [ "$i" -gt 60 ] || ! kill -0 "$pid" 2>/dev/null; then die "Unable to start server."; fi
    sleep 1
  done
  log "Temporary server started."

  root_host="${MYSQL_ROOT_HOST:-%}"
  {
    printf '%s\n' "SET @@SESSION.SQL_LOG_BIN=0;"
    printf '%s\n' "DROP USER IF EXISTS ''@'localhost', ''@$(sql_string "$(hostname)"), 'root'@$(sql_string "$(hostname)"), 'root'@'127.0.0.1', 'root'@'::1';"
    printf '%s\n' "ALTER USER 'root'@'localhost' IDENTIFIED BY $(sql_string "$root_pw");"
    if [ "$root_host" != localhost ]; then
      printf '%s\n' "CREATE USER IF NOT EXISTS 'root'@$(sql_string "$root_host") IDENTIFIED BY $(sql_string "$root_pw");"
      printf '%s\n' "GRANT ALL ON *.* TO 'root'@$(sql_string "$root_host") WITH GRANT OPTION;"
    fi
    if [ -n "${MYSQL_DATABASE:-}" ]; then
      printf '%s\n' "CREATE DATABASE IF NOT EXISTS $(sql_ident "$MYSQL_DATABASE");"
    fi
    if [ -n "${MYSQL_USER:-}" ] && [ -n "${MYSQL_PASSWORD:-}" ]; then
      printf '%s\n' "CREATE USER $(sql_string "$MYSQL_USER")@'%' IDENTIFIED BY $(sql_string "$MYSQL_PASSWORD");"
      if [ -n "${MYSQL_DATABASE:-}" ]; then
        printf '%s\n' "GRANT ALL ON $(sql_ident "$MYSQL_DATABASE").* TO $(sql_string "$MYSQL_USER")@'%';"
      fi
    fi
  } | mariadb --protocol=socket --socket="$SOCKET" -uroot --batch || die "setting up users failed"
  if [ -n "${MYSQL_USER:-}" ] && [ -z "${MYSQL_PASSWORD:-}" ]; then
    warn "MYSQL_USER specified, but missing MYSQL_PASSWORD; MYSQL_USER will not be created"
  elif [ -n "${MYSQL_DATABASE:-}" ] && [ -n "${MYSQL_USER:-}" ]; then
    log "Creating user ${MYSQL_USER} with all privileges on ${MYSQL_DATABASE}"
  fi

  # root now has a password: clients get it in their environment (MYSQL_PWD), never in argv
  for f in /docker-entrypoint-initdb.d/*; do
    case "$f" in
      *.sh) log "running $f"; . "$f" ;;
      *.sql) log "running $f"; MYSQL_PWD="$root_pw" mariadb --socket="$SOCKET" -uroot ${MYSQL_DATABASE:+"$MYSQL_DATABASE"} <"$f" ;;
      *.sql.gz) log "running $f"; gunzip -c "$f" | MYSQL_PWD="$root_pw" mariadb --socket="$SOCKET" -uroot ${MYSQL_DATABASE:+"$MYSQL_DATABASE"} ;;
      *) if [ -e "$f" ]; then log "ignoring $f"; fi ;;
    esac
  done

  log "Stopping temporary server"
  MYSQL_PWD="$root_pw" mariadb-admin --socket="$SOCKET" -uroot shutdown
  wait "$pid" || true
  log "Temporary server stopped"
  log "MySQL init process done. Ready for start up."
}

if [ ! -d "$DATADIR/mysql" ]; then
  init_datadir "$@"
fi

log "Starting the server ($1 is MariaDB $(mariadbd --version | awk '{print $3}'))"
exec "$@"
