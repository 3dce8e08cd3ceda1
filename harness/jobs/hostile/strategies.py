"""Hostile box options as hypothesis strategies: the case model (one hazard on a well-formed
box, `HostileCase.kind`) and one strategy per option family.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from functools import cache
from typing import Any

from hypothesis import strategies as st

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

    # A leading "@" is a placeholder's (`@ws/dir/x` would be materialized into an absolute
    # folder): a relative host path never starts with one.
    relative = st.lists(SEGMENT, min_size=1, max_size=3).map("/".join).map(
        lambda p: "_" + p[1:] if p.startswith("@") else p)

    def vol(kind: str, volumes: st.SearchStrategy[list]) -> st.SearchStrategy[HostileCase]:
        return volumes.map(lambda v: HostileCase(f, kind, {"volumes": v}))
    return {
        "volume.missing_host": vol("volume.missing_host", st.tuples(SEGMENT, guest, ro).map(
            lambda t: [[f"@ws/missing/{t[0]}", t[1], t[2]]])),
        "volume.relative_host": vol("volume.relative_host", st.tuples(relative, guest).map(
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


# Broken (and one well-formed) image layouts, built from harness.runtime.image's layout.
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


# A value of the wrong JSON type for a field, whatever the field wants.
MALFORMED = st.sampled_from(["", "x", "true", "10s", 1.5, [], {}, [1], -0.0])
NOT_A_DICT = MALFORMED.filter(lambda v: not isinstance(v, dict))
# Field values beyond u32 (the SDK's type of auto_stop and auto_delete, 0.10.8) either way.
BEYOND_U32 = st.one_of(st.integers(2**32, 2**70), st.integers(-(2**63), -1))
ODD_TEXT = st.one_of(
    st.sampled_from(["", " ", "*", "a b", "<>", "${X}", "\n", "<BOXLITE_SECRET:x>", ".."]),
    with_nul(WORD), sized(WORD, 4097, 65_536), st.text(UNICODE, min_size=1, max_size=24))


def _options() -> dict[str, st.SearchStrategy[HostileCase]]:
    """network, tty, advanced and secrets: the fields whose SDK type is a class (0.10.x),
    given in the JSON shapes the host program turns into NetworkSpec, AdvancedBoxOptions and
    Secret keyword for keyword (harness/runtime/host_main.py)."""
    f = "options"
    mode = st.one_of(st.sampled_from(["", "none", "bridge", "host", "ENABLED", "Disabled",
                                      "enabled ", "on"]), st.text(UNICODE, max_size=12))
    spec = st.fixed_dictionaries({"mode": mode, "allow_net": st.just([])})
    wellformed_secret = st.fixed_dictionaries({"name": WORD, "value": fake("sha256")})
    return {
        "network.malformed": opt(f, "network.malformed", "network", st.one_of(
            NOT_A_DICT, st.sampled_from(["none", "enabled", "host", 1, True]))),
        "network.unknown_mode": opt(f, "network.unknown_mode", "network", st.one_of(
            mode.map(lambda m: {"mode": m}), spec.map(lambda o: {"outbound": o}),
            spec.map(lambda i: {"inbound": i}))),
        "network.unknown_key": opt(f, "network.unknown_key", "network", st.one_of(
            WORD.map(lambda k: {f"x_{k}": 1}),
            WORD.map(lambda k: {"outbound": {"mode": "enabled", "allow_net": [], k: 1}}))),
        "network.allow_net_odd": opt(f, "network.allow_net_odd", "network", st.one_of(
            st.lists(ODD_TEXT, min_size=1, max_size=4).map(
                lambda a: {"outbound": {"mode": "enabled", "allow_net": a}}),
            # documented: no layer enforces an inbound allowlist, so one is refused
            st.lists(WORD, min_size=1, max_size=3).map(
                lambda a: {"inbound": {"mode": "enabled", "allow_net": a}}))),
        "network.disabled": opt(f, "network.disabled", "network", st.sampled_from([
            {"mode": "disabled"}, {"outbound": {"mode": "disabled", "allow_net": []}},
            {"outbound": {"mode": "disabled", "allow_net": []},
             "inbound": {"mode": "disabled", "allow_net": []}}])),
        "tty.malformed": opt(f, "tty.malformed", "tty", st.one_of(
            MALFORMED, st.sampled_from([1, 0, "yes"]))),
        # A terminal for a main command that is not there.
        "tty.no_command": st.sampled_from([{}, {"cmd": []}, {"entrypoint": []},
                                           {"entrypoint": [], "cmd": []},
                                           {"cmd": [""]}]).map(
            lambda o: HostileCase(f, "tty.no_command", {"tty": True, **o})),
        "advanced.malformed": opt(f, "advanced.malformed", "advanced", st.one_of(
            NOT_A_DICT, st.sampled_from([{"security": "strict"}, {"capabilities": "ALL"},
                                        {"health_check": 30}, {"security": []}]))),
        "advanced.unknown_key": opt(f, "advanced.unknown_key", "advanced", st.one_of(
            WORD.map(lambda k: {f"x_{k}": True}),
            WORD.map(lambda k: {"security": {f"x_{k}": 1}}),
            WORD.map(lambda k: {"health_check": {f"x_{k}": 1}}))),
        "advanced.out_of_range": opt(f, "advanced.out_of_range", "advanced", st.one_of(
            st.tuples(st.sampled_from(["max_open_files", "max_file_size", "max_processes",
                                       "max_memory", "max_cpu_time"]),
                      st.one_of(st.just(0), BEYOND_U32)).map(
                lambda t: {"security": {t[0]: t[1]}}),
            st.tuples(st.sampled_from(["interval", "timeout", "retries", "start_period"]),
                      st.one_of(st.just(0), BEYOND_U32)).map(
                lambda t: {"health_check": {t[0]: t[1]}}))),
        "secrets.malformed": opt(f, "secrets.malformed", "secrets", st.one_of(
            MALFORMED.filter(lambda v: v != []),
            st.sampled_from([[["a", "b"]], {"a": "b"}, [{"name": "a"}], [1],
                             [{"name": "a", "value": 1}]]))),
        "secrets.odd_name": opt(f, "secrets.odd_name", "secrets", st.tuples(
            ODD_TEXT, fake("sha256")).map(lambda t: [{"name": t[0], "value": t[1]}])),
        "secrets.odd_value": opt(f, "secrets.odd_value", "secrets", st.tuples(
            WORD, ODD_TEXT).map(lambda t: [{"name": t[0], "value": t[1]}])),
        "secrets.odd_hosts": opt(f, "secrets.odd_hosts", "secrets", st.tuples(
            WORD, st.lists(ODD_TEXT, min_size=1, max_size=4)).map(
            lambda t: [{"name": t[0], "value": "v", "hosts": t[1]}])),
        "secrets.duplicate_name": opt(f, "secrets.duplicate_name", "secrets",
                                      st.tuples(wellformed_secret, fake("sha256")).map(
            lambda t: [t[0], {**t[0], "value": t[1]}])),
        "secrets.many": opt(f, "secrets.many", "secrets", st.integers(100, 2000).map(
            lambda n: [{"name": f"s{i}", "value": "v"} for i in range(n)])),
    }


# The lifecycle flags as a user sets them: `sdk_defaults` leaves what a case does not set
# to the SDK (auto_remove included; the host program otherwise forces auto_remove=False).
UNSET = None
LIFECYCLE_VALUES = {"auto_remove": (UNSET, True, False), "auto_delete": (UNSET, 0, 1, 3600),
                    "auto_stop": (UNSET, 0, 1, 3600), "auto_resume": (UNSET, True, False),
                    "detach": (UNSET, True, False)}


def _lifecycle() -> dict[str, st.SearchStrategy[HostileCase]]:
    """auto_stop and auto_delete (u32 seconds in 0.10.8's SDK), auto_resume (bool), and
    combinations of all the lifecycle flags with detach, under the SDK's defaults."""
    f = "lifecycle"
    combo = st.fixed_dictionaries({k: st.sampled_from(v) for k, v in
                                   LIFECYCLE_VALUES.items()})
    out = {}
    for key in ("auto_stop", "auto_delete"):
        out[f"{key}.malformed"] = opt(f, f"{key}.malformed", key, st.one_of(
            MALFORMED, st.just("60")))
        out[f"{key}.out_of_range"] = opt(f, f"{key}.out_of_range", key, BEYOND_U32)
        out[f"{key}.edge"] = opt(f, f"{key}.edge", key, st.sampled_from([0, 1, 2**32 - 1]))
    out["auto_resume.malformed"] = opt(f, "auto_resume.malformed", "auto_resume", st.one_of(
        MALFORMED, st.sampled_from([1, 0, "yes"])))
    # Two kinds, so combinations get a fair share of the draws and detached ones a name.
    out["lifecycle.combo"] = combo.filter(lambda c: not c["detach"]).map(
        lambda c: HostileCase(f, "lifecycle.combo", {**c, "sdk_defaults": True}))
    out["lifecycle.combo_detached"] = combo.map(lambda c: HostileCase(
        f, "lifecycle.combo_detached", {**c, "detach": True, "sdk_defaults": True}))
    return out


KINDS: dict[str, Callable[[], dict[str, st.SearchStrategy[HostileCase]]]] = {
    "names": _names, "env": _env, "process": _process, "volumes": _volumes,
    "ports": _ports, "resources": _resources, "images": _images,
    # Appended: a family's seed is the run's plus its index here.
    "options": _options, "lifecycle": _lifecycle,
}
FAMILIES = tuple(KINDS)


def kinds(family: str) -> dict[str, st.SearchStrategy[HostileCase]]:
    return KINDS[family]()


def cases(family: str) -> st.SearchStrategy[HostileCase]:
    """Every kind of the family, one hazard per case."""
    return st.one_of(*kinds(family).values())
