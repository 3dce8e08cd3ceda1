"""Hostile box options: hypothesis strategies for them, the run-folder artefacts they point at
(volume paths, bound ports, broken image layouts), the checks that judge one case, and the
runner that drives a case through one long-lived host and keeps the tallies.

A case is one hazard on top of a well-formed box (`HostileCase.kind`, e.g. `env.nul`), so a
verdict can name the kind of input that broke it and the known-failures table can key on it.
Strategies draw symbolic cases (paths as `@ws/...`, images as `@image/...`, a bound port as
`@bound`); `Workspace.materialize` turns them into real things under the scenario's folder.
A case replays from hypothesis's database as long as the strategies keep their shape; what it
cannot replay is timing inside the runtime (where a killed shim was when it died).
"""

from __future__ import annotations

import copy
import dataclasses
import fnmatch
import gzip
import hashlib
import io
import json
import random
import re
import shutil
import socket
import sqlite3
import struct
import tarfile
import time
import traceback
import zlib
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path
from typing import Any

from hypothesis import HealthCheck, Phase, assume, example, given, settings
from hypothesis import seed as with_seed
from hypothesis import strategies as st

from harness import checks, seeds
from harness.checks import HOLDS, UNKNOWN, VIOLATED, Verdict, check
from harness.context import WATCHDOG_BOUND_S
from harness.errors import HarnessError, HostError, SetupError
from harness.faults.shim import Proc, box_tree, kill_shim, proc_children, vcpus_running
from harness.known import FAILING, judge
from harness.observe.records import read_store, store_path, store_rows
from harness.runtime.host import RuntimeHost, RuntimeOpError
from harness.wait import poll_until

# -- the case model ---------------------------------------------------------------------------

# How a name clash is arranged before the hostile box is created.
HOLDER_SAME_NAME = "same_name"      # a box already holds the hostile box's name
HOLDER_ID_AS_NAME = "id_as_name"    # the hostile box is named after another box's id
HOLDER_ID = "@holder_id"            # the name placeholder for HOLDER_ID_AS_NAME


@dataclass(frozen=True, eq=False)
class HostileCase:
    """One hostile input: `options` and `name` for create(), one hazard (`kind`) each.

    Paths and ports the case needs are symbolic until `Workspace.materialize`: `@ws/dir/X`,
    `@ws/file/X`, `@ws/missing/X` (volume host paths), `@image/VARIANT/SEED/WHERE`
    (rootfs_path), `@bound` (a host port another socket holds)."""

    family: str
    kind: str
    options: dict[str, Any] = field(default_factory=dict)
    name: str | None = None
    holder: str | None = None
    origin: str = "generated"       # or "canonical": one of the explicit examples

    def key(self) -> str:
        return json.dumps([self.kind, self.options, self.name, self.holder], sort_keys=True,
                          default=str)

    def to_json(self) -> dict[str, Any]:
        return {"family": self.family, "kind": self.kind, "options": self.options,
                "name": self.name, "holder": self.holder, "origin": self.origin}

    def short(self, limit: int = 300) -> str:
        """The case with long strings and lists abbreviated, for summaries and reprs."""
        text = json.dumps(abbreviate({"kind": self.kind, "options": self.options,
                                      "name": self.name, "holder": self.holder}),
                          ensure_ascii=True)
        return text if len(text) <= limit else text[:limit] + "…"

    def __repr__(self) -> str:
        return f"HostileCase({self.short(2000)})"

    def _repr_pretty_(self, printer: Any, cycle: bool) -> None:
        # Hypothesis prints falsifying examples with this, not with the dataclass's fields.
        printer.text(repr(self))


def abbreviate(value: Any, text: int = 60, items: int = 8) -> Any:
    """Long strings become 'head…(N chars)' and long lists their first items plus a count."""
    if isinstance(value, str) and len(value) > text:
        return f"{value[:text // 2]}…({len(value)} chars)"
    if isinstance(value, list | tuple):
        out = [abbreviate(v, text, items) for v in value[:items]]
        return out + [f"…(+{len(value) - items} more)"] if len(value) > items else out
    if isinstance(value, dict):
        return {k: abbreviate(v, text, items) for k, v in value.items()}
    return value


# -- strategies -------------------------------------------------------------------------------

# Faker locales with non-Latin scripts, so "realistic" also means unicode.
LOCALES = ("en_US", "de_DE", "ja_JP", "ru_RU", "ar_AA", "zh_CN", "el_GR", "he_IL", "hi_IN")


@cache
def _faker(locale: str):
    from faker import Faker  # imported on first use: it takes a moment to load
    return Faker(locale)


def fake_value(provider: str, locale: str, seed: int) -> str:
    """A faker value, determined by (provider, locale, seed), so hypothesis can replay it."""
    fk = _faker(locale)
    fk.seed_instance(seed)
    return str(getattr(fk, provider)())


def fake(provider: str, locales: Sequence[str] = LOCALES) -> st.SearchStrategy[str]:
    return st.builds(fake_value, st.just(provider), st.sampled_from(locales),
                     st.integers(0, 2**32 - 1))


