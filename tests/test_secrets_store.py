"""The encrypted secrets store (issue 13): secrets.env.age sealed with age to the keys of
`recipients`, decrypted in memory only; `secrets edit | encrypt | recipients`, generate into
it, the caches, the backup. Every CLI run goes through run_cli, which scans its output for
every secret value (of the .age store too, decrypted with the test's identity)."""

from __future__ import annotations

import contextlib
import io
import json
import os
import shlex
import stat
import sys
from collections.abc import Iterator
from pathlib import Path

import pyrage
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from dotenv import dotenv_values

from tests.helpers import Result, run_cli
from vpsctl.spec import age, cache, store

INV = "inventory/sandbox"
# the plaintext sits here during an edit: a tmpfs directory this test owns
SHM = Path("/dev/shm")


def _age_identity(path: Path) -> str:
    """Write a new age identity file at ``path`` (0600); its public key."""
    key = pyrage.x25519.Identity.generate()
    public = str(key.to_public())
    path.write_text(f"# public key: {public}\n{key}\n", encoding="utf-8")
    path.chmod(0o600)
    return public


def _ssh_key(path: Path, comment: str) -> str:
    """Write a new ed25519 SSH private key at ``path`` (and ``.pub``); its public line."""
    key = Ed25519PrivateKey.generate()
    private = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.OpenSSH,
        serialization.NoEncryption(),
    )
    path.write_bytes(private)
    path.chmod(0o600)
    public = (
        key.public_key()
        .public_bytes(serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH)
        .decode()
        + f" {comment}"
    )
    path.with_suffix(".pub").write_text(public + "\n", encoding="utf-8")
    return public


