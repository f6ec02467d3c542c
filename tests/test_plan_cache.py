"""The plan cache (vpsctl.spec.cache, issue 15): a plan whose inputs are unchanged reads the
host without loading the spec and, the host answering as before, prints what the full plan
printed; every changed input, another answer, or a failed quick read plans in full, from
one read of the host; no entry holds a secret value.

The host is a fake (factsim) behind both reads: the full path's
:func:`vpsctl.ops.targets.read_facts` and the cache's :func:`vpsctl.host.quick.read_facts`
(tests/e2e/test_apply.py runs the quick read against a real box).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import subprocess
import zoneinfo
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from tests import factsim
from tests.helpers import edit, golden_prod_copy, run_cli, secret_values
from vpsctl.core.facts import Container, HostFacts, RemoteFile, Volume, parse, unreachable
from vpsctl.core.plan import make_plan
from vpsctl.host import quick
from vpsctl.host.target import Target
from vpsctl.ops import targets
from vpsctl.ops.inputs import render_spec
from vpsctl.spec import cache, loader, zones

INV = "inventory/prod"


class FakeHost:
    """One host's answer, served to both reads, which count their calls."""

    def __init__(self, facts: HostFacts) -> None:
        self.facts = facts
        self.full = 0
        self.quick: list[tuple[Target, str]] = []
        self.quick_fails = False

    def read_full(self, spec: object) -> HostFacts:
        self.full += 1
        return self.facts

    def read_quick(self, target: Target, script: str) -> HostFacts | None:
        self.quick.append((target, script))
        return None if self.quick_fails else self.facts


@pytest.fixture
def studio(tmp_path: Path) -> Path:
    return golden_prod_copy(tmp_path)


@pytest.fixture
def host(studio: Path, monkeypatch: pytest.MonkeyPatch) -> FakeHost:
    desired = render_spec(loader.load_spec(studio / INV))
    fake = FakeHost(parse(factsim.converged(desired).output()))
    monkeypatch.setattr(targets, "read_facts", fake.read_full)
    monkeypatch.setattr(quick, "read_facts", fake.read_quick)
    return fake