def repeat_to(unit: str, size: int) -> str:
    unit = unit or "x"
    return (unit * (size // len(unit) + 1))[:size]


def sized(unit: st.SearchStrategy[str], lo: int, hi: int) -> st.SearchStrategy[str]:
    """A string of lo..hi characters from a repeated unit: big values without hypothesis
    drawing every character (its buffer is small), shrinking toward `lo`."""
    return st.builds(repeat_to, unit, st.integers(lo, hi))


# NUL has kinds of its own.
UNICODE = st.characters(codec="utf-8", exclude_categories=("Cs",), exclude_characters="\x00")
WORD = fake("word")
SEGMENT = st.one_of(WORD, st.text(UNICODE, min_size=1, max_size=12)).map(
    lambda s: "_" if s in ("", ".", "..") else s.replace("/", "_"))


def with_nul(text: st.SearchStrategy[str]) -> st.SearchStrategy[str]:
    """Text with a NUL somewhere inside (JSON carries it as \\u0000)."""
    return st.builds(lambda a, b: f"{a}\x00{b}", text, text)


def opt(family: str, kind: str, key: str, values: st.SearchStrategy[Any]
        ) -> st.SearchStrategy[HostileCase]:
    """Cases whose one hostile option is `key`."""
    return values.map(lambda v: HostileCase(family, kind, {key: v}))


def _names() -> dict[str, st.SearchStrategy[HostileCase]]:
    f = "names"
    path_like = st.one_of(
        st.sampled_from(["..", ".", "/", "../../etc/passwd", "a/b", "./x", "~root", "C:\\x",
                         "\\\\srv\\share", "boxes/../db"]),
        fake("file_path"), st.lists(SEGMENT, min_size=2, max_size=6).map("/".join))
    return {
        "name.unicode": st.one_of(st.text(UNICODE, min_size=1, max_size=64),
                                  fake("name"), fake("city")).map(
            lambda n: HostileCase(f, "name.unicode", name=n)),
        "name.nul": with_nul(WORD).map(lambda n: HostileCase(f, "name.nul", name=n)),
        "name.long": sized(WORD, 256, 65_536).map(
            lambda n: HostileCase(f, "name.long", name=n)),
        "name.path_like": path_like.map(lambda n: HostileCase(f, "name.path_like", name=n)),
        "name.empty": st.just(HostileCase(f, "name.empty", name="")),
        "name.duplicate": fake("user_name").map(
            lambda n: HostileCase(f, "name.duplicate", name=n, holder=HOLDER_SAME_NAME)),
        "name.other_box_id": st.just(HostileCase(f, "name.other_box_id", name=HOLDER_ID,
                                                 holder=HOLDER_ID_AS_NAME)),
    }


def cuts_a_char(value: str) -> bool:
    """Whether the runtime's log redaction of an env value (its first and last 4 bytes, for
    values over 8 bytes) would cut a UTF-8 character: 0.10.8 panics there (measured)."""
    raw = value.encode()

    def inside(i: int) -> bool:
        return 0 < i < len(raw) and (raw[i] & 0xC0) == 0x80
    return len(raw) > 8 and (inside(4) or inside(len(raw) - 4))


def framed(value: str) -> str:
    """The value, with 4 ASCII bytes on both ends if the redaction would cut a character:
    kinds other than `env.value_cut_char` keep clear of that one bug."""
    return f"abcd{value}wxyz" if cuts_a_char(value) else value


MULTIBYTE = st.characters(codec="utf-8", min_codepoint=0x80, exclude_categories=("Cs",))


def _env() -> dict[str, st.SearchStrategy[HostileCase]]:
    f = "env"
    key = fake("word").map(str.upper)
    value = st.one_of(fake("sentence"), fake("uri"), st.text(UNICODE, max_size=40)).map(framed)
    cut = st.one_of(     # a multi-byte character across byte 4, or across len-4
        st.builds(lambda pre, ch, rest: pre + ch + rest, st.text("abc", min_size=1,
                                                                  max_size=3),
                  MULTIBYTE, st.text(UNICODE, min_size=5, max_size=30)),
        st.builds(lambda rest, ch, post: rest + ch + post, st.text(UNICODE, min_size=5,
                                                                    max_size=30),
                  MULTIBYTE, st.text("xyz", min_size=1, max_size=3)),
    ).filter(cuts_a_char)

    def env(kind: str, pairs: st.SearchStrategy[list]) -> st.SearchStrategy[HostileCase]:
        return pairs.map(lambda e: HostileCase(f, kind, {"env": e}))
    return {
        # The runtime passes env on the guest kernel's command line (limit about 64 KiB).
        "env.huge_value": env("env.huge_value", st.tuples(
            key, sized(fake("sentence"), 65_536, 262_144).map(framed)).map(lambda t: [list(t)])),
        "env.many": env("env.many", st.tuples(key, value, st.integers(500, 5000)).map(
            lambda t: [[f"{t[0]}_{i}", t[1]] for i in range(t[2])])),
        "env.key_equals": env("env.key_equals", st.tuples(st.one_of(
            st.just("="), st.just("=="), st.builds("{}={}".format, key, key),
            key.map("{}=".format), key.map("={}".format)), value).map(lambda t: [list(t)])),
        "env.key_empty": env("env.key_empty", value.map(lambda v: [["", v]])),
        "env.nul": env("env.nul", st.one_of(
            st.tuples(with_nul(key), value),
            st.tuples(key, with_nul(value).map(framed))).map(lambda t: [list(t)])),
        "env.unicode": env("env.unicode", st.tuples(
            st.text(UNICODE, min_size=1, max_size=20),
            st.text(UNICODE, max_size=40).map(framed)).map(lambda t: [list(t)])),
        "env.value_cut_char": env("env.value_cut_char", st.tuples(key, cut).map(
            lambda t: [list(t)])),
        "env.duplicate_key": env("env.duplicate_key", st.tuples(key, value, value).map(
            lambda t: [[t[0], t[1]], [t[0], t[2]]])),
    }


def _process() -> dict[str, st.SearchStrategy[HostileCase]]:
    f = "process"
    argv_kinds = {
        "empty": st.just([]),
        "empty_arg": st.just([""]),
        "nul": with_nul(WORD).map(lambda a: [f"/bin/{a}"]),
        "missing_binary": fake("file_path").map(lambda p: ["/no/such" + p]),
        "huge_arg": sized(WORD, 131_072, 524_288).map(lambda a: ["/bin/sh", "-c", a]),
        "many_args": st.tuples(WORD, st.integers(1000, 20_000)).map(
            lambda t: ["/bin/echo"] + [t[0]] * t[1]),
    }
    out = {f"{which}.{k}": s.map(lambda v, w=which, k=k: HostileCase(f, f"{w}.{k}", {w: v}))
           for which in ("entrypoint", "cmd") for k, s in argv_kinds.items()}
    wd = {
        "relative": st.lists(SEGMENT, min_size=1, max_size=4).map("/".join),
        "empty": st.just(""),
        "nul": with_nul(WORD).map("/{}".format),
        "long": sized(SEGMENT.map("/{}".format), 4097, 65_536),
        "dotdot": st.integers(1, 12).map(lambda n: "/" + "../" * n),
        "not_a_dir": st.sampled_from(["/bin/busybox", "/etc/passwd", "/proc/self/exe"]),
    }
    out.update({f"working_dir.{k}": opt(f, f"working_dir.{k}", "working_dir", s)
                for k, s in wd.items()})
    out["user.odd"] = opt(f, "user.odd", "user", st.one_of(
        st.sampled_from(["", ":", "\x00", "-1", "4294967296", "99999999999999999999",
                         "root:root:root", "0:0:0", "nobody", "nobody:nogroup", "ROOT"]),
        fake("user_name"), st.text(UNICODE, min_size=1, max_size=20)))
    return out


def _volumes() -> dict[str, st.SearchStrategy[HostileCase]]:
    f = "volumes"
    guest = st.lists(SEGMENT, min_size=1, max_size=3).map(lambda s: "/mnt/" + "/".join(s))
    ro = st.booleans()
    odd_dir = st.one_of(st.sampled_from(["a,b", "a:b", "a=b", "a b", "new\nline", "-rf",
                                         "tag=BoxLiteShared", "ü", "…", "'\"$`"]),
                        SEGMENT).map(lambda s: f"@ws/dir/{s}")

    def vol(kind: str, volumes: st.SearchStrategy[list]) -> st.SearchStrategy[HostileCase]:
        return volumes.map(lambda v: HostileCase(f, kind, {"volumes": v}))
    return {
        "volume.missing_host": vol("volume.missing_host", st.tuples(SEGMENT, guest, ro).map(
            lambda t: [[f"@ws/missing/{t[0]}", t[1], t[2]]])),
        "volume.relative_host": vol("volume.relative_host", st.tuples(
            st.lists(SEGMENT, min_size=1, max_size=3).map("/".join), guest).map(
            lambda t: [[t[0], t[1]]])),
        "volume.relative_guest": vol("volume.relative_guest", st.lists(
            SEGMENT, min_size=1, max_size=3).map(lambda s: [["@ws/dir/data", "/".join(s)]])),
        "volume.guest_root": vol("volume.guest_root", ro.map(
            lambda r: [["@ws/dir/data", "/", r]])),
        "volume.guest_system": vol("volume.guest_system", st.tuples(st.sampled_from(
            ["/proc", "/sys", "/dev", "/bin", "/etc", "/tmp", "/run", "/sbin/init"]), ro).map(
            lambda t: [["@ws/dir/data", t[0], t[1]]])),
        "volume.guest_dotdot": vol("volume.guest_dotdot", st.integers(1, 8).map(
            lambda n: [["@ws/dir/data", "/mnt/" + "../" * n + "escape"]])),
        "volume.host_is_file": vol("volume.host_is_file", st.tuples(SEGMENT, guest).map(
            lambda t: [[f"@ws/file/{t[0]}", t[1]]])),
        "volume.ro_clash": vol("volume.ro_clash", st.tuples(guest, ro).map(
            lambda t: [["@ws/dir/one", t[0], t[1]], ["@ws/dir/two", t[0], not t[1]]])),
        "volume.same_host_twice": vol("volume.same_host_twice", st.tuples(guest, guest).map(
            lambda t: [["@ws/dir/data", t[0], True], ["@ws/dir/data", t[1] + "-rw", False]])),
        "volume.nul": vol("volume.nul", st.one_of(
            with_nul(WORD).map(lambda s: [["@ws/dir/data", f"/mnt/{s}"]]),
            with_nul(WORD).map(lambda s: [[f"/tmp/{s}", "/mnt/x"]]))),
        "volume.many": vol("volume.many", st.integers(32, 256).map(
            lambda n: [["@ws/dir/data", f"/mnt/v{i}", bool(i % 2)] for i in range(n)])),
        "volume.odd_chars": vol("volume.odd_chars", st.tuples(odd_dir, guest).map(
            lambda t: [[t[0], t[1]]])),
    }


def _ports() -> dict[str, st.SearchStrategy[HostileCase]]:
    f = "ports"
    # A high range, so a box of ours is unlikely to take a port another program wants.
    host = st.integers(40_000, 60_999)
    guest = st.integers(1, 65_535)
    beyond = st.one_of(st.integers(65_536, 2**32), st.integers(-(2**31), -1))

    def ports(kind: str, value: st.SearchStrategy[list]) -> st.SearchStrategy[HostileCase]:
        return value.map(lambda p: HostileCase(f, kind, {"ports": p}))
    return {
        "port.out_of_range": ports("port.out_of_range", st.one_of(
            st.tuples(beyond, guest), st.tuples(host, beyond)).map(lambda t: [list(t)])),
        "port.zero_guest": ports("port.zero_guest", host.map(lambda h: [[h, 0]])),
        "port.zero_host": ports("port.zero_host", guest.map(lambda g: [[0, g]])),
        "port.duplicate_host": ports("port.duplicate_host", st.tuples(host, guest, guest).map(
            lambda t: [[t[0], t[1]], [t[0], t[2]]])),
        "port.duplicate_pair": ports("port.duplicate_pair", st.tuples(host, guest).map(
            lambda t: [list(t), list(t)])),
        "port.bound_host": ports("port.bound_host", guest.map(lambda g: [["@bound", g]])),
        "port.protocol": ports("port.protocol", st.tuples(host, guest, st.one_of(
            st.sampled_from(["", "sctp", "TCP", "Udp", "tcp ", "icmp", "tcp\x00"]),
            st.text(UNICODE, max_size=8))).map(lambda t: [list(t)])),
        "port.many": ports("port.many", st.tuples(st.integers(40_000, 50_000),
                                                  st.integers(100, 2000)).map(
            lambda t: [[t[0] + i, 80] for i in range(t[1])])),
    }


def _resources() -> dict[str, st.SearchStrategy[HostileCase]]:
    f = "resources"
    negative = st.integers(-(2**63), -1)
    return {
        "cpus.zero": st.just(HostileCase(f, "cpus.zero", {"cpus": 0})),
        "cpus.many": opt(f, "cpus.many", "cpus", st.integers(3, 255)),
        "cpus.overflow": opt(f, "cpus.overflow", "cpus",
                             st.one_of(st.integers(256, 2**64), negative)),
        "memory.zero": st.just(HostileCase(f, "memory.zero", {"memory_mib": 0})),
        # Below 37 MiB libkrun aborts setting the VM up (0.10.8, measured): its own kind.
        "memory.below_37": opt(f, "memory.below_37", "memory_mib", st.integers(1, 36)),
        "memory.small": opt(f, "memory.small", "memory_mib", st.integers(37, 127)),
        # Far beyond this host's memory, yet quick to set up; from 1 TiB up the VM takes
        # seconds per TiB to appear (0.10.8, measured), too slow for a case.
        "memory.huge": opt(f, "memory.huge", "memory_mib", st.integers(2**16, 2**19)),
        "memory.overflow": opt(f, "memory.overflow", "memory_mib",
                               st.one_of(st.integers(2**32, 2**64), negative)),
        "disk.zero": st.just(HostileCase(f, "disk.zero", {"disk_size_gb": 0})),
        "disk.tiny": opt(f, "disk.tiny", "disk_size_gb", st.integers(1, 2)),
        # Capped: the runtime writes a qcow2 header sized for the disk (16 MiB at 2**20 GiB),
        # and this machine is shared.
        "disk.huge": opt(f, "disk.huge", "disk_size_gb", st.integers(2**10, 2**20)),
        "disk.overflow": opt(f, "disk.overflow", "disk_size_gb",
                             st.one_of(st.integers(2**64, 2**70), negative)),
    }


# Broken (and one well-formed) image layouts, built from harness.image's layout.
IMAGE_VARIANTS = (
    "missing", "file", "empty_dir", "not_a_layout", "no_oci_layout", "index_not_json",
    "index_no_manifests", "manifest_missing", "manifest_corrupt", "config_missing",
    "layer_missing", "layer_corrupt", "layer_truncated", "layer_swapped", "layer_not_gzip",
    "diff_id_wrong", "layer_is_dir", "symlink_loop", "layer_escapes", "well_formed",
)


def _images() -> dict[str, st.SearchStrategy[HostileCase]]:
    f = "images"
    seed = st.integers(0, 2**31)
    where = st.floats(0.0, 0.99, allow_nan=False)
    return {f"image.{v}": st.tuples(seed, where).map(
        lambda t, v=v: HostileCase(f, f"image.{v}",
                                   {"rootfs_path": f"@image/{v}/{t[0]}/{t[1]:.4f}"}))
        for v in IMAGE_VARIANTS}


KINDS: dict[str, Callable[[], dict[str, st.SearchStrategy[HostileCase]]]] = {
    "names": _names, "env": _env, "process": _process, "volumes": _volumes,
    "ports": _ports, "resources": _resources, "images": _images,
}
FAMILIES = tuple(KINDS)


def kinds(family: str) -> dict[str, st.SearchStrategy[HostileCase]]:
    return KINDS[family]()


def cases(family: str) -> st.SearchStrategy[HostileCase]:
    """Every kind of the family, one hazard per case."""
    return st.one_of(*kinds(family).values())


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
        "images": dict(c("images", f"image.{v}", options={"rootfs_path": f"@image/{v}/0/0.5000"})
                       for v in IMAGE_VARIANTS),
    }


_CANONICAL = _canon()


# -- broken image layouts ---------------------------------------------------------------------

def sha256(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def blob_path(layout: Path, digest: str) -> Path:
    return layout / "blobs" / "sha256" / digest.split(":", 1)[1]


def put_blob(layout: Path, data: bytes) -> str:
    digest = sha256(data)
    blob_path(layout, digest).write_bytes(data)
    return digest


def _dump(obj: Any) -> bytes:
    return json.dumps(obj, sort_keys=True).encode()


@dataclass
class LayoutParts:
    """The parsed chain of a single-manifest layout: index → manifest → config, layers."""

    path: Path
    index: dict[str, Any]
    manifest: dict[str, Any]
    config: dict[str, Any]

    @classmethod
    def load(cls, path: Path) -> LayoutParts:
        index = json.loads((path / "index.json").read_text())
        manifest = json.loads(blob_path(path, index["manifests"][0]["digest"]).read_text())
        config = json.loads(blob_path(path, manifest["config"]["digest"]).read_text())
        return cls(path, index, manifest, config)

    @property
    def layer_digest(self) -> str:
        return self.manifest["layers"][0]["digest"]

    def save(self) -> str:
        """Write config, manifest and index back (new digests); return the manifest digest."""
        cfg = _dump(self.config)
        self.manifest["config"].update(digest=put_blob(self.path, cfg), size=len(cfg))
        man = _dump(self.manifest)
        digest = put_blob(self.path, man)
        self.index["manifests"][0].update(digest=digest, size=len(man))
        (self.path / "index.json").write_bytes(_dump(self.index))
        return digest


def _gzip(data: bytes) -> bytes:
    buf = io.BytesIO()
    with gzip.GzipFile(fileobj=buf, mode="wb", mtime=0, filename="") as gz:
        gz.write(data)
    return buf.getvalue()


@dataclass(frozen=True)
class _LayerPrefix:
    """A layer's members re-serialized (no end-of-archive yet), deflated once: a variant
    only appends one member, so it resumes copies of these states instead of recompressing
    the whole layer (that took 0.18 s a case idle, and seconds on a loaded 2-core machine)."""

    head: bytes                  # raw deflate output for `size` bytes of tar
    deflate: Any                 # zlib.Compress fed those bytes (copied, never fed again)
    crc: int
    size: int
    digest: Any                  # hashlib.sha256 of those bytes (copied, never fed again)


_GZIP_HEADER = b"\x1f\x8b\x08\x00\x00\x00\x00\x00\x00\xff"   # deflate, mtime 0, no name


_PREFIXES: dict[str, _LayerPrefix] = {}


def _layer_prefix(digest: str, layer: Path) -> _LayerPrefix:
    """Kept per layer digest (blobs are content-addressed): one build per base layer."""
    if digest not in _PREFIXES:
        _PREFIXES[digest] = _deflated_prefix(layer.read_bytes())
    return _PREFIXES[digest]


def _deflated_prefix(layer: bytes) -> _LayerPrefix:
    buf = io.BytesIO()
    with tarfile.open(fileobj=io.BytesIO(gzip.decompress(layer))) as src:
        dst = tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT)
        for member in src.getmembers():
            dst.addfile(member, src.extractfile(member) if member.isfile() else None)
        raw = buf.getvalue()            # read before close(): no end-of-archive blocks
    comp = zlib.compressobj(6, zlib.DEFLATED, -zlib.MAX_WBITS)
    return _LayerPrefix(comp.compress(raw), comp, zlib.crc32(raw), len(raw),
                        hashlib.sha256(raw))


def restamp_layer(parts: LayoutParts, text: str) -> None:
    """Replace the first layer by a copy holding one more file (`etc/hostile-variant`), so its
    digest is new; update the manifest and the config's diff_id."""
    old = blob_path(parts.path, parts.layer_digest)
    pre = _layer_prefix(parts.layer_digest, old)
    data = text.encode()
    info = tarfile.TarInfo("etc/hostile-variant")
    info.size, info.mode, info.mtime = len(data), 0o644, 0
    tail = info.tobuf(tarfile.PAX_FORMAT, "utf-8", "surrogateescape") + data
    tail += bytes(-len(tail) % tarfile.BLOCKSIZE) + bytes(2 * tarfile.BLOCKSIZE)
    tail += bytes(-(pre.size + len(tail)) % tarfile.RECORDSIZE)
    comp = pre.deflate.copy()
    body = pre.head + comp.compress(tail) + comp.flush()
    size = pre.size + len(tail)
    blob = _GZIP_HEADER + body + struct.pack("<II", zlib.crc32(tail, pre.crc), size & 0xFFFFFFFF)
    raw_digest = pre.digest.copy()
    raw_digest.update(tail)
    parts.manifest["layers"][0].update(digest=put_blob(parts.path, blob), size=len(blob))
    parts.config["rootfs"]["diff_ids"][0] = "sha256:" + raw_digest.hexdigest()
    old.unlink()


def escape_layer(marker: str, inside: Path) -> tuple[bytes, list[str]]:
    """A layer whose entries try to land outside the rootfs: `../` at several depths, an
    absolute path into `inside`, and a symlink to `inside` followed by a file through it.
    Returns the gzipped layer and the marker file names it plants."""
    buf = io.BytesIO()
    names = []
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.GNU_FORMAT) as tar:
        def add(name: str, data: bytes = b"escaped\n", link: str | None = None) -> None:
            info = tarfile.TarInfo(name)
            info.mtime = 0
            if link is not None:
                info.type, info.linkname = tarfile.SYMTYPE, link
                tar.addfile(info)
                return
            info.size, info.mode = len(data), 0o644
            tar.addfile(info, io.BytesIO(data))
        for depth in range(1, 7):
            names.append(f"{marker}-up{depth}")
            add("../" * depth + names[-1])
        names.append(f"{marker}-abs")
        add(str(inside / names[-1]))
        add(f"{marker}-link", link=str(inside))
        names.append(f"{marker}-via-link")
        add(f"{marker}-link/{names[-1]}")
    return _gzip(buf.getvalue()), names


