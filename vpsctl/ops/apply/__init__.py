"""apply: converge the host to the spec — only what changed, health-gated, rolled back on
failure, pruned — exactly as the plan says.

Phases, over ONE SSH session:

1. read the host's facts and compute the plan (or check a saved plan is not stale);
2. bootstrap the box when it lacks docker or its bootstrap settings changed;
3. ship local images (stand-ins) the box lacks, pull registry ones: in a thread of their
   own, one stack's at a time, lightest first (:class:`.host.ImageFeed`), while step 4
   goes on for every stack whose images are there;
4. per stack, several at once (none depends on another; :mod:`.lanes` keeps the output in
   the spec's order, the images' lines first), each once its images are on the box, the
   edge last: keep the previous version of every file
   that changes, upload the new files in one tar stream, ``docker compose up -d --wait
   --remove-orphans`` with a scrubbed environment, then its app steps (claim a first
   launch, set in-app settings: :mod:`vpsctl.ops.apps`), before the edge routes to a new
   stack, then the stack's probes through Caddy; on failure restore the previous files and
   bring the previous version back;
5. the edge's Caddyfile is validated by Caddy itself before it is loaded with
   ``caddy reload``; an invalid one is never loaded and the old config keeps serving;
6. prune stacks and files the spec no longer declares (volumes kept unless asked);
7. write the manifest of what vpsctl manages, and append a journal line.

Every remote command is checked (``Session.run`` raises unless a call site says
``check=False`` and judges the result itself). A rollback is claimed only once checked:
the previous files are back, the previous version came up healthy and passed the probes
the new one failed. Anything less is ``rollback failed``: what failed, what the stack runs
now, and what to run; the journal records it and ``vpsctl apply`` exits 1.

A saved plan file (``apply PLANFILE``) is checked before anything connects: its shape, and
its whole body against its ``plan_hash`` (see :func:`load_plan_file`).

The package, by phase: :mod:`.bootstrap` (1 and 2), :mod:`.host` (network, backup files,
images: 3), :mod:`.applier` (the run, and one stack's change: 4), :mod:`.lanes` (stacks at
once, told in order), :mod:`.health` (the gate), :mod:`.stackapps` (app steps),
:mod:`.probe`, :mod:`.snapshots` (pre-apply snapshot), :mod:`.rollback`, :mod:`.edge`
(Caddy: 5), :mod:`.prune` (6), :mod:`.record` (manifest and journal: 7), :mod:`.planfile`
(saved plans), :mod:`.result` (typed outcomes). Every command they send is built by
:mod:`vpsctl.host.commands`.
"""

from vpsctl.host.commands.compose import SCRUBBED_ENV
from vpsctl.host.commands.docker import HEALTH_MARK
from vpsctl.ops.apply.applier import LOCK, PREVIOUS, Applier
from vpsctl.ops.apply.bootstrap import (
    DEPLOYS,
    bootstrap,
    bootstrap_settings,
    deploy_module,
    run_bootstrap,
    settings_hash,
)
from vpsctl.ops.apply.health import CRASH_LOOP, WAIT_TIMEOUT, health_words, parse_health
from vpsctl.ops.apply.planfile import (
    PlanFileError,
    StalePlan,
    check_cluster_stale,
    check_stale,
    check_target,
    cluster_plan_file_problems,
    is_cluster_plan,
    load_plan_file,
    plan_file_problems,
)
from vpsctl.ops.apply.probe import PROBE_DEADLINE
from vpsctl.ops.apply.record import JOURNAL
from vpsctl.ops.apply.result import CONVERGED, ApplyResult, StackOutcome, StackResult
from vpsctl.ops.apply.snapshots import count_rows, counted_rows, discarded_rows

# the names tests and older callers use (kept until the main session integrates)
_deploy_module = deploy_module
_settings_hash = settings_hash

__all__ = [
    "CONVERGED",
    "CRASH_LOOP",
    "DEPLOYS",
    "HEALTH_MARK",
    "JOURNAL",
    "LOCK",
    "PREVIOUS",
    "PROBE_DEADLINE",
    "SCRUBBED_ENV",
    "WAIT_TIMEOUT",
    "Applier",
    "ApplyResult",
    "PlanFileError",
    "StackOutcome",
    "StackResult",
    "StalePlan",
    "bootstrap",
    "bootstrap_settings",
    "check_cluster_stale",
    "check_stale",
    "check_target",
    "cluster_plan_file_problems",
    "count_rows",
    "counted_rows",
    "deploy_module",
    "discarded_rows",
    "health_words",
    "is_cluster_plan",
    "load_plan_file",
    "parse_health",
    "plan_file_problems",
    "run_bootstrap",
    "settings_hash",
]
