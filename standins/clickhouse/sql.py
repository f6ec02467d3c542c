"""A small ClickHouse SQL dialect over rows kept in SQLite (the stand-in's query engine).

Enough of ClickHouse for what Plausible and vpsctl do with it: databases and tables with
typed columns, ``INSERT … FORMAT JSONEachRow|TabSeparated|CSV`` or ``VALUES``, ``SELECT``
with ``count()``/``uniq()``/``sum()``… over one table with ``WHERE``/``GROUP BY``/
``ORDER BY``/``LIMIT`` evaluated in Python, ``system.tables``/``system.databases``,
``SHOW``/``EXISTS``, and ``BACKUP``/``RESTORE … TO|FROM Disk()|File()`` with the real
server's ``backups.allowed_path``/``allowed_disk`` rules. Output formats: TabSeparated (the
default), TabSeparatedWithNames, CSV, JSON, JSONEachRow, JSONCompact (64-bit integers quoted
in JSON formats, as ClickHouse does by default).
"""

from __future__ import annotations

import csv
import io
import json
import re
import sqlite3
import threading
import time
import uuid
import zipfile
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

VERSION = "24.12.1.1"
ERROR_NAMES = {
    36: "BAD_ARGUMENTS",
    46: "UNKNOWN_FUNCTION",
    47: "UNKNOWN_IDENTIFIER",
    48: "NOT_IMPLEMENTED",
    57: "TABLE_ALREADY_EXISTS",
    60: "UNKNOWN_TABLE",
    62: "SYNTAX_ERROR",
    73: "UNKNOWN_FORMAT",
    76: "CANNOT_OPEN_FILE",
    81: "UNKNOWN_DATABASE",
    82: "DATABASE_ALREADY_EXISTS",
    117: "INCORRECT_DATA",
    164: "READONLY",
    219: "DATABASE_NOT_EMPTY",
    516: "AUTHENTICATION_FAILED",
    598: "BACKUP_ALREADY_EXISTS",
    599: "BACKUP_NOT_FOUND",
    607: "BACKUP_ENTRY_NOT_FOUND",
    608: "CANNOT_RESTORE_TABLE",
    1001: "STD_EXCEPTION",
}
HTTP_STATUS = {60: 404, 81: 404, 62: 400, 36: 400, 117: 400, 73: 400, 516: 403, 48: 501, 164: 403}


