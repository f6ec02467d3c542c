from __future__ import annotations

import base64

import pytest
from pydantic import TypeAdapter, ValidationError

from vpsctl.errors import masked, register_secrets
from vpsctl.spec.secrets import (
    Base64Bytes,
    MinBytes,
    Password,
    Regex,
    Secret,
    SecretKind,
    StripePublishableKey,
    StripeSecretKey,
    StripeWebhookSecret,
    Url,
)

KIND = TypeAdapter(SecretKind)

ALL_KINDS = [
    Base64Bytes(kind="base64_bytes", bytes=32),
    MinBytes(kind="min_bytes", bytes=64),
    Regex(
        kind="regex",
        pattern=r"[a-z0-9]+@[a-z]+\.[a-z]+",
        hint="an address",
        example="x{random}@b.cd",
    ),
    StripeSecretKey(kind="stripe_secret_key"),
    StripePublishableKey(kind="stripe_publishable_key"),
    StripeWebhookSecret(kind="stripe_webhook_secret"),
    Url(kind="url"),
    Password(kind="password", min_length=16),
]


def test_secret_never_prints_its_value() -> None:
    secret = Secret("hunter2-is-not-a-password")
    for shown in (repr(secret), str(secret), f"{secret}", f"{[secret]}", f"{ {'k': secret} }"):
        assert "hunter2" not in shown
    assert repr(secret) == f"<secret 25 bytes {secret.fingerprint}>"
    assert secret.fingerprint.startswith("sha256:") and len(secret.fingerprint) == 15
    assert secret.reveal() == "hunter2-is-not-a-password"


def test_secrets_compare_by_value() -> None:
    assert Secret("a") == Secret("a") and Secret("a") != Secret("b")
    assert len({Secret("a"), Secret("a")}) == 1


@pytest.mark.parametrize("kind", ALL_KINDS, ids=lambda k: k.__class__.__name__)
def test_sandbox_values_pass_their_own_kind(kind: SecretKind) -> None:
    value = kind.generate(sandbox=True)
    if isinstance(kind, Url):
        assert value is None  # nothing sensible to invent for a URL
        return
    assert value is not None
    assert kind.check(value) is None
    assert kind.generate(sandbox=True) != value  # fresh every time


@pytest.mark.parametrize("kind", ALL_KINDS, ids=lambda k: k.__class__.__name__)
def test_external_kinds_are_never_generated_for_real_environments(kind: SecretKind) -> None:
    if kind.is_external():
        assert isinstance(kind, StripeSecretKey | StripePublishableKey | StripeWebhookSecret)
        assert kind.generate(sandbox=False) is None


def test_base64_bytes_counts_decoded_bytes() -> None:
    kind = Base64Bytes(kind="base64_bytes", bytes=32)
    assert kind.check(base64.b64encode(bytes(32)).decode()) is None
    short = kind.check(base64.b64encode(bytes(16)).decode())
    assert short is not None and "decodes to 16 bytes" in short and "exactly 32" in short
    bad = kind.check("not base64 at all!")
    assert bad is not None and "not padded standard base64" in bad
    unpadded = kind.check(base64.b64encode(bytes(32)).decode().rstrip("="))
    assert unpadded is not None


def test_stripe_kinds_tell_the_key_types_apart() -> None:
    secret_key = "sk_live_" + "A" * 24
    publishable = "pk_live_" + "B" * 24
    webhook = "whsec_" + "C" * 32
    assert StripeSecretKey(kind="stripe_secret_key").check(secret_key) is None
    assert StripeSecretKey(kind="stripe_secret_key").check("rk_test_" + "D" * 24) is None
    wrong = StripeSecretKey(kind="stripe_secret_key").check(publishable)
    assert wrong is not None and "publishable key" in wrong
    wrong = StripePublishableKey(kind="stripe_publishable_key").check(secret_key)
    assert wrong is not None and "SECRET key" in wrong
    wrong = StripeWebhookSecret(kind="stripe_webhook_secret").check("C" * 32)
    assert wrong is not None and "does not start with whsec_" in wrong
    assert StripeWebhookSecret(kind="stripe_webhook_secret").check(webhook) is None
    assert StripeSecretKey(kind="stripe_secret_key").stripe_mode(secret_key) == "live"
    assert StripePublishableKey(kind="stripe_publishable_key").stripe_mode(publishable) == "live"


def test_url_kind() -> None:
    kind = Url(kind="url", schemes=["https"], path=False)
    assert kind.check("https://stats.example.com") is None
    assert kind.check("https://stats.example.com/") is None
    for bad in ("http://stats.example.com", "https://", "https://x.com/sub", "not a url"):
        assert kind.check(bad) is not None


