#!/bin/sh
# The real image's entrypoint ends in `exec "$@"`. As PID 1, the stack's `sh -c "./listmonk
# --install … && ./listmonk --upgrade … && ./listmonk"` would then ignore SIGTERM (PID 1 has
# no default signal actions) and `docker stop` would wait 10 s to kill it: the stand-in runs
# such a command in its own process group and passes SIGTERM/SIGINT on to all of it.
set -e

if [ "$$" = 1 ] && [ "$1" != ./listmonk ]; then
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
fi
exec "$@"
