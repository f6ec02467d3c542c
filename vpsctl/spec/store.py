"""The secrets store of an inventory: the plain ``secrets.env`` (0600, git-ignored: sandboxes,
tests) or ``secrets.env.age``, sealed with age to the keys of ``recipients`` (committable).

An inventory uses the encrypted store when it holds ``secrets.env.age``, or, before any
secret exists, a ``recipients`` file; both ``secrets.env`` and ``secrets.env.age`` is an
error naming both. The encrypted store is decrypted in memory only: its text is parsed
as secrets.env is, and every message about one of its lines names
``inventory/<env>/secrets.env.age:LINE``. Every write is a verified round trip: the new file
is opened again with the operator's identity before it replaces the old one, so no write
can lock its author out.
"""

from __future__ import annotations

import stat
from dataclasses import dataclass
from pathlib import Path

from vpsctl.errors import Problem, SpecError, display_path, register_secrets
from vpsctl.spec import age
from vpsctl.spec.envfile import SecretsFile, parse_secrets, read_secrets

PLAIN = "secrets.env"


@dataclass(frozen=True)
class Store:
    """Where an inventory keeps its secrets."""

    inventory: Path
    encrypted: bool

    @property
    def path(self) -> Path:
        """The store's file: ``secrets.env`` or ``secrets.env.age``."""
        return self.inventory / (age.SEALED if self.encrypted else PLAIN)

    @property
    def recipients_path(self) -> Path:
        """The recipients file beside it."""
        return self.inventory / age.RECIPIENTS

    @property
    def shown(self) -> str:
        """The store's file as the user types it."""
        return display_path(self.path)


def store_of(inventory: Path) -> Store:
    """The store ``inventory`` uses; :class:`SpecError` when it holds both files."""
    plain, sealed = inventory / PLAIN, inventory / age.SEALED
    if plain.exists() and sealed.exists():
        raise SpecError(
            [
                Problem(
                    display_path(plain),
                    0,
                    "",
                    f"both {display_path(plain)} and {display_path(sealed)} exist: keep one "
                    f"(`vpsctl secrets encrypt -i {inventory}` finishes an encryption that "
                    "stopped half-way; otherwise delete the stale one)",
                )
            ]
        )
    encrypted = sealed.exists() or (not plain.exists() and (inventory / age.RECIPIENTS).exists())
    return Store(inventory, encrypted)


def _failure(store: Store, why: str, sealed: bytes | None = None) -> SpecError:
    """A decryption failure as the user's error: what failed, and who can open the file."""
    recipients, _ = age.read_recipients(store.recipients_path)
    listed = "; ".join(r.describe() for r in recipients) or (
        f"(none listed: {display_path(store.recipients_path)} is missing or empty)"
    )
    text = f"cannot decrypt: {why}; it is encrypted to the recipients of "
    text += f"{display_path(store.recipients_path)}: {listed}"
    if sealed is not None:
        stanzas = age.header_stanzas(sealed)
        tags = {r.ssh_tag() for r in recipients}
        unknown = [t for kind, t in stanzas if kind.startswith("ssh-") and t not in tags]
        if len(stanzas) != len(recipients) or unknown:
            text += (
                f" (the file's header holds {len(stanzas)} recipient(s)"
                + (f", {len(unknown)} SSH key(s) not listed there" if unknown else "")
                + "; the recipients file changed since it was written)"
            )
    return SpecError([Problem(store.shown, 0, "", text)])


def identity_for(store: Store) -> age.Identity:
    """The operator's identity; :class:`SpecError` (naming the recipients) when there is none."""
    try:
        return age.load_identity()
    except age.AgeFailure as exc:
        raise _failure(store, str(exc)) from None


def read_text(store: Store) -> str | None:
    """The store's text (decrypted in memory), its values registered for masking at once;
    ``None`` when the file does not exist yet."""
    if not store.encrypted:
        try:
            text = store.path.read_text(encoding="utf-8")
        except FileNotFoundError:
            return None
    else:
        try:
            sealed = store.path.read_bytes()
        except FileNotFoundError:
            return None
        try:
            opened = age.decrypt(sealed, identity_for(store))
        except age.AgeFailure as exc:
            raise _failure(store, str(exc), sealed) from None
        try:
            text = opened.decode("utf-8")
        except UnicodeDecodeError:
            raise SpecError(
                [Problem(store.shown, 0, "", "decrypts to text that is not UTF-8")]
            ) from None
    register_secrets(parse_secrets(text, store.shown)[0].values())
    return text


def read(inventory: Path, text: str | None = None) -> tuple[SecretsFile, list[Problem]]:
    """The inventory's secrets, parsed (values registered for masking); ``text`` stands in
    for the store's content (an edit being validated). Raises :class:`SpecError` for both
    files present or an encrypted store that does not open."""
    store = store_of(inventory)
    if not store.encrypted and text is None:
        found = read_secrets(store.path)
        register_secrets(found[0].values())
        return found
    if text is None:
        text = read_text(store)
    if text is None:
        return SecretsFile(store.shown, False, {}), []
    mode = 0o600 if store.encrypted else stat.S_IMODE(store.path.stat().st_mode)
    found = parse_secrets(text, store.shown, mode)
    register_secrets(found[0].values())
    return found


def recipients_of(store: Store) -> list[age.Recipient]:
    """The recipients to seal to; :class:`SpecError` when the file is missing, empty or wrong."""
    found, problems = age.read_recipients(store.recipients_path)
    if problems:
        raise SpecError(problems)
    if not found:
        raise SpecError(
            [
                Problem(
                    display_path(store.recipients_path),
                    0,
                    "",
                    "no recipients: list the public keys (age1… or ssh-ed25519 …) that may open "
                    f"{display_path(store.inventory / age.SEALED)}, one a line",
                )
            ]
        )
    return found


def seal(store: Store, text: str, recipients: list[age.Recipient]) -> bytes:
    """``text`` encrypted to ``recipients``, after proving the operator's identity opens it
    to exactly ``text`` (else :class:`SpecError`: the write would lock its author out)."""
    data = text.encode("utf-8")
    sealed = age.encrypt(data, recipients)
    identity = identity_for(store)
    try:
        back = age.decrypt(sealed, identity)
    except age.AgeFailure:
        raise SpecError(
            [
                Problem(
                    display_path(store.recipients_path),
                    0,
                    "",
                    f"the identity {identity.describe()} is not among these recipients: the "
                    "store written would not open for you; nothing written",
                )
            ]
        ) from None
    if back != data:  # never expected: pyrage is the implementation; checked all the same
        raise SpecError([Problem(store.shown, 0, "", "the round trip differs; nothing written")])
    return sealed


def write_text(store: Store, text: str, recipients: list[age.Recipient] | None = None) -> None:
    """Replace the store's content with ``text``: the plain file 0600, or sealed to
    ``recipients`` (default: the recipients file's) after a verified round trip."""
    from vpsctl.local.files import write_atomic  # noqa: PLC0415 - spec/ stays free of local/ at import

    if not store.encrypted:
        write_atomic(store.path, text.encode("utf-8"), 0o600)
        return
    sealed = seal(store, text, recipients_of(store) if recipients is None else recipients)
    write_atomic(store.path, sealed, 0o644)
