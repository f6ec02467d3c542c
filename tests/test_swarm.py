"""Forming a Docker Swarm: the command builders' exact text, the parser fed docker's real
answers (``tests/fixtures/swarm/``, captured from three sandbox boxes), the plan of what
forming would change, and the join token kept out of every command line and message."""

from __future__ import annotations

import dataclasses
import re
import shlex
import subprocess
from pathlib import Path

import pytest

from tests.helpers import ROOT
from tests.scripted import ScriptedSession
from vpsctl.core import swarm as core
from vpsctl.errors import MASK, forget_secrets
from vpsctl.host.commands import swarm as commands
from vpsctl.host.remote import CommandFailed
from vpsctl.ops.swarm import SwarmNode, form_swarm

FIXTURES = ROOT / "tests/fixtures/swarm"
# the ids docker gave the three boxes in the captured answers
A, B_OLD, B, C = (
    "ja6a4rumqaw5cog6z33nrnxn2",
    "v9p6b87p9g81l6bry7oqij9fy",
    "zzykmfeej0rhkoh76mbfdsbyr",
    "jnlc8t2hmq40pif3bvmv1e7n6",
)
TOKEN = "SWMTKN-1-3lf93sfycakzmtsgf3vseodwk150z39x6i99nes70tr5bis00j-0123456789abcdefghijklmno"


def fixture(name: str) -> str:
    return (FIXTURES / f"{name}.txt").read_text()


def facts(name: str) -> core.Facts:
    return core.parse(fixture(name))


NODES = [
    core.Node("sw14x-a", "172.17.0.2", manager=True, labels={"zone": "z0"}),
    core.Node("sw14x-b", "172.17.0.4", labels={"zone": "z1"}),
    core.Node("sw14x-c", "172.17.0.5", manager=True, labels={"zone": "z2"}),
]


# ── the commands ─────────────────────────────────────────────────────────────────────────


def test_the_commands_exactly() -> None:
    assert commands.init("10.0.0.2") == (
        "docker swarm init --advertise-addr 10.0.0.2 >/dev/null"  # it prints the token
    )
    assert commands.join_token("worker") == ["docker", "swarm", "join-token", "-q", "worker"]
    assert commands.join("10.0.0.3", "10.0.0.2") == (
        'IFS= read -r token && exec docker swarm join --token "$token" '
        "--advertise-addr 10.0.0.3 10.0.0.2:2377"
    )
    assert commands.join("fd00::3", "fd00::2").endswith(" fd00::3 '[fd00::2]:2377'")
    assert commands.set_labels(A, {"vpsctl.node": "a", "zone": "z0"}, ["role"]) == [
        "docker", "node", "update", "--label-add", "vpsctl.node=a", "--label-add", "zone=z0",
        "--label-rm", "role", A,
    ]  # fmt: skip
    assert commands.set_role(B, manager=True) == ["docker", "node", "promote", B]
    assert commands.create_overlay() == [
        "docker", "network", "create", "--driver", "overlay", "--opt", "encrypted",
        "--attachable", "vpsctl-overlay",
    ]  # fmt: skip
    assert commands.OVERLAY == core.OVERLAY and commands.NODE_LABEL == core.NODE_LABEL


def test_a_hostile_address_stays_one_word() -> None:
    line = commands.join("10.0.0.3; reboot", "10.0.0.2")
    assert "'10.0.0.3; reboot'" in line
    assert shlex.split(commands.init("$(reboot)"))[4] == "$(reboot)"


def test_the_join_reads_its_token_from_stdin_only(tmp_path: Path) -> None:
    """The join line run by a real sh, with ``docker`` a stub printing its arguments: the
    token arrives as one word although it never was one of the line's."""
    stub = tmp_path / "docker"
    stub.write_text('#!/bin/sh\nprintf "%s\\n" "$@"\n')
    stub.chmod(0o755)
    line = commands.join("10.0.0.3", "10.0.0.2")
    assert TOKEN not in line
    result = subprocess.run(
        ["sh", "-c", line],
        input=TOKEN + "\n",
        capture_output=True,
        text=True,
        env={"PATH": f"{tmp_path}:/usr/bin:/bin"},
        timeout=10,
        check=True,
    )
    assert result.stdout.splitlines() == [
        "swarm", "join", "--token", TOKEN, "--advertise-addr", "10.0.0.3", "10.0.0.2:2377",
    ]  # fmt: skip


