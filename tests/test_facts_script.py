"""The facts script itself, run here with sh on a temporary tree (issue 15: it lists and
hashes the files in one pass, sends their contents in one tar, and asks docker and systemctl
everything at once, in the background).

Its answer must be the files exactly as they are (mode, owner, size, sha256, content up to
MAX_CONTENT, whatever their names: spaces, more than tar's 100 characters, hard links),
docker's sections in their fixed order whatever order the background reads end in, the
timers' lines as one ``systemctl`` a unit printed them, and nothing left behind in the
temporary directory. A fake ``docker`` answers; its first question takes a second, so the log
shows whether the others were asked meanwhile. A fake ``systemctl`` answers as systemd 257
does, fails, or stops at a unit it does not know as an older one did.
"""

from __future__ import annotations

import base64
import grp
import gzip
import hashlib
import io
import os
import pwd
import shutil
import subprocess
import tarfile
from pathlib import Path

import pytest

from tests.factsim import contents_line
from vpsctl.core import boxscripts
from vpsctl.core.facts import DOCKER_FORMATS, MAX_CONTENT, FactsError, parse

FAKE_DOCKER = """#!/bin/sh
# answers the facts script's questions, and logs when each was asked and answered
echo "asked $1" >>"$LOG"
case "$*" in
  "version "*) sleep 1; echo 26.1.5 ;;
  "compose version "*) echo 2.26.1 ;;
  "ps -a --no-trunc "*) echo '{"Names":"a-app-1","State":"running","Labels":"com.docker.compose.project=a,com.docker.compose.service=app"}' ;;
  "image ls "*) echo '{"Repository":"img","Tag":"1"}' ;;
  "ps -a --format "*) echo a ;;
  "volume ls "*) printf 'a_data\\nold_data\\n' ;;
  "volume inspect "*) echo "a_data a 2026-12-01T00:00:00Z $VOLS/a"; echo "old_data old 2026-11-01T00:00:00Z $VOLS/old" ;;
  *) exit 1 ;;
esac
echo "answered $1" >>"$LOG"
"""  # noqa: E501
FAKE_SYSTEMCTL = """#!/bin/sh
# systemctl is-enabled|is-active UNIT…, as $SYSTEMCTL says: "257" (one line a unit), "fail"
# (nothing printed) or "old" (is-enabled stops at b.timer, which it does not know)
echo "$*" >>"$SYSTEMCTL_LOG"
q=$1
shift
[ "$SYSTEMCTL" = fail ] && { echo "System has not been booted with systemd" >&2; exit 1; }
for unit in "$@"; do
  case "$q $unit" in
    "is-enabled a.timer") echo enabled ;;
    "is-enabled b.timer")
      [ "$SYSTEMCTL" = old ] && { echo "Failed to get unit file state for $unit" >&2; exit 1; }
      echo not-found ;;
    "is-active a.timer") echo active ;;
    "is-active b.timer") echo inactive ;;
  esac
done
"""
# what the script may run besides docker and systemctl: a box's coreutils, findutils, grep,
# tar and gzip
TOOLS = ("mktemp", "rm", "base64", "stat", "sha256sum", "cut", "find", "sort", "xargs", "cat",
         "grep", "du", "timeout", "sleep", "tar", "gzip")  # fmt: skip
# the script's @@timer lines as a `systemctl` a unit printed them (`$(… || true)`)
TIMER_LINES = {
    "257": ["@@timer a.timer enabled active", "@@timer b.timer not-found inactive"],
    "fail": ["@@timer a.timer  ", "@@timer b.timer  "],
    "old": ["@@timer a.timer enabled active", "@@timer b.timer  inactive"],
}
# a sha256sum that removes $GONE once it has hashed the managed files (named as arguments;
# an app file's comes on stdin): a file gone between the hash and tar's read
GONE_SHA256SUM = """#!/bin/sh
"$REAL_SHA256SUM" "$@"
status=$?
[ $# -eq 0 ] || [ -z "$GONE" ] || rm -f -- "$GONE"
exit $status
"""


