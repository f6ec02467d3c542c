"""A database password changed inside its running container (a secret rotation).

The command line holds no secret: the SQL (with the new password) and any password needed to
sign in travel on stdin, as :func:`password_stdin` lays them out. Postgres is reached over the
container's local socket, which the official image trusts (no password); MySQL/MariaDB as
``root`` over its socket, trying the root password of the container's environment (what the
running database was initialised or last rotated with), then the candidates on stdin (the
box's and the store's root passwords: a rotation interrupted after its ALTER is finished by
the next apply, whichever password the database holds by then).
"""

from __future__ import annotations

from collections.abc import Sequence

from vpsctl.host.commands import Argv

_PSQL = 'exec psql -X -q -v ON_ERROR_STOP=1 -U "$1" -d postgres'

_MYSQL = (
    "IFS= read -r a; IFS= read -r b; sql=$(cat); "
    'for pw in "${MYSQL_ROOT_PASSWORD:-${MARIADB_ROOT_PASSWORD:-}}" "$a" "$b"; do '
    '[ -n "$pw" ] || continue; '
    'if printf "%s\\n" "$sql" | MYSQL_PWD="$pw" mysql -uroot 2>/dev/null; then exit 0; fi; '
    "done; echo 'no root password opens the database' >&2; exit 1"
)


def sql_literal(value: str) -> str:
    """``value`` as a SQL string literal (quotes doubled; callers refuse backslashes)."""
    return "'" + value.replace("'", "''") + "'"


def _ident(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def postgres_sql(users: Sequence[str], password: str) -> str:
    """``ALTER ROLE … PASSWORD …`` for each of ``users`` (sent on stdin, never argv)."""
    return "".join(f"ALTER ROLE {_ident(u)} PASSWORD {sql_literal(password)};\n" for u in users)


def mysql_sql(accounts: Sequence[tuple[str, str]], password: str) -> str:
    """``ALTER USER IF EXISTS 'u'@'h' IDENTIFIED BY …`` for each account (stdin only)."""
    return "".join(
        f"ALTER USER IF EXISTS {sql_literal(u)}@{sql_literal(h)} "
        f"IDENTIFIED BY {sql_literal(password)};\n"
        for u, h in accounts
    )


def postgres_alter(container: str, superuser: str) -> Argv:
    """``psql`` in ``container`` as ``superuser`` over the local socket, SQL on stdin."""
    return ["docker", "exec", "-i", container, "sh", "-c", _PSQL, "sh", superuser]


def mysql_alter(container: str) -> Argv:
    """``mysql -uroot`` in ``container``; stdin: two candidate root passwords (lines, may
    be empty), then the SQL."""
    return ["docker", "exec", "-i", container, "sh", "-c", _MYSQL]


def mysql_stdin(candidates: Sequence[str], sql: str) -> bytes:
    """What :func:`mysql_alter` reads: two candidate lines, then the SQL."""
    lines = [*list(candidates)[:2], "", ""][:2]
    return ("\n".join(lines) + "\n" + sql).encode()