def test_password_rejects_surrounding_whitespace() -> None:
    kind = Password(kind="password", min_length=8)
    assert kind.check("correct horse battery") is None
    assert kind.check(" padded-password ") is not None
    assert kind.check("short") is not None


def test_kind_union_errors_name_the_valid_kinds() -> None:
    with pytest.raises(ValidationError) as exc:
        KIND.validate_python({"kind": "base64"})
    assert "must be one of base64_bytes, min_bytes, password, regex" in str(exc.value)


def test_regex_example_must_match() -> None:
    with pytest.raises(ValidationError, match="`example` does not match"):
        Regex(kind="regex", pattern="[0-9]+", hint="digits", example="abc")
    with pytest.raises(ValidationError, match=r"not a valid regular expression \(missing "):
        Regex(kind="regex", pattern="([", hint="broken")


def test_regex_patterns_run_on_re2_in_linear_time() -> None:
    """`(a+)+b` takes Python's backtracking `re` exponential time in the length of a value
    without a `b` (39 s at 30 characters); RE2 answers for 100 000 characters at once. The
    test shows RE2 is the engine by what only RE2 does: it refuses a backreference that
    Python's `re` compiles, and it finishes `(a+)+b` on inputs `re` could not."""
    # First what only RE2 does, so that a swap back to `re` fails here and does not hang below.
    with pytest.raises(ValidationError, match="invalid escape sequence: \\\\1"):
        Regex(kind="regex", pattern=r"(a)\1", hint="twice")
    # RE2's \d is ASCII; Python's also takes U+0663 (Arabic-Indic three): check() and the
    # example's match run on RE2 too.
    digits = Regex(kind="regex", pattern=r"\d+", hint="digits")
    assert digits.check("123") is None
    assert digits.check("\u0663") is not None
    with pytest.raises(ValidationError, match="`example` does not match"):
        Regex(kind="regex", pattern=r"\d+", hint="digits", example="\u0663")
    kind = Regex(kind="regex", pattern="(a+)+b", hint="a's then b", example="a" * 10_000 + "b")
    assert kind.check("a" * 100_000 + "b") is None
    message = kind.check("a" * 100_000)
    assert message is not None and message.startswith("the value (100000 bytes, sha256:")
    assert kind.check("a" * 10_000 + "c" + "a" * 10_000 + "b") is not None


@pytest.mark.parametrize(
    ("pattern", "detail"),
    [
        (r"(\w+)-\1", "invalid escape sequence: \\1"),
        (r"(?P<x>a)(?P=x)", "invalid perl operator: (?P"),
        (r"(?=.*@).+", "invalid perl operator: (?="),
        (r"(?<!x)y", "invalid perl operator: (?<"),
        (r"abc\Z", "invalid escape sequence: \\Z"),
        ("a{2000}", "invalid repetition size"),
    ],
)
def test_patterns_re2_cannot_run_are_refused_saying_why(pattern: str, detail: str) -> None:
    with pytest.raises(ValidationError) as exc:
        Regex(kind="regex", pattern=pattern, hint="h")
    (error,) = exc.value.errors()
    assert error["loc"] == ("pattern",)
    assert detail in error["msg"]
    assert "backreferences" in error["msg"] and "lookaround" in error["msg"]


def test_regex_matches_the_whole_value_only() -> None:
    kind = Regex(kind="regex", pattern="[0-9a-f]{4}", hint="4 hex digits")
    assert kind.check("beef") is None
    for value in ("beef\n", "beefa", "xbeef", "bee", "beef\r\n"):
        assert kind.check(value) is not None, repr(value)
    alternation = Regex(kind="regex", pattern="a|ab", hint="a or ab")
    assert alternation.check("ab") is None  # fullmatch, not "the first alternative matched"


def test_regex_pattern_length_is_bounded_and_errors_stay_short() -> None:
    with pytest.raises(ValidationError, match=r"is 1001 characters; .*\(at most 1000\)"):
        Regex(kind="regex", pattern="a" * 1001, hint="h")
    with pytest.raises(ValidationError) as exc:
        Regex(kind="regex", pattern="(" * 1000, hint="h")
    assert len(exc.value.errors()[0]["msg"]) < 200


def test_regex_example_must_be_one_line() -> None:
    for example in ("x@b.cd\n", "x@b.cd\u2028", "x\x00@b.cd"):
        with pytest.raises(ValidationError, match="control character or a line break"):
            Regex(kind="regex", pattern=r"[^@]+@[^@]+", hint="h", example=example)


def test_error_boundary_masks_every_loaded_secret() -> None:
    register_secrets(["a-registered-secret-value", "short"])
    assert masked("compose said: a-registered-secret-value leaked") == (
        "compose said: <redacted> leaked"
    )
    assert (
        masked("short stays: too short to mask safely") == "short stays: too short to mask safely"
    )