def build_image(base: Path, dest: Path, variant: str, seed: int, where: float,
                inside: Path | None = None) -> list[str]:
    """Build `variant` of the layout at `base` into `dest` (which must not exist yet).

    Every variant that is still a layout carries a config label unique to (variant, seed), so
    its manifest digest differs from the base's: the runtime cannot answer it from an image
    it cached for the well-formed image. `where` (0..1) places a corruption or a cut.
    Returns the marker names an escaping layer planted (only `layer_escapes` plants any)."""
    if variant == "missing":
        return []
    if variant == "file":
        dest.parent.mkdir(parents=True, exist_ok=True)
        dest.write_text(f"not an image layout {seed}\n")
        return []
    if variant == "symlink_loop":
        dest.parent.mkdir(parents=True, exist_ok=True)
        dest.symlink_to(dest.name)
        return []
    dest.mkdir(parents=True)
    if variant == "empty_dir":
        return []
    if variant == "not_a_layout":
        for i in range(3):
            (dest / f"file{i}-{seed}.txt").write_text(fake_value("text", "en_US", seed + i))
        return []
    shutil.copytree(base / "blobs", dest / "blobs")
    shutil.copy2(base / "oci-layout", dest / "oci-layout")
    shutil.copy2(base / "index.json", dest / "index.json")
    parts = LayoutParts.load(dest)
    parts.config.setdefault("config", {}).setdefault("Labels", {})[
        "org.boxlite-chaos.variant"] = f"{variant}-{seed}"
    if variant.startswith("layer_") or variant == "diff_id_wrong":
        # A layer of its own: the runtime caches unpacked layers by digest, and would never
        # read a broken copy of a layer it already holds.
        restamp_layer(parts, f"{variant} {seed}\n")
    layer = blob_path(dest, parts.layer_digest)
    planted: list[str] = []
    if variant == "layer_swapped":
        # A valid layer stored under the original layer's digest: only a digest check sees it.
        layer.write_bytes(_gzip(b"\0" * 1024))
    elif variant == "layer_not_gzip":
        garbage = random.Random(seed).randbytes(4096)
        parts.manifest["layers"][0].update(digest=put_blob(dest, garbage), size=len(garbage))
        layer.unlink()
    elif variant == "diff_id_wrong":
        parts.config["rootfs"]["diff_ids"] = [sha256(f"wrong {seed}".encode())]
    elif variant == "layer_escapes":
        assert inside is not None, "layer_escapes needs a folder for its markers"
        data, planted = escape_layer(f"hostile-escape-{seed}", inside)
        parts.manifest["layers"].append({"mediaType": parts.manifest["layers"][0]["mediaType"],
                                         "digest": put_blob(dest, data), "size": len(data)})
        parts.config["rootfs"]["diff_ids"].append(sha256(gzip.decompress(data)))
    digest = parts.save()
    if variant == "no_oci_layout":
        (dest / "oci-layout").unlink()
    elif variant == "index_not_json":
        (dest / "index.json").write_text('{"schemaVersion": 2, "manifests": [')
    elif variant == "index_no_manifests":
        (dest / "index.json").write_bytes(_dump({"schemaVersion": 2, "manifests": []}))
    elif variant == "manifest_missing":
        blob_path(dest, digest).unlink()
    elif variant == "manifest_corrupt":
        blob_path(dest, digest).write_text('{"schemaVersion": 2, "layers": [{"digest": 1}]}')
    elif variant == "config_missing":
        blob_path(dest, parts.manifest["config"]["digest"]).unlink()
    elif variant == "layer_missing":
        layer.unlink()
    elif variant == "layer_is_dir":
        layer.unlink()
        layer.mkdir()
    elif variant == "layer_corrupt":
        data = bytearray(layer.read_bytes())
        at = int(where * (len(data) - 16))
        data[at:at + 16] = bytes(b ^ 0xFF for b in data[at:at + 16])
        layer.write_bytes(bytes(data))
    elif variant == "layer_truncated":
        data = layer.read_bytes()
        layer.write_bytes(data[:int(where * len(data))])
    elif variant not in IMAGE_VARIANTS:
        raise ValueError(f"unknown image variant {variant!r}")
    return planted


