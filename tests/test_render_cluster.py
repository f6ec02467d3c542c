"""Rendering a cluster (host.yaml's `nodes`): compose files for `docker stack deploy`.

What is asserted here was first checked on a real box (Docker 26.1.5, one-node swarm): the
products deployed from these files came up healthy, Caddy reached them over the overlay by
their aliases, ports 80/443 were bound on the node itself, and the env files' values reached
the containers without the quotes a single box's files carry (the docker CLI reads
`KEY='v'` as the value `'v'`)."""

from __future__ import annotations

import io
import json
import shutil
from pathlib import Path
from typing import Any

import pytest
from ruamel.yaml import YAML

from tests.helpers import golden_prod_copy, run_cli
from vpsctl.core.render import CLUSTER_NETWORK, Desired, parse_env_file
from vpsctl.core.stackdoc import LABEL_DEPLOYED, DocumentError, deploy_document, one_box_compose
from vpsctl.ops.inputs import render_spec
from vpsctl.spec.loader import load_spec

ROOT = Path(__file__).resolve().parent.parent
CLUSTER = "inventory/sandbox-cluster"


def render_cluster(root: Path, overlay: str = "plain") -> Desired:
    """The example cluster rendered (its ``overlay`` as given), secrets generated."""
    root.mkdir()
    shutil.copytree(ROOT / "stacks", root / "stacks")
    shutil.copytree(ROOT / CLUSTER, root / CLUSTER, ignore=shutil.ignore_patterns("secrets.env"))
    host = root / CLUSTER / "host.yaml"
    host.write_text(host.read_text().replace("overlay: plain", f"overlay: {overlay}"))
    result = run_cli(root, "secrets", "generate", "-i", CLUSTER)
    assert result.code == 0, result.err
    return render_spec(load_spec(root / CLUSTER), offline=True)


@pytest.fixture(scope="module")
def desired(tmp_path_factory: pytest.TempPathFactory) -> Desired:
    """The example cluster as it ships (overlay: plain, for the sandbox's kernels)."""
    return render_cluster(tmp_path_factory.mktemp("cluster") / "studio")


def compose(desired: Desired, stack: str) -> dict[str, Any]:
    data = YAML(typ="safe", pure=True).load(
        io.StringIO(desired.files[f"/opt/vpsctl/stacks/{stack}/compose.yaml"].content.decode())
    )
    assert isinstance(data, dict)
    return data


def test_every_service_is_placed_where_its_stack_runs_and_reached_by_dns(desired: Desired) -> None:
    where = {
        "documint": "front",
        "cronping": "front",
        "flagbit": "front",
        "webhookvault": "front",
        "ghost": "media",
        "listmonk": "media",
        "plausible": "stats",
        "edge": "front",
    }
    for stack, node in where.items():
        for name, service in compose(desired, stack)["services"].items():
            deploy = service["deploy"]
            assert deploy["placement"]["constraints"] == [f"node.labels.vpsctl.node == {node}"], (
                f"{stack}/{name}"
            )
            assert deploy["endpoint_mode"] == "dnsrr"  # no IPVS here: VIPs would hang
            assert deploy["replicas"] == 1
            assert deploy["resources"]["limits"]["memory"]
            assert "mem_limit" not in service and "restart" not in service
            labels = service["labels"]  # read as one box's containers are
            assert labels["com.docker.compose.project"] == stack
            assert labels["com.docker.compose.service"] == name


def test_the_edge_binds_its_ports_on_its_node_and_shares_the_overlay(desired: Desired) -> None:
    edge = compose(desired, "edge")
    ports = edge["services"]["caddy"]["ports"]
    assert {(p["published"], p["protocol"], p["mode"]) for p in ports} == {
        (80, "tcp", "host"),
        (443, "tcp", "host"),
        (443, "udp", "host"),
    }
    for stack in ("edge", "ghost", "plausible"):
        networks = compose(desired, stack)["networks"]
        assert networks["edge"] == {"external": True, "name": CLUSTER_NETWORK}
        assert networks["default"] == {"driver": "overlay"}  # overlay: plain
    ghost = compose(desired, "ghost")["services"]
    assert ghost["ghost"]["networks"]["edge"]["aliases"] == ["ghost--ghost"]
    assert "edge" not in ghost["mysql"]["networks"]  # only routed services join the overlay


def test_an_encrypted_overlay_encrypts_every_stacks_own_network(tmp_path: Path) -> None:
    desired = render_cluster(tmp_path / "studio", overlay="encrypted")
    for stack in ("edge", "ghost", "plausible", "documint"):
        assert compose(desired, stack)["networks"]["default"] == {
            "driver": "overlay",
            "driver_opts": {"encrypted": ""},
        }


def test_env_files_carry_raw_values_as_the_docker_cli_reads_them(desired: Desired) -> None:
    env_files = [f for f in desired.files.values() if f.kind == "env"]
    assert env_files
    for f in env_files:
        assert f.mode == 0o600
        for line in f.content.decode().split("\n"):
            if line and not line.startswith("#"):
                key, _, value = line.partition("=")
                assert not value.startswith("'"), f"{f.path}: {key} is quoted"
        # read back exactly as rendered (the plan compares what the box holds)
        assert all(parse_env_file(f.content).values())


