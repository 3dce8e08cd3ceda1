"""`gate --tx SPEC | --hosts FILE | --shard K/N`: the pytest arguments of a gate spread over
hosts or cut into a CI shard, and the hosts prepared before it starts.

Why the arguments take this shape: xdist rewrites every argument that names an existing path
relative to its rsync roots for a remote worker, and refuses one outside them (rsync is
deprecated, and here off: each host runs its own checkout). So a run over hosts names its
scenario files in `-o testpaths=` (relative to the checkout, the same on every host), gives
its paths as `--opt=PATH`, and starts in the checkout, where pytest reads testpaths.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from harness.common.paths import PROJECT
from harness.jobs.fleet.hosts import HOSTS_FILE, Host
from harness.jobs.fleet.prepare import prepare_hosts

PLUGIN = "harness.jobs.fleet.plugin"
REWRITE_WARNING = "Module already imported so cannot be rewritten"


def relative_targets(targets: list[str]) -> list[str]:
    """Scenario paths relative to the checkout (what testpaths takes on every host)."""
    return [os.path.relpath(Path(t).resolve(), PROJECT) for t in targets]


def pytest_arguments(targets: list[str], hosts: list[Host] | None,
                     shard: tuple[int, int] | None) -> list[str]:
    """The arguments that select and spread the run: the plugin, the shard, each host's --tx
    and the scenario files (as testpaths when a host is remote)."""
    argv = ["-p", PLUGIN]
    if shard is not None:
        argv.append(f"--chaos-shard={shard[0]}/{shard[1]}")
    if hosts:
        argv += ["--dist=worksteal", *(f"--tx={h.tx()}" for h in hosts)]
    if hosts and any(h.remote for h in hosts):
        argv += ["-o", "testpaths=" + " ".join(relative_targets(targets)),
                 # A remote worker has imported the harness package before pytest marks its
                 # entry point for assertion rewriting (it has no asserts to rewrite).
                 "-W", f"ignore:{REWRITE_WARNING}:pytest.PytestAssertRewriteWarning"]
    else:
        argv += [*targets, "-o", "testpaths=scenarios"]
    return argv


def prepare(hosts: list[Host], runtime: str, report: Path,
            say: Any = print) -> dict[str, dict[str, Any]]:
    """Each remote host's runtime and image, built there (in parallel); their facts go to the
    report folder's hosts.json."""
    facts = prepare_hosts(hosts, runtime, say=say)
    report.mkdir(parents=True, exist_ok=True)
    (report / HOSTS_FILE).write_text(json.dumps(
        {"hosts": {h.name: {"spec": h.spec, "workers": h.workers, **facts.get(h.name, {})}
                   for h in hosts}}, indent=1, default=str))
    return facts
