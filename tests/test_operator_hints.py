"""What a new operator meets (issue 17, part A): refusals that name their cause, warnings for
what is silently ignored, and hints whose commands work as written in that environment."""

from __future__ import annotations

import ast
import contextlib
import io
import re
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace

import pytest

from tests import factsim
from tests.helpers import ROOT, copy_studio, run_cli
from tests.test_invalid_corpus import INVENTORY, SECRETS, make_studio
from vpsctl.cli import main as cli
from vpsctl.cli import views
from vpsctl.core.facts import parse
from vpsctl.errors import Problem
from vpsctl.host import remote
from vpsctl.local import docker as localdocker
from vpsctl.local import standins
from vpsctl.ops import recovery, targets
from vpsctl.ops.inputs import render_spec
from vpsctl.spec import loader
from vpsctl.spec.envfile import line_problem
from vpsctl.spec.generate import generate
from vpsctl.spec.loader import load_spec
from vpsctl.spec.studio import Spec


def _edit(path: Path, old: str, new: str) -> None:
    text = path.read_text(encoding="utf-8")
    assert text.count(old) == 1, old
    path.write_text(text.replace(old, new), encoding="utf-8")


def test_secrets_generate_refuses_a_file_it_cannot_parse(tmp_path: Path) -> None:
    """An unclosed quote swallows the lines after it: generate would append those keys a
    second time. It refuses, naming the line and column, and writes nothing."""
    studio = make_studio(tmp_path)
    secrets = studio / SECRETS
    _edit(secrets, "SHOP_SESSION_SECRET=fixture", "SHOP_SESSION_SECRET='fixture")
    before = secrets.read_bytes()
    result = run_cli(studio, "secrets", "generate", "-i", INVENTORY)
    assert result.code == 1
    assert "secrets.env:8: unclosed quote: the ' at column 21" in result.err
    assert secrets.read_bytes() == before


def _unplaced_stack_and_stray_secret(studio: Path) -> None:
    shop = (studio / "stacks/shop.yaml").read_text(encoding="utf-8")
    (studio / "stacks/shop2.yaml").write_text(shop.replace("SHOP_", "SHOP2_"), encoding="utf-8")
    with (studio / SECRETS).open("a", encoding="utf-8") as f:
        f.write("SHOP2_TOKEN_KEY=stray-value-of-shop2\nLEFTOVER_KEY=stray-value-left-over\n")


def test_validate_warns_of_an_unplaced_stack_and_unused_secrets(tmp_path: Path) -> None:
    studio = make_studio(tmp_path)
    _unplaced_stack_and_stray_secret(studio)
    result = run_cli(studio, "validate", "-i", INVENTORY)
    assert result.code == 0  # a warning changes no exit code
    assert result.out == ""
    lines = result.err.splitlines()
    assert lines[0] == (
        "warning: stacks/shop2.yaml: stack shop2 is not placed on this host, so validate, "
        "plan and apply ignore it; to run it here: add `shop2: {domains: {app: HOSTNAME}}` "
        "under `stacks:` in inventory/test/host.yaml:18 (HOSTNAME: the name it is served "
        "under here); run `vpsctl secrets generate -i inventory/test`"
    )
    assert lines[1].startswith(
        "warning: inventory/test/secrets.env:17: SHOP2_TOKEN_KEY: unused: only stack shop2 "
        "declares it"
    )
    assert lines[2].startswith(
        "warning: inventory/test/secrets.env:18: LEFTOVER_KEY: unused: no stack placed on "
        "this host declares it"
    )
    assert len(lines) == 3
    assert "stray-value" not in result.err