# ── docker's answers, parsed ─────────────────────────────────────────────────────────────


def test_a_leader_lists_every_node_with_its_labels() -> None:
    leader = facts("manager-one-down")
    assert (leader.node_id, leader.local_state, leader.control) == (A, "active", True)
    assert leader.cluster_id == "yiegp3uaqaabdry9r6jjdptkx"
    assert leader.address == "172.17.0.2"
    assert set(leader.managers) == {"172.17.0.2:2377", "172.17.0.5:2377"}
    by_id = {m.id: m for m in leader.members}
    assert set(by_id) == {A, B_OLD, B, C}
    assert by_id[A].leader and by_id[A].role == "manager"
    assert by_id[B].labels == {"vpsctl.node": "sw14x-b", "zone": "z1"}
    assert by_id[B_OLD].state == "down"  # b left once and joined again: a new id
    assert leader.network == core.Network("overlay", "swarm", attachable=True, encrypted=True)
    assert leader.esp is False  # this machine's kernel has no ESP (see the e2e)


def test_a_worker_sees_no_nodes_and_no_cluster() -> None:
    worker = facts("worker")
    assert (worker.node_id, worker.control, worker.cluster_id) == (B, False, "")
    assert worker.members == () and worker.network is None
    assert worker.managers  # it knows where the managers are


def test_an_inactive_node_and_one_in_another_swarm() -> None:
    inactive = facts("inactive")
    assert (inactive.local_state, inactive.node_id, inactive.active) == ("inactive", "", False)
    other = facts("other-swarm")
    assert other.active and other.cluster_id and other.cluster_id != facts("worker").cluster_id
    assert [m.address for m in other.members] == ["172.17.0.4"]


def test_an_answer_that_is_not_the_reads_is_an_error() -> None:
    with pytest.raises(core.SwarmFactsError, match="no @@swarm-info section"):
        core.parse("Cannot connect to the Docker daemon\n")
    with pytest.raises(core.SwarmFactsError, match="not docker's JSON"):
        core.parse("@@swarm-info\n{not json\n")


# ── the plan ─────────────────────────────────────────────────────────────────────────────


def formed() -> dict[str, core.Facts]:
    return {
        "sw14x-a": facts("manager-one-down"),
        "sw14x-b": facts("worker"),
        "sw14x-c": facts("manager-reachable"),
    }


def test_a_formed_swarm_plans_no_change_and_reports_the_undeclared_node() -> None:
    plan = core.plan(NODES, formed())
    assert plan.changes == []
    assert len(plan.undeclared) == 1
    assert plan.undeclared[0].startswith(f"swarm node sandbox-sw14x-b ({B_OLD}, worker, down)")
    assert f"docker node rm {B_OLD}" in plan.undeclared[0]
    assert len(plan.warnings) == 3 and "cannot do IPsec ESP" in plan.warnings[0]


def test_fresh_nodes_plan_init_joins_labels_and_the_overlay() -> None:
    fresh = {n.name: facts("inactive") for n in NODES}
    assert core.plan(NODES, fresh).changes == [
        "init the swarm on sw14x-a (advertising 172.17.0.2)",
        "label sw14x-a: vpsctl.node=sw14x-a",
        "label sw14x-a: zone=z0",
        "join sw14x-b as a worker (advertising 172.17.0.4)",
        "label sw14x-b: vpsctl.node=sw14x-b",
        "label sw14x-b: zone=z1",
        "join sw14x-c as a manager (advertising 172.17.0.5)",
        "label sw14x-c: vpsctl.node=sw14x-c",
        "label sw14x-c: zone=z2",
        "create the encrypted overlay network vpsctl-overlay",
    ]


