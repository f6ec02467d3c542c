#!/bin/bash
# Pebble and its mock DNS in one container: Pebble resolves every challenged name through
# pebble-challtestsrv, which answers only the A records vpsctl sets (a box's address per
# name) and nothing else (no default address: an unknown name fails validation clearly).
# The container stops when either process stops; `vpsctl sandbox up` starts it again.
set -euo pipefail
# the TLS certificate of the directory and management API, copied in by vpsctl.pebble
if [ ! -s /etc/pebble/tls/cert.pem ] || [ ! -s /etc/pebble/tls/key.pem ]; then
  echo "vpsctl-pebble: /etc/pebble/tls/{cert,key}.pem are missing (vpsctl copies them in)" >&2
  exit 1
fi
trap 'kill $(jobs -p) 2>/dev/null; exit 0' TERM INT
pebble-challtestsrv -defaultIPv4 "" -defaultIPv6 "" -dns01 127.0.0.1:8053 \
  -management 0.0.0.0:8055 -http01 "" -https01 "" -tlsalpn01 "" &
pebble -config /etc/pebble/config.json -dnsserver 127.0.0.1:8053 &
wait -n
echo "vpsctl-pebble: a process stopped; stopping the container" >&2
exit 1