def test_plan_prints_the_same_warnings(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    studio = make_studio(tmp_path)
    _unplaced_stack_and_stray_secret(studio)
    key = Path("~/.ssh/test_backup_ed25519").expanduser()  # HOME is a temporary directory
    key.parent.mkdir(parents=True, exist_ok=True)
    key.write_text("-----BEGIN OPENSSH PRIVATE KEY-----\ntest\n-----END OPENSSH PRIVATE KEY-----\n")
    with contextlib.chdir(studio):
        desired = render_spec(load_spec(Path(INVENTORY)))
    monkeypatch.setattr(
        targets, "read_facts", lambda spec: parse(factsim.converged(desired).output())
    )
    result = run_cli(studio, "plan", "-i", INVENTORY)
    assert result.code == 0, result.err
    assert "warning: stacks/shop2.yaml: stack shop2 is not placed" in result.err
    assert "warning: inventory/test/secrets.env:18: LEFTOVER_KEY: unused" in result.err


def test_warnings_pass_the_redacting_stream(tmp_path: Path) -> None:
    """A warning is printed through the same boundary as errors: a message that happened to
    hold a secret value would print it masked."""
    studio = make_studio(tmp_path)
    secret = "fixtureSmtpPassword01"
    assert secret in (studio / SECRETS).read_text(encoding="utf-8")
    spec_warning = Problem("x", 1, "", f"holds {secret}")
    out = io.StringIO()
    with contextlib.chdir(studio), contextlib.redirect_stderr(out):
        original = loader.load_spec

        def load_with_warning(inventory: Path, **kw: bool) -> Spec:
            spec = original(inventory, **kw)
            spec.warnings.append(spec_warning)
            return spec

        with pytest.MonkeyPatch.context() as mp:
            mp.setattr(cli, "load_spec", load_with_warning)
            assert cli.main(["validate", "-i", INVENTORY]) == 0
    assert secret not in out.getvalue()
    assert "warning: x:1: holds <redacted>" in out.getvalue()


# A command that reads an inventory (without `-i` it runs against inventory/prod), as
# messages suggest one: in backticks, or as a whole string (a constant used in messages).
_COMMAND = re.compile(
    r"(?:^|`)vpsctl (?:validate|show|secrets (?:generate|example)|render|plan|apply|audit|backup|"
    r"restore|rebuild|drill)\b(?P<rest>[^`\n]*)"
)


def _message_strings(source: str) -> Iterator[tuple[int, str]]:
    """Every string literal of ``source`` but docstrings; an f-string as one text with each
    replacement field written as its source (``{inventory}``)."""
    tree = ast.parse(source)
    skip: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Module | ast.ClassDef | ast.FunctionDef) and node.body:
            first = node.body[0]
            if isinstance(first, ast.Expr) and isinstance(first.value, ast.Constant):
                skip.add(id(first.value))
        if isinstance(node, ast.JoinedStr):
            skip.update(id(v) for v in node.values)
    for node in ast.walk(tree):
        if isinstance(node, ast.JoinedStr):
            parts = []
            for v in node.values:
                if isinstance(v, ast.FormattedValue):
                    parts.append("{" + (ast.get_source_segment(source, v.value) or "?") + "}")
                elif isinstance(v, ast.Constant):
                    parts.append(str(v.value))
            yield node.lineno, "".join(parts)
        elif (
            isinstance(node, ast.Constant) and isinstance(node.value, str) and id(node) not in skip
        ):
            yield node.lineno, node.value


def test_every_suggested_command_names_the_inventory() -> None:
    """Following a hint must never act on prod by default: every `vpsctl <command>` in a
    message of the code carries `-i` (or a field whose definition in the same module
    starts with ` -i `, as views' ``inventory``)."""
    offenders = []
    for path in sorted((ROOT / "vpsctl").rglob("*.py")):
        source = path.read_text(encoding="utf-8")
        for line, text in _message_strings(source):
            for match in _COMMAND.finditer(text):
                rest = match.group("rest")
                field = re.match(r"\{(\w+)\}", rest)
                proven = field is not None and re.search(
                    rf"^\s*{field.group(1)} = f?\" -i ", source, re.MULTILINE
                )
                if not re.search(r"(^|\s)-i\s", rest) and not proven:
                    offenders.append(f"{path.relative_to(ROOT)}:{line}: {match.group(0)}")
    assert offenders == []


def test_the_scan_sees_a_bare_command() -> None:
    found = [
        m.group(0)
        for _, t in _message_strings('x = f"run `vpsctl plan{y}`"')
        for m in _COMMAND.finditer(t)
    ]
    assert found == ["`vpsctl plan{y}"]


@pytest.fixture
def sandbox_studio(tmp_path: Path) -> Path:
    """A copy of the example studio whose sandbox secrets.env `secrets generate` filled."""
    generate(copy_studio(tmp_path) / "inventory/sandbox")
    return tmp_path


