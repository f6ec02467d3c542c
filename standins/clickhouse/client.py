"""``clickhouse-client`` for the stand-in: the real client's common options, over HTTP.

``clickhouse-client [--host H] [--port P] [--user U] [--password P] [--database D]
[--query Q | -q Q] [--format F | -f F] [--multiquery | -n]`` — the query comes from
``--query`` or stdin; with both, stdin is the data of an INSERT. Output and exit codes are
the real client's: TabSeparated by default, and the server's error code on failure. The
native port is ignored: the stand-in only speaks HTTP, on 8123.
"""

from __future__ import annotations

import argparse
import base64
import http.client
import sys
from urllib.parse import urlencode


def parse(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="clickhouse-client", add_help=False)
    parser.add_argument("--help", action="help")
    parser.add_argument("--host", "-h", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=9000)
    parser.add_argument("--user", "-u", default="default")
    parser.add_argument("--password", default="")
    parser.add_argument("--database", "-d", default="")
    parser.add_argument("--query", "-q", default=None)
    parser.add_argument("--format", "-f", default=None)
    parser.add_argument("--multiquery", "-n", "--multiline", "-m", action="store_true")
    args, _unknown = parser.parse_known_args(argv)
    return args


def run(args: argparse.Namespace, query: str, data: bytes) -> int:
    params = {"query": query}
    if args.database:
        params["database"] = args.database
    if args.format:
        params["default_format"] = args.format
    token = base64.b64encode(f"{args.user}:{args.password}".encode()).decode()
    conn = http.client.HTTPConnection(args.host, 8123, timeout=300)
    conn.request(
        "POST", "/?" + urlencode(params), body=data, headers={"Authorization": f"Basic {token}"}
    )
    response = conn.getresponse()
    body = response.read()
    if response.status != 200:
        code = int(response.headers.get("X-ClickHouse-Exception-Code", "1"))
        sys.stderr.write(
            f"Received exception from server (version 24.12.1):\n{body.decode(errors='replace')}"
        )
        return code % 256 or 1
    sys.stdout.buffer.write(body)
    return 0


def main(argv: list[str]) -> int:
    if argv[:1] == ["client"]:  # `clickhouse client …`
        argv = argv[1:]
    args = parse(argv)
    stdin = b"" if sys.stdin is None or sys.stdin.isatty() else sys.stdin.buffer.read()
    if args.query is None:
        queries = (
            [q for q in stdin.decode().split(";\n") if q.strip()]
            if args.multiquery
            else [stdin.decode()]
        )
        data = b""
    else:
        queries = (
            [q for q in args.query.split(";") if q.strip()] if args.multiquery else [args.query]
        )
        data = stdin
    for query in queries:
        code = run(args, query, data)
        if code:
            return code
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
