"""A family's kinds split into gate units (shards), the pytest test body that runs one shard,
and the explicit cases every run takes: the canonical ones and the pinned findings.
"""

from __future__ import annotations

import dataclasses
import fnmatch
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

from hypothesis import HealthCheck, Phase, example, given, settings
from hypothesis import seed as with_seed

from harness.common.errors import SetupError
from harness.jobs.hostile.strategies import (
    FAMILIES,
    HOLDER_ID,
    HOLDER_ID_AS_NAME,
    HOLDER_SAME_NAME,
    IMAGE_VARIANTS,
    HostileCase,
    cases,
    kinds,
)
from harness.session import seeds

# -- shards: a family's kinds split into gate units ------------------------------------------

# Each family runs as a few units side by side (a whole family took 55-107 s, against a gate
# floor of ~33 s: the guest-connect timeout). A shard owns some of the family's kinds, as
# fnmatch patterns; every kind belongs to exactly one shard (checked by `shards`). Each shard
# draws the family's whole hypothesis sequence from the family's seed, so the cases are the
# ones an unsharded run draws, and runs (and tallies) only the cases of its own kinds: a
# kind's verdicts are judged once, over all its cases, under the same check ids. Grouped by
# meaning, sized by the gate seed's draws to 13-27 cases a shard (about a second each).
SHARD_KINDS: dict[str, dict[str, tuple[str, ...]]] = {
    "names": {"path_like": ("name.path_like",),
              "others": ("name.unicode", "name.nul", "name.long", "name.empty",
                         "name.duplicate", "name.other_box_id")},
    "env": {"size": ("env.huge_value", "env.many"),
            "content": ("env.key_equals", "env.key_empty", "env.duplicate_key", "env.nul",
                        "env.unicode", "env.value_cut_char")},
    "process": {"entrypoint": ("entrypoint.*",),
                "cmd_user": ("cmd.*", "user.*"),
                "working_dir": ("working_dir.*",)},
    "volumes": {"host_side": ("volume.missing_host", "volume.relative_host",
                              "volume.host_is_file", "volume.odd_chars",
                              "volume.same_host_twice"),
                "guest_side": ("volume.relative_guest", "volume.guest_root",
                               "volume.guest_system", "volume.guest_dotdot",
                               "volume.ro_clash", "volume.many", "volume.nul")},
    "ports": {"duplicate_host": ("port.duplicate_host",),
              "values": ("port.out_of_range", "port.zero_guest", "port.zero_host"),
              "sets": ("port.duplicate_pair", "port.bound_host", "port.protocol",
                       "port.many")},
    "resources": {"small": ("cpus.zero", "memory.zero", "memory.below_37", "memory.small",
                            "disk.zero", "disk.tiny"),
                  "huge": ("cpus.many", "memory.huge", "disk.huge"),
                  "overflow": ("*.overflow",)},
    "images": {"layout": ("image.missing", "image.file", "image.empty_dir",
                          "image.not_a_layout", "image.no_oci_layout", "image.symlink_loop",
                          "image.well_formed"),
               "metadata": ("image.index_*", "image.manifest_*", "image.config_*",
                            "image.diff_id_wrong"),
               "layers": ("image.layer_*",)},
    "options": {"network": ("network.*",),
                "tty_advanced": ("tty.*", "advanced.*"),
                "secrets": ("secrets.*",)},
    "lifecycle": {"fields": ("auto_*",),
                  "combos": ("lifecycle.*",)},
}


@dataclass(frozen=True)
class Shard:
    """Some kinds of one family: one gate unit (`test_hostile_options[<family>-<label>]`)."""

    family: str
    label: str
    kinds: tuple[str, ...]

    @property
    def id(self) -> str:
        return f"{self.family}-{self.label}"


def shards(family: str, table: dict[str, dict[str, tuple[str, ...]]] | None = None
           ) -> list[Shard]:
    """The family's shards, each with the kinds its patterns match. Raises SetupError unless
    every kind of the family is in exactly one shard and every pattern matches a kind: a kind
    no shard ran would lose its verdicts without a word."""
    groups = (SHARD_KINDS if table is None else table).get(family)
    every = list(kinds(family))
    if not groups:
        raise SetupError(f"hostile family {family!r} has no shards")
    out, owner = [], {}
    for label, patterns in groups.items():
        mine = []
        for pattern in patterns:
            matched = fnmatch.filter(every, pattern)
            if not matched:
                raise SetupError(f"shard {family}-{label}: {pattern!r} matches no kind")
            mine += [k for k in matched if k not in mine]
        for k in mine:
            if k in owner:
                raise SetupError(f"kind {k} is in two shards: {family}-{owner[k]} and "
                                 f"{family}-{label}")
            owner[k] = label
        out.append(Shard(family, label, tuple(mine)))
    missing = [k for k in every if k not in owner]
    if missing:
        raise SetupError(f"kinds in no shard of {family}: {missing}")
    return out