class Loads:
    """Counts the spec loads (a cache hit loads none)."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.count = 0
        real = loader.load_spec

        def counted(*args: Any, **kwargs: Any) -> Any:
            self.count += 1
            return real(*args, **kwargs)

        monkeypatch.setattr(loader, "load_spec", counted)


def _uncached(studio: Path, monkeypatch: pytest.MonkeyPatch, *args: str) -> tuple[int, str, str]:
    with monkeypatch.context() as patch:
        patch.setenv("VPSCTL_NO_CACHE", "1")
        result = run_cli(studio, "plan", "-i", INV, *args)
    return result.code, result.out, result.err


@pytest.mark.parametrize("flags", [(), ("--json",), ("-v",), ("--destroy-data",)])
def test_a_second_plan_is_printed_from_the_cache_after_one_read(
    studio: Path, host: FakeHost, monkeypatch: pytest.MonkeyPatch, flags: tuple[str, ...]
) -> None:
    first = run_cli(studio, "plan", "-i", INV, *flags)
    assert first.code == 0 and host.full == 1 and host.quick == []
    loads = Loads(monkeypatch)
    second = run_cli(studio, "plan", "-i", INV, *flags)
    assert (second.code, second.out, second.err) == (first.code, first.out, first.err)
    assert loads.count == 0 and host.full == 1 and len(host.quick) == 1
    target, script = host.quick[0]
    assert target.name == "lumen-prod" and "@@vpsctl-facts" in script
    # every flag has its own entry: another flag's plan is not this one
    other = ("-v",) if flags != ("-v",) else ("--json",)
    assert run_cli(studio, "plan", "-i", INV, *other).out != first.out
    assert loads.count == 1


def test_a_host_that_answers_otherwise_is_planned_in_full_from_that_answer(
    studio: Path, host: FakeHost, monkeypatch: pytest.MonkeyPatch
) -> None:
    first = run_cli(studio, "plan", "-i", INV)
    env = "/opt/vpsctl/stacks/documint/env/app.env"
    old = host.facts.files[env]
    host.facts.files[env] = dataclasses.replace(old, mode=0o644)
    changed = run_cli(studio, "plan", "-i", INV)
    assert host.full == 1 and len(host.quick) == 1  # one read: the quick one
    assert changed.code == 2 and f"update {env}" in changed.out
    assert changed.err == first.err  # the warnings and "reading …" once
    assert (changed.code, changed.out, changed.err) == _uncached(studio, monkeypatch)
    # that plan is the entry now: the same answer again is a hit
    loads = Loads(monkeypatch)
    assert run_cli(studio, "plan", "-i", INV).out == changed.out and loads.count == 0


def test_a_command_that_answers_otherwise_plans_in_full_from_the_one_read(
    studio: Path, host: FakeHost, monkeypatch: pytest.MonkeyPatch
) -> None:
    first = run_cli(studio, "plan", "-i", INV)
    # as a sandbox studio's entry holds its `docker inspect` of the backup box
    answer = studio / "address"
    answer.write_text("172.17.0.2")
    entry = next((studio / ".vpsctl/cache").glob("plan-*.json"))
    data = json.loads(entry.read_text())
    key = "run:" + json.dumps(["cat", str(answer)])
    data["reads"][key] = cache._read_digest(key)
    entry.write_text(json.dumps(data))
    loads = Loads(monkeypatch)
    assert run_cli(studio, "plan", "-i", INV).out == first.out and loads.count == 0
    answer.write_text("172.17.0.3")  # the box restarted with another address
    again = run_cli(studio, "plan", "-i", INV)
    assert loads.count == 1 and host.full == 1 and len(host.quick) == 2
    assert (again.code, again.out, again.err) == (first.code, first.out, first.err)


def test_a_failed_quick_read_reads_the_usual_way(
    studio: Path, host: FakeHost, monkeypatch: pytest.MonkeyPatch
) -> None:
    first = run_cli(studio, "plan", "-i", INV)
    host.quick_fails = True
    again = run_cli(studio, "plan", "-i", INV)
    assert (again.code, again.out, again.err) == (first.code, first.out, first.err)
    assert host.full == 2 and len(host.quick) == 1


def _edit_host_yaml(root: Path) -> None:
    path = root / INV / "host.yaml"
    path.write_text(path.read_text() + "# a comment is an edit too\n")


def _edit_secret(root: Path) -> None:
    path = root / INV / "secrets.env"
    line = next(x for x in path.read_text().splitlines() if x.startswith("CRONPING_SESSION"))
    edit(path, line, "CRONPING_SESSION_SECRET=" + "S" * 80)


def _edit_stack(root: Path) -> None:
    edit(root / "stacks/cronping.yaml", "PING_GRACE_SECONDS: 120", "PING_GRACE_SECONDS: 60")


def _add_stack_file(root: Path) -> None:
    (root / "stacks/spare.yaml").write_text((root / "stacks/cronping.yaml").read_text())


def _chmod_secrets(root: Path) -> None:
    (root / INV / "secrets.env").chmod(0o644)


def _edit_an_opened_file(root: Path) -> None:
    # a file the plan opened outside the studio's directories (recorded by the audit hook)
    entry = next((root / ".vpsctl/cache").glob("plan-*.json"))
    text = entry.read_text()
    assert '"file:' in text
    path = root / "elsewhere.txt"
    path.write_text("before")
    with cache.recording() as reads:
        path.read_text()
    assert f"file:{path}" in reads
    # rewrite the entry as if the plan had read it, then change it
    data = json.loads(text)
    data["reads"][f"file:{path}"] = cache._read_digest(f"file:{path}")
    entry.write_text(json.dumps(data))
    path.write_text("after")


def _edit_code(root: Path) -> None:
    entry = next((root / ".vpsctl/cache").glob("plan-*.json"))
    data = json.loads(entry.read_text())
    # the templates by content, vpsctl's modules by mtime and size
    assert any(key.endswith("templates/compose.yaml.j2") for key in data["inputs"])
    module = next(name for name in data["code"] if name.endswith("vpsctl/core/render.py"))
    data["code"][module] = "0 0"  # as if render.py had been edited since
    entry.write_text(json.dumps(data))


def _set_a_vpsctl_variable(root: Path) -> None:
    os.environ["VPSCTL_ACME_ROOTS"] = str(root / "nowhere")  # the test's monkeypatch undoes it


EDITS: dict[str, Callable[[Path], None]] = {
    "host.yaml": _edit_host_yaml,
    "a secret value": _edit_secret,
    "a stack file": _edit_stack,
    "a new file in stacks/": _add_stack_file,
    "secrets.env's mode": _chmod_secrets,
    "a file read elsewhere": _edit_an_opened_file,
    "vpsctl's code": _edit_code,
    "a VPSCTL_ variable": _set_a_vpsctl_variable,
}


@pytest.mark.parametrize("change", list(EDITS), ids=list(EDITS))
def test_every_changed_input_plans_in_full(
    studio: Path, host: FakeHost, monkeypatch: pytest.MonkeyPatch, change: str
) -> None:
    monkeypatch.setenv("VPSCTL_ACME_ROOTS", "")  # restored after the test, whatever it sets
    monkeypatch.delenv("VPSCTL_ACME_ROOTS")
    run_cli(studio, "plan", "-i", INV)
    EDITS[change](studio)
    loads = Loads(monkeypatch)
    after = run_cli(studio, "plan", "-i", INV)
    assert loads.count == 1 and host.quick == []
    assert (after.code, after.out, after.err) == _uncached(studio, monkeypatch)


def test_no_entry_for_a_saved_plan_an_unreachable_host_or_no_cache(
    studio: Path, host: FakeHost, monkeypatch: pytest.MonkeyPatch
) -> None:
    entries = studio / ".vpsctl/cache"
    assert run_cli(studio, "plan", "-i", INV, "--out", "plan.json").code == 0
    assert not list(entries.glob("plan-*.json"))
    _uncached(studio, monkeypatch)
    assert not list(entries.glob("plan-*.json"))
    host.facts = unreachable("cannot reach root@203.0.113.10:22: timed out")
    run_cli(studio, "plan", "-i", INV)
    assert not list(entries.glob("plan-*.json"))


def test_an_entry_holds_no_secret_value(studio: Path, host: FakeHost) -> None:
    # the host's env files hold the values too (and one old value the spec no longer has)
    env = "/opt/vpsctl/stacks/cronping/env/app.env"
    old = host.facts.files[env]
    stale = b"SESSION_SECRET=" + b"Q" * 64 + b"\n"
    host.facts.files[env] = dataclasses.replace(old, content=(old.content or b"") + stale)
    run_cli(studio, "plan", "-i", INV, "-v")
    run_cli(studio, "plan", "-i", INV, "--json")
    texts = [p.read_text() for p in (studio / ".vpsctl/cache").glob("plan-*.json")]
    assert len(texts) == 2
    assert (studio / ".vpsctl/cache").stat().st_mode & 0o077 == 0
    for value in [*secret_values(studio), "Q" * 64]:
        assert all(value not in text for text in texts), "a secret value in a plan entry"


def _replace_first(kind: str, **change: object) -> Callable[[HostFacts], None]:
    """A change of the first file (``kind`` "files"), container or volume of the facts."""

    def apply(facts: HostFacts) -> None:
        if kind == "files":
            path = next(iter(facts.files))
            facts.files[path] = dataclasses.replace(facts.files[path], **change)  # type: ignore[arg-type]
        else:
            items: list[Any] = getattr(facts, kind)
            items[0] = dataclasses.replace(items[0], **change)

    return apply


def _drop_first(kind: str) -> Callable[[HostFacts], None]:
    def apply(facts: HostFacts) -> None:
        held = getattr(facts, kind)
        if kind == "files":
            held.pop(next(iter(held)))
        else:
            held.pop(0)

    return apply


# one change of every field of the facts, and of each record they hold: a field added later
# fails here (KeyError) until the fingerprint and this table cover it
RECORD_CHANGES: dict[str, dict[str, object]] = {
    "files": {"path": "/other", "mode": 0o777, "owner": "nobody:nogroup", "size": 1,
              "sha256": "0" * 64, "content": b"other"},
    "containers": {"name": "other", "project": "other", "service": "other", "state": "exited",
                   "status": "Up 3 days", "image": "other:1", "labels": {"a": "b"}},
    "volumes": {"name": "other", "project": "other", "created": "2020-01-01T00:00:00Z",
                "size": 99},
}  # fmt: skip
FACT_CHANGES: dict[str, Callable[[HostFacts], None]] = {
    "reachable": lambda facts: setattr(facts, "reachable", False),
    "error": lambda facts: setattr(facts, "error", "x"),
    "manifest": lambda facts: setattr(facts, "manifest", {"other": 1}),
    "files": _drop_first("files"),
    "docker": lambda facts: setattr(facts, "docker", "27.0"),
    "compose": lambda facts: setattr(facts, "compose", "2.30"),
    "containers": _drop_first("containers"),
    "images": lambda facts: facts.images.add("other:1"),
    "timers": lambda facts: facts.timers.update({"x.timer": "enabled active"}),
    "volumes": _drop_first("volumes"),
    "app_files": lambda facts: facts.app_files.update({"/x": (0o600, "0" * 64)}),
}


def _mutations() -> list[tuple[str, Callable[[HostFacts], None]]]:
    found = [(f.name, FACT_CHANGES[f.name]) for f in dataclasses.fields(HostFacts)]
    for kind, cls in (("files", RemoteFile), ("containers", Container), ("volumes", Volume)):
        for f in dataclasses.fields(cls):
            found.append(
                (f"{kind}.{f.name}", _replace_first(kind, **{f.name: RECORD_CHANGES[kind][f.name]}))
            )
    return found


def _facts() -> HostFacts:
    host = factsim.SimHost(
        files={"/opt/vpsctl/stacks/a/compose.yaml": (b"services: {}\n", 0o644, "root:root")},
        manifest={"format": 1},
        containers=[{"project": "a", "service": "app", "image": "a:1"}],
        images=["a:1"],
        docker="26.1.5",
        timers={"vpsctl-backup.timer": "enabled active"},
        volumes=[("a_data", "a", "2026-12-01T00:00:00Z", 4)],
        app_files={"/opt/vpsctl/apps/a/key": (b"k", 0o600)},
    )
    return parse(host.output())


@pytest.mark.parametrize(("name", "change"), _mutations(), ids=[n for n, _ in _mutations()])
def test_the_fingerprint_covers_every_fact_but_a_containers_status(
    name: str, change: Callable[[HostFacts], None]
) -> None:
    facts = _facts()
    before = facts.fingerprint()
    change(facts)
    if name == "containers.status":
        assert facts.fingerprint() == before
    else:
        assert facts.fingerprint() != before


def test_a_containers_status_changes_no_plan(studio: Path) -> None:
    desired = render_spec(loader.load_spec(studio / INV))
    facts = parse(factsim.converged(desired).output())
    before = make_plan("lumen-prod", desired, facts).to_json()
    facts.containers = [
        dataclasses.replace(c, status="Up 3 days (unhealthy)") for c in facts.containers
    ]
    assert make_plan("lumen-prod", desired, facts).to_json() == before


def test_recording_notes_every_file_opened_and_directory_listed(tmp_path: Path) -> None:
    (tmp_path / "a.txt").write_text("a")
    (tmp_path / "d").mkdir()
    with cache.recording() as reads:
        (tmp_path / "a.txt").read_bytes()
        list((tmp_path / "d").iterdir())
    assert {f"file:{tmp_path / 'a.txt'}", f"dir:{tmp_path / 'd'}"} <= reads
    before = cache._read_digests(sorted(reads))
    (tmp_path / "d" / "new").write_text("")
    assert cache._read_digests(sorted(reads)) != before
    (tmp_path / "d" / "new").unlink()
    assert cache._read_digests(sorted(reads)) == before
    (tmp_path / "a.txt").unlink()
    assert cache._read_digest(f"file:{tmp_path / 'a.txt'}") == "missing"


def test_recording_notes_every_command_run_and_runs_it_again(tmp_path: Path) -> None:
    # what a sandbox studio's plan runs: `docker inspect` of the backup box, whose address
    # the render puts in the repository URL (a box restarted may have another)
    answer = tmp_path / "address"
    answer.write_text("172.17.0.2")
    with cache.recording() as reads:
        subprocess.run(["cat", str(answer)], check=True, capture_output=True)
    runs = [r for r in reads if r.startswith("run:")]
    assert runs == ["run:" + json.dumps(["cat", str(answer)])]
    before = cache._read_digests(runs)
    assert cache._read_digests(runs) == before
    answer.write_text("172.17.0.3")
    assert cache._read_digests(runs) != before


def test_a_private_key_read_is_known_by_mtime_and_size_never_by_a_hash(tmp_path: Path) -> None:
    key = tmp_path / "id_ed25519"
    body = b"-----BEGIN OPENSSH PRIVATE KEY-----\nb3BlbnNzaC1rZXktdjEAAAAA\n"
    key.write_bytes(body)
    with cache.recording() as reads:
        key.read_bytes()
    digest = cache._read_digests(sorted(reads))[f"file:{key}"]
    assert "private key" in digest
    assert hashlib.sha256(body).hexdigest() not in digest
    key.write_bytes(body + b"more\n")  # another key: the entry misses
    assert cache._read_digests(sorted(reads))[f"file:{key}"] != digest


def test_a_zone_is_checked_as_available_timezones_lists_it() -> None:
    available = zoneinfo.available_timezones()
    assert all(zones.is_zone(name) for name in available)
    odd = ["posixrules", "right/UTC", "posix/UTC", "Europe/../UTC", "", "Europe//Berlin",
           "Europe", "zone.tab", "tzdata.zi", "utc", "/etc/passwd", "Etc/UTC\x00",
           "UTC/"]  # fmt: skip
    assert [name for name in odd if zones.is_zone(name) != (name in available)] == []