class ChError(Exception):
    """A ClickHouse exception: ``Code: N. DB::Exception: message. (NAME)``."""

    def __init__(self, code: int, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message

    @property
    def http_status(self) -> int:
        return HTTP_STATUS.get(self.code, 500)

    def text(self) -> str:
        name = ERROR_NAMES.get(self.code, "UNKNOWN_EXCEPTION")
        return f"Code: {self.code}. DB::Exception: {self.message}. ({name}) (version {VERSION})\n"


# ── tokens ────────────────────────────────────────────────────────────────────────────────

TOKEN = re.compile(
    r"""
    (?P<ws>\s+|--[^\n]*|/\*.*?\*/)
  | (?P<string>'(?:[^'\\]|\\.|'')*')
  | (?P<qident>`(?:[^`\\]|\\.|``)*`|"(?:[^"\\]|\\.|"")*")
  | (?P<number>-?\d+(?:\.\d+)?(?:[eE][-+]?\d+)?)
  | (?P<ident>[A-Za-z_][A-Za-z0-9_]*)
  | (?P<op><=|>=|!=|<>|==|[(),.=<>*;\[\]])
    """,
    re.VERBOSE | re.DOTALL,
)


@dataclass
class Tok:
    kind: str  # string, ident, qident, number, op
    value: str
    start: int
    end: int

    def kw(self) -> str:
        return self.value.upper() if self.kind == "ident" else ""


def unquote(text: str) -> str:
    quote, body = text[0], text[1:-1]
    body = body.replace(quote * 2, quote)
    return re.sub(r"\\(.)", lambda m: {"n": "\n", "t": "\t", "0": "\0"}.get(m[1], m[1]), body)


def tokenize(sql: str) -> list[Tok]:
    tokens: list[Tok] = []
    pos = 0
    while pos < len(sql):
        match = TOKEN.match(sql, pos)
        if match is None:
            raise ChError(
                62, f"Syntax error: failed at position {pos + 1} ({sql[pos : pos + 20]!r})"
            )
        kind = match.lastgroup or ""
        if kind != "ws":
            value = match.group()
            if kind in ("string", "qident"):
                value = unquote(value)
            tokens.append(Tok(kind, value, match.start(), match.end()))
        pos = match.end()
    return tokens


INSERT_FORMAT = re.compile(
    r"\s*INSERT\b.*?\bFORMAT\s+(\w+)[ \t]*(\r?\n)?", re.IGNORECASE | re.DOTALL
)


class Parser:
    def __init__(self, sql: str) -> None:
        # INSERT … FORMAT x: everything after the format name is data, not SQL
        self.data = ""
        match = INSERT_FORMAT.match(sql)
        if match is not None:
            sql, self.data = sql[: match.end(1)], sql[match.end() :]
        self.sql = sql
        self.toks = tokenize(sql)
        while self.toks and self.toks[-1].value == ";" and self.toks[-1].kind == "op":
            self.toks.pop()
        if any(t.kind == "op" and t.value == ";" for t in self.toks):
            raise ChError(62, "Syntax error (Multi-statements are not allowed)")
        self.i = 0

    def peek(self, ahead: int = 0) -> Tok | None:
        j = self.i + ahead
        return self.toks[j] if j < len(self.toks) else None

    def next(self) -> Tok:
        tok = self.peek()
        if tok is None:
            raise ChError(62, "Syntax error: unexpected end of query")
        self.i += 1
        return tok

    def at_end(self) -> bool:
        return self.i >= len(self.toks)

    def accept(self, *words: str) -> bool:
        """Consume the keywords ``words`` if they come next."""
        for n, word in enumerate(words):
            tok = self.peek(n)
            if tok is None or (tok.kw() != word and not (tok.kind == "op" and tok.value == word)):
                return False
        self.i += len(words)
        return True

    def expect(self, *words: str) -> None:
        if not self.accept(*words):
            tok = self.peek()
            where = f"at {tok.value!r}" if tok else "at end of query"
            raise ChError(62, f"Syntax error: expected {' '.join(words)} {where}")

    def name(self) -> str:
        tok = self.next()
        if tok.kind not in ("ident", "qident"):
            raise ChError(62, f"Syntax error: expected a name at {tok.value!r}")
        return tok.value

    def qualified(self, database: str) -> tuple[str, str]:
        first = self.name()
        if self.accept("."):
            return first, self.name()
        return database, first

    def literal(self) -> Any:
        tok = self.next()
        if tok.kind == "string":
            return tok.value
        if tok.kind == "number":
            return float(tok.value) if re.search(r"[.eE]", tok.value) else int(tok.value)
        if tok.kw() == "NULL":
            return None
        if tok.kw() in ("TRUE", "FALSE"):
            return tok.kw() == "TRUE"
        if tok.kw() in ("NOW", "TODAY") and self.accept("(") and self.accept(")"):
            stamp = datetime.now(UTC)
            return stamp.strftime("%Y-%m-%d %H:%M:%S" if tok.kw() == "NOW" else "%Y-%m-%d")
        if tok.kind == "op" and tok.value == "[":
            items: list[Any] = []
            while not self.accept("]"):
                items.append(self.literal())
                self.accept(",")
            return items
        raise ChError(62, f"Syntax error: expected a literal at {tok.value!r}")

    def rest(self) -> str:
        """The raw text after the current token (settings this stand-in ignores)."""
        if self.at_end():
            return ""
        start = self.toks[self.i].start
        self.i = len(self.toks)
        return self.sql[start:]


# ── types ─────────────────────────────────────────────────────────────────────────────────


def base_type(ch_type: str) -> str:
    """``LowCardinality(Nullable(String))`` → ``String``."""
    inner = ch_type.strip()
    while True:
        match = re.fullmatch(r"(?:LowCardinality|Nullable)\((.*)\)", inner)
        if match is None:
            return inner
        inner = match[1].strip()


def is_int(ch_type: str) -> bool:
    return (
        re.fullmatch(r"U?Int(8|16|32|64|128|256)|Bool|Enum\d*\(.*\)", base_type(ch_type))
        is not None
    )


def is_64bit(ch_type: str) -> bool:
    return re.fullmatch(r"U?Int(64|128|256)", base_type(ch_type)) is not None


def coerce(value: Any, ch_type: str) -> Any:
    """A value as a column of ``ch_type`` stores it (JSON-serializable)."""
    kind = base_type(ch_type)
    if value is None:
        return None if "Nullable(" in ch_type else default_of(ch_type)
    try:
        if is_int(ch_type):
            if isinstance(value, bool):
                return int(value)
            return int(float(value)) if isinstance(value, str) and "." in value else int(value)
        if kind.startswith(("Float", "Decimal")):
            return float(value)
        if kind.startswith("Date"):
            if isinstance(value, int | float):
                stamp = datetime.fromtimestamp(value, UTC)
                pattern = "%Y-%m-%d %H:%M:%S" if kind.startswith("DateTime") else "%Y-%m-%d"
                return stamp.strftime(pattern)
            return str(value)
        if kind.startswith(("Array", "Map", "Tuple")):
            return value
    except (TypeError, ValueError):
        raise ChError(117, f"Cannot parse {value!r} as {ch_type}") from None
    return value if isinstance(value, str) else str(value)


def default_of(ch_type: str) -> Any:
    kind = base_type(ch_type)
    if ch_type.startswith("Nullable"):
        return None
    if is_int(ch_type):
        return 0
    if kind.startswith(("Float", "Decimal")):
        return 0.0
    if kind.startswith("DateTime"):
        return "1970-01-01 00:00:00"
    if kind.startswith("Date"):
        return "1970-01-01"
    if kind.startswith("Array"):
        return []
    if kind.startswith("Map"):
        return {}
    return ""


# ── storage ───────────────────────────────────────────────────────────────────────────────


@dataclass
class Table:
    database: str
    name: str
    columns: list[tuple[str, str]]  # (name, type)
    engine: str


@dataclass
class Result:
    columns: list[tuple[str, str]] = field(default_factory=list)
    rows: list[list[Any]] = field(default_factory=list)
    rows_read: int = 0


@dataclass
class Settings:
    """What the server's XML config allows BACKUP/RESTORE to use."""

    allowed_paths: list[Path] = field(default_factory=list)
    allowed_disks: list[str] = field(default_factory=list)
    disks: dict[str, Path] = field(default_factory=dict)


class Engine:
    """Databases, tables and rows in one SQLite file; every statement under one lock."""

    def __init__(self, path: Path, settings: Settings) -> None:
        self.settings = settings
        self.lock = threading.Lock()
        self.db = sqlite3.connect(path, check_same_thread=False, isolation_level=None)
        self.db.execute("PRAGMA journal_mode=WAL")
        self.db.execute("PRAGMA busy_timeout=5000")
        self.db.executescript(
            """
            CREATE TABLE IF NOT EXISTS databases (name TEXT PRIMARY KEY);
            CREATE TABLE IF NOT EXISTS tables (
                db TEXT NOT NULL, name TEXT NOT NULL, columns TEXT NOT NULL,
                engine TEXT NOT NULL, PRIMARY KEY (db, name));
            CREATE TABLE IF NOT EXISTS rows (
                db TEXT NOT NULL, tbl TEXT NOT NULL, data TEXT NOT NULL);
            CREATE INDEX IF NOT EXISTS rows_by_table ON rows (db, tbl);
            INSERT OR IGNORE INTO databases (name) VALUES ('default');
            """
        )

    # catalog
    def databases(self) -> list[str]:
        names = [r[0] for r in self.db.execute("SELECT name FROM databases ORDER BY name")]
        return sorted([*names, "INFORMATION_SCHEMA", "information_schema", "system"])

    def has_database(self, name: str) -> bool:
        return name in self.databases()

    def require_database(self, name: str) -> None:
        if not self.has_database(name):
            raise ChError(81, f"Database {name} does not exist")

    def tables(self, database: str | None = None) -> list[Table]:
        rows = self.db.execute("SELECT db, name, columns, engine FROM tables ORDER BY db, name")
        return [
            Table(r[0], r[1], [tuple(c) for c in json.loads(r[2])], r[3])
            for r in rows
            if database is None or r[0] == database
        ]

    def table(self, database: str, name: str) -> Table:
        if not self.has_database(database):
            raise ChError(81, f"Database {database} does not exist")
        for table in self.tables(database):
            if table.name == name:
                return table
        raise ChError(60, f"Table {database}.{name} does not exist")

    def rows(self, table: Table) -> list[list[Any]]:
        cur = self.db.execute(
            "SELECT data FROM rows WHERE db = ? AND tbl = ? ORDER BY rowid",
            (table.database, table.name),
        )
        return [json.loads(r[0]) for r in cur]

    def count(self, table: Table) -> int:
        cur = self.db.execute(
            "SELECT count(*) FROM rows WHERE db = ? AND tbl = ?", (table.database, table.name)
        )
        return int(cur.fetchone()[0])

    def insert_rows(self, table: Table, rows: Iterable[list[Any]]) -> int:
        data = [(table.database, table.name, json.dumps(row)) for row in rows]
        self.db.executemany("INSERT INTO rows (db, tbl, data) VALUES (?, ?, ?)", data)
        return len(data)

    # statements
    def execute(self, sql: str, database: str, readonly: bool = False) -> Result:
        with self.lock:
            parser = Parser(sql)
            if parser.at_end():
                raise ChError(62, "Empty query")
            first = parser.peek(0)
            verb = first.kw() if first else ""
            if readonly and verb not in ("SELECT", "SHOW", "EXISTS", "DESCRIBE", "DESC", "WITH"):
                raise ChError(
                    164,
                    "Cannot execute query in readonly mode. For queries over HTTP, "
                    "method POST or GET with readonly=0 is required",
                )
            handler = STATEMENTS.get(verb)
            if handler is None:
                raise ChError(
                    62,
                    f"Syntax error: failed at position 1 ({verb or (first.value if first else '')})"
                    ": not supported by this stand-in",
                )
            self.db.execute("BEGIN")
            try:
                result = handler(self, parser, database)
            except BaseException:
                self.db.execute("ROLLBACK")
                raise
            self.db.execute("COMMIT")
            return result


def _create(engine: Engine, p: Parser, database: str) -> Result:
    p.expect("CREATE")
    if p.accept("DATABASE"):
        if_not_exists = p.accept("IF", "NOT", "EXISTS")
        name = p.name()
        if engine.has_database(name):
            if if_not_exists:
                return Result()
            raise ChError(82, f"Database {name} already exists")
        engine.db.execute("INSERT INTO databases (name) VALUES (?)", (name,))
        return Result()
    p.accept("OR", "REPLACE")
    if not p.accept("TABLE"):
        raise ChError(62, "Syntax error: only CREATE DATABASE and CREATE TABLE are supported")
    if_not_exists = p.accept("IF", "NOT", "EXISTS")
    db, name = p.qualified(database)
    if not engine.has_database(db):
        raise ChError(81, f"Database {db} does not exist")
    exists = any(t.name == name for t in engine.tables(db))
    p.expect("(")
    columns: list[tuple[str, str]] = []
    depth, current = 0, []
    while True:
        tok = p.next()
        if tok.kind == "op" and tok.value == "(":
            depth += 1
        elif tok.kind == "op" and tok.value == ")":
            if depth == 0:
                break
            depth -= 1
        if depth == 0 and tok.kind == "op" and tok.value == ",":
            _column(current, columns)
            current = []
        else:
            current.append(tok)
    _column(current, columns)
    rest = p.rest()
    match = re.search(r"ENGINE\s*=\s*(\w+)", rest, re.IGNORECASE)
    table_engine = match[1] if match else "MergeTree"
    if exists:
        if if_not_exists:
            return Result()
        raise ChError(57, f"Table {db}.{name} already exists")
    engine.db.execute(
        "INSERT INTO tables (db, name, columns, engine) VALUES (?, ?, ?, ?)",
        (db, name, json.dumps(columns), table_engine),
    )
    return Result()


STOP_WORDS = {"DEFAULT", "MATERIALIZED", "ALIAS", "CODEC", "TTL", "COMMENT", "EPHEMERAL"}


def _column(toks: list[Tok], columns: list[tuple[str, str]]) -> None:
    if not toks or toks[0].kw() in ("INDEX", "PROJECTION", "CONSTRAINT", "PRIMARY"):
        return
    name, type_parts = toks[0].value, []
    for tok in toks[1:]:
        if tok.kw() in STOP_WORDS:
            break
        type_parts.append(tok.value)
    if not type_parts:
        raise ChError(62, f"Syntax error: column {name} has no type")
    type_text = re.sub(r"\s*([(),])\s*", r"\1", " ".join(type_parts)).replace(",", ", ")
    columns.append((name, type_text))


def _drop(engine: Engine, p: Parser, database: str) -> Result:
    p.expect("DROP")
    if p.accept("DATABASE"):
        if_exists = p.accept("IF", "EXISTS")
        name = p.name()
        if name in ("default", "system"):
            raise ChError(36, f"Cannot drop database {name}")
        if not engine.has_database(name):
            if if_exists:
                return Result()
            raise ChError(81, f"Database {name} does not exist")
        engine.db.execute("DELETE FROM rows WHERE db = ?", (name,))
        engine.db.execute("DELETE FROM tables WHERE db = ?", (name,))
        engine.db.execute("DELETE FROM databases WHERE name = ?", (name,))
        return Result()
    p.expect("TABLE")
    if_exists = p.accept("IF", "EXISTS")
    db, name = p.qualified(database)
    try:
        engine.table(db, name)
    except ChError:
        if if_exists:
            return Result()
        raise
    engine.db.execute("DELETE FROM rows WHERE db = ? AND tbl = ?", (db, name))
    engine.db.execute("DELETE FROM tables WHERE db = ? AND name = ?", (db, name))
    return Result()


def _truncate(engine: Engine, p: Parser, database: str) -> Result:
    p.expect("TRUNCATE")
    p.accept("TABLE")
    if_exists = p.accept("IF", "EXISTS")
    db, name = p.qualified(database)
    try:
        engine.table(db, name)
    except ChError:
        if if_exists:
            return Result()
        raise
    engine.db.execute("DELETE FROM rows WHERE db = ? AND tbl = ?", (db, name))
    return Result()


def _insert(engine: Engine, p: Parser, database: str) -> Result:
    p.expect("INSERT")
    p.expect("INTO")
    p.accept("TABLE")
    db, name = p.qualified(database)
    table = engine.table(db, name)
    types = dict(table.columns)
    names = [c for c, _ in table.columns]
    if p.accept("("):
        names = []
        while not p.accept(")"):
            names.append(p.name())
            p.accept(",")
        for column in names:
            if column not in types:
                raise ChError(16, f"No such column {column} in table {db}.{name}")
    records: list[dict[str, Any]] = []
    if p.accept("VALUES"):
        while not p.at_end():
            p.expect("(")
            values = []
            while not p.accept(")"):
                values.append(p.literal())
                p.accept(",")
            if len(values) != len(names):
                raise ChError(62, f"Expected {len(names)} values, got {len(values)}")
            records.append(dict(zip(names, values, strict=True)))
            p.accept(",")
    elif p.accept("FORMAT"):
        fmt = p.name()
        records = parse_input(fmt, p.data, names)
    else:
        raise ChError(62, "Syntax error: expected VALUES or FORMAT")
    rows = [[coerce(rec.get(c, default_of(t)), t) for c, t in table.columns] for rec in records]
    engine.insert_rows(table, rows)
    return Result()


def parse_input(fmt: str, data: str, names: list[str]) -> list[dict[str, Any]]:
    records: list[dict[str, Any]] = []
    if fmt in ("JSONEachRow", "JSONLines", "NDJSON"):
        text = data.strip()
        if text.startswith("["):
            items = json.loads(text)
        else:
            try:
                items = [json.loads(line) for line in text.splitlines() if line.strip()]
            except ValueError:
                raise ChError(
                    117, "Cannot parse input: expected JSON objects, one a line"
                ) from None
        for item in items:
            if not isinstance(item, dict):
                raise ChError(117, "Cannot parse input: expected '{' before a JSONEachRow row")
            records.append(item)  # unknown fields are skipped (input_format_skip_unknown_fields)
    elif fmt in (
        "TabSeparated",
        "TSV",
        "CSV",
        "CSVWithNames",
        "TabSeparatedWithNames",
        "TSVWithNames",
    ):
        delimiter = "," if fmt.startswith("CSV") else "\t"
        lines = data.splitlines()
        if fmt.endswith("WithNames") and lines:
            names = lines.pop(0).split(delimiter)
        reader = (
            csv.reader(lines, delimiter=delimiter)
            if delimiter == ","
            else ([unescape_tsv(v) for v in line.split("\t")] for line in lines)
        )
        for values in reader:
            if values:
                records.append(dict(zip(names, values, strict=False)))
    else:
        raise ChError(73, f"Unknown input format {fmt}")
    return records


def unescape_tsv(value: str) -> str:
    return re.sub(r"\\(.)", lambda m: {"n": "\n", "t": "\t", "0": "\0"}.get(m[1], m[1]), value)


# ── SELECT ────────────────────────────────────────────────────────────────────────────────

AGGREGATES = {"COUNT", "UNIQ", "UNIQEXACT", "SUM", "MIN", "MAX", "AVG", "ANY"}


@dataclass
class Item:
    kind: str  # star, column, literal, func, aggregate
    name: str  # output column name
    arg: Any = None
    func: str = ""


@dataclass
class Clauses:
    group: list[str] = field(default_factory=list)
    order: list[tuple[str, bool]] = field(default_factory=list)
    limit: int | None = None
    offset: int = 0


def _select(engine: Engine, p: Parser, database: str) -> Result:
    p.expect("SELECT")
    p.accept("DISTINCT")
    items = [_select_item(p)]
    while p.accept(","):
        items.append(_select_item(p))
    table: Table | None = None
    source: list[dict[str, Any]] = [{}]
    if p.accept("FROM"):
        db, name = p.qualified(database)
        table, source = _source(engine, db, name)
    rows_read = len(source)
    if p.accept("WHERE"):
        conditions = [_condition(p)]
        while p.accept("AND"):
            conditions.append(_condition(p))
        source = [r for r in source if all(check(r) for check in conditions)]
    clauses = _clauses(p)
    types = dict(table.columns) if table else {}
    columns = _output_columns(items, table, types)
    if any(i.kind == "aggregate" for i in items) or clauses.group:
        groups: dict[tuple[Any, ...], list[dict[str, Any]]] = {}
        for row in source:
            key = tuple(json.dumps(row.get(g)) for g in clauses.group)
            groups.setdefault(key, []).append(row)
        if not clauses.group and not groups:
            groups[()] = []
        out = [
            [_evaluate(i, members[0] if members else {}, members, types) for i in items]
            for members in groups.values()
        ]
    else:
        out = []
        for row in source:
            values: list[Any] = []
            for item in items:
                if item.kind == "star":
                    values.extend(row.get(c) for c, _ in (table.columns if table else []))
                else:
                    values.append(_evaluate(item, row, [row], types))
            out.append(values)
    names = [c for c, _ in columns]
    for column, desc in reversed(clauses.order):
        if column not in names:
            raise ChError(47, f"Missing columns: '{column}' while processing query")
        index = names.index(column)
        out.sort(
            key=lambda r, i=index: (r[i] is None, r[i] if r[i] is not None else 0), reverse=desc
        )
    end = None if clauses.limit is None else clauses.offset + clauses.limit
    return Result(columns, out[clauses.offset : end], rows_read)


def _clauses(p: Parser) -> Clauses:
    """GROUP BY, ORDER BY, LIMIT [OFFSET], FORMAT and SETTINGS, in that order."""
    clauses = Clauses()
    if p.accept("GROUP", "BY"):
        clauses.group.append(p.name())
        while p.accept(","):
            clauses.group.append(p.name())
    if p.accept("ORDER", "BY"):
        while True:
            column = p.name()
            desc = p.accept("DESC")
            if not desc:
                p.accept("ASC")
            clauses.order.append((column, desc))
            if not p.accept(","):
                break
    if p.accept("LIMIT"):
        clauses.limit = int(p.literal())
        if p.accept(","):
            clauses.offset, clauses.limit = clauses.limit, int(p.literal())
        elif p.accept("OFFSET"):
            clauses.offset = int(p.literal())
    if p.accept("FORMAT"):
        p.name()  # the HTTP layer reads it
    if p.accept("SETTINGS"):
        p.rest()
    if not p.at_end():
        tok = p.peek()
        raise ChError(62, f"Syntax error: unexpected {tok.value if tok else ''!r}")
    return clauses


def _select_item(p: Parser) -> Item:
    tok = p.next()
    if tok.kind == "op" and tok.value == "*":
        return Item("star", "*")
    if tok.kind in ("string", "number") or tok.kw() in ("NULL", "TRUE", "FALSE"):
        p.i -= 1
        value = p.literal()
        item = Item(
            "literal", tok.value if tok.kind == "number" else repr(value).replace('"', "'"), value
        )
    elif tok.kind in ("ident", "qident") and p.accept("("):
        func = tok.value.upper()
        following = p.peek()
        arg: str | None = None
        if following is not None and following.kind == "op" and following.value == "*":
            p.next()
            arg = "*"
        elif following is not None and following.kind in ("ident", "qident"):
            arg = p.name()
        p.expect(")")
        shown = "count()" if func == "COUNT" and arg in (None, "*") else f"{tok.value}({arg or ''})"
        kind = "aggregate" if func in AGGREGATES else "func"
        if kind == "func" and func not in (
            "VERSION",
            "NOW",
            "CURRENTDATABASE",
            "UPTIME",
            "TIMEZONE",
        ):
            raise ChError(46, f"Unknown function {tok.value}")
        item = Item(kind, shown, arg, func)
    elif tok.kind in ("ident", "qident"):
        item = Item("column", tok.value, tok.value)
    else:
        raise ChError(62, f"Syntax error: unexpected {tok.value!r} in SELECT")
    if p.accept("AS"):
        item.name = p.name()
    return item


def _source(engine: Engine, db: str, name: str) -> tuple[Table, list[dict[str, Any]]]:
    if db == "system" and name == "databases":
        table = Table(
            "system", "databases", [("name", "String"), ("engine", "String")], "SystemDatabases"
        )
        rows = [{"name": d, "engine": "Atomic"} for d in engine.databases()]
        return table, rows
    if db == "system" and name == "tables":
        table = Table(
            "system",
            "tables",
            [
                ("database", "String"),
                ("name", "String"),
                ("engine", "String"),
                ("total_rows", "Nullable(UInt64)"),
            ],
            "SystemTables",
        )
        rows = [
            {
                "database": t.database,
                "name": t.name,
                "engine": t.engine,
                "total_rows": engine.count(t),
            }
            for t in engine.tables()
        ]
        return table, rows
    if db == "system" and name == "one":
        return Table("system", "one", [("dummy", "UInt8")], "SystemOne"), [{"dummy": 0}]
    table = engine.table(db, name)
    names = [c for c, _ in table.columns]
    return table, [dict(zip(names, row, strict=False)) for row in engine.rows(table)]


def _condition(p: Parser) -> Callable[[dict[str, Any]], bool]:
    column = p.name()
    tok = p.next()
    op = tok.value.upper()
    if op == "NOT" and p.accept("IN"):
        op = "NOT IN"
    if op in ("IN", "NOT IN"):
        p.expect("(")
        values = []
        while not p.accept(")"):
            values.append(p.literal())
            p.accept(",")
        wanted = {json.dumps(v) for v in values}
        negate = op == "NOT IN"
        return lambda row: (json.dumps(row.get(column)) in wanted) != negate
    value = p.literal()
    compare: dict[str, Callable[[Any, Any], bool]] = {
        "=": lambda a, b: a == b,
        "==": lambda a, b: a == b,
        "!=": lambda a, b: a != b,
        "<>": lambda a, b: a != b,
        "<": lambda a, b: a < b,
        ">": lambda a, b: a > b,
        "<=": lambda a, b: a <= b,
        ">=": lambda a, b: a >= b,
    }
    if op not in compare:
        raise ChError(62, f"Syntax error: unsupported operator {tok.value!r} in WHERE")

    def check(row: dict[str, Any]) -> bool:
        if column not in row:
            raise ChError(47, f"Missing columns: '{column}' while processing query")
        left = row[column]
        right = value
        if isinstance(left, int | float) and isinstance(right, str):
            try:
                right = float(right)
            except ValueError:
                return False
        if isinstance(left, str) and not isinstance(right, str):
            right = str(right)
        if left is None or right is None:
            return False
        return compare[op](left, right)

    return check


def _output_columns(
    items: list[Item], table: Table | None, types: dict[str, str]
) -> list[tuple[str, str]]:
    columns: list[tuple[str, str]] = []
    for item in items:
        if item.kind == "star":
            columns.extend(table.columns if table else [])
        elif item.kind == "column":
            if item.arg not in types:
                raise ChError(47, f"Missing columns: '{item.arg}' while processing query")
            columns.append((item.name, types[item.arg]))
        elif item.kind == "literal":
            value = item.arg
            kind = (
                "UInt8"
                if isinstance(value, int) and 0 <= value < 256
                else "Int64"
                if isinstance(value, int)
                else "Float64"
                if isinstance(value, float)
                else "String"
            )
            columns.append((item.name, kind))
        elif item.kind == "aggregate":
            if item.arg not in (None, "*") and item.arg not in types:
                raise ChError(47, f"Missing columns: '{item.arg}' while processing query")
            if item.func in ("COUNT", "UNIQ", "UNIQEXACT"):
                kind = "UInt64"
            elif item.func == "AVG":
                kind = "Float64"
            else:
                kind = types.get(str(item.arg), "Float64")
                if item.func == "SUM" and is_int(kind):
                    kind = "UInt64" if base_type(kind).startswith("U") else "Int64"
            columns.append((item.name, kind))
        else:
            columns.append(
                (
                    item.name,
                    "DateTime"
                    if item.func == "NOW"
                    else "UInt32"
                    if item.func == "UPTIME"
                    else "String",
                )
            )
    return columns


STARTED = time.time()


def _evaluate(
    item: Item, row: dict[str, Any], members: list[dict[str, Any]], types: dict[str, str]
) -> Any:
    if item.kind == "literal":
        return item.arg
    if item.kind == "column":
        return row.get(item.arg)
    if item.kind == "func":
        if item.func == "VERSION":
            return VERSION
        if item.func == "NOW":
            return datetime.now(UTC).strftime("%Y-%m-%d %H:%M:%S")
        if item.func == "UPTIME":
            return int(time.time() - STARTED)
        if item.func == "TIMEZONE":
            return "UTC"
        return "default"
    values = [m.get(item.arg) for m in members] if item.arg not in (None, "*") else members
    if item.func == "COUNT":
        return sum(1 for v in values if v is not None)
    if item.func in ("UNIQ", "UNIQEXACT"):
        return len({json.dumps(v) for v in values})
    present = [v for v in values if v is not None]
    if item.func == "SUM":
        return sum(present) if present else 0
    if item.func == "AVG":
        return sum(present) / len(present) if present else float("nan")
    if item.func == "MIN":
        return min(present) if present else default_of(types.get(str(item.arg), "String"))
    if item.func == "MAX":
        return max(present) if present else default_of(types.get(str(item.arg), "String"))
    return present[0] if present else None


# ── SHOW, EXISTS, no-ops ──────────────────────────────────────────────────────────────────


def _show(engine: Engine, p: Parser, database: str) -> Result:
    p.expect("SHOW")
    if p.accept("DATABASES"):
        return Result([("name", "String")], [[d] for d in engine.databases()])
    if p.accept("TABLES"):
        db = database
        if p.accept("FROM") or p.accept("IN"):
            db = p.name()
        if not engine.has_database(db):
            raise ChError(81, f"Database {db} does not exist")
        return Result([("name", "String")], [[t.name] for t in engine.tables(db)])
    if p.accept("CREATE"):
        p.accept("TABLE")
        db, name = p.qualified(database)
        table = engine.table(db, name)
        cols = ",\n".join(f"    `{c}` {t}" for c, t in table.columns)
        return Result(
            [("statement", "String")],
            [[f"CREATE TABLE {db}.{name}\n(\n{cols}\n)\nENGINE = {table.engine}"]],
        )
    raise ChError(62, "Syntax error: SHOW DATABASES, SHOW TABLES or SHOW CREATE TABLE")


def _exists(engine: Engine, p: Parser, database: str) -> Result:
    p.expect("EXISTS")
    if p.accept("DATABASE"):
        return Result([("result", "UInt8")], [[int(engine.has_database(p.name()))]])
    p.accept("TABLE")
    db, name = p.qualified(database)
    found = engine.has_database(db) and any(t.name == name for t in engine.tables(db))
    return Result([("result", "UInt8")], [[int(found)]])


def _describe(engine: Engine, p: Parser, database: str) -> Result:
    p.next()
    p.accept("TABLE")
    db, name = p.qualified(database)
    table = engine.table(db, name)
    return Result([("name", "String"), ("type", "String")], [[c, t] for c, t in table.columns])


def _noop(engine: Engine, p: Parser, database: str) -> Result:
    del engine, database
    p.rest()
    return Result()


# ── BACKUP / RESTORE ──────────────────────────────────────────────────────────────────────


def _destination(engine: Engine, p: Parser) -> Path:
    """``Disk('name', 'path')`` or ``File('path')``, checked like the real server does."""
    kind = p.name()
    p.expect("(")
    args = [p.literal()]
    while p.accept(","):
        args.append(p.literal())
    p.expect(")")
    settings = engine.settings
    if kind == "Disk" and len(args) == 2:
        disk, rel = str(args[0]), str(args[1])
        if disk not in settings.allowed_disks:
            raise ChError(
                36,
                f"Disk '{disk}' is not allowed for backups, "
                "see the 'backups.allowed_disk' configuration parameter",
            )
        if disk not in settings.disks:
            raise ChError(36, f"Disk {disk} is not defined in storage_configuration")
        return settings.disks[disk] / rel
    if kind == "File" and len(args) == 1:
        path = Path(str(args[0]))
        if not path.is_absolute() and settings.allowed_paths:
            path = settings.allowed_paths[0] / path
        resolved = path.resolve()
        if not any(resolved.is_relative_to(a.resolve()) for a in settings.allowed_paths):
            raise ChError(
                36,
                f"Path '{args[0]}' is not allowed for backups, "
                "see the 'backups.allowed_path' configuration parameter",
            )
        return path
    raise ChError(36, f"Unknown backup engine {kind}: use Disk('disk', 'path') or File('path')")


# The server runs as uid 101: what it may not read or write fails as the real one's does
# (libc++'s std::filesystem errors for stat/mkdir, ErrnoException for open; the shape of
# e.g. ClickHouse/ClickHouse#54621: "Code: 76. … Cannot open file …, errno: 13, strerror:
# Permission denied. (CANNOT_OPEN_FILE)").


def _filesystem_error(where: str, exc: OSError, path: Path) -> ChError:
    return ChError(
        1001,
        f"std::__1::__fs::filesystem::filesystem_error: filesystem error: in {where}: "
        f'{exc.strerror} ["{path}"]',
    )


def _cannot_open(path: Path, exc: OSError) -> ChError:
    return ChError(76, f"Cannot open file {path}, errno: {exc.errno}, strerror: {exc.strerror}")


def _path_exists(path: Path) -> bool:
    """``fs::exists``: False when absent, an error when the path cannot be looked at."""
    try:
        path.stat()
    except (FileNotFoundError, NotADirectoryError):
        return False
    except OSError as exc:
        raise _filesystem_error(
            "posix_stat: failed to determine attributes for the specified path", exc, path
        ) from None
    return True


def _mkdirs(path: Path) -> None:
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise _filesystem_error("create_directories", exc, path) from None


def _backup(engine: Engine, p: Parser, database: str) -> Result:
    del database
    p.expect("BACKUP")
    targets = _backup_targets(p)
    p.expect("TO")
    dest = _destination(engine, p)
    p.rest()
    if _path_exists(dest):
        raise ChError(598, f"Backup {dest} already exists")
    manifest: dict[str, Any] = {"version": VERSION, "created": time.time(), "tables": []}
    files: dict[str, str] = {}
    for db, name in targets:
        tables = engine.tables(db) if name is None else [engine.table(db, name)]
        if name is None and not engine.has_database(db):
            raise ChError(81, f"Database {db} does not exist")
        for table in tables:
            entry = f"data/{table.database}/{table.name}.jsonl"
            manifest["tables"].append(
                {
                    "database": table.database,
                    "name": table.name,
                    "columns": table.columns,
                    "engine": table.engine,
                    "data": entry,
                }
            )
            files[entry] = "".join(json.dumps(r) + "\n" for r in engine.rows(table))
    files[".backup"] = json.dumps(manifest, indent=1)
    _mkdirs(dest.parent)
    if dest.suffix in (".zip", ".tar", ".gz"):
        try:
            archive = zipfile.ZipFile(dest, "w", zipfile.ZIP_DEFLATED)
        except OSError as exc:
            raise _cannot_open(dest, exc) from None
        with archive:
            for entry, text in sorted(files.items()):
                archive.writestr(entry, text)
    else:
        for entry, text in files.items():
            target = dest / entry
            _mkdirs(target.parent)
            try:
                target.write_text(text)
            except OSError as exc:
                raise _cannot_open(target, exc) from None
    return Result([("id", "String"), ("status", "String")], [[str(uuid.uuid4()), "BACKUP_CREATED"]])


def _backup_targets(p: Parser) -> list[tuple[str, str | None]]:
    targets: list[tuple[str, str | None]] = []
    while True:
        if p.accept("DATABASE"):
            targets.append((p.name(), None))
        elif p.accept("TABLE"):
            db, name = p.qualified("default")
            targets.append((db, name))
        else:
            raise ChError(62, "Syntax error: BACKUP|RESTORE DATABASE db or TABLE db.table")
        if not p.accept(","):
            return targets


def _restore(engine: Engine, p: Parser, database: str) -> Result:
    del database
    p.expect("RESTORE")
    targets = _backup_targets(p)
    p.expect("FROM")
    src = _destination(engine, p)
    p.rest()
    if not _path_exists(src):
        raise ChError(599, f"Backup {src} not found")

    def read(entry: str) -> str:
        if src.is_file():
            try:
                archive = zipfile.ZipFile(src)
            except OSError as exc:
                raise _cannot_open(src, exc) from None
            with archive:
                return archive.read(entry).decode()
        try:
            return (src / entry).read_text()
        except PermissionError as exc:
            raise _cannot_open(src / entry, exc) from None

    try:
        manifest = json.loads(read(".backup"))
    except (KeyError, FileNotFoundError, ValueError):
        raise ChError(607, f"Backup {src}: .backup is missing or broken") from None
    wanted = {(db, name) for db, name in targets}
    for meta in manifest["tables"]:
        db, name = meta["database"], meta["name"]
        if (db, None) not in wanted and (db, name) not in wanted:
            continue
        if not engine.has_database(db):
            engine.db.execute("INSERT INTO databases (name) VALUES (?)", (db,))
        existing = [t for t in engine.tables(db) if t.name == name]
        if existing and engine.count(existing[0]):
            raise ChError(
                608,
                f"Cannot restore the table {db}.{name} because it already contains some data. "
                "You can set structure_only=true or allow_non_empty_tables=true "
                "to overcome that in the way you want",
            )
        if not existing:
            engine.db.execute(
                "INSERT INTO tables (db, name, columns, engine) VALUES (?, ?, ?, ?)",
                (db, name, json.dumps(meta["columns"]), meta["engine"]),
            )
        table = Table(db, name, [tuple(c) for c in meta["columns"]], meta["engine"])
        engine.insert_rows(
            table, (json.loads(line) for line in read(meta["data"]).splitlines() if line)
        )
    return Result([("id", "String"), ("status", "String")], [[str(uuid.uuid4()), "RESTORED"]])


STATEMENTS: dict[str, Callable[[Engine, Parser, str], Result]] = {
    "CREATE": _create,
    "DROP": _drop,
    "TRUNCATE": _truncate,
    "INSERT": _insert,
    "SELECT": _select,
    "SHOW": _show,
    "EXISTS": _exists,
    "DESCRIBE": _describe,
    "DESC": _describe,
    "BACKUP": _backup,
    "RESTORE": _restore,
    "SET": _noop,
    "OPTIMIZE": _noop,
    "SYSTEM": _noop,
}


# ── output ────────────────────────────────────────────────────────────────────────────────


def _json_value(value: Any, ch_type: str) -> Any:
    if is_64bit(ch_type) and isinstance(value, int):
        return str(value)
    return value


def _tsv_value(value: Any) -> str:
    if value is None:
        return "\\N"
    if isinstance(value, bool):
        return str(int(value))
    if isinstance(value, list | dict):
        return json.dumps(value).replace('"', "'")
    text = str(value)
    return text.replace("\\", "\\\\").replace("\t", "\\t").replace("\n", "\\n")


def render(result: Result, fmt: str, elapsed: float) -> tuple[str, str]:
    """(body, content type) of ``result`` in output format ``fmt``."""
    names = [c for c, _ in result.columns]
    types = [t for _, t in result.columns]
    if fmt in (
        "TabSeparated",
        "TSV",
        "TabSeparatedWithNames",
        "TSVWithNames",
        "TabSeparatedRaw",
        "TSVRaw",
    ):
        lines = ["\t".join(names)] if fmt.endswith("WithNames") else []
        lines += ["\t".join(_tsv_value(v) for v in row) for row in result.rows]
        return "".join(line + "\n" for line in lines), "text/tab-separated-values; charset=UTF-8"
    if fmt in ("CSV", "CSVWithNames"):
        buffer = io.StringIO()
        writer = csv.writer(buffer, lineterminator="\n")
        if fmt == "CSVWithNames":
            writer.writerow(names)
        writer.writerows([["\\N" if v is None else v for v in row] for row in result.rows])
        return buffer.getvalue(), "text/csv; charset=UTF-8; header=absent"
    if fmt in ("JSONEachRow", "JSONLines", "NDJSON"):
        lines = [
            json.dumps(
                {n: _json_value(v, t) for n, v, t in zip(names, row, types, strict=True)},
                separators=(",", ":"),
            )
            for row in result.rows
        ]
        return "".join(line + "\n" for line in lines), "application/x-ndjson; charset=UTF-8"
    if fmt in ("JSON", "JSONCompact"):
        if fmt == "JSON":
            data: list[Any] = [
                {n: _json_value(v, t) for n, v, t in zip(names, row, types, strict=True)}
                for row in result.rows
            ]
        else:
            data = [
                [_json_value(v, t) for v, t in zip(row, types, strict=True)] for row in result.rows
            ]
        doc = {
            "meta": [{"name": n, "type": t} for n, t in result.columns],
            "data": data,
            "rows": len(result.rows),
            "statistics": {
                "elapsed": round(elapsed, 6),
                "rows_read": result.rows_read,
                "bytes_read": 0,
            },
        }
        return json.dumps(doc, indent="\t") + "\n", "application/json; charset=UTF-8"
    raise ChError(73, f"Unknown output format {fmt}")


def statement_format(sql: str) -> str | None:
    """The ``FORMAT x`` of a SELECT-like statement, if it names one."""
    try:
        toks = Parser(sql).toks
    except ChError:
        return None
    if toks and toks[0].kw() == "INSERT":
        return None
    for n, tok in enumerate(toks[:-1]):
        if tok.kw() == "FORMAT" and toks[n + 1].kind in ("ident", "qident"):
            return toks[n + 1].value
    return None