# -- the run-folder side of a case ------------------------------------------------------------

@dataclass
class Resolved:
    """A case made real: options and name as create() gets them, and what to undo."""

    options: dict[str, Any]
    name: str | None
    markers: list[str] = field(default_factory=list)      # planted escape markers
    marker_dir: Path | None = None
    sockets: list[socket.socket] = field(default_factory=list)

    def close(self) -> None:
        for s in self.sockets:
            s.close()
        self.sockets.clear()


class Workspace:
    """Materializes cases under `root` (the scenario's folder): volume folders and files, broken
    images built from `base_image`, host ports held by a listening socket."""

    def __init__(self, root: Path, base_image: Path) -> None:
        self.root = root
        self.base_image = base_image
        self.count = 0

    def materialize(self, case: HostileCase, base_options: dict[str, Any]) -> Resolved:
        self.count += 1
        opts = copy.deepcopy(base_options)
        opts.update(copy.deepcopy(case.options))
        res = Resolved(opts, case.name)
        if "volumes" in opts:
            opts["volumes"] = [[self.path(v[0]), *v[1:]] for v in opts["volumes"]]
        if "ports" in opts:
            opts["ports"] = [[self.bound(res) if p[0] == "@bound" else p[0], *p[1:]]
                             for p in opts["ports"]]
        if str(opts.get("rootfs_path", "")).startswith("@image/"):
            opts["rootfs_path"] = self.image(opts["rootfs_path"], res)
        return res

    def path(self, token: Any) -> Any:
        if not isinstance(token, str) or not token.startswith("@ws/"):
            return token
        what, _, rest = token[len("@ws/"):].partition("/")
        path = self.root / "volumes" / what / rest
        if what == "dir":
            path.mkdir(parents=True, exist_ok=True)
        elif what == "file":
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text("a file where a folder belongs\n")
        elif what == "missing":
            shutil.rmtree(path, ignore_errors=True)
        else:
            raise ValueError(f"unknown workspace token {token!r}")
        return str(path)

    def bound(self, res: Resolved) -> int:
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.bind(("0.0.0.0", 0))
        sock.listen()
        res.sockets.append(sock)
        return sock.getsockname()[1]

    def image(self, token: str, res: Resolved) -> str:
        _, variant, seed, where = token.split("/")
        dest = self.root / "images" / f"{self.count:04d}-{variant}"
        if variant == "layer_escapes":
            res.marker_dir = self.root / "images" / f"{self.count:04d}-markers"
            res.marker_dir.mkdir(parents=True, exist_ok=True)
        res.markers = build_image(self.base_image, dest, variant, int(seed), float(where),
                                  res.marker_dir)
        return str(dest)


