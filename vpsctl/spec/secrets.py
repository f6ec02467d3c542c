"""Secrets are a type, not a string.

A :class:`Secret` holds a value that is never printed: its ``repr`` and ``str`` show only
its length and a short sha256 fingerprint. Every secret a stack uses has a *kind* that
knows how to check a value (with a message that never quotes it) and, where vpsctl can,
how to generate a fresh one.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import re
import secrets as _random
import string
import unicodedata
from functools import lru_cache
from typing import Annotated, Any, Literal
from urllib.parse import urlsplit

import re2
from pydantic import Field, Tag, field_validator, model_validator

from vpsctl.spec.base import Model, discriminator, tag

# A key of secrets.env, for re.fullmatch (anchor it as `^…$` only for pydantic's Rust
# engine, where `$` is the end of the text; Python's `$` also matches before a final "\n").
SECRET_NAME = r"[A-Z][A-Z0-9_]*"  # noqa: S105 - a pattern for key names, not a secret


class Secret:
    """A secret value. Printing it shows ``<secret 44 bytes sha256:ab12cd34>``, never the value."""

    __slots__ = ("_value",)

    def __init__(self, value: str) -> None:
        self._value = value

    def reveal(self) -> str:
        """The value itself: only for rendering files that go to the host with mode 0600."""
        return self._value

    @property
    def size(self) -> int:
        """Length of the value in UTF-8 bytes."""
        return len(self._value.encode())

    @property
    def fingerprint(self) -> str:
        """``sha256:`` and the first 8 hex digits of the value's sha256."""
        return fingerprint(self._value)

    def masked(self) -> str:
        """What output shows in place of the value."""
        return f"<secret {self.size} bytes {self.fingerprint}>"

    def __repr__(self) -> str:
        return self.masked()

    __str__ = __repr__

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Secret) and other._value == self._value

    def __hash__(self) -> int:
        return hash(("Secret", self._value))


def fingerprint(value: str) -> str:
    """A short, stable fingerprint of ``value`` that is safe to print."""
    return "sha256:" + hashlib.sha256(value.encode()).hexdigest()[:8]


def describe(value: str) -> str:
    """How an error message refers to a value: its size and fingerprint, never its text."""
    return f"the value ({len(value.encode())} bytes, {fingerprint(value)})"


_ALNUM = string.ascii_letters + string.digits


def _token(n: int, alphabet: str = _ALNUM) -> str:
    return "".join(_random.choice(alphabet) for _ in range(n))


class _Kind(Model):
    description: str | None = Field(None, description="What the secret is for.")
    external: bool = Field(
        False,
        description="Issued by someone else (Stripe, an SMTP provider): never generated.",
    )
    obtain: str | None = Field(
        None, description="Where the operator gets an externally issued value."
    )
    encrypts: str | None = Field(
        None,
        description="What stored data this key encrypts (e.g. `2FA secrets`): `vpsctl "
        "secrets rotate` refuses it, since a new key would leave that data unreadable.",
    )

    def is_external(self) -> bool:
        """Whether only a third party can issue this value."""
        return self.external

    def spec_text(self) -> str:
        """The kind in one phrase, as messages show it."""
        raise NotImplementedError

    def check(self, value: str) -> str | None:
        """``None`` if ``value`` is valid, else why not (never quoting ``value``)."""
        raise NotImplementedError

    def generate(self, sandbox: bool) -> str | None:
        """A fresh valid value, or ``None`` when vpsctl cannot make one here."""
        raise NotImplementedError

    def stripe_mode(self, value: str) -> str | None:
        """``test`` or ``live`` for Stripe API keys; ``None`` for everything else."""
        return None


