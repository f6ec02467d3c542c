#!/bin/sh
# The real image's /entrypoint.sh: `run` starts the app, `db X` runs /app/X.sh (createdb,
# migrate), anything else is executed as given (so `sh -c "…"` works as a command).
set -e

if [ "$1" = 'run' ]; then
  exec python3 /app/plausible.py run
elif [ "$1" = 'db' ]; then
  exec /app/"$2".sh
elif [ "$$" = 1 ]; then
  # Stand-in addition: as PID 1, a `sh -c "a && b && run"` command would ignore SIGTERM
  # (PID 1 has no default signal actions) and `docker stop` would wait 10 s to kill it. Run
  # the command in its own process group and pass SIGTERM/SIGINT on to all of it.
  setsid "$@" &
  child=$!
  trap 'kill -TERM -- "-$child" 2>/dev/null || kill -TERM "$child" 2>/dev/null || :' TERM INT
  status=0
  wait "$child" || status=$?
  while kill -0 "$child" 2>/dev/null; do
    status=0
    wait "$child" || status=$?
  done
  exit "$status"
else
  exec "$@"
fi
