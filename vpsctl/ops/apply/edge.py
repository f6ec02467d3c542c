"""The edge: a new Caddyfile is judged by Caddy before it is loaded (``caddy validate``,
then ``caddy reload``), and the routes of a stack whose first start failed are withheld."""

from __future__ import annotations

from pathlib import Path

from vpsctl.core.render import DesiredFile, render_caddyfile
from vpsctl.errors import VpsctlError
from vpsctl.host.commands import caddy, files
from vpsctl.host.remote import output_tail
from vpsctl.ops.apply.phase import Phase
from vpsctl.ops.apply.result import CONVERGED, ApplyResult


class Edge(Phase):
    """Caddy of the edge stack, driven through the run's session."""

    def is_edge(self, name: str) -> bool:
        return self.desired.stacks[name].role == "edge"

    def running(self) -> bool:
        """Whether a container of an edge stack runs now (as the facts read it)."""
        edges = [n for n, s in self.desired.stacks.items() if s.role == "edge"]
        projects = self.facts.projects()
        return any(c.state == "running" for name in edges for c in projects.get(name, []))

    def container(self, name: str) -> str | None:
        result = self.session.run(
            caddy.running_container(name), purpose=f"finding the running Caddy of {name}"
        )
        lines = result.stdout.split()
        return lines[0] if lines else None

    def image(self, name: str) -> str:
        for image in self.desired.stacks[name].images:
            return image.ref
        raise VpsctlError(f"stack {name} has no image")

    def validate(self, name: str, f: DesiredFile) -> bool:
        """Upload the Caddyfile as ``Caddyfile.next`` and let Caddy judge it: the running one
        when there is one, else a one-off container of the same image."""
        nxt = f.path + ".next"
        # the files this Caddyfile loads (tls: pebble's CA root, named by its hash) first:
        # Caddy reads them while it validates
        assets = [a for a in self.desired.files.values() if a.kind == "caddy-asset"]
        self.session.put_files(
            [(nxt, f.content, f.mode)] + [(a.path, a.content, a.mode) for a in assets]
        )
        inside = f"{caddy.CONFIG_DIR}/{Path(nxt).name}"
        container = self.container(name)
        if container is not None:
            command = caddy.caddy(container, "validate", inside)
        else:
            command = caddy.validate_oneoff(str(Path(f.path).parent), self.image(name), inside)
        # Caddy's verdict: a rejection is this stack's outcome, not an error
        result = self.session.run(
            command, timeout=120, check=False, purpose="caddy validate of the new Caddyfile"
        )
        if not result.ok:
            self.say(
                f"{name}: Caddy rejected the new Caddyfile; not loaded:\n"
                + "\n".join("    " + line for line in result.output.splitlines()[-8:])
                + self.remove_next(f)
            )
        return result.ok

    def remove_next(self, f: DesiredFile | None) -> str:
        """Remove an uploaded ``Caddyfile.next``; "" or a note saying it is left behind."""
        if f is None:
            return ""
        result = self.session.run(
            files.remove([f.path + ".next"]),
            check=False,  # reported, not raised: the old config serves either way
            purpose="removing Caddyfile.next",
        )
        return "" if result.ok else f" ({f.path}.next is left behind: {output_tail(result, 2)})"

    def place(self, f: DesiredFile) -> None:
        """Move the validated ``Caddyfile.next`` in place (raises when it cannot)."""
        self.session.run(
            files.move(f.path + ".next", f.path), purpose="putting the new Caddyfile in place"
        )

    def reload(self, name: str) -> tuple[bool, str]:
        """``caddy reload`` in the running Caddy, new connections held meanwhile so that
        none is lost (:func:`~vpsctl.host.commands.caddy.held_reload`), or ``compose up``
        when none runs: whether it loaded, and its output."""
        container = self.container(name)
        if container is None:
            return self.applier.gate.compose_up(name)
        result = self.session.run(
            caddy.held_reload(container),
            check=False,  # a gate: judged by the caller
            purpose=f"caddy reload of {name}",
        )
        return result.ok, result.output

    def withhold_routes(self, result: ApplyResult, edge: str) -> bool:
        """Before the edge stack ``edge`` converges (any other stack: nothing to do): leave
        out of its Caddyfile the routes of every stack whose first start failed in this run:
        nothing of it runs, so its routes would only answer 502. The Caddyfile is rendered
        again without them, and the manifest records that one, so the next plan shows those
        routes as still to add. Whether anything more was withheld."""
        if not self.is_edge(edge):
            return False
        projects = self.facts.projects()
        failed = {
            o.stack
            for o in result.outcomes
            if o.result not in CONVERGED and o.action == "start" and not projects.get(o.stack)
        }
        new = frozenset(failed) - self.applier.withheld
        if not new:
            return False
        self.applier.withheld |= new
        content = render_caddyfile(
            self.spec, self.applier.inputs.private_acme, without=self.applier.withheld
        ).encode()
        if self.applier.caddyfile_hook is not None:
            content = self.applier.caddyfile_hook(content)
        for path, f in list(self.desired.files.items()):
            if f.kind == "caddyfile":
                self.desired.files[path] = DesiredFile(f.path, content, f.mode, f.stack, f.kind)
        names = ", ".join(sorted(new))
        self.say(
            f"edge: not routing to {names}: its first start failed, so nothing of it runs; "
            "the next apply adds its routes"
        )
        return True