def all_shards() -> list[Shard]:
    return [s for f in FAMILIES for s in shards(f)]


@contextmanager
def without_local_constants() -> Iterator[None]:
    """Hypothesis (6.131 on) draws, in about 5% of its choices, literals from the local
    modules loaded at that moment: here harness/*. Which those are depends on what the
    process imported before (on an xdist worker, the scenarios that ran there earlier) and
    on every edit anywhere in the harness, so one seed drew different cases in different
    processes (measured: gate runs of one commit differed from the third case on). Within
    this, generation sees no local constants (hypothesis's own stay): a seed's cases
    depend only on the strategies and hypothesis, and every shard of a family, in whatever
    worker, draws the same sequence. Raises SetupError for a hypothesis whose constant
    injection has no known switch (the cases would silently stop being reproducible)."""
    try:
        from hypothesis.internal.conjecture import providers
    except ImportError:             # no such module: a hypothesis too old to inject constants
        yield
        return
    injects = hasattr(getattr(providers, "HypothesisProvider", None), "_maybe_draw_constant")
    real = getattr(providers, "_get_local_constants", None)
    cache = getattr(getattr(providers, "CONSTANTS_CACHE", None), "cache", None)
    if not injects:
        yield
        return
    if real is None or cache is None or not hasattr(providers, "Constants"):
        raise SetupError("this hypothesis draws local constants and offers no known way to "
                         "turn that off: hostile cases would not be reproducible per seed")
    empty = providers.Constants()
    providers._get_local_constants = lambda: empty
    cache.clear()                   # allowed values cached with the local constants in
    try:
        yield
    finally:
        providers._get_local_constants = real
        cache.clear()


def shard_test(shard: Shard, run: Callable[[HostileCase], None], max_examples: int,
               run_seed: int, database: Any = None) -> Callable[[], None]:
    """The hypothesis test of one shard: `run` gets the shard's explicit examples (canonical
    and pinned cases of its kinds), then every case hypothesis draws for the family from the
    family's seed (`run_seed` + the family's index), `max_examples` of them (0: explicit
    examples only). Drawing the family's sequence, not one of the shard's kinds only, is what
    keeps the cases those of an unsharded run for the same seed: the draws do not depend on
    what `run` does with a case, only on whether it fails (a failure is shrunk), and not on
    the process either (see `without_local_constants`)."""
    def test(case: HostileCase) -> None:
        run(case)
    # One example-database key per shard: a shard replaying another's saved failure would
    # see it pass (not its kind) and delete it.
    test.__name__ = f"hostile_{shard.family}_{shard.label}"
    phases = list(Phase) if max_examples else [Phase.explicit]
    out = settings(max_examples=max(1, max_examples), phases=phases, deadline=None,
                   derandomize=False, print_blob=True, database=database,
                   suppress_health_check=[HealthCheck.function_scoped_fixture,
                                          HealthCheck.too_slow, HealthCheck.filter_too_much,
                                          HealthCheck.data_too_large,
                                          HealthCheck.large_base_example],
                   )(given(case=cases(shard.family))(test))
    for case in [*canonical(shard.family), *pinned(shard.family)]:
        if case.kind in shard.kinds:
            out = example(case=case)(out)
    # One seed per family, derived from the run's, so families draw independently.
    seeded = with_seed(run_seed + FAMILIES.index(shard.family))(out)

    def reproducible() -> None:
        with without_local_constants():
            seeded()
    return reproducible


def canonical(family: str) -> list[HostileCase]:
    """One plain example of every kind of the family: run first in every run (as hypothesis
    explicit examples), so each kind's verdicts exist whatever the generator draws."""
    return [dataclasses.replace(c, origin="canonical") for c in _CANONICAL[family].values()]


EXPLICIT = ("canonical", "pinned")


