"""``secrets.env``: read with python-dotenv's parser, keeping each key's line.

Values are taken literally: no ``${VAR}`` expansion (python-dotenv's ``dotenv_values``
would expand it, and so would compose; a secret is the bytes the operator wrote).
"""

from __future__ import annotations

import io
import re
import stat
import unicodedata
from dataclasses import dataclass
from pathlib import Path

from dotenv.parser import parse_stream

from vpsctl.errors import Problem, display_path
from vpsctl.spec.secrets import SECRET_NAME, Secret

NOT_KEY_VALUE = (
    "not a KEY=value line (KEY: UPPER_CASE letters, digits and '_'; a quoted value closes "
    "its quote; # starts a comment); a value cannot go on over several lines: join a "
    "pasted PEM or wrapped key into one line"
)
BARE_LINE = (
    "no value: a bare KEY (no '=') is unset, and so is the rest of a value wrapped onto its "
    "own line; write KEY=value on one line, or delete the line"
)
EMPTY_VALUE = (
    "empty value: an empty secret overrides nothing and fails at runtime; set a value or "
    "delete the line"
)


# Every character str.splitlines() ends a line at. Compose splits an env file on "\n" only;
# a value holding any of these is read one way by compose and another by anything that
# splits lines the Python way (or shows them on a terminal): none may be in an env value.
LINE_BREAKS = "\n\r\v\f\x1c\x1d\x1e\x85\u2028\u2029"


@dataclass(frozen=True)
class EnvValueProblem:
    """Why a value cannot be written as an env file line ``KEY='value'``: ``reason`` names
    the class of character (safe to print for a secret), ``char``/``index`` the exact one
    (printed only for plain configuration)."""

    reason: str
    char: str
    index: int

    def message(self, secret: bool) -> str:
        """The error text; for a secret, without the character or its position."""
        if secret:
            return f"{self.reason}; choose a value without it"
        where = f" ({_char_name(self.char)} at character {self.index + 1})" if self.char else ""
        return f"{self.reason}{where}; remove it"


def env_value_problem(value: str) -> EnvValueProblem | None:
    """What keeps ``value`` from travelling in a rendered env file line ``KEY='value'``.

    Checked with Debian 13's docker compose (2.26): inside single quotes compose keeps every
    byte except that ``\\'`` is an escaped quote, so a value ending in a backslash swallows
    its closing quote and the NEXT line (compose then fails, quoting that line: the next
    secret). A quote ends the value; a line break ends the line (see :data:`LINE_BREAKS`);
    no environment variable can hold a NUL.
    """
    for index, char in enumerate(value):
        if char == "'":
            return EnvValueProblem(
                "contains a single quote ('), which would end the value in its env file line",
                char,
                index,
            )
        if char in LINE_BREAKS:
            return EnvValueProblem(
                "contains a line break (\\n, \\r, U+2028 or another character that ends a "
                "line for some reader): an env file value is one line",
                char,
                index,
            )
        if char == "\0":
            return EnvValueProblem(
                "contains a NUL character, which no environment variable can hold", char, index
            )
    if value.endswith("\\"):
        return EnvValueProblem(
            "ends with a backslash, which escapes the closing quote of its env file line: "
            "compose would read the next line into this value",
            "",
            len(value) - 1,
        )
    return None


# The start of a secrets.env line up to its value: python-dotenv's own key syntax.
_LINE_START = re.compile(r"[ \t]*(?:export[ \t]+)?[A-Za-z_][A-Za-z0-9_.-]*[ \t]*=[ \t]*")
# A quoted value as python-dotenv reads it: a backslash escapes the quote character.
_QUOTED = {"'": re.compile(r"'(?:\\'|[^'])*+'"), '"': re.compile(r'"(?:\\"|[^"])*+"')}
_AFTER_QUOTE = re.compile(r"[ \t]*(?:#.*)?")


def line_problem(text: str) -> str:
    """Why python-dotenv cannot read this secrets.env line, by position only: the message
    names a column, never a character of the line (it may be part of a secret)."""
    start = _LINE_START.match(text)
    if start is None or start.end() >= len(text) or text[start.end()] not in _QUOTED:
        return NOT_KEY_VALUE
    column = start.end() + 1
    quote = text[start.end()]
    closed = _QUOTED[quote].match(text, start.end())
    if closed is None:
        escaped = (
            " (a \\ before a quote escapes it: it does not close the value)"
            if ("\\" + quote in text[column:])
            else ""
        )
        return (
            f"unclosed quote: the {quote} at column {column} opens a value that no {quote} "
            f"closes on this line{escaped}; a value is one line: close the quote there"
        )
    if not _AFTER_QUOTE.fullmatch(text, closed.end()):
        return (
            f"text after the closing quote at column {closed.end()}: a quoted value ends at its "
            "quote; put the whole value inside the quotes (or start a comment with ' #')"
        )
    return NOT_KEY_VALUE


def _char_name(char: str) -> str:
    return f"U+{ord(char):04X} {unicodedata.name(char, '') or repr(char)[1:-1]}"