def unpacked_by_runtime(home: Path) -> Callable[[Path], bool]:
    """Whether a path is inside a layer's own unpacked folder (`.../sha256-<digest>/...`
    under the home's images) or the runtime's scratch folder: where a layer's files belong."""
    def inside(p: Path) -> bool:
        if p.is_relative_to(home / "tmp"):
            return True
        return p.is_relative_to(home / "images") and any(
            a.name.startswith("sha256-") for a in p.parents)
    return inside


def escaped_markers(markers: Iterable[str], roots: Sequence[Path],
                    contained: Callable[[Path], bool]) -> list[str]:
    """Marker files found under any of `roots` (recursively) or beside any of their ancestors,
    except where `contained` says a layer's files belong."""
    names = set(markers)
    if not names:
        return []
    found = {str(p) for root in roots for p in root.rglob("hostile-escape-*")
             if p.name in names and not contained(p)}
    found |= {str(a / n) for root in roots for a in root.parents for n in names
              if (a / n).exists()}
    return sorted(found)


# -- what the runtime said about a box --------------------------------------------------------

class LogCursor:
    """The runtime log text appended since the cursor was made (or last read)."""

    def __init__(self, home: Path) -> None:
        self.home = home
        self.offsets = {p: p.stat().st_size for p in self._files()}

    def _files(self) -> list[Path]:
        return sorted((self.home / "logs").glob("boxlite.log*"))

    def read(self) -> str:
        out = []
        for p in self._files():
            with open(p, "rb") as fh:
                fh.seek(self.offsets.get(p, 0))
                data = fh.read()
            self.offsets[p] = self.offsets.get(p, 0) + len(data)
            out.append(data.decode(errors="replace"))
        return "".join(out)


_EXITED = re.compile(r"exited unexpectedly during startup pid=(\d+) exit_code=(-?\d+)")
_CRASH_BLOCK = re.compile(r"Box (\w+) failed to start(.*?)(?=\n\d{4}-\d\d-\d\dT|\Z)", re.S)


# A crash block names a fatal signal as "internal error (SIGABRT)" and may carry no exit code
# (0.10.8, memory_mib below 37): the status the runtime would report is 128 + the signal.
_SIGNAL_IN_BLOCK = re.compile(r"\((SIG[A-Z]+)\)")


def signal_exit_code(text: str) -> int | None:
    """128 + n for the first fatal signal named as `(SIGxxx)` in `text`, else None."""
    import signal as _signal
    m = _SIGNAL_IN_BLOCK.search(text or "")
    if not m:
        return None
    try:
        return 128 + int(_signal.Signals[m.group(1)])
    except KeyError:
        return None


def crash_block_logged(log: str, box: str) -> bool:
    """Whether the runtime has logged its crash block ("Box <id> failed to start") for `box`."""
    return any(m.group(1) == box for m in _CRASH_BLOCK.finditer(log))


def shim_exits(log: str, boxes: dict[str, int | None]) -> list[dict[str, Any]]:
    """The shim exits the runtime logged for `boxes` (box id → shim.pid, if known): exit code
    and the crash block's text. Parsed by field, since releases word the blocks differently.
    The crash block is keyed by box id, so a shim the harness never saw (it died before the
    first poll: load makes that likelier) is still found; a block that names only a signal
    gives 128 + n."""
    out = []
    by_pid = {pid: box for box, pid in boxes.items() if pid}
    for m in _EXITED.finditer(log):
        box = by_pid.get(int(m.group(1)))
        if box:
            out.append({"box": box, "pid": int(m.group(1)), "exit_code": int(m.group(2)),
                        "detail": ""})
    for m in _CRASH_BLOCK.finditer(log):
        if m.group(1) not in boxes:
            continue
        code = re.search(r"Exit code:\s*(-?\d+)", m.group(2))
        rec = next((e for e in out if e["box"] == m.group(1)), None)
        if rec is None:
            rec = {"box": m.group(1), "pid": boxes[m.group(1)], "exit_code": None, "detail": ""}
            out.append(rec)
        if code and rec["exit_code"] is None:
            rec["exit_code"] = int(code.group(1))
        if rec["exit_code"] is None:
            rec["exit_code"] = signal_exit_code(m.group(2).split("\n", 1)[0])
        rec["detail"] = m.group(2).strip()[:600]
    return out


def store_configs(home: Path) -> list[dict[str, Any]]:
    """Every box_config row's id and name, read-only."""
    con = sqlite3.connect(f"file:{store_path(home)}?mode=ro", uri=True, timeout=5.0)
    try:
        return [{"id": r[0], "name": r[1]} for r in
                con.execute("SELECT id, name FROM box_config").fetchall()]
    finally:
        con.close()


# -- checks -----------------------------------------------------------------------------------

# Error types that are a crash wearing an exception, not the runtime refusing an input: pyo3
# turns a panic into PanicException, the SDK a panicked future into RustPanic.
CRASH_TYPES = ("PanicException", "RustPanic", "SystemError", "MemoryError", "RecursionError")
# Exit statuses of a shim that crashed on its own: Rust's panic status, and death by SIGILL,
# SIGABRT, SIGBUS, SIGFPE, SIGSEGV or SIGSYS (seccomp) as the runtime reports them (128 + n).
CRASH_EXITS = {101: "panic", 132: "SIGILL", 134: "SIGABRT", 135: "SIGBUS", 136: "SIGFPE",
               139: "SIGSEGV", 159: "SIGSYS"}


@check("answered_cleanly")
def answered_cleanly(op: str, answer: dict[str, Any]) -> Verdict:
    """The runtime answered `op`, within its bound, with success or with a runtime error that
    carries a message, and the host lived. A hostile input may be accepted or refused; it must
    not kill the host, hang the call, or fail without saying why.

    `answer`: outcome (ok | error | no_reply | host_died), error ({type, message, mro} or
    None), bound_s, elapsed_s."""
    cid = f"answered_cleanly[{op}]"
    outcome = answer["outcome"]
    ev = {"answer": answer}
    if outcome == "host_died":
        return Verdict(cid, VIOLATED, ev, f"the host died during {op}")
    if outcome == "no_reply":
        return Verdict(cid, VIOLATED, ev, f"{op} got no answer within {answer['bound_s']}s")
    if outcome == "ok":
        return Verdict(cid, HOLDS, ev, f"{op} succeeded")
    if outcome != "error":
        return Verdict(cid, UNKNOWN, ev, f"unknown outcome {outcome!r}")
    err = answer["error"]
    types = {err.get("type"), *err.get("mro", ())}
    crash = sorted(t for t in types if t in CRASH_TYPES)
    if crash:
        return Verdict(cid, VIOLATED, ev, f"{op} crashed: {err.get('type')}: "
                       f"{err.get('message', '')[:160]}")
    if not (err.get("message") or "").strip():
        return Verdict(cid, VIOLATED, ev, f"{op} failed with {err.get('type')} and no message")
    return Verdict(cid, HOLDS, ev, f"{op} refused: {err.get('type')}: {err['message'][:160]}")


@check("runtime_did_not_crash")
def runtime_did_not_crash(exits: Sequence[dict[str, Any]], host_alive: bool,
                          host_stderr: str) -> Verdict:
    """No runtime process crashed on the input: the host lived and printed no panic or
    traceback, and no shim ended on its own with a crash status (a Rust panic, or a fatal
    signal). A shim the harness killed, or one that exited with an error status after saying
    why, did not crash. `exits`: the shim exits the runtime logged (see `shim_exits`)."""
    ev = {"shim_exits": list(exits), "host_alive": host_alive,
          "host_stderr": host_stderr[-1500:]}
    if not host_alive:
        return Verdict("runtime_did_not_crash", VIOLATED, ev, "the host died")
    panic = re.search(r"panicked at (.*)\n(.*)", host_stderr)
    if panic:
        ev["panic"] = f"{panic.group(1)} {panic.group(2)}"
        return Verdict("runtime_did_not_crash", VIOLATED, ev,
                       f"the runtime panicked in the host at {ev['panic'][:240]}")
    if "Traceback (most recent call last)" in host_stderr:
        return Verdict("runtime_did_not_crash", VIOLATED, ev,
                       "the host printed a traceback: " + host_stderr.strip()[-200:])
    crashed = [e for e in exits if not e.get("killed_by_harness")
               and e.get("exit_code") in CRASH_EXITS]
    if crashed:
        return Verdict("runtime_did_not_crash", VIOLATED, ev, "shim crashed: " + ", ".join(
            f"box {e['box']} exit {e['exit_code']} ({CRASH_EXITS[e['exit_code']]})"
            for e in crashed))
    return Verdict("runtime_did_not_crash", HOLDS, ev,
                   f"host alive, {len(exits)} shim exit(s), none a crash")