def test_the_deploy_document_inlines_env_files_and_orders_services_by_their_dependencies(
    desired: Desired,
) -> None:
    text = desired.files["/opt/vpsctl/stacks/plausible/compose.yaml"].content.decode()
    envs = {
        path.removeprefix("/opt/vpsctl/stacks/plausible/"): f.content
        for path, f in desired.files.items()
        if path.startswith("/opt/vpsctl/stacks/plausible/env/")
    }
    deploy = deploy_document("plausible", text, envs)
    # Plausible depends on its Postgres and ClickHouse: deployed once they are healthy
    assert deploy.waves == (("db", "clickhouse"), ("plausible",))
    first, whole = (json.loads(d) for d in deploy.documents)
    assert set(first["services"]) == {"db", "clickhouse"}
    assert set(whole["services"]) == {"db", "clickhouse", "plausible"}
    for name, service in whole["services"].items():
        assert "env_file" not in service and "depends_on" not in service
        env = parse_env_file(envs[f"env/{name}.env"])
        # Postgres's password goes as a Swarm secret (see the test below), the rest inline
        if name == "db":
            env = {k: v for k, v in env.items() if k != "POSTGRES_PASSWORD"}
            env["POSTGRES_PASSWORD_FILE"] = "/run/secrets/POSTGRES_PASSWORD"
        assert service["environment"] == {k: v.replace("$", "$$") for k, v in env.items()}
        assert service["labels"][LABEL_DEPLOYED] == deploy.hashes[name]
        for volume in service["volumes"]:
            assert not volume.startswith("./")  # the manager reads no directory
    binds = [v for v in whole["services"]["clickhouse"]["volumes"] if v.startswith("/")]
    assert binds and all(v.startswith("/opt/vpsctl/stacks/plausible/config/") for v in binds)


def test_a_dollar_in_an_env_value_reaches_the_container_as_it_is() -> None:
    compose_text = "services:\n  app:\n    image: x\n    env_file: [./env/app.env]\n"
    deploy = deploy_document(
        "shop", compose_text, {"env/app.env": b"# vpsctl secret keys: K\nK=a$b$$c\n"}
    )
    service = json.loads(deploy.documents[-1])["services"]["app"]
    # the docker CLI interpolates the document: `$$` is its escape for one `$`
    assert service["environment"] == {"K": "a$$b$$$$c"}


def test_a_deploy_whose_env_file_is_missing_on_the_node_is_refused() -> None:
    compose_text = "services:\n  app:\n    image: x\n    env_file: [./env/app.env]\n"
    with pytest.raises(DocumentError, match=r"shop/app: its env file env/app.env is not on"):
        deploy_document("shop", compose_text, {})


def test_a_database_image_gets_its_password_as_a_swarm_secret_in_no_service_spec(
    desired: Desired,
) -> None:
    """The official postgres/mysql images read ``VAR_FILE``: their passwords leave the
    document's environment for Swarm secrets named by a digest of the value."""
    for stack, service, var in (
        ("listmonk", "db", "POSTGRES_PASSWORD"),
        ("ghost", "mysql", "MYSQL_ROOT_PASSWORD"),
        ("ghost", "mysql", "MYSQL_PASSWORD"),
    ):
        root = f"/opt/vpsctl/stacks/{stack}/"
        text = desired.files[f"{root}compose.yaml"].content.decode()
        assert 'x-vpsctl-secret-files: ["' in text
        envs = {
            path.removeprefix(root): f.content
            for path, f in desired.files.items()
            if path.startswith(f"{root}env/")
        }
        value = parse_env_file(envs[f"env/{service}.env"])[var]
        deploy = deploy_document(stack, text, envs)
        whole = deploy.documents[-1]
        defined = json.loads(whole)["services"][service]
        if value in json.dumps(defined) or value in repr(deploy):  # no value in test output
            pytest.fail(f"{stack}/{service}: the value of {var} is in its service spec")
        assert defined["environment"][f"{var}_FILE"] == f"/run/secrets/{var}"
        assert var not in defined["environment"]
        assert "x-vpsctl-secret-files" not in defined
        (name,) = [s["source"] for s in defined["secrets"] if s["target"] == var]
        if deploy.secrets[name] != value:  # made on the manager, from stdin
            pytest.fail(f"{stack}/{service}: {name} does not hold the value of {var}")
        assert json.loads(whole)["secrets"][name] == {"external": True}
    # a new value is a new secret, and a new deploy hash: the service is updated
    text = "services:\n  db:\n    image: x\n    env_file: [./env/db.env]\n"
    text += '    x-vpsctl-secret-files: ["POSTGRES_PASSWORD"]\n'
    one = deploy_document("s", text, {"env/db.env": b"POSTGRES_PASSWORD=a\n"})
    two = deploy_document("s", text, {"env/db.env": b"POSTGRES_PASSWORD=b\n"})
    assert set(one.secrets) != set(two.secrets) and one.hashes != two.hashes
    assert all(len(n) <= 64 for n in one.secrets)
    # an app's image is not a database's: its secrets stay env values
    ghost = desired.files["/opt/vpsctl/stacks/ghost/compose.yaml"].content.decode()
    assert ghost.count("x-vpsctl-secret-files") == 1


def test_one_box_compose_files_are_told_from_a_clusters_stack_files(
    desired: Desired, tmp_path: Path
) -> None:
    """What a node holds of a stack moving from one box's compose to Swarm (and again after
    its rollback) is deployed by compose, never fed to `docker stack deploy`."""
    stack_file = desired.files["/opt/vpsctl/stacks/documint/compose.yaml"].content.decode()
    assert not one_box_compose(stack_file)
    prod = golden_prod_copy(tmp_path / "prod") / "inventory/prod"
    one_box = render_spec(load_spec(prod), offline=True)
    compose_file = one_box.files["/opt/vpsctl/stacks/documint/compose.yaml"].content.decode()
    assert one_box_compose(compose_file)
    assert not one_box_compose("services: [unclosed")