def test_labels_roles_and_a_left_node_are_planned() -> None:
    nodes = [
        dataclasses.replace(NODES[0], labels={"zone": "z9"}),
        dataclasses.replace(NODES[1], manager=True),
        dataclasses.replace(NODES[2], labels={}),
    ]
    found = formed()
    found["sw14x-c"] = facts("inactive")  # c left the swarm
    assert core.plan(nodes, found).changes == [
        "label sw14x-a: zone=z9",
        "promote sw14x-b to a manager",
        "join sw14x-c as a manager (advertising 172.17.0.5)",
        "label sw14x-c: vpsctl.node=sw14x-c",  # a new node id: its labels start over
    ]
    found["sw14x-c"] = facts("manager-reachable")
    assert core.plan(nodes, found).changes[-1] == "label sw14x-c: remove zone"


def test_a_node_in_another_swarm_is_an_error_naming_it() -> None:
    found = formed()
    found["sw14x-b"] = facts("other-swarm")
    with pytest.raises(core.SwarmError) as caught:
        core.plan(NODES, found)
    assert "node sw14x-b is in another swarm (its managers: 172.17.0.4:2377)" in str(caught.value)
    assert "docker swarm leave" in str(caught.value)


def test_managers_of_two_swarms_are_an_error() -> None:
    found = formed()
    found["sw14x-c"] = facts("other-swarm")
    with pytest.raises(core.SwarmError, match="the declared managers are in different swarms"):
        core.plan(NODES, found)


def test_a_network_of_that_name_that_is_not_encrypted_is_an_error() -> None:
    found = formed()
    found["sw14x-a"] = facts("manager-plain-network")
    with pytest.raises(core.SwarmError) as caught:
        core.plan(NODES, found)
    assert str(caught.value).startswith(
        "a network named vpsctl-overlay exists but it is not encrypted: remove it"
    )


def test_declarations_that_cannot_form_a_swarm() -> None:
    fresh = {n.name: facts("inactive") for n in NODES}
    workers = [dataclasses.replace(n, manager=False) for n in NODES]
    assert core.problems(workers, fresh) == [
        "no node is a manager: declare at least one (an odd number: 1, 3 or 5)"
    ]
    twice = [NODES[0], dataclasses.replace(NODES[1], address="172.17.0.2")]
    assert core.problems(twice, fresh) == ["address 172.17.0.2 is given to more than one node"]
    pending = {**fresh, "sw14x-b": dataclasses.replace(fresh["sw14x-b"], local_state="pending")}
    assert core.problems(NODES, pending) == [
        "node sw14x-b: its swarm state is pending; it must be inactive (not in a swarm) or "
        "active in this one"
    ]


# ── the token: never in a command line, masked in a failure ──────────────────────────────


def test_a_failed_join_never_shows_the_token() -> None:
    """b joins; docker's error quotes the token (as if it did): the failure names the
    node and its role, the token is masked, and no command line ever held it."""
    forget_secrets()
    a = ScriptedSession().answer(r"@@swarm-info", stdout=fixture("manager-one-down"))
    a.answer(r"join-token -q worker", stdout=TOKEN + "\n")
    b = ScriptedSession().answer(r"@@swarm-info", stdout=fixture("inactive"))
    b.fail(r"docker swarm join", stderr=f"Error response from daemon: bad token {TOKEN}")
    c = ScriptedSession().answer(r"@@swarm-info", stdout=fixture("manager-reachable"))
    said: list[str] = []
    nodes = [
        SwarmNode(n.name, session, n.address, n.manager, n.labels)
        for n, session in zip(NODES, (a, b, c), strict=True)
    ]
    try:
        with pytest.raises(CommandFailed) as caught:
            form_swarm(nodes, said.append)
        text = str(caught.value)
        assert text.startswith("sw14x-b joining the swarm as a worker failed on scripted: ")
        assert MASK in text
        secret_part = TOKEN.rsplit("-", 1)[1]
        sent = [call.command for s in (a, b, c) for call in s.calls]
        assert b.ran(r"docker swarm join --token \"\$token\"")
        for output in [text, *said, *sent]:
            assert TOKEN not in output and secret_part not in output, output
    finally:
        forget_secrets()


def test_the_read_is_posix_sh() -> None:
    """The read parses with ``sh -n`` (dash here): a syntax slip fails here, not on a box."""
    result = subprocess.run(
        ["sh", "-n", "-c", commands.read()], capture_output=True, text=True, timeout=10, check=False
    )
    assert result.returncode == 0, result.stderr
    assert re.search(r"docker info --format '\{\{json \.Swarm\}\}'", commands.read())