@check("case_processes_gone")
def case_processes_gone(leftovers: Sequence[dict[str, Any]], observed: int, waited_s: float,
                        bound_s: float, samples: int) -> Verdict:
    """Every runtime process (shim, VM, bwrap) started during a case is gone within `bound_s`
    of its boxes being removed. A case whose boxes never spawned one holds trivially; a ledger
    that took no samples cannot say."""
    ev = {"leftovers": list(leftovers), "observed": observed, "waited_s": round(waited_s, 3),
          "bound_s": bound_s, "samples": samples}
    if samples == 0:
        return Verdict("case_processes_gone", UNKNOWN, ev, "the process ledger took no samples")
    if leftovers:
        return Verdict("case_processes_gone", VIOLATED, ev,
                       f"{len(leftovers)} process(es) alive {waited_s:.1f}s after removal: " +
                       ", ".join(f"{p['name']}[{p['pid']}]" for p in leftovers))
    return Verdict("case_processes_gone", HOLDS, ev,
                   f"all {observed} process(es) of the case gone ({waited_s:.1f}s)")


@check("names_unambiguous")
def names_unambiguous(configs: Sequence[dict[str, Any]]) -> Verdict:
    """No two records share a name, and no record is named after another box's id: either
    would make get(name) or remove(name) pick a box the caller did not mean."""
    ids = {c["id"] for c in configs}
    seen: dict[str, list[str]] = {}
    for c in configs:
        if c["name"] is not None:
            seen.setdefault(c["name"], []).append(c["id"])
    shared = {n: b for n, b in seen.items() if len(b) > 1}
    shadowing = sorted(c["id"] for c in configs
                       if c["name"] in ids and c["name"] != c["id"])
    ev = {"records": len(configs), "shared_names": shared, "named_after_other_id": shadowing}
    if shared or shadowing:
        return Verdict("names_unambiguous", VIOLATED, ev,
                       f"names shared: {sorted(map(repr, shared))}; named after another "
                       f"box's id: {shadowing}")
    return Verdict("names_unambiguous", HOLDS, ev, f"{len(configs)} record(s), names unique")


@check("layer_contained")
def layer_contained(escaped: Sequence[str], planted: int) -> Verdict:
    """Unpacking an image layer wrote nothing outside the runtime's own image folders: none of
    the `planted` escape markers (`../` entries, absolute paths, a path through a symlink) is
    found anywhere else."""
    ev = {"escaped": list(escaped), "planted": planted}
    if planted == 0:
        return Verdict("layer_contained", UNKNOWN, ev, "the layer planted no markers")
    if escaped:
        return Verdict("layer_contained", VIOLATED, ev,
                       f"{len(escaped)} of {planted} layer entries landed outside: "
                       + ", ".join(escaped[:4]))
    return Verdict("layer_contained", HOLDS, ev, f"none of {planted} escaping entries landed")


def kind_of(check_id: str) -> str:
    """The case kind a specialized check id names: its bracket's last part."""
    return check_id.partition("[")[2].rstrip("]").rsplit("/", 1)[-1]


def specialize(v: Verdict, kind: str, moment: str | None = None) -> Verdict:
    """The verdict's id with the moment and the case's kind appended inside its brackets:
    `answered_cleanly[start]` → `answered_cleanly[start/env.nul]`."""
    base, _, rest = v.check.partition("[")
    parts = [p for p in (rest.rstrip("]"), moment, kind) if p]
    return dataclasses.replace(v, check=f"{base}[{'/'.join(parts)}]")


# -- driving one case -------------------------------------------------------------------------

CREATE_BOUND_S = 30.0
# From start() to the VM process (or an answer): well under a second here; a generous bound
# on a loaded machine, past which the start counts as hung.
START_BOUND_S = 20.0
# From killing the shim to start()'s answer: under a second here.
FAIL_BOUND_S = 15.0
REMOVE_BOUND_S = 30.0
PROCESS_BOUND_S = WATCHDOG_BOUND_S     # the shim watchdog's bound
# How long the runtime's asynchronous log writer may take to write a failed start's crash
# block after start() answered. Measured: the block is there when start() answers on an idle
# machine; the bound is generous because waiting costs nothing unless the block is late.
LOG_BLOCK_BOUND_S = 5.0
STAGES = ("create_rejected", "created", "start_failed", "shim_spawned", "vm_entered",
          "vcpus_running", "started")


@dataclass
class Attempt:
    """What one box got to: the answers to create and start, and how far it came."""

    stage: str
    box_id: str | None = None
    create: dict[str, Any] | None = None
    start: dict[str, Any] | None = None
    shim_pid: int | None = None
    killed_by_harness: bool = False

    @property
    def error(self) -> str | None:
        for ans in (self.start, self.create):
            if ans and ans["outcome"] != "ok":
                return f"{ans['outcome']}: {(ans.get('error') or {}).get('message', '')}"
        return None


def answer_of(host: RuntimeHost, call: Callable[[], Any], bound_s: float
              ) -> tuple[Any, dict[str, Any]]:
    """Run a host call; return (result, answer) where answer is what answered_cleanly judges."""
    t0 = time.monotonic()
    try:
        result = call()
        return result, {"outcome": "ok", "error": None, "bound_s": bound_s,
                        "elapsed_s": round(time.monotonic() - t0, 3)}
    except RuntimeOpError as exc:
        err = {"type": exc.type, "message": exc.message, "mro": exc.error.get("mro", [])}
        return None, {"outcome": "error", "error": err, "bound_s": bound_s,
                      "elapsed_s": round(time.monotonic() - t0, 3)}
    except HostError as exc:
        outcome = "no_reply" if host.alive else "host_died"
        return None, {"outcome": outcome, "error": {"type": "HostError", "message": str(exc)},
                      "bound_s": bound_s, "elapsed_s": round(time.monotonic() - t0, 3)}


def watch_start(host: RuntimeHost, box: str, fut: Any, bound_s: float
                ) -> tuple[list[Proc] | None, str]:
    """Poll until start() answers, the box's VM runs its vCPUs, or `bound_s` passes.
    Returns the box's process tree as last seen and the furthest stage seen: start_failed
    (no shim seen), shim_spawned, vm_entered (the shim became 'libkrun VM') or
    vcpus_running."""
    deadline = time.monotonic() + bound_s
    tree, stage = None, "start_failed"
    while time.monotonic() < deadline and not fut.done() and host.alive:
        # Every 5 ms: the tree through /proc's children files, not a scan of every process
        # (that cost a sixth of a core while a start was watched).
        now = box_tree(host.home, box, children=proc_children)
        if now:
            tree, stage = now, max(stage, "shim_spawned", key=STAGES.index)
            for p in now:
                if p.name.startswith("libkrun"):
                    stage = max(stage, "vm_entered", key=STAGES.index)
                    if vcpus_running(p.pid):
                        return tree, "vcpus_running"
        time.sleep(0.005)
    return tree, stage


def runtime_processes(ledger: Any) -> set:
    """The ledger's keys of every runtime process (shim, VM, bwrap) recorded so far."""
    return {r.key for r in ledger.kinds("shim", "vm", "bwrap")}


def judge_processes_gone(ledger: Any, before: set, bound_s: float = PROCESS_BOUND_S
                         ) -> Verdict:
    """Wait up to `bound_s` for every runtime process recorded since `before` to be gone,
    sampling synchronously (what is alive now, not at the last tick); judge what is left."""
    t0 = time.monotonic()
    mine: list[Any] = []
    left: list[Any] = []

    def all_gone() -> bool:
        ledger.sample()
        mine[:] = [r for r in ledger.kinds("shim", "vm", "bwrap") if r.key not in before]
        left[:] = [r for r in mine if ledger.alive(r)]
        return not left

    poll_until(all_gone, bound_s, "the case's runtime processes to be gone", 0.05)
    return case_processes_gone([r.to_json() for r in left], len(mine), time.monotonic() - t0,
                               bound_s, len(ledger.samples))


class CaseFailed(AssertionError):
    """A case's verdict failed (not a known failure): hypothesis shrinks on this."""


_FAILURE_TYPES: dict[str, type[CaseFailed]] = {}


