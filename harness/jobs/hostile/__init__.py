"""Hostile box options: hypothesis strategies for them, the run-folder artefacts they point at
(volume paths, bound ports, broken image layouts), the checks that judge one case, and the
runner that drives a case through one long-lived host and keeps the tallies.

A case is one hazard on top of a well-formed box (`HostileCase.kind`, e.g. `env.nul`), so a
verdict can name the kind of input that broke it and the known-failures table can key on it.
Strategies draw symbolic cases (paths as `@ws/...`, images as `@image/...`, a bound port as
`@bound`); `Workspace.materialize` turns them into real things under the scenario's folder.
A case replays from hypothesis's database as long as the strategies keep their shape; what it
cannot replay is timing inside the runtime (where a killed shim was when it died).

The hostile job: `strategies` (the case model and its strategies), `shards` (gate units
and explicit cases), `layouts` (broken images), `workspace` (the run-folder side of a case and
what the runtime said), `checks` and `runner`. Its scenario file,
scenarios/inputs/test_hostile_options.py, is the job's own pytest face (one test per shard), so
it imports these modules; nothing in the core does. `attempt` holds one case's bounded answers.
"""
