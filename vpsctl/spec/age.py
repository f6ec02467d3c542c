"""age encryption of the secrets store, through ``pyrage`` (a binding of the Rust age
implementation; no cryptography is written here). The one module that imports pyrage.

Recipients are age X25519 public keys (``age1…``) and ssh-ed25519 public keys, one a line
of ``inventory/<env>/recipients``; an identity is a file: an age identity file
(``AGE-SECRET-KEY-1…`` lines) or an SSH private key, from ``VPSCTL_AGE_IDENTITY`` or else the
user's ``~/.ssh/id_ed25519``. Messages name keys by fingerprint (``SHA256:…``, as
``ssh-keygen -l`` prints an SSH key's), never by key material.

Light on purpose: the caches call :func:`opens` on every hit, before anything of the spec
models is imported.
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import hashlib
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from vpsctl.errors import Problem, display_path

SEALED = "secrets.env.age"
RECIPIENTS = "recipients"
IDENTITY_ENV = "VPSCTL_AGE_IDENTITY"
_AGE_PREFIX = "age1"
_SECRET_PREFIX = "AGE-SECRET-KEY-1"  # noqa: S105 - how a private key starts, to refuse one
_SSH_ED25519 = "ssh-ed25519"


class AgeFailure(Exception):
    """Why a store cannot be opened or sealed; its message names files and fingerprints
    only. Turned into the user's error by :mod:`vpsctl.spec.store`."""


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode().rstrip("=")


def fingerprint(public: str) -> str:
    """``SHA256:…`` of a public key: for ssh-ed25519 exactly what ``ssh-keygen -l`` prints
    (the hash of the key's wire form); for an age key, the hash of its ``age1…`` text."""
    words = public.split()
    if words and words[0] == _SSH_ED25519 and len(words) > 1:
        return "SHA256:" + _b64(hashlib.sha256(base64.b64decode(words[1] + "==")).digest())
    return "SHA256:" + _b64(hashlib.sha256(public.strip().encode()).digest())


@dataclass(frozen=True)
class Recipient:
    """One line of the recipients file: the key (without its comment), its label."""

    kind: str  # "age" or "ssh-ed25519"
    key: str
    label: str
    line: int

    @property
    def fingerprint(self) -> str:
        """The key's ``SHA256:…`` fingerprint."""
        return fingerprint(self.key)

    def describe(self) -> str:
        """``ssh-ed25519 SHA256:… (label)``: safe to print."""
        return f"{self.kind} {self.fingerprint}" + (f" ({self.label})" if self.label else "")

    def ssh_tag(self) -> str | None:
        """The tag an age header gives this SSH recipient's stanza (its first 4 hash bytes)."""
        if self.kind != _SSH_ED25519:
            return None
        blob = base64.b64decode(self.key.split()[1] + "==")
        return _b64(hashlib.sha256(blob).digest()[:4])


def parse_recipient(text: str, line: int = 0) -> Recipient | str:
    """The recipient on one line (comments stripped), or why it is none; the message never
    quotes the line (a private key pasted here must not be printed again)."""
    import pyrage  # noqa: PLC0415 - loaded only where keys are handled

    body = text.strip()
    if _SECRET_PREFIX in body.upper() or "PRIVATE KEY" in body:
        return (
            "holds a PRIVATE key: list public keys only (`age-keygen -y FILE`, or the .pub of "
            "an SSH key); remove it, and if it was committed or shared, make a new one"
        )
    words = body.split()
    try:
        if words and words[0].startswith(_AGE_PREFIX):
            pyrage.x25519.Recipient.from_str(words[0])
            label = " ".join(words[1:]).lstrip("#").strip()
            return Recipient("age", words[0], label, line)
        if len(words) >= 2 and words[0] == _SSH_ED25519:
            key = f"{words[0]} {words[1]}"
            pyrage.ssh.Recipient.from_str(key)
            return Recipient(_SSH_ED25519, key, " ".join(words[2:]).lstrip("#").strip(), line)
    except (pyrage.RecipientError, binascii.Error, ValueError):
        return "not a valid public key (a damaged or truncated key)"
    return (
        "not a recipient: write an age public key (age1…) or an ssh-ed25519 public key "
        "(`ssh-ed25519 AAAA… comment`), one a line; # starts a comment"
    )


def read_recipients(path: Path) -> tuple[list[Recipient], list[Problem]]:
    """Every recipient of ``path`` (``[]`` when it does not exist), and the problems of
    its lines (``file:line: message``)."""
    shown = display_path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return [], []
    except (OSError, UnicodeDecodeError) as exc:
        return [], [Problem(shown, 0, "", f"cannot read: {exc.__class__.__name__}")]
    found: list[Recipient] = []
    problems: list[Problem] = []
    for number, line in enumerate(text.splitlines(), 1):
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        parsed = parse_recipient(line, number)
        if isinstance(parsed, str):
            problems.append(Problem(shown, number, "", parsed))
            continue
        twin = next((r for r in found if r.key == parsed.key), None)
        if twin is not None:
            problems.append(Problem(shown, number, "", f"the same key as line {twin.line}"))
            continue
        found.append(parsed)
    return found, problems