def raise_case_failed(failing: Sequence[tuple[str, str]]) -> None:
    """Raise a CaseFailed subclass of its own for each set of failing check ids: hypothesis
    tells bugs apart by exception type (and raise site, hence this one place), so each bug is
    shrunk and reported on its own instead of being shrunk into another."""
    ids = " ".join(sorted({c for c, _ in failing}))
    kind = _FAILURE_TYPES.get(ids)
    if kind is None:
        name = "CaseFailed_" + hashlib.sha1(ids.encode()).hexdigest()[:8]
        kind = _FAILURE_TYPES[ids] = type(name, (CaseFailed,), {"__doc__": ids,
                                                                "__module__": __name__})
    raise kind("; ".join(f"{c}: {s}" for c, s in failing))


@dataclass
class Tally:
    """All verdicts of one check id over the cases of a run."""

    check: str
    holds: int = 0
    violated: list[dict[str, Any]] = field(default_factory=list)
    unknown: list[dict[str, Any]] = field(default_factory=list)

    def add(self, v: Verdict, case: HostileCase) -> None:
        if v.status == HOLDS:
            self.holds += 1
            return
        entry = {"case": case.short(600), "summary": v.summary,
                 "evidence": json.loads(json.dumps(abbreviate(v.evidence, text=800),
                                                   default=str))}
        (self.violated if v.status == VIOLATED else self.unknown).append(entry)

    def verdict(self) -> Verdict:
        """Unknown in any case → unknown; violated in any → violated; else holds."""
        n = self.holds + len(self.violated) + len(self.unknown)
        def keep(xs: list) -> list:
            return xs[:3] + xs[-1:] if len(xs) > 4 else xs
        ev = {"cases": n, "holds": self.holds, "violated": len(self.violated),
              "unknown": len(self.unknown), "violations": keep(self.violated),
              "unknowns": keep(self.unknown)}
        if self.unknown:
            return Verdict(self.check, UNKNOWN, ev, f"{len(self.unknown)} of {n} case(s) "
                           f"could not be judged: {self.unknown[-1]['summary']}")
        if self.violated:
            last = self.violated[-1]
            return Verdict(self.check, VIOLATED, ev, f"{len(self.violated)} of {n} case(s): "
                           f"{last['summary']} — last (shrunk) case: {last['case']}")
        return Verdict(self.check, HOLDS, ev, f"held in all {n} case(s)")


