#!/bin/bash
# The clickhouse-server image's entrypoint (ClickHouse/docker-library server/24.12.6.70/
# entrypoint.sh), in short: as root it creates the server's directories (data, logs, tmp,
# user files, format schemas, every storage disk's path) and chowns each one whose top is not
# already the server's uid:gid (101:101, or 0:0 with CLICKHOUSE_RUN_AS_ROOT=1; nothing with
# CLICKHOUSE_DO_NOT_CHOWN=1 or under `docker run --user`), then runs the server as that
# uid:gid. Any other command runs as given.
set -eo pipefail

DO_CHOWN=1
if [[ "${CLICKHOUSE_RUN_AS_ROOT:=0}" = "1" || "${CLICKHOUSE_DO_NOT_CHOWN:-0}" = "1" ]]; then
  DO_CHOWN=0
fi
if [[ "$(id -u)" = "0" ]]; then
  if [[ "$CLICKHOUSE_RUN_AS_ROOT" = 1 ]]; then
    USER=0
    GROUP=0
  else
    USER="$(id -u clickhouse)"
    GROUP="$(id -g clickhouse)"
  fi
else
  USER="$(id -u)"
  GROUP="$(id -g)"
  DO_CHOWN=0
fi

as_server() { # the real image's `clickhouse su USER:GROUP …`
  if [[ "$(id -u)" = "0" && "$USER" != 0 ]]; then
    setpriv --reuid="$USER" --regid="$GROUP" --clear-groups -- "$@"
  else
    "$@"
  fi
}

create_directory_and_do_chown() {
  local dir=$1
  [ -z "$dir" ] && return
  if [ "$DO_CHOWN" = "1" ]; then
    mkdir=(mkdir)
  else
    mkdir=(as_server mkdir)
  fi
  if ! "${mkdir[@]}" -p "$dir"; then
    echo "Couldn't create necessary directory: $dir"
    exit 1
  fi
  if [ "$DO_CHOWN" = "1" ]; then
    # only when the top is not the server's already: a recursive chown may be slow
    if [ "$(stat -c %u "$dir")" != "$USER" ] || [ "$(stat -c %g "$dir")" != "$GROUP" ]; then
      chown -R "$USER:$GROUP" "$dir"
    fi
  fi
}

if [[ $# -lt 1 ]] || [[ "$1" == "--"* ]]; then
  # the directories the config names (`clickhouse extract-from-config` in the real image)
  mapfile -t DIRS < <(python3 /opt/clickhouse/server.py --directories)
  DATA_DIR="${DIRS[0]}"
  create_directory_and_do_chown "$DATA_DIR"
  cd "$DATA_DIR"
  for dir in "${DIRS[@]:1}"; do
    create_directory_and_do_chown "$dir"
  done
  exec setpriv --reuid="$USER" --regid="$GROUP" --clear-groups -- \
    python3 /opt/clickhouse/server.py "$@"
fi

exec "$@"