def test_a_missing_external_secret_in_a_sandbox_says_generate_makes_it(
    sandbox_studio: Path,
) -> None:
    secrets = sandbox_studio / "inventory/sandbox/secrets.env"
    lines = secrets.read_text(encoding="utf-8").splitlines(keepends=True)
    kept = [line for line in lines if not line.startswith("DOCUMINT_STRIPE_WEBHOOK_SECRET=")]
    assert len(kept) == len(lines) - 1
    secrets.write_text("".join(kept), encoding="utf-8")
    result = run_cli(sandbox_studio, "validate", "-i", "inventory/sandbox")
    assert result.code == 1
    assert "DOCUMINT_STRIPE_WEBHOOK_SECRET: missing: stack documint needs" in result.err
    assert (
        "run `vpsctl secrets generate -i inventory/sandbox`: in this sandbox it writes a "
        "test-shaped value" in result.err
    )
    assert "by hand" not in result.err
    # and it does: the hint, followed, makes the spec valid
    assert run_cli(sandbox_studio, "secrets", "generate", "-i", "inventory/sandbox").code == 0
    assert run_cli(sandbox_studio, "validate", "-i", "inventory/sandbox").code == 0


def test_a_missing_secrets_file_in_a_sandbox_says_what_generate_does(
    sandbox_studio: Path,
) -> None:
    (sandbox_studio / "inventory/sandbox/secrets.env").unlink()
    result = run_cli(sandbox_studio, "validate", "-i", "inventory/sandbox")
    assert result.err == (
        "inventory/sandbox/secrets.env: file not found; create it with `vpsctl secrets "
        "generate -i inventory/sandbox`: in a sandbox it fills every key, externally issued "
        "ones with test-shaped values\n"
    )


def test_a_standin_arg_the_standin_refuses_fails_validate(sandbox_studio: Path) -> None:
    """`PRODUCT: PagePulse` used to pass validate and plan and fail in the image build."""
    host = sandbox_studio / "inventory/sandbox/host.yaml"
    _edit(host, "args: {PRODUCT: CronPing}", "args: {PRODUCT: PagePulse}")
    result = run_cli(sandbox_studio, "validate", "-i", "inventory/sandbox")
    assert result.code == 1
    line = next(n for n, text in enumerate(host.read_text().splitlines(), 1) if "PagePulse" in text)
    assert result.err == (
        f"inventory/sandbox/host.yaml:{line}: images.ghcr.io/lumen-studio/cronping:1.9.0.args."
        "PRODUCT: 'PagePulse' is not a PRODUCT stand-in product builds; one of: DocuMint, "
        f"CronPing, FlagBit, WebhookVault ({ROOT}/standins/product/Dockerfile)\n"
    )


def test_a_failed_standin_build_names_the_entry_without_escape_codes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def failing_build(tag: str, context: Path, build_args: dict[str, str] | None = None) -> None:
        raise localdocker.DockerError(
            f"docker build of {tag} failed:\n\x1b[31mERROR\x1b[0m: process did not complete\r\n"
            "\x1b]0;title\x07exit code: 1"
        )

    monkeypatch.setattr(standins, "local_tag", lambda *a: "vpsctl-standin-product:x")
    monkeypatch.setattr(standins, "ensure_base", lambda: "base")
    monkeypatch.setattr(localdocker, "image_exists", lambda tag: False)
    monkeypatch.setattr(localdocker, "build_image", failing_build)
    entry = "inventory/sandbox/host.yaml:46: images.ghcr.io/lumen-studio/cronping:1.9.0"
    with pytest.raises(standins.StandinError) as failed:
        standins.build(ROOT / "standins", "product", {"PRODUCT": "PagePulse"}, entry)
    message = str(failed.value)
    assert message.startswith(
        f"{entry}: building stand-in product failed: fix this entry's standin or args (build "
        "args: PRODUCT=PagePulse; accepted: PRODUCT=DocuMint|CronPing|FlagBit|WebhookVault)"
    )
    assert "ERROR: process did not complete\nexit code: 1" in message
    assert "\x1b" not in message and "\r" not in message and "\x07" not in message


def test_utc_time_converts_restic_times_like_the_journal() -> None:
    assert views.utc_time("2026-12-02T03:30:01.123456789+01:00") == "2026-12-02T02:30:01Z"
    assert views.utc_time("2026-12-02T23:59:59-02:00") == "2026-12-03T01:59:59Z"
    assert views.utc_time("2026-12-02T03:30:01Z") == "2026-12-02T03:30:01Z"