@dataclass(frozen=True)
class Identity:
    """The keys of one identity file, and the public keys they open (for messages)."""

    path: Path
    keys: tuple[Any, ...]  # pyrage identities
    publics: tuple[str, ...]  # an age identity's; an SSH key's is derived when asked
    ssh: bool = False

    def describe(self) -> str:
        """``FILE (SHA256:…)``: which identity was tried, safe to print."""
        publics = self.publics
        if self.ssh:  # only for a message: the SSH key's public half, by cryptography
            with contextlib.suppress(OSError):
                publics = tuple(p for p in [_ssh_public(self.path.read_bytes())] if p)
        prints = ", ".join(fingerprint(p) for p in publics) or "its key unknown"
        return f"{_home_shown(self.path)} ({prints})"


def _home_shown(path: Path) -> str:
    home = Path.home()
    return "~/" + str(path.relative_to(home)) if path.is_relative_to(home) else str(path)


def identity_file() -> Path:
    """Where the identity is read from: ``$VPSCTL_AGE_IDENTITY``, else ``~/.ssh/id_ed25519``."""
    chosen = os.environ.get(IDENTITY_ENV, "")
    return Path(chosen).expanduser() if chosen else Path.home() / ".ssh" / "id_ed25519"


def load_identity() -> Identity:
    """The identity of :func:`identity_file`; raises :class:`AgeFailure` saying why not."""
    import pyrage  # noqa: PLC0415 - loaded only where keys are handled

    path = identity_file()
    source = f"${IDENTITY_ENV}" if os.environ.get(IDENTITY_ENV) else "the default identity"
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise AgeFailure(
            f"no identity: {_home_shown(path)} ({source}) does not exist; set "
            f"{IDENTITY_ENV} to an age identity file or an SSH private key whose public key "
            "is a recipient"
        ) from None
    except OSError as exc:
        raise AgeFailure(
            f"cannot read the identity {_home_shown(path)}: {exc.__class__.__name__}"
        ) from None
    if data.lstrip().startswith(b"-----BEGIN"):
        try:
            key = pyrage.ssh.Identity.from_buffer(data)
        except pyrage.IdentityError as exc:
            encrypted = "decrypted first" in str(exc)
            raise AgeFailure(
                f"the identity {_home_shown(path)} is "
                + (
                    "a passphrase-protected SSH key, which vpsctl cannot use; point "
                    f"{IDENTITY_ENV} at an age identity file (`age-keygen -o FILE`) whose "
                    "public key is a recipient"
                    if encrypted
                    else "not an SSH private key age can use"
                )
            ) from None
        return Identity(path, (key,), (), ssh=True)
    keys: list[Any] = []
    publics: list[str] = []
    for number, line in enumerate(data.decode("utf-8", "replace").splitlines(), 1):
        text = line.strip()
        if not text or text.startswith("#"):
            continue
        try:
            key = pyrage.x25519.Identity.from_str(text)
        except pyrage.IdentityError:
            raise AgeFailure(
                f"{_home_shown(path)}:{number}: not an age identity (AGE-SECRET-KEY-1…) "
                "and the file is no SSH private key"
            ) from None
        keys.append(key)
        publics.append(str(key.to_public()))
    if not keys:
        raise AgeFailure(f"{_home_shown(path)}: no identity in the file")
    return Identity(path, tuple(keys), tuple(publics))


def _ssh_public(data: bytes) -> str | None:
    """The public key of an SSH private key, for its fingerprint in messages."""
    from cryptography.hazmat.primitives import serialization  # noqa: PLC0415

    try:
        key = serialization.load_ssh_private_key(data, password=None)
        public = key.public_key().public_bytes(
            serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH
        )
    except (ValueError, TypeError):
        return None
    return public.decode()


def encrypt(plaintext: bytes, recipients: list[Recipient]) -> bytes:
    """``plaintext`` sealed to every recipient."""
    import pyrage  # noqa: PLC0415

    keys = [
        pyrage.ssh.Recipient.from_str(r.key)
        if r.kind == _SSH_ED25519
        else pyrage.x25519.Recipient.from_str(r.key)
        for r in recipients
    ]
    sealed: bytes = pyrage.encrypt(plaintext, keys)
    return sealed


def decrypt(sealed: bytes, identity: Identity) -> bytes:
    """``sealed`` opened with ``identity``; raises :class:`AgeFailure` when it cannot."""
    import pyrage  # noqa: PLC0415

    try:
        opened: bytes = pyrage.decrypt(sealed, list(identity.keys))
    except pyrage.DecryptError as exc:
        if "No matching keys" in str(exc):
            raise AgeFailure(
                f"the identity {identity.describe()} is not one of its recipients"
            ) from None
        raise AgeFailure(f"not an age file, or damaged ({exc})") from None
    return opened


def header_stanzas(sealed: bytes) -> list[tuple[str, str]]:
    """The recipient stanzas of an age file's header: ``(type, ssh tag or "")`` each."""
    found: list[tuple[str, str]] = []
    for raw in sealed.split(b"\n---", 1)[0].split(b"\n")[1:]:
        if raw.startswith(b"-> "):
            words = raw[3:].decode("ascii", "replace").split()
            if words and words[0] in ("X25519", _SSH_ED25519, "ssh-rsa", "scrypt"):
                found.append((words[0], words[1] if words[0].startswith("ssh-") else ""))
    return found


def opens(inventory: Path) -> bool:
    """Whether the inventory's store opens now: a plain one always, an encrypted one when
    the identity decrypts it. The caches ask before a hit: a studio validated with another
    identity must not validate from the cache once this one cannot open its secrets."""
    sealed = inventory / SEALED
    if not sealed.exists():
        return True
    try:
        decrypt(sealed.read_bytes(), load_identity())
    except (AgeFailure, OSError):
        return False
    return True