@pytest.fixture
def keys(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> dict[str, str]:
    """The operator's age identity (in $VPSCTL_AGE_IDENTITY) and a stranger's."""
    folder = tmp_path / "keys"
    folder.mkdir()
    mine = _age_identity(folder / "me.txt")
    other = _age_identity(folder / "other.txt")
    monkeypatch.setenv(age.IDENTITY_ENV, str(folder / "me.txt"))
    return {"mine": mine, "other": other, "dir": str(folder)}


@pytest.fixture
def sealed(studio: Path, keys: dict[str, str]) -> Path:
    """The sandbox inventory with a recipients file and its secrets generated into
    secrets.env.age."""
    inventory = studio / INV
    (inventory / "recipients").write_text(f"# the operator\n{keys['mine']} # me\n")
    gen = run_cli(studio, "secrets", "generate", "-i", INV)
    assert gen.code == 0, gen.err
    return studio


def _values(studio: Path) -> dict[str, str]:
    text = store.read_text(store.store_of(studio / INV))
    assert text is not None
    found = dotenv_values(stream=io.StringIO(text), interpolate=False)
    return {k: v for k, v in found.items() if v is not None}


def test_generate_writes_the_age_store_and_it_validates(sealed: Path, keys: dict[str, str]) -> None:
    inventory = sealed / INV
    assert not (inventory / "secrets.env").exists()
    data = (inventory / "secrets.env.age").read_bytes()
    assert data.startswith(b"age-encryption.org/v1\n")
    values = _values(sealed)
    assert values["DOCUMINT_STRIPE_SECRET_KEY"].startswith("sk_test_")
    assert all(value.encode() not in data for value in values.values() if len(value) > 4)
    val = run_cli(sealed, "validate", "-i", INV)
    assert (val.code, val.out, val.err) == (0, "", "")
    # nothing to generate: the store is not rewritten
    again = run_cli(sealed, "secrets", "generate", "-i", INV)
    assert again.code == 0 and "nothing to generate" in again.err
    assert (inventory / "secrets.env.age").read_bytes() == data
    shown = run_cli(sealed, "show", "-i", INV)
    assert shown.code == 0
    for value in values.values():
        if len(value) >= 6:
            assert value not in shown.out


def test_a_line_of_the_store_is_reported_at_the_age_file(sealed: Path) -> None:
    where = store.store_of(sealed / INV)
    text = store.read_text(where)
    assert text is not None
    store.write_text(where, text + "DOCUMINT_SESSION_SECRET='tooshortvalue'\n")
    line = len(text.splitlines()) + 1
    val = run_cli(sealed, "validate", "-i", INV)
    assert val.code == 1
    assert f"inventory/sandbox/secrets.env.age:{line}: " in val.err
    assert "tooshortvalue" not in val.err


def test_both_files_is_an_error_naming_both(sealed: Path) -> None:
    plain = sealed / INV / "secrets.env"
    plain.write_text("X='y'\n")
    plain.chmod(0o600)
    val = run_cli(sealed, "validate", "-i", INV)
    assert val.code == 1
    assert "inventory/sandbox/secrets.env and inventory/sandbox/secrets.env.age" in val.err
    gen = run_cli(sealed, "secrets", "generate", "-i", INV)
    assert gen.code == 1 and "both" in gen.err


def test_a_wrong_identity_names_the_recipients_by_fingerprint(
    sealed: Path, keys: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(age.IDENTITY_ENV, str(Path(keys["dir"]) / "other.txt"))
    val = run_cli(sealed, "validate", "-i", INV)
    assert val.code == 1
    assert val.err.startswith("inventory/sandbox/secrets.env.age: cannot decrypt: ")
    assert "other.txt" in val.err and "is not one of its recipients" in val.err
    assert age.fingerprint(keys["mine"]) in val.err and "(me)" in val.err
    assert age.fingerprint(keys["other"]) in val.err  # the identity tried, by fingerprint
    # never key material: neither public key nor any private key
    assert keys["mine"] not in val.err and keys["other"] not in val.err
    assert "AGE-SECRET-KEY" not in val.err


def test_a_missing_identity_names_the_file_and_the_recipients(
    sealed: Path, keys: dict[str, str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    home = tmp_path / "emptyhome"
    home.mkdir()
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.delenv(age.IDENTITY_ENV)
    val = run_cli(sealed, "validate", "-i", INV)
    assert val.code == 1
    assert "~/.ssh/id_ed25519 (the default identity) does not exist" in val.err
    assert age.IDENTITY_ENV in val.err
    assert age.fingerprint(keys["mine"]) in val.err
    monkeypatch.setenv(age.IDENTITY_ENV, str(tmp_path / "nowhere.txt"))
    val = run_cli(sealed, "validate", "-i", INV)
    assert val.code == 1 and "nowhere.txt ($VPSCTL_AGE_IDENTITY) does not exist" in val.err


def test_the_validate_cache_never_hits_once_the_identity_cannot_decrypt(
    sealed: Path, keys: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("VPSCTL_NO_CACHE", raising=False)
    assert run_cli(sealed, "validate", "-i", INV).code == 0
    with contextlib.chdir(sealed):
        assert cache.lookup(Path(INV)) is not None  # stored: a hit now
        monkeypatch.setenv(age.IDENTITY_ENV, str(Path(keys["dir"]) / "other.txt"))
        assert cache.lookup(Path(INV)) is None
    val = run_cli(sealed, "validate", "-i", INV)
    assert val.code == 1 and "cannot decrypt" in val.err
    # the entry holds no hash of the identity file, nor its path's content
    for entry in (sealed / ".vpsctl/cache").glob("*.json"):
        text = entry.read_text()
        assert "me.txt" not in text and "other.txt" not in text


def test_the_plan_cache_keeps_no_read_of_the_identity(
    sealed: Path, keys: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    captured: dict[str, object] = {}
    monkeypatch.setattr(cache, "_write", lambda _path, entry: captured.update(entry))
    from vpsctl.host.target import Target  # noqa: PLC0415
    from vpsctl.spec.loader import load_spec  # noqa: PLC0415

    with contextlib.chdir(sealed):
        with cache.recording() as reads:
            spec = load_spec(Path(INV))
        identity = f"file:{Path(keys['dir']) / 'me.txt'}"
        assert identity in reads  # the load read it...
        entry = cache.PlanEntry(
            Target("b", "127.0.0.1", 22, "root", Path("k"), None), "", "", "", "", 0
        )
        cache.plan_store(spec, ["plan"], reads, entry)
    assert captured and identity not in json.dumps(captured["reads"])  # ...the entry not


def test_encrypt_removes_the_plain_file_after_a_verified_round_trip(
    studio: Path, keys: dict[str, str]
) -> None:
    inventory = studio / INV
    assert run_cli(studio, "secrets", "generate", "-i", INV).code == 0
    plain = (inventory / "secrets.env").read_bytes()
    # no recipients file: refused, nothing changed
    refused = run_cli(studio, "secrets", "encrypt", "-i", INV)
    assert refused.code == 1 and "recipients" in refused.err
    # recipients that exclude the operator: the round trip cannot be verified, refused
    (inventory / "recipients").write_text(keys["other"] + "\n")
    refused = run_cli(studio, "secrets", "encrypt", "-i", INV)
    assert refused.code == 1 and "not among these recipients" in refused.err
    assert (inventory / "secrets.env").read_bytes() == plain
    assert not (inventory / "secrets.env.age").exists()
    (inventory / "recipients").write_text(f"{keys['mine']}\n{keys['other']}\n")
    done = run_cli(studio, "secrets", "encrypt", "-i", INV)
    assert done.code == 0, done.err
    assert not (inventory / "secrets.env").exists()
    sealed = (inventory / "secrets.env.age").read_bytes()
    assert age.decrypt(sealed, age.load_identity()) == plain
    assert run_cli(studio, "validate", "-i", INV).code == 0


def test_encrypt_finishes_an_encryption_that_stopped_half_way(sealed: Path) -> None:
    inventory = sealed / INV
    text = store.read_text(store.Store(inventory, True))
    assert text is not None
    (inventory / "secrets.env").write_text(text)
    (inventory / "secrets.env").chmod(0o600)
    done = run_cli(sealed, "secrets", "encrypt", "-i", INV)
    assert done.code == 0 and "removed the plain file" in done.err
    assert not (inventory / "secrets.env").exists()


def test_recipients_add_and_remove_re_encrypt(
    sealed: Path, keys: dict[str, str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    inventory = sealed / INV
    home = tmp_path / "colleague"
    (home / ".ssh").mkdir(parents=True)
    public = _ssh_key(home / ".ssh/id_ed25519", "bob@laptop")
    before = (inventory / "secrets.env.age").read_bytes()
    added = run_cli(
        sealed, "secrets", "recipients", "add", str(home / ".ssh/id_ed25519.pub"), "-i", INV
    )
    assert added.code == 0, added.err
    after = (inventory / "secrets.env.age").read_bytes()
    assert after != before and b"-> ssh-ed25519 " in after
    assert public in (inventory / "recipients").read_text()
    listed = run_cli(sealed, "secrets", "recipients", "list", "-i", INV)
    assert age.fingerprint(public) in listed.out and "bob@laptop" in listed.out
    again = run_cli(sealed, "secrets", "recipients", "add", public, "-i", INV)
    assert again.code == 1 and "already" in again.err
    # the colleague's default SSH key opens it now
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.delenv(age.IDENTITY_ENV)
    assert run_cli(sealed, "validate", "-i", INV).code == 0
    # removing the colleague's own key, from the colleague's seat: refused, no lock-out
    own = run_cli(sealed, "secrets", "recipients", "remove", age.fingerprint(public), "-i", INV)
    assert own.code == 1 and "not among these recipients" in own.err
    assert (inventory / "secrets.env.age").read_bytes() == after
    # the operator removes it by fingerprint: the colleague's key no longer opens it
    monkeypatch.setenv(age.IDENTITY_ENV, str(Path(keys["dir"]) / "me.txt"))
    removed = run_cli(sealed, "secrets", "recipients", "remove", age.fingerprint(public), "-i", INV)
    assert removed.code == 0, removed.err and "rotate" in removed.err
    assert b"ssh-ed25519" not in (inventory / "secrets.env.age").read_bytes()
    assert public not in (inventory / "recipients").read_text()
    monkeypatch.delenv(age.IDENTITY_ENV)
    val = run_cli(sealed, "validate", "-i", INV)
    assert val.code == 1 and "is not one of its recipients" in val.err
    # the SSH identity tried is named by its path and fingerprint, as ssh-keygen -l shows it
    assert f"~/.ssh/id_ed25519 ({age.fingerprint(public)})" in val.err
    monkeypatch.setenv(age.IDENTITY_ENV, str(Path(keys["dir"]) / "me.txt"))
    last = run_cli(sealed, "secrets", "recipients", "remove", keys["mine"], "-i", INV)
    assert last.code == 1 and "last recipient" in last.err


def test_a_private_key_in_recipients_is_refused_never_echoed(
    sealed: Path, keys: dict[str, str]
) -> None:
    private = (Path(keys["dir"]) / "other.txt").read_text().splitlines()[1]
    with (sealed / INV / "recipients").open("a") as handle:
        handle.write(private + "\n")
    gen = run_cli(sealed, "secrets", "recipients", "list", "-i", INV)
    assert gen.code == 1
    assert "inventory/sandbox/recipients:3: holds a PRIVATE key" in gen.err
    assert private not in gen.err


# ── secrets edit ────────────────────────────────────────────────────────────────────────

EDITOR = """
import json, os, signal, stat, sys, time
from pathlib import Path
path = Path(sys.argv[1])
report = Path(os.environ["EDIT_REPORT"])
runs = json.loads(report.read_text()) if report.exists() else []
text = path.read_text()
values = [line.split("=", 1)[1].strip("'") for line in text.splitlines()
          if "=" in line and not line.startswith("#")]
leaks = []
for root in os.environ["EDIT_SCAN"].split(":"):
    for folder, _dirs, files in os.walk(root):
        for name in files:
            data = Path(folder, name).read_bytes()
            leaks += [str(Path(folder, name)) for v in values if len(v) >= 6 and v.encode() in data]
runs.append({
    "path": str(path), "mode": stat.S_IMODE(path.stat().st_mode),
    "dir_mode": stat.S_IMODE(path.parent.stat().st_mode), "leaks": sorted(set(leaks)),
    "siblings": sorted(os.listdir(path.parent)),
})
report.write_text(json.dumps(runs))
steps = os.environ["EDIT_STEPS"].split(",")
step = steps[min(len(runs), len(steps)) - 1]
if step == "append":
    path.write_text(text + "# edited\\n")
elif step == "empty":
    path.write_text(text.replace("DOCUMINT_SESSION_SECRET='", "DOCUMINT_SESSION_SECRET=''\\n#'"))
elif step == "fix":
    fixed = text.replace("DOCUMINT_SESSION_SECRET=''\\n#'", "DOCUMINT_SESSION_SECRET='")
    path.write_text(fixed + "# fixed\\n")
elif step == "interrupt":
    path.write_text(text + "# half an edit\\n")
    # Ctrl-C reaches the editor's whole process group: vpsctl, then the editor, which dies
    os.kill(os.getppid(), signal.SIGINT)
    time.sleep(0.2)
    os.kill(os.getpid(), signal.SIGINT)
"""


@pytest.fixture
def scratch() -> Iterator[Path]:
    """A tmpfs directory of this test's own, for the plaintext during an edit."""
    if not SHM.is_dir():
        pytest.skip("no /dev/shm")
    import tempfile  # noqa: PLC0415

    place = Path(tempfile.mkdtemp(dir=SHM, prefix="vpsctl-test-"))
    yield place
    import shutil  # noqa: PLC0415

    shutil.rmtree(place, ignore_errors=True)


def _editor(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, studio: Path, steps: str) -> Path:
    script = tmp_path / "editor.py"
    script.write_text(EDITOR)
    report = tmp_path / "report.json"
    monkeypatch.setenv("EDITOR", f"{shlex.quote(sys.executable)} {shlex.quote(str(script))}")
    monkeypatch.delenv("VISUAL", raising=False)
    monkeypatch.setenv("EDIT_REPORT", str(report))
    monkeypatch.setenv("EDIT_STEPS", steps)
    # every directory this test controls: the studio, the keys, the home, the scratch dir
    monkeypatch.setenv("EDIT_SCAN", f"{tmp_path}:{os.environ['HOME']}")
    return report


def _no_plaintext_left(runs: list[dict[str, object]], scratch: Path) -> None:
    for run in runs:
        assert run["leaks"] == [], "a secret value on disk outside the edit's tmpfs file"
        assert run["mode"] == 0o600 and run["dir_mode"] == 0o700
        assert Path(str(run["path"])).parent.parent == scratch
        assert run["siblings"] == ["secrets.env"]
    assert list(scratch.iterdir()) == []  # removed, directory and all


def _edit(
    sealed: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, scratch: Path, steps: str
) -> tuple[Result, bytes, Path]:
    """`secrets edit` with the fake editor doing ``steps``: what it printed, the store's
    bytes before, the editor's report."""
    report = _editor(tmp_path, monkeypatch, sealed, steps)
    before = (sealed / INV / "secrets.env.age").read_bytes()
    return run_cli(sealed, "secrets", "edit", "-i", INV, "--tmpdir", str(scratch)), before, report


def test_edit_saves_a_valid_change_and_leaves_no_plaintext(
    sealed: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, scratch: Path
) -> None:
    done, before, report = _edit(sealed, tmp_path, monkeypatch, scratch, "append")
    assert done.code == 0, done.err
    assert "secrets.env.age saved" in done.err
    assert (sealed / INV / "secrets.env.age").read_bytes() != before
    text = store.read_text(store.store_of(sealed / INV))
    assert text is not None and text.endswith("# edited\n")
    _no_plaintext_left(json.loads(report.read_text()), scratch)


def test_edit_refused_by_validation_is_discarded_or_offered_again(
    sealed: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, scratch: Path
) -> None:
    from vpsctl.ops import secrets  # noqa: PLC0415

    sealed_file = sealed / INV / "secrets.env.age"
    # no terminal to ask on: discarded, exit 1, the store unchanged
    done, before, report = _edit(sealed, tmp_path, monkeypatch, scratch, "empty")
    assert done.code == 1 and "discarded" in done.err
    assert "secrets.env.age:" in done.err and "empty value" in done.err
    assert sealed_file.read_bytes() == before
    _no_plaintext_left(json.loads(report.read_text()), scratch)
    # offered again: the second edit changes nothing of what was refused (refused again,
    # then discarded); then an edit whose second round fixes it is saved
    for steps, outcome, asked in (("empty,append", "discarded", 2), ("empty,fix", "saved", 1)):
        report.unlink()
        monkeypatch.setenv("EDIT_STEPS", steps)
        answers: list[str] = []

        def ask(question: str, answers: list[str] = answers) -> str:
            answers.append(question)
            return "e" if len(answers) == 1 else "d"

        with contextlib.chdir(sealed):
            result = secrets.edit(Path(INV), io.StringIO(), ask, tmpdir=scratch)
        assert (result.outcome, len(answers)) == (outcome, asked)
        _no_plaintext_left(json.loads(report.read_text()), scratch)
    assert sealed_file.read_bytes() != before
    text = store.read_text(store.store_of(sealed / INV))
    assert text is not None and text.endswith("# fixed\n")
    assert run_cli(sealed, "validate", "-i", INV).code == 0


def test_an_interrupted_edit_leaves_no_plaintext_and_the_store_unchanged(
    sealed: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, scratch: Path
) -> None:
    done, before, report = _edit(sealed, tmp_path, monkeypatch, scratch, "interrupt")
    assert done.code == 130 and "interrupted" in done.err
    assert (sealed / INV / "secrets.env.age").read_bytes() == before
    _no_plaintext_left(json.loads(report.read_text()), scratch)


def test_edit_refuses_a_directory_not_on_tmpfs(
    sealed: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from vpsctl.ops import secrets  # noqa: PLC0415

    if secrets.filesystem_of(tmp_path) in ("tmpfs", "ramfs"):
        pytest.skip("the test's tmp_path is on tmpfs here")
    _editor(tmp_path, monkeypatch, sealed, "append")
    done = run_cli(sealed, "secrets", "edit", "-i", INV, "--tmpdir", str(tmp_path))
    assert done.code == 1 and "not tmpfs" in done.err and "--allow-disk" in done.err
    monkeypatch.setenv("EDIT_SCAN", str(sealed))  # the plaintext is on this disk, as told
    allowed = run_cli(
        sealed, "secrets", "edit", "-i", INV, "--tmpdir", str(tmp_path), "--allow-disk"
    )
    assert allowed.code == 0, allowed.err
    assert not list(tmp_path.glob("vpsctl-secrets-*"))


# ── the backup keeps the encrypted file ─────────────────────────────────────────────────


def test_the_backup_sends_the_encrypted_store_as_it_is(sealed: Path) -> None:
    from vpsctl.ops import recovery  # noqa: PLC0415
    from vpsctl.spec.loader import load_spec  # noqa: PLC0415

    spec = load_spec(sealed / INV)
    sent: list[tuple[list[str], bytes | None]] = []

    def call(command: list[str], timeout: int = 0, stdin: bytes | None = None) -> recovery.Output:
        sent.append((command, stdin))
        return recovery.Output(True, ["@@snapshot abc123"], "")

    backups = recovery.Backups.__new__(recovery.Backups)
    backups.spec = spec
    backups.call = call  # type: ignore[method-assign]
    assert backups.backup_secrets() == "abc123"
    command, data = sent[0]
    assert command[1:] == ["secrets", "secrets.env.age"]
    assert data == (sealed / INV / "secrets.env.age").read_bytes()


def test_the_store_file_modes(sealed: Path) -> None:
    mode = stat.S_IMODE((sealed / INV / "secrets.env.age").stat().st_mode)
    assert mode == 0o644  # committable: sealed, nothing to hide from the file's readers


@pytest.mark.parametrize("which", ["init", "this repository"])
def test_gitignore_keeps_the_plain_file_out_and_lets_the_sealed_store_in(
    tmp_path: Path, which: str
) -> None:
    import subprocess  # noqa: PLC0415

    from tests.helpers import ROOT  # noqa: PLC0415
    from vpsctl.cli.init import GITIGNORE  # noqa: PLC0415

    text = GITIGNORE if which == "init" else (ROOT / ".gitignore").read_text()
    subprocess.run(["git", "init", "-q", str(tmp_path)], check=True)
    (tmp_path / ".gitignore").write_text(text)
    inventory = tmp_path / "inventory/prod"
    inventory.mkdir(parents=True)
    for name in ("secrets.env", "secrets.env.age", "recipients"):
        (inventory / name).write_text("x\n")
    found = subprocess.run(
        ["git", "-C", str(tmp_path), "status", "--porcelain", "-uall"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.split()
    assert "inventory/prod/secrets.env.age" in found and "inventory/prod/recipients" in found
    assert "inventory/prod/secrets.env" not in found
