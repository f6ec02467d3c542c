#!/usr/bin/env bash
# Fetch Debian 13's docker compose v2 (the one the target host runs) into .venv/tools/, for
# `docker compose config` checks of rendered files on a machine without a Docker engine.
# Pinned by version and sha256 from Debian's Packages index; cached.
set -euo pipefail
dest=${1:-.venv/tools}
version=2.26.1-4
case "$(uname -m)" in
  x86_64) arch=amd64; sum=47681197cb2b1ab88206b42a1a92fc75f50d9530a6322d03494a473eed0408ea ;;
  aarch64) arch=arm64; sum=bbafaa666f3e7fa00ad36f2a8bab889f1c791ca8743d674e7267a3d07203869c ;;
  *) echo "get-compose: unsupported machine $(uname -m)" >&2; exit 1 ;;
esac
bin="$dest/docker-compose"
if [ -x "$bin" ] && "$bin" version --short 2>/dev/null | grep -q '^2\.26\.1'; then exit 0; fi
mkdir -p "$dest"
tmp=$(mktemp -d); trap 'rm -rf "$tmp"' EXIT
url="http://deb.debian.org/debian/pool/main/d/docker-compose/docker-compose_${version}_${arch}.deb"
curl -fsSL --retry 3 -o "$tmp/compose.deb" "$url"
echo "$sum  $tmp/compose.deb" | sha256sum -c --quiet -
dpkg-deb -x "$tmp/compose.deb" "$tmp/x"
found="$tmp/x/usr/libexec/docker/cli-plugins/docker-compose"
install -m 0755 "$found" "$bin"
"$bin" version