class Base64Bytes(_Kind):
    """Padded standard base64 decoding to exactly ``bytes`` bytes (``openssl rand -base64 N``)."""

    kind: Literal["base64_bytes"]
    bytes: int = Field(ge=1, le=4096)

    def spec_text(self) -> str:
        chars = 4 * ((self.bytes + 2) // 3)
        return (
            f"padded standard base64 of exactly {self.bytes} bytes ({chars} characters); "
            f"generate one with `openssl rand -base64 {self.bytes}`"
        )

    def check(self, value: str) -> str | None:
        try:
            raw = base64.b64decode(value.encode("ascii"), validate=True)
        except (binascii.Error, UnicodeEncodeError):
            return f"{describe(value)} is not padded standard base64; expected {self.spec_text()}"
        if len(raw) != self.bytes:
            return f"{describe(value)} decodes to {len(raw)} bytes; expected {self.spec_text()}"
        return None

    def generate(self, sandbox: bool) -> str | None:
        return base64.b64encode(_random.token_bytes(self.bytes)).decode()


class MinBytes(_Kind):
    """Any value of at least ``bytes`` bytes (for keys like Plausible's SECRET_KEY_BASE)."""

    kind: Literal["min_bytes"]
    bytes: int = Field(ge=1, le=4096)

    def spec_text(self) -> str:
        return f"at least {self.bytes} bytes; generate one with `openssl rand -base64 {self.bytes}`"

    def check(self, value: str) -> str | None:
        size = len(value.encode())
        if size < self.bytes:
            return f"{describe(value)} is {size} bytes; expected {self.spec_text()}"
        if value != value.strip():
            return f"{describe(value)} has leading or trailing whitespace; remove it"
        return None

    def generate(self, sandbox: bool) -> str | None:
        # base64 of ``bytes`` random bytes is longer than ``bytes`` characters: always enough.
        return base64.b64encode(_random.token_bytes(self.bytes)).decode()


def _re2_options() -> Any:
    options = re2.Options()
    options.log_errors = False  # RE2 would print its own copy of every error to stderr
    return options


_RE2_OPTIONS = _re2_options()

MAX_PATTERN = 1000
"""The longest ``kind: regex`` pattern: compiling a huge one costs seconds, even to refuse it."""


@lru_cache(maxsize=64)
def _compile_re2(pattern: str) -> Any:
    """``pattern`` compiled by RE2; raises ``ValueError`` saying what RE2 refused."""
    try:
        return re2.compile(pattern, _RE2_OPTIONS)
    except re2.error as exc:
        detail = exc.args[0] if exc.args else ""
        if isinstance(detail, bytes):
            detail = detail.decode("utf-8", "replace")
        if len(detail) > 80:  # RE2 quotes the rest of the pattern after the error
            detail = detail[:77] + "…"
        if not _python_compiles(pattern):
            raise ValueError(f"not a valid regular expression ({detail})") from None
        raise ValueError(
            f"RE2 cannot run this pattern ({detail}): secret patterns run in linear time, "
            "without backreferences (\\1), lookaround ((?=…), (?<=…)) or \\Z (the whole "
            "value must match anyway)"
        ) from None
    except UnicodeEncodeError:
        raise ValueError("the pattern holds a character that is not valid Unicode") from None


def _python_compiles(pattern: str) -> bool:
    # Only to word the error: a pattern broken for every engine is not "unsupported".
    try:
        re.compile(pattern)
    except (re.error, RecursionError, OverflowError):
        return False
    return True


def _re2_fullmatch(pattern: str, text: str) -> bool:
    try:
        return _compile_re2(pattern).fullmatch(text) is not None
    except UnicodeEncodeError:  # a lone surrogate cannot be a valid value of any pattern
        return False


class Regex(_Kind):
    """A value that must match ``pattern`` entirely; ``hint`` says in words what is valid.

    Patterns run on RE2, whose matching time is linear in the value's length: a pattern
    like ``(a+)+b``, exponential with Python's backtracking ``re``, cannot stall
    ``validate``. RE2 refuses what it cannot run in linear time (backreferences,
    lookaround), and so does validation. In RE2 ``\\d``, ``\\s`` and ``\\w`` are ASCII only.
    """

    kind: Literal["regex"]
    pattern: str
    hint: str = Field(description="What a valid value looks like, in words.")
    example: str | None = Field(
        None,
        description="a valid, harmless value for sandbox environments; `{random}` in it "
        "becomes 12 random lowercase hex digits",
    )

    @field_validator("pattern")
    @classmethod
    def _compiles(cls, pattern: str) -> str:
        if len(pattern) > MAX_PATTERN:
            raise ValueError(
                f"is {len(pattern)} characters; a secret's pattern needs far fewer "
                f"(at most {MAX_PATTERN})"
            )
        _compile_re2(pattern)
        return pattern

    @field_validator("example")
    @classmethod
    def _one_line(cls, example: str | None) -> str | None:
        # `secrets generate` writes the example into secrets.env, one line per value.
        if example is not None and any(
            unicodedata.category(c) in {"Cc", "Zl", "Zp"} for c in example
        ):
            raise ValueError(
                "holds a control character or a line break; secrets.env cannot carry it"
            )
        return example

    @model_validator(mode="after")
    def _example_matches(self) -> Regex:
        if self.example is not None and not _re2_fullmatch(self.pattern, self._sample()):
            raise ValueError("`example` does not match `pattern`")
        return self

    def _sample(self) -> str:
        token = _token(12, "0123456789abcdef")
        return (self.example or "").replace("{random}", token)

    def spec_text(self) -> str:
        return self.hint

    def check(self, value: str) -> str | None:
        if not _re2_fullmatch(self.pattern, value):
            return f"{describe(value)} does not match /{self.pattern}/; expected {self.hint}"
        return None

    def generate(self, sandbox: bool) -> str | None:
        return self._sample() if sandbox and self.example is not None else None


_STRIPE_SECRET = re.compile(r"(sk|rk)_(test|live)_[A-Za-z0-9]{16,}")
_STRIPE_PUBLISHABLE = re.compile(r"pk_(test|live)_[A-Za-z0-9]{16,}")
_STRIPE_WEBHOOK = re.compile(r"whsec_[A-Za-z0-9+/=]{16,}")

_STRIPE_KEYS = "Stripe dashboard → Developers → API keys"
_STRIPE_HOOKS = "Stripe dashboard → Developers → Webhooks → your endpoint → Signing secret"


class StripeSecretKey(_Kind):
    """A Stripe secret or restricted API key: ``sk_live_…``, ``sk_test_…``, ``rk_…``."""

    kind: Literal["stripe_secret_key"]

    def is_external(self) -> bool:
        return True

    def spec_text(self) -> str:
        return "a Stripe secret key: sk_live_… or sk_test_… (or a restricted rk_live_…/rk_test_…)"

    def check(self, value: str) -> str | None:
        if _STRIPE_PUBLISHABLE.fullmatch(value):
            return f"{describe(value)} is a publishable key (pk_…); expected {self.spec_text()}"
        if _STRIPE_WEBHOOK.fullmatch(value):
            return f"{describe(value)} is a webhook secret (whsec_…); expected {self.spec_text()}"
        if not _STRIPE_SECRET.fullmatch(value):
            return f"{describe(value)} is not {self.spec_text()}"
        return None

    def generate(self, sandbox: bool) -> str | None:
        return "sk_test_" + _token(32) if sandbox else None

    def stripe_mode(self, value: str) -> str | None:
        match = _STRIPE_SECRET.fullmatch(value)
        return match.group(2) if match else None


class StripePublishableKey(_Kind):
    """A Stripe publishable key: ``pk_live_…`` or ``pk_test_…``."""

    kind: Literal["stripe_publishable_key"]

    def is_external(self) -> bool:
        return True

    def spec_text(self) -> str:
        return "a Stripe publishable key: pk_live_… or pk_test_…"

    def check(self, value: str) -> str | None:
        if _STRIPE_SECRET.fullmatch(value):
            return (
                f"{describe(value)} is a SECRET key (sk_/rk_) where a publishable key belongs; "
                f"expected {self.spec_text()}"
            )
        if not _STRIPE_PUBLISHABLE.fullmatch(value):
            return f"{describe(value)} is not {self.spec_text()}"
        return None

    def generate(self, sandbox: bool) -> str | None:
        return "pk_test_" + _token(32) if sandbox else None

    def stripe_mode(self, value: str) -> str | None:
        match = _STRIPE_PUBLISHABLE.fullmatch(value)
        return match.group(1) if match else None


class StripeWebhookSecret(_Kind):
    """A Stripe webhook signing secret: ``whsec_…`` (one per endpoint)."""

    kind: Literal["stripe_webhook_secret"]

    def is_external(self) -> bool:
        return True

    def spec_text(self) -> str:
        return "a Stripe webhook signing secret: whsec_ followed by at least 16 characters"

    def check(self, value: str) -> str | None:
        if not value.startswith("whsec_"):
            return f"{describe(value)} does not start with whsec_; expected {self.spec_text()}"
        if not _STRIPE_WEBHOOK.fullmatch(value):
            return f"{describe(value)} is not {self.spec_text()}"
        return None

    def generate(self, sandbox: bool) -> str | None:
        return "whsec_" + _token(32) if sandbox else None


UrlScheme = Literal["https", "http", "smtp", "smtps", "postgres"]


def _https_only() -> list[UrlScheme]:
    return ["https"]


class Url(_Kind):
    """A URL with one of ``schemes``, a host, and (with ``path: false``) no path."""

    kind: Literal["url"]
    schemes: list[UrlScheme] = Field(default_factory=_https_only, min_length=1)
    path: bool = Field(True, description="Whether the URL may have a path.")

    def spec_text(self) -> str:
        schemes = " or ".join(f"{s}://" for s in self.schemes)
        return f"a {schemes} URL with a host" + ("" if self.path else " and no path")

    def check(self, value: str) -> str | None:
        try:
            parts = urlsplit(value)
        except ValueError:
            return f"{describe(value)} is not a URL; expected {self.spec_text()}"
        if parts.scheme not in self.schemes:
            return f"{describe(value)} has the wrong scheme; expected {self.spec_text()}"
        if not parts.hostname:
            return f"{describe(value)} has no host; expected {self.spec_text()}"
        if not self.path and parts.path not in ("", "/"):
            return f"{describe(value)} has a path; expected {self.spec_text()}"
        if any(c.isspace() for c in value):
            return f"{describe(value)} contains whitespace; expected {self.spec_text()}"
        return None

    def generate(self, sandbox: bool) -> str | None:
        return None


class Password(_Kind):
    """A password of at least ``min_length`` characters, without surrounding whitespace."""

    kind: Literal["password"]
    min_length: int = Field(ge=1, le=1024)

    def spec_text(self) -> str:
        return f"a password of at least {self.min_length} characters without surrounding spaces"

    def check(self, value: str) -> str | None:
        if len(value) < self.min_length:
            return f"{describe(value)} is {len(value)} characters; expected {self.spec_text()}"
        if value != value.strip() or any(ord(c) < 32 for c in value):
            return f"{describe(value)} has whitespace or control characters at its ends or inside"
        return None

    def generate(self, sandbox: bool) -> str | None:
        # Alphanumeric only: safe in URLs, env files and every shell quoting style.
        return _token(max(self.min_length, 32))


KINDS = (
    "base64_bytes",
    "min_bytes",
    "regex",
    "stripe_secret_key",
    "stripe_publishable_key",
    "stripe_webhook_secret",
    "url",
    "password",
)

SecretKind = Annotated[
    Annotated[Base64Bytes, Tag(tag("base64_bytes"))]
    | Annotated[MinBytes, Tag(tag("min_bytes"))]
    | Annotated[Regex, Tag(tag("regex"))]
    | Annotated[StripeSecretKey, Tag(tag("stripe_secret_key"))]
    | Annotated[StripePublishableKey, Tag(tag("stripe_publishable_key"))]
    | Annotated[StripeWebhookSecret, Tag(tag("stripe_webhook_secret"))]
    | Annotated[Url, Tag(tag("url"))]
    | Annotated[Password, Tag(tag("password"))],
    discriminator("kind", KINDS, "unknown secret kind"),
]
