"""A config-changing ``caddy reload`` with new connections held (issue 16): the script run by
``sh`` over stand-in ``docker`` and ``iptables`` commands that record what they were asked
and keep the rules in a file, as the chains would. The reload under a request loop through
a real Caddy is tests/e2e/test_upgrades.py's."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from vpsctl.host.commands.caddy import HOLD_COMMENT, held_reload

IPTABLES = r"""#!/bin/sh
# a stand-in iptables: the rules live in $STATE, one `-A CHAIN …` line each
[ "$1" = -w ] && shift
case "$1" in
  -n) [ -z "$NO_DOCKER_USER" ] ;;
  -I) chain=$2; shift 2; echo "-A $chain $*" >> "$STATE"; echo "insert $chain" >> "$LOG" ;;
  -D) chain=$2; shift 2; line="-A $chain $*"
      grep -qxF -- "$line" "$STATE" || exit 1
      grep -vxF -- "$line" "$STATE" > "$STATE.new"; mv "$STATE.new" "$STATE"
      echo "delete $chain" >> "$LOG" ;;
  -S) grep -e "^-A $2 " "$STATE" || true ;;
  *) exit 2 ;;
esac
"""
DOCKER = r"""#!/bin/sh
case "$1" in
  inspect) echo "172.18.0.5 172.19.0.7 " ;;
  exec) echo "reload with $(wc -l < "$STATE") rule(s) in place" >> "$LOG"; exit "$RELOAD_RC" ;;
esac
"""


def run(
    tmp_path: Path, *, rc: int = 0, leftover: str = "", no_chain: bool = False
) -> tuple[int, list[str], str]:
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir(exist_ok=True)
    for name, text in (("iptables", IPTABLES), ("docker", DOCKER)):
        (bin_dir / name).write_text(text)
        (bin_dir / name).chmod(0o755)
    state, log = tmp_path / "rules", tmp_path / "log"
    state.write_text(leftover)
    log.write_text("")
    env = {
        **os.environ,
        "PATH": f"{bin_dir}:{os.environ['PATH']}",
        "STATE": str(state),
        "LOG": str(log),
        "RELOAD_RC": str(rc),
        "NO_DOCKER_USER": "1" if no_chain else "",
    }
    done = subprocess.run(
        ["sh", "-c", held_reload("0123abcd")], env=env, capture_output=True, text=True, check=False
    )
    return done.returncode, log.read_text().splitlines(), state.read_text()


@pytest.mark.parametrize("rc", [0, 1])
def test_new_connections_are_held_through_the_reload_and_let_in_after_it(
    tmp_path: Path, rc: int
) -> None:
    code, log, rules = run(tmp_path, rc=rc)
    assert code == rc  # the reload's own status, whatever it was
    reload = log.index("reload with 4 rule(s) in place")  # 2 addresses x DOCKER-USER, OUTPUT
    assert log[:reload] == ["insert DOCKER-USER", "insert OUTPUT"] * 2
    assert sorted(log[reload + 1 :]) == ["delete DOCKER-USER"] * 2 + ["delete OUTPUT"] * 2
    assert rules == ""  # nothing held any more


def test_rules_a_killed_run_left_behind_are_removed_first(tmp_path: Path) -> None:
    stale = (
        f"-A DOCKER-USER -d 172.18.0.99 -p tcp --syn -m comment --comment {HOLD_COMMENT} -j DROP\n"
        "-A DOCKER-USER -j RETURN\n"
    )
    code, log, rules = run(tmp_path, leftover=stale)
    assert code == 0
    assert log[0] == "delete DOCKER-USER"  # the stale one, before anything is held
    assert rules == "-A DOCKER-USER -j RETURN\n"  # Docker's own rule stays


def test_without_docker_s_chain_it_is_a_plain_reload(tmp_path: Path) -> None:
    code, log, rules = run(tmp_path, no_chain=True)
    assert (code, log, rules) == (0, ["reload with 0 rule(s) in place"], "")