def test_backup_list_has_a_header_utc_times_and_a_kind_filter(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    found = [
        recovery.Snapshot(
            "aaaa1111bbbb", "2026-12-02T03:30:01.5+01:00", ["vpsctl", "run:nightly", "stack:shop"]
        ),
        recovery.Snapshot(
            "cccc2222dddd",
            "2026-12-02T10:00:00+01:00",
            ["vpsctl", "run:manual", "stack:shop", "stack:blog"],
        ),
        recovery.Snapshot(
            "eeee3333ffff", "2026-12-01T03:30:00+01:00", ["vpsctl", "run:nightly", "stack:blog"]
        ),
    ]

    class FakeBackups:
        def __init__(self, spec: object, session: object) -> None:
            pass

        def check_installed(self) -> None:
            pass

        def snapshots(self) -> list[recovery.Snapshot]:
            return found

    class FakeSession:
        def __init__(self, target: object) -> None:
            pass

        def __enter__(self) -> FakeSession:
            return self

        def __exit__(self, *exc: object) -> None:
            pass

    one_box = SimpleNamespace(host=SimpleNamespace(nodes=None))  # backup looks for `nodes:`
    monkeypatch.setattr(cli, "load_spec", lambda inventory: one_box)
    monkeypatch.setattr(targets, "target", lambda spec: None)
    monkeypatch.setattr(recovery, "Backups", FakeBackups)
    monkeypatch.setattr(remote, "Session", FakeSession)

    assert cli.main(["backup", "--list"]) == 0
    assert capsys.readouterr().out == (
        "ID        TIME (UTC)            KIND     STACKS\n"
        "eeee3333  2026-12-01T02:30:00Z  nightly  blog\n"
        "aaaa1111  2026-12-02T02:30:01Z  nightly  shop\n"
        "cccc2222  2026-12-02T09:00:00Z  manual   shop blog\n"
    )
    assert cli.main(["backup", "--list", "--kind", "manual"]) == 0
    assert capsys.readouterr().out == (
        "ID        TIME (UTC)            KIND    STACKS\n"
        "cccc2222  2026-12-02T09:00:00Z  manual  shop blog\n"
    )
    assert cli.main(["backup", "--list", "--kind", "pre-apply"]) == 0
    assert capsys.readouterr().out == "no pre-apply snapshots of this host\n"
    assert cli.main(["backup", "--kind", "manual"]) == 1
    assert "--kind only filters --list" in capsys.readouterr().err


def test_an_unplaced_stack_in_a_sandbox_names_every_step(sandbox_studio: Path) -> None:
    cronping = (sandbox_studio / "stacks/cronping.yaml").read_text(encoding="utf-8")
    new = cronping.replace("CRONPING_", "PAGEPULSE_").replace(
        "ghcr.io/lumen-studio/cronping:1.9.0", "ghcr.io/lumen-studio/pagepulse:0.3.1"
    )
    (sandbox_studio / "stacks/pagepulse.yaml").write_text(new, encoding="utf-8")
    result = run_cli(sandbox_studio, "validate", "-i", "inventory/sandbox")
    assert result.code == 0, result.err
    warning = result.err.splitlines()[0]
    assert warning.startswith("warning: stacks/pagepulse.yaml: stack pagepulse is not placed")
    assert (
        "add `pagepulse: {domains: {app: HOSTNAME, www: HOSTNAME}}` under `stacks:` in "
        "inventory/sandbox/host.yaml:" in warning
    )
    assert "map ghcr.io/lumen-studio/pagepulse:0.3.1 under `images:` to a stand-in" in warning
    assert warning.endswith("run `vpsctl secrets generate -i inventory/sandbox`")


def test_a_broken_secrets_line_is_named_by_cause_and_column_never_by_content() -> None:
    value = "s3cr3t-value-0123"
    unclosed = line_problem(f"KEY='{value}")
    assert unclosed.startswith("unclosed quote: the ' at column 5 opens a value")
    escaped = line_problem(f"KEY='{value}\\'")
    assert "a \\ before a quote escapes it" in escaped
    trailing = line_problem(f"KEY='{value}' {value}")
    assert trailing.startswith(f"text after the closing quote at column {len(value) + 6}")
    for message in (unclosed, escaped, trailing):
        assert value not in message and "KEY" not in message
