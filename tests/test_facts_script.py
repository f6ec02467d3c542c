"""The facts script itself, run here with sh on a temporary tree (issue 15: it lists and
hashes the files in one pass and asks docker everything at once, in the background).

Its answer must be the files exactly as they are (mode, owner, size, sha256, content up to
MAX_CONTENT), docker's sections in their fixed order whatever order the background reads end
in, and nothing left behind in the temporary directory. A fake ``docker`` answers; its first
question takes a second, so the log shows whether the others were asked meanwhile.
"""

from __future__ import annotations

import grp
import hashlib
import os
import pwd
import shutil
import subprocess
from pathlib import Path

from vpsctl.core import boxscripts
from vpsctl.core.facts import DOCKER_FORMATS, MAX_CONTENT, parse

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
# what the script may run besides docker: a box's coreutils, findutils, grep
TOOLS = ("mktemp", "rm", "base64", "stat", "sha256sum", "cut", "find", "sort", "xargs", "cat",
         "grep", "du", "timeout", "sleep")  # fmt: skip


def _script(root: Path) -> str:
    return boxscripts.render(
        boxscripts.FACTS,
        manifest=str(root / "manifest.json"),
        apps_root=str(root / "apps"),
        managed=[str(root / "stacks"), str(root / "host")],
        max_content=MAX_CONTENT,
        systemd_dir=str(root / "host/systemd"),
        timers=[],
        formats=DOCKER_FORMATS,
    )


def _run(root: Path, tmp: Path, with_docker: bool) -> str:
    """The script's stdout, run with sh and a PATH holding only :data:`TOOLS` (and the fake
    docker): the box's tools, nothing of this machine's docker."""
    bin_dir = root / "bin"
    bin_dir.mkdir(exist_ok=True)
    for tool in TOOLS:
        found = shutil.which(tool)
        assert found, f"{tool} is missing here"
        (bin_dir / tool).symlink_to(found)
    if with_docker:
        (bin_dir / "docker").write_text(FAKE_DOCKER)
        (bin_dir / "docker").chmod(0o755)
    env = {
        "PATH": str(bin_dir),
        "TMPDIR": str(tmp),
        "VOLS": str(root / "vols"),
        "LOG": str(root / "docker.log"),
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


def _tree(root: Path) -> dict[str, tuple[bytes, int]]:
    files = {
        "stacks/b/compose.yaml": (b"services: {}\n", 0o644),
        "stacks/a/env/app.env": (b"# secret: KEY\nKEY=v\n", 0o600),
        "stacks/a/config/name with spaces.txt": (b"x" * 10, 0o644),
        "stacks/a/config/big.bin": (os.urandom(MAX_CONTENT + 1), 0o644),
        "stacks/a/config/empty": (b"", 0o640),
        "host/backup/vpsctl-backup": (b"#!/bin/sh\n", 0o700),
    }
    for rel, (content, mode) in files.items():
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(content)
        path.chmod(mode)
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
    assert facts.manifest == {"stacks": {}}
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
    output = _run(root, tmp, with_docker=False)
    facts = parse(output)
    assert facts.docker is None and facts.containers == [] and facts.volumes == []
    assert len(facts.files) == 6
    assert list(tmp.iterdir()) == []