@dataclass(frozen=True)
class SecretLine:
    """A key of secrets.env, its value (``None`` for a bare ``KEY`` line) and its line."""

    name: str
    value: Secret | None
    line: int


@dataclass
class SecretsFile:
    """What secrets.env holds; ``exists`` is false when there is no file yet."""

    file: str
    exists: bool
    entries: dict[str, SecretLine]
    mode: int = 0o600
    # the text of lines that are not KEY=value: most likely pieces of a wrapped value
    stray: tuple[str, ...] = ()
    # lines python-dotenv could not read: a broken quote there may have swallowed the
    # lines after it, so a key "missing" from the file may be sitting right there
    broken: tuple[int, ...] = ()

    def values(self) -> list[str]:
        """Every value the file holds, and every stray line (to mask in any output)."""
        found = [e.value.reveal() for e in self.entries.values() if e.value is not None]
        return [*found, *self.stray]


def read_secrets(path: Path) -> tuple[SecretsFile, list[Problem]]:
    """Parse ``path``; every problem names the line, never its text (neither value nor key)."""
    shown = display_path(path)
    try:
        text = path.read_text(encoding="utf-8")
        mode = stat.S_IMODE(path.stat().st_mode)
    except FileNotFoundError:
        return SecretsFile(shown, False, {}), []
    except (OSError, UnicodeDecodeError) as exc:
        return SecretsFile(shown, False, {}), [
            Problem(shown, 0, "", f"cannot read: {exc.__class__.__name__}")
        ]
    return parse_secrets(text, shown, mode)


def parse_secrets(text: str, shown: str, mode: int = 0o600) -> tuple[SecretsFile, list[Problem]]:
    """Parse the text of a secrets.env (read from ``shown``: a plain file, or an encrypted
    store decrypted in memory); problems name the line, never its text."""
    problems: list[Problem] = []
    entries: dict[str, SecretLine] = {}
    stray: list[str] = []
    broken: list[int] = []
    for binding in parse_stream(io.StringIO(text)):
        # python-dotenv counts the blank lines before a binding as part of it
        original = binding.original.string
        line = binding.original.line + original[: len(original) - len(original.lstrip())].count(
            "\n"
        )
        # A line that is not KEY=value is most often the rest of a value wrapped onto its
        # own line (a pasted PEM, a wrapped key), and a short tail of one can even look like
        # a key: no message about a line of this file quotes the line, not even its key.
        if binding.error:
            first = original.lstrip("\n").split("\n", 1)[0]
            problems.append(Problem(shown, line, "", line_problem(first)))
            broken.append(line)
            stray += [part.strip() for part in original.split("\n") if part.strip()]
            continue
        if binding.key is None:
            continue
        name = binding.key
        if binding.value is None:  # a bare KEY line may be the tail of a wrapped value
            stray.append(name)
        if not re.fullmatch(SECRET_NAME, name):
            problems.append(Problem(shown, line, "", NOT_KEY_VALUE))
            stray += [part.strip() for part in original.split("\n") if part.strip()]
            continue
        if name in entries:
            problems.append(
                Problem(
                    shown,
                    line,
                    "",
                    f"sets the key of line {entries[name].line} again; keep one: tools disagree "
                    "on which one wins",
                )
            )
            continue
        value = None if binding.value is None else Secret(binding.value)
        entries[name] = SecretLine(name, value, line)
    return SecretsFile(shown, True, entries, mode, tuple(stray), tuple(broken)), problems


def write_secrets(
    path: Path, values: dict[str, str], comments: dict[str, str], existing: SecretsFile
) -> None:
    """Give each key of ``values`` its value in ``path`` (created 0600).

    Keys that ``existing`` holds with an empty or bare value are filled on their own line;
    new keys are appended. No other line changes. Values are single-quoted: the generated
    alphabets never contain a quote, and python-dotenv and compose read a single-quoted
    value back byte for byte.
    """
    text = fill_secrets(
        path.read_text(encoding="utf-8") if path.exists() else "", values, comments, existing
    )
    # here, not at the top: the pure core imports this module (env_value_problem)
    from vpsctl.local.files import write_atomic  # noqa: PLC0415

    write_atomic(path, text.encode(), 0o600)


def fill_secrets(
    text: str, values: dict[str, str], comments: dict[str, str], existing: SecretsFile
) -> str:
    """``text`` (a secrets.env's) with each key of ``values`` given its value: see
    :func:`write_secrets`."""
    for name, value in values.items():
        if "'" in value or "\n" in value or "\\" in value:
            raise ValueError(f"generated value for {name} cannot be single-quoted")
    lines = text.splitlines()
    appended: list[str] = []
    for name, value in values.items():
        entry = existing.entries.get(name)
        if entry is not None and entry.value is not None and entry.value.reveal():
            raise ValueError(f"{name} already has a value; vpsctl never overwrites one")
        if entry is not None:
            lines[entry.line - 1] = f"{name}='{value}'"
            continue
        if comments.get(name):
            appended.append(f"# {comments[name]}")
        appended.append(f"{name}='{value}'")
    return "\n".join([*lines, *appended]) + "\n"