def _script(root: Path) -> str:
    return boxscripts.render(
        boxscripts.FACTS,
        manifest=str(root / "manifest.json"),
        apps_root=str(root / "apps"),
        managed=[str(root / "stacks"), str(root / "host")],
        max_content=MAX_CONTENT,
        systemd_dir=str(root / "host/systemd"),
        timers=["a.timer", "b.timer"],
        formats=DOCKER_FORMATS,
    )


def _run(
    root: Path, tmp: Path, with_docker: bool, systemctl: str = "257", gone: Path | None = None
) -> str:
    """The script's stdout, run with sh and a PATH holding only :data:`TOOLS` (and the fake
    docker and systemctl): the box's tools, nothing of this machine's docker or systemd.
    ``gone``: a file removed once sha256sum has read it."""
    bin_dir = root / "bin"
    bin_dir.mkdir(exist_ok=True)
    for tool in TOOLS:
        found = shutil.which(tool)
        assert found, f"{tool} is missing here"
        if tool == "sha256sum":
            (bin_dir / tool).write_text(GONE_SHA256SUM)
            (bin_dir / tool).chmod(0o755)
        else:
            (bin_dir / tool).symlink_to(found)
    fakes = {"systemctl": FAKE_SYSTEMCTL} | ({"docker": FAKE_DOCKER} if with_docker else {})
    for name, text in fakes.items():
        (bin_dir / name).write_text(text)
        (bin_dir / name).chmod(0o755)
    env = {
        "PATH": str(bin_dir),
        "TMPDIR": str(tmp),
        "VOLS": str(root / "vols"),
        "LOG": str(root / "docker.log"),
        "SYSTEMCTL": systemctl,
        "SYSTEMCTL_LOG": str(root / "systemctl.log"),
        "REAL_SHA256SUM": shutil.which("sha256sum") or "sha256sum",
        "GONE": str(gone or ""),
        "LC_ALL": "C",
    }
    done = subprocess.run(
        [shutil.which("sh") or "sh", "-c", _script(root)],
        check=False,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    return done.stdout


LONG = "stacks/a/config/" + "a-rather-deep-directory/" * 3 + "and a file name with spaces.yaml"


def _tree(root: Path) -> dict[str, tuple[bytes, int]]:
    files = {
        "stacks/b/compose.yaml": (b"services: {}\n", 0o644),
        "stacks/a/env/app.env": (b"# secret: KEY\nKEY=v\n", 0o600),
        "stacks/a/config/name with spaces.txt": (b"x" * 10, 0o644),
        "stacks/a/config/big.bin": (os.urandom(MAX_CONTENT + 1), 0o644),
        "stacks/a/config/empty": (b"", 0o640),
        # more than tar's 100 characters of a name even without the temporary root: a GNU
        # long name
        LONG: (b"long: true\n", 0o644),
        "stacks/a/config/caf\u00e9.txt": ("\u00e9t\u00e9\n".encode(), 0o644),
        "host/backup/vpsctl-backup": (b"#!/bin/sh\n", 0o700),
    }
    for rel, (content, mode) in files.items():
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(content)
        path.chmod(mode)
    # a hard link: tar sends its content again, not a link member
    os.link(root / "stacks/b/compose.yaml", root / "stacks/b/compose.link.yaml")
    files["stacks/b/compose.link.yaml"] = files["stacks/b/compose.yaml"]
    (root / "host/systemd").mkdir()
    (root / "manifest.json").write_text('{"stacks": {}}')
    (root / "apps/ghost").mkdir(parents=True)
    (root / "apps/ghost/ghost-content-key").write_text("k")
    (root / "vols/a").mkdir(parents=True)
    (root / "vols/old").mkdir(parents=True)
    (root / "vols/old/data").write_bytes(b"y" * 5000)
    return files


def test_every_file_is_read_exactly_and_docker_answers_in_order(tmp_path: Path) -> None:
    root, tmp = tmp_path / "box", tmp_path / "tmp"
    tmp.mkdir()
    files = _tree(root)
    output = _run(root, tmp, with_docker=True)
    facts = parse(output)
    user = pwd.getpwuid(os.getuid()).pw_name
    group = grp.getgrgid(os.getgid()).gr_name
    assert set(facts.files) == {str(root / rel) for rel in files}
    for rel, (content, mode) in files.items():
        got = facts.files[str(root / rel)]
        assert (got.mode, got.owner, got.size) == (mode, f"{user}:{group}", len(content)), rel
        assert got.sha256 == hashlib.sha256(content).hexdigest(), rel
        assert got.content == (content if len(content) <= MAX_CONTENT else None), rel
    # within each managed directory in path order, the directories in the order given
    paths = list(facts.files)
    stacks = [p for p in paths if "/stacks/" in p]
    assert paths == [*stacks, str(root / "host/backup/vpsctl-backup")]
    assert stacks == sorted(stacks)
    assert len(str(root / LONG)) > 100 and len(LONG) > 100
    assert facts.manifest == {"stacks": {}}
    assert facts.timers == {"a.timer": "enabled active", "b.timer": "not-found inactive"}
    assert [ln for ln in output.splitlines() if ln.startswith("@@timer")] == TIMER_LINES["257"]
    # one systemctl a question, for every timer at once
    assert (root / "systemctl.log").read_text().splitlines() == [
        "is-enabled a.timer b.timer",
        "is-active a.timer b.timer",
    ] or sorted((root / "systemctl.log").read_text().splitlines()) == [
        "is-active a.timer b.timer",
        "is-enabled a.timer b.timer",
    ]
    assert facts.app_files == {
        str(root / "apps/ghost/ghost-content-key"): (0o644, hashlib.sha256(b"k").hexdigest())
    }
    assert (facts.docker, facts.compose) == ("26.1.5", "2.26.1")
    assert [c.name for c in facts.containers] == ["a-app-1"]
    assert facts.images == {"img:1"}
    # the live project's volume is not sized; the removed stack's is
    sizes = {v.name: v.size for v in facts.volumes}
    assert sizes["a_data"] is None
    assert sizes["old_data"] is not None and sizes["old_data"] >= 4096
    # the docker sections come in their fixed order, after the files
    markers = [line.split()[0] for line in output.splitlines() if line.startswith("@@")]
    tail = [m for m in markers if m not in ("@@file", "@@appfile", "@@manifest")]
    assert tail == [
        "@@vpsctl-facts",
        "@@contents",
        "@@timer",
        "@@timer",
        "@@docker",
        "@@compose",
        "@@containers",
        "@@images",
        "@@volume",
        "@@volume",
        "@@end",
    ]
    # docker was asked everything at once: the other questions went out while the first
    # (which takes a second to answer) was still out; and the temporary directory is gone
    log = (root / "docker.log").read_text().splitlines()
    assert log.index("asked compose") < log.index("answered version"), log
    assert log.index("asked image") < log.index("answered version"), log
    assert list(tmp.iterdir()) == []


def test_a_box_without_docker_answers_without_its_sections(tmp_path: Path) -> None:
    root, tmp = tmp_path / "box", tmp_path / "tmp"
    tmp.mkdir()
    _tree(root)
    (root / "host/systemd").rmdir()
    output = _run(root, tmp, with_docker=False)
    facts = parse(output)
    assert facts.docker is None and facts.containers == [] and facts.volumes == []
    assert len(facts.files) == 9
    # no systemd directory of vpsctl's: no timer asked about
    assert facts.timers == {} and not (root / "systemctl.log").exists()
    assert list(tmp.iterdir()) == []


@pytest.mark.parametrize("systemctl", ["fail", "old"])
def test_the_timer_lines_are_those_of_one_systemctl_a_unit(tmp_path: Path, systemctl: str) -> None:
    """A systemctl that fails prints nothing: empty states. An older one that stops at a unit
    it does not know: each unit asked alone, as before."""
    root, tmp = tmp_path / "box", tmp_path / "tmp"
    tmp.mkdir()
    _tree(root)
    output = _run(root, tmp, with_docker=False, systemctl=systemctl)
    assert [ln for ln in output.splitlines() if ln.startswith("@@timer")] == TIMER_LINES[systemctl]
    expected = {"fail": {"a.timer": "", "b.timer": ""}}.get(
        systemctl, {"a.timer": "enabled active", "b.timer": "inactive"}
    )
    assert parse(output).timers == expected
    assert list(tmp.iterdir()) == []


def test_a_file_gone_before_tar_read_it_is_empty(tmp_path: Path) -> None:
    """Listed and hashed, then removed before tar: its content is empty, as when base64 read
    the vanished file; the others are whole."""
    root, tmp = tmp_path / "box", tmp_path / "tmp"
    tmp.mkdir()
    files = _tree(root)
    gone = root / "stacks/a/env/app.env"
    facts = parse(_run(root, tmp, with_docker=False, gone=gone))
    assert not gone.exists()
    got = facts.files[str(gone)]
    assert got.sha256 == hashlib.sha256(files["stacks/a/env/app.env"][0]).hexdigest()
    assert got.content == b""
    assert facts.files[str(root / LONG)].content == b"long: true\n"


def _answer(contents: str, size: int = 3) -> str:
    sha = hashlib.sha256(b"abc").hexdigest()
    return (
        f"@@vpsctl-facts 1\n@@file 644 root:root {size} {sha} /opt/a b\n"
        f"@@contents\n{contents}\n@@end\n"
    )


def _tar(*members: tarfile.TarInfo, content: bytes = b"abc") -> str:
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w", format=tarfile.GNU_FORMAT) as tar:
        for member in members:
            tar.addfile(member, io.BytesIO(content) if member.isreg() else None)
    return base64.b64encode(gzip.compress(raw.getvalue())).decode()


def test_parse_takes_only_regular_members_by_their_exact_name() -> None:
    assert parse(_answer(contents_line({"/opt/a b": b"abc"}))).files["/opt/a b"].content == b"abc"
    # a link, a directory or a member under another name is no file's content
    link = tarfile.TarInfo("/opt/a b")
    link.type, link.linkname = tarfile.SYMTYPE, "/etc/shadow"
    directory = tarfile.TarInfo("/opt/a b")
    directory.type = tarfile.DIRTYPE
    other = tarfile.TarInfo("opt/a b")
    other.size = 3
    for member in (link, directory, other):
        assert parse(_answer(_tar(member))).files["/opt/a b"].content == b""
    # above MAX_CONTENT: no content, whatever the tar holds
    big = parse(_answer(contents_line({"/opt/a b": b"abc"}), size=MAX_CONTENT + 1))
    assert big.files["/opt/a b"].content is None


@pytest.mark.parametrize(
    ("contents", "error"),
    [
        ("%%%", "bad base64"),
        (base64.b64encode(b"not gzip").decode(), "bad tar of contents"),
        (base64.b64encode(gzip.compress(b"x" * 1024)).decode(), "bad tar of contents"),
        # more than the listed files could fill
        (
            base64.b64encode(gzip.compress(bytes(2 * (MAX_CONTENT + 4096) + 1))).decode(),
            "larger than",
        ),
        (contents_line({"/opt/a b": b"abc"})[:40], "cut short"),
    ],
)
def test_parse_refuses_a_garbled_tar(contents: str, error: str) -> None:
    with pytest.raises(FactsError, match=error):
        parse(_answer(contents))


def test_parse_refuses_files_without_contents() -> None:
    """An answer in the old shape (a base64 line under each file), or without a tar when a
    file is small enough to be in it (no gzip on the box), is not read as empty files."""
    old = _answer("").replace("@@contents\n\n", "YWJj\n")
    with pytest.raises(FactsError, match="no @@contents"):
        parse(old)
    with pytest.raises(FactsError, match="no tar of the files' contents"):
        parse(_answer(""))
    with pytest.raises(FactsError, match="empty file"):  # no tar on the box
        parse(_answer(base64.b64encode(gzip.compress(b"")).decode()))
    # only files too big to send: no tar, as the script does
    assert parse(_answer("", size=MAX_CONTENT + 1)).files["/opt/a b"].content is None
    # every file gone before tar read it: an empty archive
    assert parse(_answer(_tar())).files["/opt/a b"].content == b""