def pinned(family: str) -> list[HostileCase]:
    """The family's cases pinned from earlier explorations (fixtures/hostile_cases.jsonl):
    explicit examples in every run. Raises SetupError for a malformed line or unknown kind."""
    out = []
    for raw in seeds.load_pinned():
        if raw["family"] != family:
            continue
        if raw["kind"] not in kinds(family):
            raise SetupError(f"pinned case of unknown kind {raw['kind']!r} in {family}")
        out.append(HostileCase(family, raw["kind"], raw.get("options") or {},
                               raw.get("name"), raw.get("holder"), origin="pinned"))
    return out


def _canon() -> dict[str, dict[str, HostileCase]]:
    def c(family: str, kind: str, **kw: Any) -> tuple[str, HostileCase]:
        return kind, HostileCase(family, kind, **kw)
    argv = {"empty": [], "empty_arg": [""], "nul": ["/bin/s\x00h"],
            "missing_binary": ["/no/such/binary"], "huge_arg": ["/bin/sh", "-c", "x" * 131_072],
            "many_args": ["/bin/echo"] + ["a"] * 1000}
    process = dict(
        [c("process", f"{w}.{k}", options={w: v}) for w in ("entrypoint", "cmd")
         for k, v in argv.items()]
        + [c("process", f"working_dir.{k}", options={"working_dir": v}) for k, v in {
            "relative": "rel/dir", "empty": "", "nul": "/a\x00b", "long": "/" + "a" * 4097,
            "dotdot": "/../..", "not_a_dir": "/bin/busybox"}.items()]
        + [c("process", "user.odd", options={"user": "nobody:nogroup"})])
    return {
        "names": dict([
            c("names", "name.unicode", name="ünïcödé-箱-📦"),
            c("names", "name.nul", name="a\x00b"),
            c("names", "name.long", name="n" * 4096),
            c("names", "name.path_like", name="../../etc/passwd"),
            c("names", "name.empty", name=""),
            c("names", "name.duplicate", name="twin", holder=HOLDER_SAME_NAME),
            c("names", "name.other_box_id", name=HOLDER_ID, holder=HOLDER_ID_AS_NAME)]),
        "env": dict([
            c("env", "env.huge_value", options={"env": [["BIG", "x" * 65_536]]}),
            c("env", "env.many", options={"env": [[f"K_{i}", "v"] for i in range(5000)]}),
            c("env", "env.key_equals", options={"env": [["=", "x"]]}),
            c("env", "env.key_empty", options={"env": [["", "x"]]}),
            c("env", "env.nul", options={"env": [["A\x00B", "v"]]}),
            c("env", "env.unicode", options={"env": [["ÄÖÜ", "箱"]]}),
            c("env", "env.value_cut_char", options={"env": [["K", "aéééé"]]}),
            c("env", "env.duplicate_key", options={"env": [["K", "1"], ["K", "2"]]})]),
        "process": process,
        "volumes": dict([
            c("volumes", "volume.missing_host", options={"volumes": [["@ws/missing/x", "/mnt/x"]]}),
            c("volumes", "volume.relative_host", options={"volumes": [["rel", "/mnt/x"]]}),
            c("volumes", "volume.relative_guest", options={"volumes": [["@ws/dir/data", "mnt"]]}),
            c("volumes", "volume.guest_root", options={"volumes": [["@ws/dir/data", "/"]]}),
            c("volumes", "volume.guest_system", options={"volumes": [["@ws/dir/data", "/proc"]]}),
            c("volumes", "volume.guest_dotdot",
              options={"volumes": [["@ws/dir/data", "/mnt/../../escape"]]}),
            c("volumes", "volume.host_is_file", options={"volumes": [["@ws/file/f", "/mnt/f"]]}),
            c("volumes", "volume.ro_clash", options={"volumes": [
                ["@ws/dir/one", "/mnt/x", True], ["@ws/dir/two", "/mnt/x", False]]}),
            c("volumes", "volume.same_host_twice", options={"volumes": [
                ["@ws/dir/data", "/mnt/a", True], ["@ws/dir/data", "/mnt/b", False]]}),
            c("volumes", "volume.nul", options={"volumes": [["@ws/dir/data", "/mnt/a\x00b"]]}),
            c("volumes", "volume.many", options={"volumes": [
                ["@ws/dir/data", f"/mnt/v{i}"] for i in range(64)]}),
            c("volumes", "volume.odd_chars",
              options={"volumes": [["@ws/dir/a,b:c=d", "/mnt/x"]]})]),
        "ports": dict([
            c("ports", "port.out_of_range", options={"ports": [[70_000, 80]]}),
            c("ports", "port.zero_guest", options={"ports": [[45_000, 0]]}),
            c("ports", "port.zero_host", options={"ports": [[0, 80]]}),
            c("ports", "port.duplicate_host", options={"ports": [[45_001, 80], [45_001, 81]]}),
            c("ports", "port.duplicate_pair", options={"ports": [[45_002, 80], [45_002, 80]]}),
            c("ports", "port.bound_host", options={"ports": [["@bound", 80]]}),
            c("ports", "port.protocol", options={"ports": [[45_003, 80, "sctp"]]}),
            c("ports", "port.many", options={"ports": [[45_100 + i, 80] for i in range(500)]})]),
        "resources": dict([
            c("resources", "cpus.zero", options={"cpus": 0}),
            c("resources", "cpus.many", options={"cpus": 255}),
            c("resources", "cpus.overflow", options={"cpus": 256}),
            c("resources", "memory.zero", options={"memory_mib": 0}),
            c("resources", "memory.below_37", options={"memory_mib": 1}),
            c("resources", "memory.small", options={"memory_mib": 37}),
            c("resources", "memory.huge", options={"memory_mib": 2**32 - 1}),
            c("resources", "memory.overflow", options={"memory_mib": 2**32}),
            c("resources", "disk.zero", options={"disk_size_gb": 0}),
            c("resources", "disk.tiny", options={"disk_size_gb": 1}),
            c("resources", "disk.huge", options={"disk_size_gb": 2**20}),
            c("resources", "disk.overflow", options={"disk_size_gb": -1})]),
        "options": dict([
            c("options", "network.malformed", options={"network": "none"}),
            c("options", "network.unknown_mode", options={"network": {"mode": "bridge"}}),
            c("options", "network.unknown_key", options={"network": {"bogus": 1}}),
            c("options", "network.allow_net_odd", options={"network": {
                "outbound": {"mode": "enabled", "allow_net": ["", "*", "a\x00b"]}}}),
            c("options", "network.disabled", options={"network": {"mode": "disabled"}}),
            c("options", "tty.malformed", options={"tty": "yes"}),
            c("options", "tty.no_command", options={"tty": True, "entrypoint": [], "cmd": []}),
            c("options", "advanced.malformed", options={"advanced": {"security": "strict"}}),
            c("options", "advanced.unknown_key", options={"advanced": {"bogus": True}}),
            c("options", "advanced.out_of_range",
              options={"advanced": {"health_check": {"interval": 0}}}),
            c("options", "secrets.malformed", options={"secrets": {"a": "b"}}),
            c("options", "secrets.odd_name", options={"secrets": [{"name": "", "value": "v"}]}),
            c("options", "secrets.odd_value",
              options={"secrets": [{"name": "k", "value": "a\x00" + "v" * 65_536}]}),
            c("options", "secrets.odd_hosts",
              options={"secrets": [{"name": "k", "value": "v", "hosts": ["", "*"]}]}),
            c("options", "secrets.duplicate_name", options={"secrets": [
                {"name": "k", "value": "1"}, {"name": "k", "value": "2"}]}),
            c("options", "secrets.many",
              options={"secrets": [{"name": f"s{i}", "value": "v"} for i in range(1000)]})]),
        "lifecycle": dict(
            [c("lifecycle", f"{k}.{what}", options={k: v}) for k in ("auto_stop", "auto_delete")
             for what, v in (("malformed", "60"), ("out_of_range", -1), ("edge", 0))]
            + [c("lifecycle", "auto_resume.malformed", options={"auto_resume": "yes"}),
               # The SDK's own defaults, every flag unset.
               c("lifecycle", "lifecycle.combo", options={"sdk_defaults": True}),
               # Everything a user can turn on at once, on a box that outlives its creator.
               c("lifecycle", "lifecycle.combo_detached", options={
                   "auto_remove": True, "auto_delete": 0, "auto_stop": 0, "auto_resume": True,
                   "detach": True, "sdk_defaults": True})]),
        "images": dict(c("images", f"image.{v}", options={"rootfs_path": f"@image/{v}/0/0.5000"})
                       for v in IMAGE_VARIANTS),
    }


_CANONICAL = _canon()
