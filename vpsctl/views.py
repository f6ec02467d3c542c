"""How results are shown: YAML/JSON of the merged spec, the generate report. No logic."""

from __future__ import annotations

import io
from typing import IO, Any

from ruamel.yaml import YAML

from vpsctl.spec.generate import GenerateReport
from vpsctl.spec.studio import Spec


def merged(spec: Spec) -> dict[str, Any]:
    """The spec as one document: domains resolved, each secret shown masked."""
    host = spec.host.model_dump(mode="json", exclude_none=True, exclude={"stacks"})
    stacks: dict[str, Any] = {}
    for name, stack in spec.stacks.items():
        data = stack.model_dump(mode="json", exclude_none=True)
        data["domains"] = dict(spec.host.stacks[name].domains)
        for service_name, service in data["services"].items():
            env = spec.environment(name, service_name)
            service["env"] = {k: spec.resolve(name, v) for k, v in service.get("env", {}).items()}
            service["secrets"] = {
                var: f"{secret_name} {env.get(var, '<missing>')}"
                for var, secret_name in service.get("secrets", {}).items()
            }
        stacks[name] = data
    return {"host": host, "stacks": stacks}


def to_yaml(data: Any) -> str:
    """Block-style YAML of plain data."""
    yaml = YAML(typ="safe", pure=True)
    yaml.default_flow_style = False
    yaml.width = 120
    yaml.sort_base_mapping_type_on_output = False  # type: ignore[assignment]
    out = io.StringIO()
    yaml.dump(data, out)
    return out.getvalue()


def print_generate_report(report: GenerateReport, out: IO[str]) -> None:
    """What ``secrets generate`` did, by name."""
    if report.generated:
        print(f"{report.file}: generated {len(report.generated)} secret(s):", file=out)
        for name in report.generated:
            print(f"  + {name}", file=out)
    else:
        print(f"{report.file}: nothing to generate", file=out)
    if report.kept:
        print(f"  kept {len(report.kept)} secret(s) already set", file=out)
    if report.external:
        print(
            f"still needed: {len(report.external)} secret(s) issued by someone else; add them "
            f"to {report.file} by hand:",
            file=out,
        )
        for name, kind, obtain in report.external:
            print(
                f"  - {name}: {kind}" + (f"\n      get it from: {obtain}" if obtain else ""),
                file=out,
            )
