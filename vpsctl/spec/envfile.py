"""``secrets.env``: read with python-dotenv's parser, keeping each key's line.

Values are taken literally: no ``${VAR}`` expansion (python-dotenv's ``dotenv_values``
would expand it, and so would compose; a secret is the bytes the operator wrote).
"""

from __future__ import annotations

import io
import re
import stat
from dataclasses import dataclass
from pathlib import Path

from dotenv.parser import parse_stream

from vpsctl.errors import Problem, display_path
from vpsctl.localfiles import write_atomic
from vpsctl.spec.secrets import SECRET_NAME, Secret


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


def read_secrets(path: Path) -> tuple[SecretsFile, list[Problem]]:
    """Parse ``path``; every problem names the line, never a value."""
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
    problems: list[Problem] = []
    entries: dict[str, SecretLine] = {}
    for binding in parse_stream(io.StringIO(text)):
        # python-dotenv counts the blank lines before a binding as part of it
        original = binding.original.string
        line = binding.original.line + original[: len(original) - len(original.lstrip())].count(
            "\n"
        )
        if binding.error:
            problems.append(
                Problem(
                    shown, line, "", "cannot parse this line; expected KEY=value or a # comment"
                )
            )
            continue
        if binding.key is None:
            continue
        name = binding.key
        if not re.match(SECRET_NAME, name):
            problems.append(
                Problem(shown, line, name, "a key is UPPER_CASE letters, digits and '_'")
            )
            continue
        if name in entries:
            problems.append(
                Problem(
                    shown,
                    line,
                    name,
                    f"set twice (first on line {entries[name].line}); keep one: tools disagree "
                    "on which one wins",
                )
            )
            continue
        value = None if binding.value is None else Secret(binding.value)
        entries[name] = SecretLine(name, value, line)
    return SecretsFile(shown, True, entries, mode), problems


def write_secrets(
    path: Path, values: dict[str, str], comments: dict[str, str], existing: SecretsFile
) -> None:
    """Give each key of ``values`` its value in ``path`` (created 0600).

    Keys that ``existing`` holds with an empty or bare value are filled on their own line;
    new keys are appended. No other line changes. Values are single-quoted: the generated
    alphabets never contain a quote, and python-dotenv and compose read a single-quoted
    value back byte for byte.
    """
    for name, value in values.items():
        if "'" in value or "\n" in value or "\\" in value:
            raise ValueError(f"generated value for {name} cannot be single-quoted")
    lines = path.read_text(encoding="utf-8").splitlines() if path.exists() else []
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
    text = "\n".join([*lines, *appended]) + "\n"
    write_atomic(path, text.encode(), 0o600)