class HostileRunner:
    """Drives hostile cases through one long-lived host (restarted if it dies) and keeps the
    per-check tallies that become the scenario's verdicts.

    Per case: create and start the hostile box (the shim is killed once it has become the VM:
    a start that gets that far has passed every host-side use of its options), judge the
    answers, the records and the home, remove the boxes, check a well-formed box still gets
    to its VM, and that every process of the case is gone. A failing case raises CaseFailed so
    hypothesis shrinks it; after `budget_s` a case already run replays its outcome and a new
    one is rejected, which bounds shrinking. With a `shard`, only the cases of its kinds run;
    the family's others pass through untouched (their shard runs them)."""

    def __init__(self, chaos: Any, family: str, budget_s: float,
                 shard: Shard | None = None) -> None:
        self.chaos = chaos
        self.family = family
        self.budget_s = budget_s
        # The kinds this runner judges (a shard's); cases of the family's other kinds are
        # drawn, so the sequence stays the family's, and left to their own shards.
        self.shard = shard
        self.own_kinds = frozenset(shard.kinds if shard else kinds(family))
        self.family_kinds = frozenset(kinds(family))
        self.t0 = time.monotonic()
        self.host: RuntimeHost = chaos.host()
        self.workspace = Workspace(chaos.workdir / "hostile", chaos.image.path)
        self.tallies: dict[str, Tally] = {}
        self.outcomes: dict[str, bool] = {}         # case key → failed
        self.runs = {"canonical": 0, "pinned": 0, "generated": 0, "replayed": 0,
                     "rejected": 0, "other_shards": 0}
        self.seed = seeds.run_seed()
        self.findings: set[tuple[str, ...]] = set()
        self.failures: list[dict[str, Any]] = []
        self.host_restarts = 0

    # -- hypothesis's side -----------------------------------------------------------------
    def run(self, case: HostileCase) -> None:
        if case.kind not in self.own_kinds:
            if case.kind not in self.family_kinds:
                raise SetupError(f"case of kind {case.kind!r} drawn in family {self.family}")
            # Another shard of the family runs this case (it draws the same sequence).
            self.runs["other_shards"] += 1
            return
        key = case.key()
        if time.monotonic() - self.t0 > self.budget_s and case.origin not in EXPLICIT:
            if key not in self.outcomes:
                self.runs["rejected"] += 1
                assume(False)
            self.runs["replayed"] += 1
            failing = self.outcomes[key]
        else:
            self.runs[case.origin] += 1
            failing = self.outcomes[key] = self.judge_case(case)
        # An explicit example is minimal already and hypothesis would stop generating at its
        # failure; its verdicts fail the scenario all the same.
        if failing and case.origin not in EXPLICIT:
            raise_case_failed(failing)

    def judge_case(self, case: HostileCase) -> list[tuple[str, str]]:
        """Run the case, tally its verdicts; return the failing ones as (check id, summary)."""
        verdicts, facts = self.one_case(case)
        failing = []
        for v in verdicts:
            j = judge(v, self.chaos.env.version, self.chaos.node_id, self.chaos.known)
            self.tallies.setdefault(v.check, Tally(v.check)).add(v, case)
            if j.outcome in FAILING and v.status != HOLDS:
                failing.append((v.check, v.summary))
        violated = sorted(v.check for v in verdicts if v.status == VIOLATED)
        if violated and case.origin == "generated" and seeds.exploring():
            self.write_finding(case, violated)
        self.chaos.note(hostile_case=sum(self.runs[o] for o in (*EXPLICIT, "generated")),
                        case_kind=case.kind, origin=case.origin, case=case.short(800), **facts,
                        failing=[c for c, _ in failing])
        if failing:
            self.failures.append({"case": case.to_json(), "failing": failing})
            self.chaos.note(hostile_failure=case.kind, options=case.options, name=case.name,
                            holder=case.holder, verdicts=[f"{c}: {s}" for c, s in failing])
        return failing

    def write_finding(self, case: HostileCase, violated: list[str]) -> None:
        """An exploring run's new finding, once per kind and set of violated checks, written
        as a line ready to pin (see harness.seeds)."""
        key = (case.kind, *violated)
        if key in self.findings:
            return
        self.findings.add(key)
        seeds.write_finding(self.chaos.workdir.parent.parent, case.to_json(), self.seed,
                            violated)

    def explore(self, test: Callable[[], None]) -> None:
        """Run the hypothesis test; a failure made only of failing cases is already in the
        tallies (and the history), so it is noted, not raised; anything else is raised."""
        try:
            test()
        except BaseException as exc:  # noqa: BLE001 - sorted below: ours is data, the rest not
            self.chaos.note(hypothesis="falsified", detail="".join(
                traceback.format_exception(exc))[-6000:])
            if not only_case_failures(exc):
                self.judge_totals()
                raise
        self.judge_totals(complete=True)

    def judge_totals(self, complete: bool = False) -> None:
        """Judge every tally. `complete`: hypothesis ran to its end, so every kind of the
        runner has cases (each has an explicit example); one without is a harness error,
        raised after the verdicts so it cannot pass unseen."""
        judged = {kind_of(t.check) for t in self.tallies.values()}
        unjudged = sorted(self.own_kinds - judged)
        self.chaos.note(hostile_family=self.family,
                        shard=self.shard.label if self.shard else None,
                        kinds=sorted(self.own_kinds), runs=self.runs,
                        host_restarts=self.host_restarts, failing_cases=len(self.failures),
                        unjudged_kinds=unjudged, elapsed_s=round(time.monotonic() - self.t0, 1))
        self.chaos.judge(*(t.verdict() for t in self.tallies.values()))
        self.tallies.clear()
        if complete and unjudged:
            raise HarnessError(f"hostile {self.family}: no case judged kind(s) {unjudged}")

    # -- one case --------------------------------------------------------------------------
    def one_case(self, case: HostileCase) -> tuple[list[Verdict], dict[str, Any]]:
        chaos, kind = self.chaos, case.kind
        host = self.live_host()
        ledger_before = runtime_processes(chaos.ledger)
        log = LogCursor(host.home)
        stderr_at = self._stderr_size(host)
        res = self.workspace.materialize(case, chaos.box_options())
        verdicts: list[Verdict] = []
        boxes: list[str] = []
        t0 = time.monotonic()
        try:
            if case.holder:
                holder = self.attempt(host, chaos.box_options(), case.name
                                      if case.holder == HOLDER_SAME_NAME else None, start=False)
                boxes += [holder.box_id] if holder.box_id else []
                if case.holder == HOLDER_ID_AS_NAME:
                    res.name = holder.box_id
            hostile = self.attempt(host, res.options, res.name)
            boxes += [hostile.box_id] if hostile.box_id else []
            verdicts.append(specialize(answered_cleanly("create", hostile.create), kind))
            if hostile.start is not None:
                verdicts.append(specialize(answered_cleanly("start", hostile.start), kind))
            host = self.host
            crash_host_alive = host.alive
            record = None
            if host.alive:
                verdicts += [specialize(v, kind, m) for v, m in self.judge_home(host)]
                if hostile.box_id:
                    read = read_store(host.home, hostile.box_id)
                    record = [read.status, read.reason] if read.present else read.error
            exits = self.logged_exits(log, hostile)
            for e in exits:
                e["killed_by_harness"] = hostile.killed_by_harness
            verdicts.append(specialize(runtime_did_not_crash(
                exits, crash_host_alive, self._stderr_since(host, stderr_at)), kind))
            host = self.live_host()
            for box in boxes:
                _, ans = answer_of(host, lambda b=box, h=host: h.call(
                    "remove", timeout_s=REMOVE_BOUND_S, box_id=b, force=True), REMOVE_BOUND_S)
                verdicts.append(specialize(answered_cleanly("remove", ans), kind))
                host = self.live_host()
            boxes.clear()
            control = self.attempt(host, chaos.box_options(), None)
            verdicts.append(specialize(checks.image_cache_usable(
                control.stage, "vcpus_running", control.error), kind))
            host = self.live_host()
            if control.box_id:
                host.try_call("remove", timeout_s=REMOVE_BOUND_S, box_id=control.box_id,
                              force=True)
            verdicts.append(specialize(judge_processes_gone(chaos.ledger, ledger_before), kind))
            host = self.live_host()
            verdicts += [specialize(v, kind, m) for v, m in self.judge_home(host, "removed")]
            if res.markers:
                escaped = escaped_markers(res.markers, [chaos.workdir, host.home.parent],
                                          unpacked_by_runtime(host.home))
                verdicts.append(specialize(layer_contained(escaped, len(res.markers)), kind))
                for path in escaped:        # judged; now leave nothing of ours out there
                    Path(path).unlink(missing_ok=True)
        finally:
            res.close()
            for box in boxes:       # a case cut short still removes what it made
                if self.host.alive:
                    self.host.try_call("remove", timeout_s=REMOVE_BOUND_S, box_id=box,
                                       force=True)
        facts = {"hostile_stage": hostile.stage, "hostile_error": hostile.error,
                 "hostile_record": record, "control_stage": control.stage,
                 "case_s": round(time.monotonic() - t0, 2)}
        return verdicts, facts

    def logged_exits(self, log: LogCursor, att: Attempt) -> list[dict[str, Any]]:
        """The hostile box's shim exits, from the runtime's own words. A start that failed
        with "failed to start" means the runtime saw the VM end and logs a crash block for
        the box; its log writer is asynchronous, so under load the block can land after
        start() answered: wait for it (LOG_BLOCK_BOUND_S), instead of judging a log that
        does not hold it yet. A fatal signal named by start()'s error counts as well."""
        if not att.box_id:
            return []
        text = log.read()
        message = (att.start or {}).get("error") or {}
        message = message.get("message") or "" if isinstance(message, dict) else ""
        if "failed to start" in message and not crash_block_logged(text, att.box_id):
            chunks = [text]

            def block_logged() -> bool:
                chunks.append(log.read())
                return crash_block_logged("".join(chunks), att.box_id)
            seen = poll_until(block_logged, LOG_BLOCK_BOUND_S,
                              f"the runtime's crash block for box {att.box_id}", 0.05)
            text = "".join(chunks)
            self.chaos.note(crash_block_waited=att.box_id, seen=seen)
        exits = shim_exits(text, {att.box_id: att.shim_pid})
        from_error = signal_exit_code(message)
        if from_error and not any(e["exit_code"] in CRASH_EXITS for e in exits):
            exits.append({"box": att.box_id, "pid": att.shim_pid, "exit_code": from_error,
                          "detail": f"start() said: {message[:300]}"})
        return exits

    def live_host(self) -> RuntimeHost:
        """The host, restarted on its home if it died (its death is judged where it showed)."""
        if not self.host.alive:
            self.host_restarts += 1
            self.chaos.note(host_restart=self.host.name, returncode=self.host.proc.returncode
                            if self.host.proc else None)
            self.host = self.chaos.restart(self.host)
        return self.host

    def attempt(self, host: RuntimeHost, options: dict[str, Any], name: str | None,
                start: bool = True) -> Attempt:
        """Create a box and start it; once its VM runs (a vCPU thread exists: every host-side
        use of the options is behind it), kill the shim. The start then fails at once;
        waiting would cost the VM's own ~17 s failure here. A shim that dies before that
        point died of the input, and the runtime's log says how."""
        made, create = answer_of(host, lambda: host.call(
            "create", timeout_s=CREATE_BOUND_S, options=options, name=name), CREATE_BOUND_S)
        if made is None:
            return Attempt("create_rejected", create=create)
        box = made["id"]
        if not start:
            return Attempt("created", box, create)
        try:
            fut = host.send("start", box_id=box)
        except HostError as exc:
            ans = {"outcome": "host_died", "error": {"type": "HostError", "message": str(exc)},
                   "bound_s": START_BOUND_S, "elapsed_s": 0.0}
            return Attempt("start_failed", box, create, ans)
        tree, stage = watch_start(host, box, fut, START_BOUND_S)
        att = Attempt(stage, box, create, shim_pid=tree[0].pid if tree else None)
        if stage == "vcpus_running":
            try:
                self.chaos.inject(kill_shim(host.home, box, tree))
                att.killed_by_harness = True
            except ProcessLookupError:
                pass                # the shim ended on its own meanwhile
        bound = FAIL_BOUND_S if (att.killed_by_harness or fut.done()) else START_BOUND_S
        _, att.start = answer_of(host, lambda: host.result(fut, bound), bound)
        if att.start["outcome"] == "ok":
            att.stage = "started"
        if att.start["outcome"] == "no_reply":
            # Hung: end what it spawned so the next case starts clean; the verdicts say why.
            host.try_call("remove", timeout_s=REMOVE_BOUND_S, box_id=box, force=True)
            now = box_tree(host.home, box) or tree
            if now:
                try:
                    self.chaos.inject(kill_shim(host.home, box, now))
                except ProcessLookupError:
                    pass
        return att

    # -- judging the home and processes ---------------------------------------------------
    def judge_home(self, host: RuntimeHost, moment: str = "settled"
                   ) -> list[tuple[Verdict, str | None]]:
        home = host.home
        try:
            rows, configs, err = store_rows(home), store_configs(home), None
        except (sqlite3.Error, OSError) as exc:
            rows, configs, err = None, None, f"{type(exc).__name__}: {exc}"
        if err:
            bad = Verdict("records_settled", UNKNOWN, {"error": err}, f"store unreadable: {err}")
            return [(bad, moment)]
        boxes_dir = home / "boxes"
        dirs = [p.name for p in boxes_dir.iterdir() if p.is_dir()] if boxes_dir.is_dir() else []
        out = [(checks.home_consistent(dirs, rows), moment)]
        if moment == "settled":
            out += [(checks.records_settled(rows), None), (names_unambiguous(configs), None)]
        return out

    @staticmethod
    def _stderr_size(host: RuntimeHost) -> int:
        path = host.workdir / f"{host.name}.stderr"
        return path.stat().st_size if path.is_file() else 0

    @staticmethod
    def _stderr_since(host: RuntimeHost, offset: int) -> str:
        path = host.workdir / f"{host.name}.stderr"
        if not path.is_file():
            return ""
        with open(path, "rb") as fh:
            fh.seek(offset)
            return fh.read().decode(errors="replace")


def only_case_failures(exc: BaseException) -> bool:
    """True when `exc` is a CaseFailed, or a group (hypothesis's multiple bugs, flaky
    replays) made only of them."""
    if isinstance(exc, CaseFailed):
        return True
    if isinstance(exc, BaseExceptionGroup):
        return all(only_case_failures(e) for e in exc.exceptions)
    return False
