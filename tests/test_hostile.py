"""harness/hostile.py without a runtime: the strategies generate the hazard their kind names,
the broken image layouts are broken the way they claim (and only that way), cases materialize
into the run folder, the log and store readers parse what the runtime writes, and every check
added there holds, fails and says unknown when it should (VIOLATING is read by the meta-test
in tests/test_checks.py)."""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import shutil
import socket
import sqlite3
import tarfile
import time
import zlib
from collections.abc import Callable
from pathlib import Path
from types import SimpleNamespace

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.errors import UnsatisfiedAssumption

from harness.common.errors import HarnessError, SetupError
from harness.jobs.hostile import attempt, layouts, shards, strategies, workspace
from harness.jobs.hostile import checks as case_checks
from harness.jobs.hostile import runner as hostile_runner
from harness.judge.checks import HOLDS, UNKNOWN, VIOLATED, Verdict
from harness.judge.known import KnownFailure
from harness.observe.records import store_path
from harness.runtime.image import write_layout
from harness.session import seeds

FAST = settings(max_examples=15, deadline=None, database=None,
                suppress_health_check=list(HealthCheck))


# -- strategies: each kind generates its hazard -----------------------------------------------

def env_values(case: strategies.HostileCase) -> list[str]:
    return [v for _, v in case.options.get("env", [])]


def one(case: strategies.HostileCase, key: str) -> list:
    return case.options[key]


CLAIMS: dict[str, Callable[[strategies.HostileCase], bool]] = {
    "name.unicode": lambda c: bool(c.name) and "\x00" not in c.name,
    "name.nul": lambda c: "\x00" in c.name,
    "name.long": lambda c: len(c.name) >= 256,
    "name.path_like": lambda c: any(ch in c.name for ch in "/\\~.") or c.name in (".", ".."),
    "name.empty": lambda c: c.name == "",
    "name.duplicate": lambda c: bool(c.name) and c.holder == strategies.HOLDER_SAME_NAME,
    "name.other_box_id": lambda c: c.name == strategies.HOLDER_ID
    and c.holder == strategies.HOLDER_ID_AS_NAME,
    "env.huge_value": lambda c: len(env_values(c)[0]) >= 65_536,
    "env.many": lambda c: len(one(c, "env")) >= 500,
    "env.key_equals": lambda c: "=" in one(c, "env")[0][0],
    "env.key_empty": lambda c: one(c, "env")[0][0] == "",
    "env.nul": lambda c: "\x00" in "".join(one(c, "env")[0]),
    "env.unicode": lambda c: bool(one(c, "env")[0][0]),
    "env.value_cut_char": lambda c: strategies.cuts_a_char(env_values(c)[0]),
    "env.duplicate_key": lambda c: len({k for k, _ in one(c, "env")}) == 1 == len(
        one(c, "env")) - 1,
    "working_dir.relative": lambda c: not one(c, "working_dir").startswith("/"),
    "working_dir.empty": lambda c: one(c, "working_dir") == "",
    "working_dir.nul": lambda c: "\x00" in one(c, "working_dir"),
    "working_dir.long": lambda c: len(one(c, "working_dir")) > 4096,
    "working_dir.dotdot": lambda c: "/.." in one(c, "working_dir"),
    "working_dir.not_a_dir": lambda c: one(c, "working_dir") in (
        "/bin/busybox", "/etc/passwd", "/proc/self/exe"),
    "user.odd": lambda c: isinstance(one(c, "user"), str),
    "volume.missing_host": lambda c: one(c, "volumes")[0][0].startswith("@ws/missing/"),
    "volume.relative_host": lambda c: not one(c, "volumes")[0][0].startswith(("/", "@")),
    "volume.relative_guest": lambda c: not one(c, "volumes")[0][1].startswith("/"),
    "volume.guest_root": lambda c: one(c, "volumes")[0][1] == "/",
    "volume.guest_system": lambda c: one(c, "volumes")[0][1].startswith(
        ("/proc", "/sys", "/dev", "/bin", "/etc", "/tmp", "/run", "/sbin")),
    "volume.guest_dotdot": lambda c: "/../" in one(c, "volumes")[0][1],
    "volume.host_is_file": lambda c: one(c, "volumes")[0][0].startswith("@ws/file/"),
    "volume.ro_clash": lambda c: (lambda v: v[0][1] == v[1][1] and v[0][2] != v[1][2])(
        one(c, "volumes")),
    "volume.same_host_twice": lambda c: (lambda v: v[0][0] == v[1][0] and v[0][2] != v[1][2])(
        one(c, "volumes")),
    "volume.nul": lambda c: "\x00" in "".join(one(c, "volumes")[0][:2]),
    "volume.many": lambda c: len(one(c, "volumes")) >= 32,
    "volume.odd_chars": lambda c: one(c, "volumes")[0][0].startswith("@ws/dir/"),
    "port.out_of_range": lambda c: any(not 0 <= p <= 65_535 for p in one(c, "ports")[0][:2]),
    "port.zero_guest": lambda c: one(c, "ports")[0][1] == 0,
    "port.zero_host": lambda c: one(c, "ports")[0][0] == 0,
    "port.duplicate_host": lambda c: one(c, "ports")[0][0] == one(c, "ports")[1][0],
    "port.duplicate_pair": lambda c: one(c, "ports")[0] == one(c, "ports")[1],
    "port.bound_host": lambda c: one(c, "ports")[0][0] == "@bound",
    "port.protocol": lambda c: len(one(c, "ports")[0]) == 3,
    "port.many": lambda c: len({p[0] for p in one(c, "ports")}) >= 100,
    "cpus.zero": lambda c: one(c, "cpus") == 0,
    "cpus.many": lambda c: 3 <= one(c, "cpus") <= 255,
    "cpus.overflow": lambda c: not 0 <= one(c, "cpus") <= 255,
    "memory.zero": lambda c: one(c, "memory_mib") == 0,
    "memory.below_37": lambda c: 1 <= one(c, "memory_mib") <= 36,
    "memory.small": lambda c: 37 <= one(c, "memory_mib") <= 127,
    "memory.huge": lambda c: 2**16 <= one(c, "memory_mib") < 2**32,
    "memory.overflow": lambda c: not 0 <= one(c, "memory_mib") < 2**32,
    "disk.zero": lambda c: one(c, "disk_size_gb") == 0,
    "disk.tiny": lambda c: 1 <= one(c, "disk_size_gb") <= 2,
    "disk.huge": lambda c: 2**10 <= one(c, "disk_size_gb") <= 2**20,
    "disk.overflow": lambda c: not 0 <= one(c, "disk_size_gb") < 2**64,
}
for _w in ("entrypoint", "cmd"):
    CLAIMS.update({
        f"{_w}.empty": lambda c, w=_w: one(c, w) == [],
        f"{_w}.empty_arg": lambda c, w=_w: one(c, w) == [""],
        f"{_w}.nul": lambda c, w=_w: "\x00" in one(c, w)[0],
        f"{_w}.missing_binary": lambda c, w=_w: one(c, w)[0].startswith("/no/such"),
        f"{_w}.huge_arg": lambda c, w=_w: sum(map(len, one(c, w))) >= 131_072,
        f"{_w}.many_args": lambda c, w=_w: len(one(c, w)) > 1000,
    })
CLAIMS.update({f"image.{v}": (lambda c, v=v: one(c, "rootfs_path").startswith(f"@image/{v}/"))
               for v in strategies.IMAGE_VARIANTS})



def _not_u32(v: object) -> bool:
    return isinstance(v, int) and not 0 <= v < 2**32


def _malformed(v: object, right: type) -> bool:
    """Not a value of the field's own type (bool counts as int, as the SDK takes it)."""
    return not isinstance(v, right) or (right is int and isinstance(v, float))


def _spec_modes(n: dict) -> list:
    return [n.get("mode"), *(n[k].get("mode") for k in ("outbound", "inbound")
                             if isinstance(n.get(k), dict))]


# The keyword arguments of AdvancedBoxOptions, SecurityOptions, HealthCheckOptions (0.10.8).
_ADVANCED = {"capabilities": set(),
             "security": {"jailer_enabled", "seccomp_enabled", "max_open_files",
                          "max_file_size", "max_processes", "max_memory", "max_cpu_time",
                          "network_enabled", "close_fds"},
             "health_check": {"interval", "timeout", "retries", "start_period"}}
CLAIMS.update({
    "network.malformed": lambda c: not isinstance(one(c, "network"), dict),
    "network.unknown_mode": lambda c: any(m not in (None, "enabled", "disabled")
                                          for m in _spec_modes(one(c, "network"))),
    "network.unknown_key": lambda c: bool(
        set(one(c, "network")) - {"mode", "allow_net", "outbound", "inbound"}
        or set(one(c, "network").get("outbound", {})) - {"mode", "allow_net"}),
    "network.allow_net_odd": lambda c: any(
        one(c, "network").get(k, {}).get("allow_net") for k in ("outbound", "inbound")),
    "network.disabled": lambda c: set(_spec_modes(one(c, "network"))) <= {None, "disabled"},
    "tty.malformed": lambda c: not isinstance(one(c, "tty"), bool),
    "tty.no_command": lambda c: one(c, "tty") is True
    and not any(x for x in [*c.options.get("entrypoint", []), *c.options.get("cmd", [])]),
    "advanced.malformed": lambda c: not isinstance(one(c, "advanced"), dict) or any(
        not isinstance(v, dict) for v in one(c, "advanced").values()),
    "advanced.unknown_key": lambda c: any(
        k not in _ADVANCED or isinstance(v, dict) and set(v) - _ADVANCED[k]
        for k, v in one(c, "advanced").items()),
    "advanced.out_of_range": lambda c: any(
        x == 0 or _not_u32(x) for v in one(c, "advanced").values() for x in v.values()),
    "secrets.malformed": lambda c: not isinstance(one(c, "secrets"), list) or any(
        not isinstance(s, dict) or not isinstance(s.get("value"), str)
        for s in one(c, "secrets")),
    "secrets.odd_name": lambda c: len(one(c, "secrets")) == 1,
    "secrets.odd_value": lambda c: len(one(c, "secrets")) == 1,
    "secrets.odd_hosts": lambda c: bool(one(c, "secrets")[0]["hosts"]),
    "secrets.duplicate_name": lambda c: len({s["name"] for s in one(c, "secrets")}) == 1
    and len(one(c, "secrets")) == 2,
    "secrets.many": lambda c: len(one(c, "secrets")) >= 100,
    "auto_resume.malformed": lambda c: not isinstance(one(c, "auto_resume"), bool),
    "lifecycle.combo": lambda c: c.options.get("sdk_defaults") is True
    and not c.options.get("detach"),
    "lifecycle.combo_detached": lambda c: c.options.get("sdk_defaults") is True
    and c.options["detach"] is True,
})
for _f in ("auto_stop", "auto_delete"):
    CLAIMS.update({
        f"{_f}.malformed": lambda c, f=_f: _malformed(one(c, f), int),
        f"{_f}.out_of_range": lambda c, f=_f: _not_u32(one(c, f)),
        f"{_f}.edge": lambda c, f=_f: one(c, f) in (0, 1, 2**32 - 1),
    })

ALL_KINDS = [(f, k) for f in strategies.FAMILIES for k in strategies.kinds(f)]


def test_every_kind_has_a_claim_and_a_canonical_example():
    assert {k for _, k in ALL_KINDS} == set(CLAIMS)
    for family in strategies.FAMILIES:
        canon = shards.canonical(family)
        assert [c.kind for c in canon] == list(dict.fromkeys(c.kind for c in canon))
        assert {c.kind for c in canon} == set(strategies.kinds(family)), family
        for c in canon:
            assert c.origin == "canonical" and c.family == family
            assert CLAIMS[c.kind](c), c


@pytest.mark.parametrize("family, kind", ALL_KINDS)
def test_a_kind_generates_its_hazard(family, kind):
    @FAST
    @given(case=strategies.kinds(family)[kind])
    def claim(case):
        assert (case.family, case.kind, case.origin) == (family, kind, "generated")
        assert CLAIMS[kind](case), case
        json.dumps(case.to_json())      # the history and the database can hold it
        if kind != "env.value_cut_char":
            assert not any(strategies.cuts_a_char(v) for v in env_values(case)), case
    claim()


def test_the_family_strategy_draws_several_kinds():
    seen: set[str] = set()

    @settings(max_examples=60, deadline=None, database=None,
              suppress_health_check=list(HealthCheck))
    @given(case=strategies.cases("process"))
    def draw(case):
        seen.add(case.kind)
    draw()
    assert len(seen) >= 5, seen


def test_faker_values_replay_from_their_seed():
    a = strategies.fake_value("city", "ja_JP", 42)
    assert a == strategies.fake_value("city", "ja_JP", 42)
    assert a != strategies.fake_value("city", "ja_JP", 43) or a


@pytest.mark.parametrize("value, cuts", [
    ("ééééé", False), ("aéééé", True), ("aaaéa", False), ("aaaéaaa", False),
    ("aaaéaaaa", True), ("aaaaaaaaaaé", False), ("aaaaaaaaéaaa", True), ("aaaaéaa", False),
    ("plain ascii value", False)])
def test_cuts_a_char_follows_the_measured_rule(value, cuts):
    assert strategies.cuts_a_char(value) is cuts
    assert not strategies.cuts_a_char(strategies.framed(value))


def test_a_case_prints_short_and_replays_by_key():
    case = shards.canonical("env")[1]
    assert case.kind == "env.many"
    assert len(repr(case)) < 2100 and "more)" in repr(case)
    again = strategies.HostileCase(case.family, case.kind, case.options, origin="canonical")
    assert again.key() == case.key()


# -- image layouts ----------------------------------------------------------------------------

def sha(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def blob(layout: Path, digest: str) -> Path:
    return layout / "blobs" / "sha256" / digest.split(":", 1)[1]


def inspect_layout(path: Path) -> dict:
    """What is broken about a layout, found independently of the builder."""
    out: dict = {"exists": path.exists() or path.is_symlink(), "problems": []}
    if not path.is_dir():
        return out
    problems = out["problems"]
    if not (path / "oci-layout").is_file():
        problems.append("no oci-layout")
    try:
        index = json.loads((path / "index.json").read_text())
    except (OSError, ValueError):
        problems.append("index unreadable")
        return out
    if not index.get("manifests"):
        problems.append("no manifests")
        return out
    mdigest = index["manifests"][0]["digest"]
    out["manifest_digest"] = mdigest
    if not blob(path, mdigest).is_file():
        problems.append("manifest blob missing")
        return out
    mdata = blob(path, mdigest).read_bytes()
    if sha(mdata) != mdigest:
        problems.append("manifest digest mismatch")
        return out
    manifest = json.loads(mdata)
    cpath = blob(path, manifest["config"]["digest"])
    if not cpath.is_file():
        problems.append("config blob missing")
        return out
    config = json.loads(cpath.read_bytes())
    out["layers"] = []
    for i, layer in enumerate(manifest["layers"]):
        lp = blob(path, layer["digest"])
        if lp.is_dir():
            problems.append(f"layer {i} is a folder")
            continue
        if not lp.is_file():
            problems.append(f"layer {i} missing")
            continue
        data = lp.read_bytes()
        if sha(data) != layer["digest"]:
            problems.append(f"layer {i} digest mismatch")
        try:
            raw = gzip.decompress(data)
        except (OSError, EOFError, zlib.error):
            problems.append(f"layer {i} not gzip")
            continue
        if config["rootfs"]["diff_ids"][i] != sha(raw):
            problems.append(f"layer {i} diff_id mismatch")
        out["layers"].append(raw)
    return out


EXPECTED_PROBLEMS = {
    "empty_dir": ["no oci-layout", "index unreadable"],
    "not_a_layout": ["no oci-layout", "index unreadable"],
    "no_oci_layout": ["no oci-layout"],
    "index_not_json": ["index unreadable"],
    "index_no_manifests": ["no manifests"],
    "manifest_missing": ["manifest blob missing"],
    "manifest_corrupt": ["manifest digest mismatch"],
    "config_missing": ["config blob missing"],
    "layer_missing": ["layer 0 missing"],
    "layer_corrupt": ["layer 0 digest mismatch", "layer 0 not gzip"],
    "layer_truncated": ["layer 0 digest mismatch", "layer 0 not gzip"],
    "layer_swapped": ["layer 0 digest mismatch", "layer 0 diff_id mismatch"],
    "layer_not_gzip": ["layer 0 not gzip"],
    "diff_id_wrong": ["layer 0 diff_id mismatch"],
    "layer_is_dir": ["layer 0 is a folder"],
    "layer_escapes": [],
    "well_formed": [],
}


@pytest.fixture(scope="module")
def base_layout(tmp_path_factory) -> Path:
    base = tmp_path_factory.mktemp("base")
    write_layout(base, b"\x7fELF not really busybox, but bytes enough to pack" * 64)
    return base


@pytest.mark.parametrize("variant", strategies.IMAGE_VARIANTS)
def test_an_image_variant_is_broken_as_claimed(variant, base_layout, tmp_path):
    dest = tmp_path / "img"
    planted = layouts.build_image(base_layout, dest, variant, seed=7, where=0.5,
                                  inside=tmp_path / "markers")
    seen = inspect_layout(dest)
    if variant == "missing":
        assert not seen["exists"]
        return
    if variant == "file":
        assert dest.is_file()
        return
    if variant == "symlink_loop":
        assert dest.is_symlink() and not dest.exists()
        return
    assert seen["problems"] == EXPECTED_PROBLEMS[variant], seen["problems"]
    base_digest = inspect_layout(base_layout)["manifest_digest"]
    if "manifest_digest" in seen:       # a layout still: never answered from the base's cache
        assert seen["manifest_digest"] != base_digest
    assert bool(planted) == (variant == "layer_escapes")


def test_broken_layers_are_layers_of_their_own(base_layout, tmp_path):
    base_layer = json.loads(blob(base_layout, inspect_layout(base_layout)["manifest_digest"])
                            .read_text())["layers"][0]["digest"]
    for variant in ("layer_corrupt", "layer_truncated", "layer_missing", "diff_id_wrong"):
        layouts.build_image(base_layout, tmp_path / variant, variant, 3, 0.5)
        index = json.loads((tmp_path / variant / "index.json").read_text())
        manifest = json.loads(blob(tmp_path / variant, index["manifests"][0]["digest"])
                              .read_text())
        assert manifest["layers"][0]["digest"] != base_layer, variant


def test_a_restamped_layer_is_a_whole_valid_layer_of_its_own(base_layout, tmp_path):
    digests = set()
    for text in ("one 1\n", "two 2\n", "one 1\n"):
        dest = tmp_path / f"l{len(digests)}-{text.split()[0]}"
        shutil.copytree(base_layout, dest)
        parts = layouts.LayoutParts.load(dest)
        layouts.restamp_layer(parts, text)
        parts.save()
        seen = inspect_layout(dest)
        assert seen["problems"] == []           # digest and diff_id both match the bytes
        with tarfile.open(fileobj=io.BytesIO(seen["layers"][0])) as tar:
            names = tar.getnames()
            assert tar.extractfile("etc/hostile-variant").read() == text.encode()
        with tarfile.open(fileobj=io.BytesIO(inspect_layout(base_layout)["layers"][0])) as tar:
            assert names == [*tar.getnames(), "etc/hostile-variant"]
        assert len(seen["layers"][0]) % tarfile.RECORDSIZE == 0
        digests.add(parts.layer_digest)
    assert len(digests) == 2                    # same text, same layer; new text, new layer


def test_the_well_formed_variant_holds_the_base_files(base_layout, tmp_path):
    layouts.build_image(base_layout, tmp_path / "ok", "well_formed", 1, 0.5)
    layers = inspect_layout(tmp_path / "ok")["layers"]
    with tarfile.open(fileobj=io.BytesIO(layers[0])) as tar:
        assert "bin/busybox" in tar.getnames()


def test_the_escaping_layer_tries_every_way_out(base_layout, tmp_path):
    inside = tmp_path / "markers"
    planted = layouts.build_image(base_layout, tmp_path / "esc", "layer_escapes", 9, 0.5,
                                  inside)
    layers = inspect_layout(tmp_path / "esc")["layers"]
    assert len(layers) == 2
    with tarfile.open(fileobj=io.BytesIO(layers[1])) as tar:
        members = {m.name: m for m in tar.getmembers()}
    assert any(n.startswith("../") for n in members)
    assert str(inside / "hostile-escape-9-abs") in members
    link = members["hostile-escape-9-link"]
    assert link.issym() and link.linkname == str(inside)
    assert "hostile-escape-9-link/hostile-escape-9-via-link" in members
    assert set(planted) == {n.rsplit("/", 1)[-1] for n in members if not members[n].issym()}


def test_escaped_markers_ignores_a_layers_own_folder(tmp_path):
    home = tmp_path / "homes" / "home1"
    own = home / "images" / "local" / "x" / "extracted" / "sha256-abc"
    own.mkdir(parents=True)
    (own / "hostile-escape-1-up1").write_text("")
    (home / "tmp" / "merged").mkdir(parents=True)
    (home / "tmp" / "merged" / "hostile-escape-1-abs").write_text("")
    markers = ["hostile-escape-1-up1", "hostile-escape-1-abs", "hostile-escape-1-up2"]
    contained = workspace.unpacked_by_runtime(home)
    assert workspace.escaped_markers(markers, [tmp_path / "run", home.parent], contained) == []
    (home / "images" / "hostile-escape-1-up2").write_text("")
    (tmp_path / "hostile-escape-1-abs").write_text("")      # beside an ancestor
    assert workspace.escaped_markers(markers, [home.parent], contained) == sorted([
        str(home / "images" / "hostile-escape-1-up2"), str(tmp_path / "hostile-escape-1-abs")])


# -- materializing ----------------------------------------------------------------------------

def test_materialize_resolves_every_placeholder(base_layout, tmp_path):
    ws = workspace.Workspace(tmp_path / "ws", base_layout)
    base = {"rootfs_path": "/img", "auto_remove": False}
    vols = strategies.HostileCase("volumes", "v", {"volumes": [
        ["@ws/dir/d", "/mnt/d"], ["@ws/file/f", "/mnt/f", True], ["@ws/missing/m", "/mnt/m"],
        ["rel", "/mnt/r"]]})
    res = ws.materialize(vols, base)
    (d, _), (f, _, _), (m, _), (r, _) = res.options["volumes"]
    assert Path(d).is_dir() and Path(f).is_file() and not Path(m).exists() and r == "rel"
    assert res.options["rootfs_path"] == "/img" and res.options["auto_remove"] is False
    assert vols.options["volumes"][0][0] == "@ws/dir/d"         # the case is left as drawn

    ports = ws.materialize(strategies.HostileCase("ports", "p", {"ports": [["@bound", 80]]}),
                           base)
    port = ports.options["ports"][0][0]
    holder = ports.sockets[0].getsockname()
    assert holder[0] == "127.0.0.1", holder          # nothing of ours listens beyond loopback
    for address in ("0.0.0.0", "127.0.0.1"):        # a box's forward binds one of these
        with socket.socket() as probe, pytest.raises(OSError):
            probe.bind((address, port))
    ports.close()
    with socket.socket() as probe:
        probe.bind(("0.0.0.0", port))

    img = ws.materialize(strategies.HostileCase("images", "i", {
        "rootfs_path": "@image/layer_escapes/5/0.2500"}), base)
    assert Path(img.options["rootfs_path"]).is_dir() and len(img.markers) == 8
    assert img.marker_dir is not None and img.marker_dir.is_dir()


# -- what the runtime wrote -------------------------------------------------------------------

RUNTIME_LOG = """\
2026-11-26T05:35:43.861708Z  WARN boxlite::litebox::init::tasks::guest_connect: VM subprocess \
exited unexpectedly during startup pid=5513 exit_code=101
2026-11-26T05:35:43.861773Z ERROR boxlite::litebox::init::tasks::guest_connect: Box crash details:
Box R2tWVDo0RRSq failed to start

Exit code: 101

Console output: empty (no kernel or guest messages captured)
2026-11-26T05:35:43.861794Z ERROR boxlite::litebox::init::tasks: Task failed: engine reported \
an error: The VM failed to start. box_id=R2tWVDo0RRSq task=guest_connect
2026-11-26T05:42:52.321435Z  WARN boxlite::litebox::init::tasks::guest_connect: VM subprocess \
exited unexpectedly during startup pid=22145 exit_code=134
2026-11-26T05:42:52.321534Z ERROR boxlite::litebox::init::tasks::guest_connect: Box crash details:
Box ddBNOGBICRSp failed to start: internal error (SIGABRT)

The VM crashed during initialization.
2026-11-26T05:42:52.321555Z ERROR boxlite::litebox::init::tasks: Task failed
"""


def test_shim_exits_are_found_by_pid_and_by_box():
    exits = workspace.shim_exits(RUNTIME_LOG, {"R2tWVDo0RRSq": 5513, "ddBNOGBICRSp": None})
    by_box = {e["box"]: e for e in exits}
    assert by_box["R2tWVDo0RRSq"]["exit_code"] == 101
    assert "Exit code: 101" in by_box["R2tWVDo0RRSq"]["detail"]
    # Without the pid (a shim that aborted before the harness's first poll saw it: likelier
    # under load) the block names only the signal; that is the crash all the same. This case
    # once made runtime_did_not_crash[memory.below_37] hold in a loaded gate run.
    assert by_box["ddBNOGBICRSp"]["exit_code"] == 134
    assert "SIGABRT" in by_box["ddBNOGBICRSp"]["detail"]
    assert case_checks.runtime_did_not_crash([by_box["ddBNOGBICRSp"]], True, "").status == VIOLATED
    assert workspace.shim_exits(RUNTIME_LOG, {"other": 1}) == []


@pytest.mark.parametrize("text, code", [
    ("engine reported an error: The VM failed to start: internal error (SIGABRT).", 134),
    ("internal error (SIGSEGV)", 139),
    ("engine reported an error: The VM failed to start.", None),
    ("(SIGNOTREAL)", None), ("", None)])
def test_signal_exit_code(text, code):
    assert workspace.signal_exit_code(text) == code


def test_crash_block_logged_is_per_box():
    assert workspace.crash_block_logged(RUNTIME_LOG, "ddBNOGBICRSp")
    assert not workspace.crash_block_logged(RUNTIME_LOG, "nEvErLoGgEd1")
    assert not workspace.crash_block_logged("", "ddBNOGBICRSp")


def test_the_log_cursor_reads_only_what_was_appended(tmp_path):
    (tmp_path / "logs").mkdir()
    log = tmp_path / "logs" / "boxlite.log.2026-11-26"
    log.write_text("before\n")
    cursor = workspace.LogCursor(tmp_path)
    with open(log, "a") as fh:
        fh.write("during\n")
    (tmp_path / "logs" / "boxlite.log.2026-11-27").write_text("next day\n")
    assert cursor.read() == "during\nnext day\n"
    assert cursor.read() == ""


def test_store_configs_reads_ids_and_names(tmp_path):
    store_path(tmp_path).parent.mkdir(parents=True)
    con = sqlite3.connect(store_path(tmp_path))
    con.execute("CREATE TABLE box_config (id TEXT PRIMARY KEY, name TEXT, created_at TEXT, "
                "json TEXT)")
    con.executemany("INSERT INTO box_config VALUES (?, ?, '', '{}')",
                    [("b1", "twin"), ("b2", None)])
    con.commit()
    con.close()
    assert workspace.store_configs(tmp_path) == [{"id": "b1", "name": "twin"},
                                               {"id": "b2", "name": None}]


# -- checks -----------------------------------------------------------------------------------

def answer(outcome: str = "error", type_: str = "EngineError",
           message: str = "engine reported an error: The VM failed to start.",
           mro: tuple = ("EngineError", "BoxliteError", "RuntimeError")) -> dict:
    err = None if outcome == "ok" else {"type": type_, "message": message, "mro": list(mro)}
    return {"outcome": outcome, "error": err, "bound_s": 20.0, "elapsed_s": 0.5}


@pytest.mark.parametrize("ans", [answer("ok"), answer(), answer(
    type_="OverflowError", message="number too large to fit in target type", mro=())])
def test_answered_cleanly_holds_on_success_or_a_refusal_that_says_why(ans):
    v = case_checks.answered_cleanly("create", ans)
    assert (v.check, v.status) == ("answered_cleanly[create]", HOLDS)


@pytest.mark.parametrize("ans, why", [
    (answer("host_died"), "host died"),
    (answer("no_reply"), "no answer within 20.0s"),
    (answer(type_="RustPanic", message="rust future panicked: unknown error"), "crashed"),
    (answer(type_="X", mro=("PanicException", "BaseException")), "crashed"),
    (answer(message="  "), "no message"),
])
def test_answered_cleanly_violated(ans, why):
    v = case_checks.answered_cleanly("start", ans)
    assert v.status == VIOLATED and why in v.summary, v.summary


def test_answered_cleanly_unknown_on_an_unknown_outcome():
    assert case_checks.answered_cleanly("start", answer("maybe")).status == UNKNOWN


def shim_exit(code: int | None, killed: bool = False) -> dict:
    return {"box": "b1", "pid": 10, "exit_code": code, "detail": "", "killed_by_harness": killed}


@pytest.mark.parametrize("exits", [[], [shim_exit(137, killed=True)], [shim_exit(1)],
                                   [shim_exit(None)]])
def test_runtime_did_not_crash_holds(exits):
    assert case_checks.runtime_did_not_crash(exits, True, "").status == HOLDS


@pytest.mark.parametrize("exits, alive, stderr, why", [
    ([shim_exit(101)], True, "", "exit 101 (panic)"),
    ([shim_exit(134)], True, "", "SIGABRT"),
    ([shim_exit(139)], True, "", "SIGSEGV"),
    ([], False, "", "host died"),
    ([], True, "thread 'tokio-rt-worker' panicked at src/x.rs:1:2:\nboom", "src/x.rs:1:2: boom"),
    ([], True, "Traceback (most recent call last):\n  ...", "traceback"),
])
def test_runtime_did_not_crash_violated(exits, alive, stderr, why):
    v = case_checks.runtime_did_not_crash(exits, alive, stderr)
    assert v.status == VIOLATED and why in v.summary, v.summary


def test_case_processes_gone():
    proc = {"pid": 7, "name": "libkrun VM"}
    assert case_checks.case_processes_gone([], 3, 0.2, 10.0, 50).status == HOLDS
    assert case_checks.case_processes_gone([], 0, 0.0, 10.0, 50).status == HOLDS
    v = case_checks.case_processes_gone([proc], 3, 10.1, 10.0, 50)
    assert v.status == VIOLATED and "libkrun VM[7]" in v.summary
    assert case_checks.case_processes_gone([], 0, 0.0, 10.0, 0).status == UNKNOWN


def test_names_unambiguous():
    assert case_checks.names_unambiguous([{"id": "a", "name": "x"}, {"id": "b", "name": None},
                                      {"id": "c", "name": None}]).status == HOLDS
    v = case_checks.names_unambiguous([{"id": "a", "name": "x"}, {"id": "b", "name": "x"}])
    assert v.status == VIOLATED and v.evidence["shared_names"] == {"x": ["a", "b"]}
    v = case_checks.names_unambiguous([{"id": "a", "name": None}, {"id": "b", "name": "a"}])
    assert v.status == VIOLATED and v.evidence["named_after_other_id"] == ["b"]


def test_layer_contained():
    assert case_checks.layer_contained([], 8).status == HOLDS
    assert case_checks.layer_contained(["/tmp/x/hostile-escape-1-up2"], 8).status == VIOLATED
    assert case_checks.layer_contained([], 0).status == UNKNOWN


def test_specialize_adds_the_moment_and_the_kind():
    v = case_checks.answered_cleanly("start", answer())
    assert case_checks.specialize(v, "env.nul").check == "answered_cleanly[start/env.nul]"
    v = Verdict("home_consistent", HOLDS)
    assert case_checks.specialize(v, "env.nul", "removed").check == \
        "home_consistent[removed/env.nul]"


# -- tallies and the runner's bookkeeping ------------------------------------------------------

def case(kind: str = "env.nul", origin: str = "generated", n: int = 0) -> strategies.HostileCase:
    return strategies.HostileCase("env", kind, {"env": [["K", f"v{n}"]]}, origin=origin)


def test_a_tally_is_unknown_over_violated_over_holds():
    t = hostile_runner.Tally("c[k]")
    t.add(Verdict("c[k]", HOLDS), case())
    assert t.verdict().status == HOLDS and t.verdict().evidence["cases"] == 1
    for n in range(6):
        t.add(Verdict("c[k]", VIOLATED, {"big": "x" * 1000}, f"bad {n}"), case(n=n))
    v = t.verdict()
    assert v.status == VIOLATED and "6 of 7" in v.summary and "bad 5" in v.summary
    assert [e["summary"] for e in v.evidence["violations"]] == ["bad 0", "bad 1", "bad 2",
                                                               "bad 5"]
    assert len(json.dumps(v.evidence)) < 8000
    t.add(Verdict("c[k]", UNKNOWN, {}, "unreadable"), case())
    assert t.verdict().status == UNKNOWN


class FakeChaos(SimpleNamespace):
    def note(self, **fields):
        self.notes.append(fields)

    def judge(self, *verdicts):
        self.judged.extend(verdicts)


def runner(verdicts: list[Verdict], known: list[KnownFailure] = (), budget_s: float = 1e9):
    r = object.__new__(hostile_runner.HostileRunner)
    r.chaos = FakeChaos(env=SimpleNamespace(version="0.10.8"), node_id="scen::hostile",
                        known=list(known), notes=[], judged=[])
    r.family, r.budget_s = "env", budget_s
    r.shard, r.own_kinds = None, frozenset(strategies.kinds("env"))
    r.family_kinds = r.own_kinds
    r.t0 = time.monotonic()
    r.tallies, r.outcomes, r.failures, r.host_restarts = {}, {}, [], 0
    r.runs = {"canonical": 0, "pinned": 0, "generated": 0, "replayed": 0, "rejected": 0,
              "other_shards": 0}
    r.seed, r.findings = 7, set()
    r.one_case = lambda c: (list(verdicts), {"hostile_stage": "vcpus_running"})
    return r


BAD = Verdict("runtime_did_not_crash[env.nul]", VIOLATED, {}, "shim crashed")


def test_a_failing_generated_case_raises_for_hypothesis_and_is_noted():
    r = runner([BAD])
    with pytest.raises(hostile_runner.CaseFailed, match="shim crashed"):
        r.run(case())
    failure = [n for n in r.chaos.notes if "hostile_failure" in n][0]
    assert failure["options"] == {"env": [["K", "v0"]]}
    assert r.outcomes[case().key()] == [(BAD.check, BAD.summary)]


def test_each_set_of_failing_checks_raises_a_type_of_its_own():
    def raised(failing):
        with pytest.raises(hostile_runner.CaseFailed) as info:
            hostile_runner.raise_case_failed(failing)
        return type(info.value)
    a = raised([("c[x]", "bad"), ("d[x]", "worse")])
    assert a is raised([("d[x]", "other words"), ("c[x]", "same checks")])
    assert a is not raised([("c[y]", "bad")])


def test_a_failing_explicit_example_is_noted_without_raising():
    r = runner([BAD])
    r.run(case(origin="canonical"))
    assert r.runs["canonical"] == 1 and r.failures


def test_a_known_violation_does_not_raise():
    from packaging.specifiers import SpecifierSet
    kf = KnownFailure("k", "runtime_did_not_crash[env.nul]", SpecifierSet("==0.10.8"),
                      ("*hostile*",), "r", "e")
    r = runner([BAD], known=[kf])
    r.run(case())
    r.judge_totals()
    assert [v.status for v in r.chaos.judged] == [VIOLATED]


@pytest.mark.filterwarnings("ignore::hypothesis.errors.HypothesisDeprecationWarning")
def test_past_the_budget_cases_replay_or_are_rejected():
    r = runner([BAD], budget_s=-1.0)
    r.outcomes[case().key()] = [(BAD.check, "shim crashed")]
    with pytest.raises(hostile_runner.CaseFailed, match="shim crashed"):
        r.run(case())
    with pytest.raises(UnsatisfiedAssumption):
        r.run(case(n=1))
    r.run(case(origin="canonical"))         # explicit examples always run
    assert r.runs == {"canonical": 1, "pinned": 0, "generated": 0, "replayed": 1,
                      "rejected": 1, "other_shards": 0}


def test_explore_notes_case_failures_and_raises_anything_else():
    r = runner([Verdict("runtime_did_not_crash[env.nul]", HOLDS, {}, "ok")])
    r.own_kinds = frozenset({"env.nul"})

    def failing():
        r.run(case(origin="canonical"))
        raise ExceptionGroup("bugs", [hostile_runner.CaseFailed("a"),
                                      hostile_runner.CaseFailed("b")])
    r.explore(failing)
    assert any(n.get("hypothesis") == "falsified" for n in r.chaos.notes)

    def broken():
        raise KeyError("harness bug")
    with pytest.raises(KeyError):
        r.explore(broken)
    assert hostile_runner.only_case_failures(hostile_runner.CaseFailed("x"))
    assert not hostile_runner.only_case_failures(ExceptionGroup("g", [ValueError()]))


# -- shards: every case in exactly one unit, the family's sequence unchanged ------------------

def test_every_kind_is_in_exactly_one_shard_of_its_family():
    for family in strategies.FAMILIES:
        owned = [k for s in shards.shards(family) for k in s.kinds]
        assert sorted(owned) == sorted(strategies.kinds(family)), family
    ids = [s.id for s in shards.all_shards()]
    assert len(ids) == len(set(ids))


@pytest.mark.parametrize("table, match", [
    ({"env": {"a": ("env.*",), "b": ("env.nul",)}}, "env.nul is in two shards"),
    ({"env": {"a": ("env.nul",)}}, "kinds in no shard of env"),
    ({"env": {"a": ("env.*", "env.bogus*")}}, "matches no kind"),
    ({}, "has no shards")])
def test_a_shard_table_that_loses_or_doubles_a_kind_is_refused(table, match):
    with pytest.raises(SetupError, match=match):
        shards.shards("env", table)


def _unsharded_run(family: str, max_examples: int) -> list[tuple[str, str]]:
    """The cases an unsharded family ran (the scenario before it was sharded), in order."""
    from hypothesis import Phase, example, seed
    got = []

    def run(case):
        got.append((case.kind, case.key()))
    run.__name__ = f"hostile_{family}"
    test = settings(max_examples=max_examples, phases=list(Phase), deadline=None,
                    derandomize=False, database=None,
                    suppress_health_check=list(HealthCheck))(
        given(case=strategies.cases(family))(run))
    for case in [*shards.canonical(family), *shards.pinned(family)]:
        test = example(case=case)(test)
    with shards.without_local_constants():
        seed(seeds.GATE_SEED + strategies.FAMILIES.index(family))(test)()
    return got


@pytest.mark.parametrize("family", strategies.FAMILIES)
def test_shards_run_exactly_the_cases_of_the_unsharded_family(family):
    """Same seed: every case the unsharded family ran is run by the shard of its kind, in the
    same order, and by no other shard."""
    want = _unsharded_run(family, 12)
    ran: dict[str, list[tuple[str, str]]] = {}
    for shard in shards.shards(family):
        ran[shard.label] = []

        def run(case, shard=shard):
            if case.kind in shard.kinds:
                ran[shard.label].append((case.kind, case.key()))
        shards.shard_test(shard, run, 12, seeds.GATE_SEED)()
        assert ran[shard.label] == [c for c in want if c[0] in shard.kinds], shard.id
    assert sum(map(len, ran.values())) == len(want)


def _drawn(shard: shards.Shard, max_examples: int = 15) -> list[str]:
    got: list[str] = []
    shards.shard_test(shard, lambda c: got.append(c.key()), max_examples, seeds.GATE_SEED)()
    return got


def _raw_draw() -> list[str]:
    """The names family as plain hypothesis draws it, local constants and all."""
    from hypothesis import seed
    raw: list[str] = []
    test = settings(max_examples=15, deadline=None, database=None,
                    suppress_health_check=list(HealthCheck))(
        given(case=strategies.cases("names"))(lambda case: raw.append(case.key())))
    seed(seeds.GATE_SEED)(test)()
    return raw


def test_a_seeds_cases_do_not_depend_on_the_modules_the_process_loaded(tmp_path, monkeypatch):
    """Hypothesis mixes literals of the loaded local modules into its draws; a worker that ran
    other scenarios first has loaded more of them. A shard draws the same cases either way,
    where plain hypothesis does not (checked too, so the test can fail)."""
    import importlib
    import sys

    from hypothesis.internal.conjecture import providers
    shard = shards.shards("names")[0]
    before, raw_before = _drawn(shard), _raw_draw()
    (tmp_path / "bxc_literals.py").write_text("WORDS = [\n" + "".join(
        f"    'w{i}/x{i}', {i * 7919},\n" for i in range(300)) + "]\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    importlib.import_module("bxc_literals")
    try:
        assert _drawn(shard) == before
        if hasattr(providers.HypothesisProvider, "_maybe_draw_constant"):
            assert _raw_draw() != raw_before, \
                "local constants no longer change hypothesis's draws: is the switch still needed?"
    finally:
        sys.modules.pop("bxc_literals", None)
        providers.CONSTANTS_CACHE.cache.clear()


def test_a_shard_runs_its_kinds_and_leaves_the_others_to_their_shards():
    r = runner([Verdict("runtime_did_not_crash[env.nul]", HOLDS, {}, "ok")])
    shard = next(s for s in shards.shards("env") if "env.nul" in s.kinds)
    r.shard, r.own_kinds = shard, frozenset(shard.kinds)
    r.run(case())                                           # env.nul: this shard's
    r.run(strategies.HostileCase("env", "env.many", {"env": [["K", "v"]]}))
    assert r.runs["generated"] == 1 and r.runs["other_shards"] == 1
    with pytest.raises(SetupError, match="name.nul"):
        r.run(strategies.HostileCase("names", "name.nul", name="a\x00b"))


def test_a_kind_of_the_shard_left_unjudged_fails_the_run_after_its_verdicts():
    r = runner([Verdict("runtime_did_not_crash[env.nul]", HOLDS, {}, "ok")])
    r.own_kinds = frozenset({"env.nul", "env.many"})
    r.run(case())
    with pytest.raises(HarnessError, match="env.many"):
        r.judge_totals(complete=True)
    assert [v.check for v in r.chaos.judged] == ["runtime_did_not_crash[env.nul]"]
    note = [n for n in r.chaos.notes if "hostile_family" in n][-1]
    assert note["unjudged_kinds"] == ["env.many"]


def test_kind_of_reads_the_kind_from_a_specialized_id():
    v = case_checks.specialize(Verdict("home_consistent", HOLDS, {}, ""), "env.nul", "removed")
    assert case_checks.kind_of(v.check) == "env.nul"
    assert case_checks.kind_of("answered_cleanly[start/image.layer_is_dir]") == "image.layer_is_dir"


def test_end_judged_vm_kills_the_recorded_shim_once(tmp_path):
    import subprocess

    import psutil

    from harness.faults.base import FaultSet
    from harness.faults.shim import Proc
    from harness.scenario.steps import end_judged_vm
    proc = subprocess.Popen(["sleep", "30"])
    try:
        tree = [Proc(proc.pid, psutil.Process(proc.pid).create_time(), "sleep")]
        notes: list[dict] = []
        chaos = SimpleNamespace(inject=FaultSet().inject, note=lambda **kw: notes.append(kw))
        assert end_judged_vm(chaos, tmp_path, "box1", tree, "judged") is True
        # SIGKILLed: it ends as soon as the kernel runs its death (later under load); one
        # not killed sleeps past this wait.
        assert proc.wait(20) == -9
        assert notes == [{"ended_judged_vm": "box1", "judged": "judged"}]
        assert end_judged_vm(chaos, tmp_path, "box1", tree, "judged") is False
        assert end_judged_vm(chaos, tmp_path, "box1", None, "judged") is False
    finally:
        proc.kill()
        proc.wait()


def test_the_watch_finds_a_box_tree_through_procs_children_files(tmp_path):
    """watch_start's cheap listing finds the same tree as psutil's full scan: a shim under
    two levels of bwrap (here: sh under sh, the top named by shim.pid), and None without."""
    import subprocess

    import psutil

    from harness.faults.shim import box_tree, proc_children, shim_pid_file
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    shim = bin_dir / "boxlite-shim"           # argv[0] names it, as the runtime's does
    shim.symlink_to(shutil.which("sleep"))
    top = subprocess.Popen(["sh", "-c", f"sh -c '{shim} 30 & wait' & sleep 30 & wait"])
    try:
        pid_file = shim_pid_file(tmp_path, "box1")
        pid_file.parent.mkdir(parents=True)
        pid_file.write_text(f"{top.pid}\n")

        def agree():
            # Both listings once the four processes have forked and exec'd: under load a
            # listing taken mid-fork may see a child the other does not yet (a flake seen
            # once at load 40), so the two are compared only when both are whole. A listing
            # that misses a process never agrees, and the wait then fails.
            fast = box_tree(tmp_path, "box1", children=proc_children)
            full = box_tree(tmp_path, "box1")
            if not (fast and full and len(fast) == len(full) == 4):
                return None
            if sorted(fast, key=lambda p: p.pid) != sorted(full, key=lambda p: p.pid):
                return None
            kids = {p.pid for p in proc_children(psutil.Process(top.pid))}
            return fast if kids == {p.pid for p in psutil.Process(top.pid).children(
                recursive=True)} else None
        from harness.common.wait import wait_for
        fast = wait_for(agree, 30, "the fast and the full listing to agree on the fake "
                        "box's four processes")
        assert fast[0].pid == top.pid
        assert box_tree(tmp_path, "nobox", children=proc_children) is None
    finally:
        for p in psutil.Process(top.pid).children(recursive=True):
            p.kill()
        top.kill()
        top.wait()


@given(st.data())
@settings(max_examples=5, deadline=None, database=None,
          suppress_health_check=[HealthCheck.too_slow])
def test_answer_of_reports_what_the_call_did(data):
    host = SimpleNamespace(alive=data.draw(st.booleans()))
    from harness.common.errors import HostError
    from harness.runtime.host import RuntimeOpError
    _, ans = attempt.answer_of(host, lambda: 1, 5.0)
    assert ans["outcome"] == "ok"

    def refuse():
        raise RuntimeOpError("create", {"type": "ValueError", "message": "no", "mro": ["V"]})
    assert attempt.answer_of(host, refuse, 5.0)[1]["error"]["type"] == "ValueError"

    def lost():
        raise HostError("no reply")
    assert attempt.answer_of(host, lost, 5.0)[1]["outcome"] == (
        "no_reply" if host.alive else "host_died")


# -- every new check's violating case, for the meta-test in tests/test_checks.py --------------

VIOLATING: dict[str, Callable[[], Verdict]] = {
    "answered_cleanly": lambda: case_checks.answered_cleanly("start", answer("no_reply")),
    "runtime_did_not_crash": lambda: case_checks.runtime_did_not_crash([shim_exit(101)], True, ""),
    "case_processes_gone": lambda: case_checks.case_processes_gone(
        [{"pid": 7, "name": "bwrap"}], 1, 10.1, 10.0, 5),
    "names_unambiguous": lambda: case_checks.names_unambiguous([{"id": "a", "name": "x"},
                                                            {"id": "b", "name": "x"}]),
    "layer_contained": lambda: case_checks.layer_contained(["/tmp/hostile-escape-1-up1"], 8),
}


@pytest.mark.parametrize("name", sorted(VIOLATING))
def test_violating_case(name):
    v = VIOLATING[name]()
    assert v.status == VIOLATED, v
    assert v.check.split("[")[0] == name


@FAST
@given(seg=strategies.SEGMENT)
def test_a_path_segment_stays_one_segment(seg):
    assert seg not in ("", ".", "..") and "/" not in seg and "\x00" not in seg


# -- seeds: exploring runs write their findings out; pinned cases come back as examples -------

def test_an_exploring_run_writes_each_new_violation_once_ready_to_pin(tmp_path, monkeypatch):
    monkeypatch.setenv(seeds.EXPLORE_ENV, "1")
    r = runner([BAD])
    r.chaos.workdir = tmp_path / "scenarios" / "scen_hostile"
    case = strategies.HostileCase("env", "env.nul", {"env": [["A\x00B", "v"]]})
    for _ in range(2):
        with pytest.raises(hostile_runner.CaseFailed):
            r.run(case)
    lines = (tmp_path / seeds.FINDINGS).read_text().splitlines()
    assert len(lines) == 1
    found = json.loads(lines[0])
    assert (found["kind"], found["seed"], found["found"]) == ("env.nul", 7, [BAD.check])
    # Pinned, it comes back as an explicit example of its family.
    pinned = tmp_path / "pinned.jsonl"
    pinned.write_text("# a comment\n" + lines[0] + "\n")
    monkeypatch.setattr(seeds, "PINNED", pinned)
    (back,) = shards.pinned("env")
    assert (back.origin, back.options, back.key()) == ("pinned", case.options, case.key())
    assert shards.pinned("names") == []


def test_a_run_that_does_not_explore_writes_no_findings(tmp_path, monkeypatch):
    monkeypatch.delenv(seeds.EXPLORE_ENV, raising=False)
    r = runner([BAD])
    r.chaos.workdir = tmp_path / "scenarios" / "scen_hostile"
    with pytest.raises(hostile_runner.CaseFailed):
        r.run(strategies.HostileCase("env", "env.nul", {}))
    assert not (tmp_path / seeds.FINDINGS).exists()


@pytest.mark.parametrize("line, match", [("{not json", "line 1"),
                                         ('{"family": "env"}', "line 1"),
                                         ('{"family": "env", "kind": "env.bogus"}', "env.bogus")])
def test_a_bad_pinned_case_is_a_setup_error(tmp_path, monkeypatch, line, match):
    pinned = tmp_path / "pinned.jsonl"
    pinned.write_text(line + "\n")
    monkeypatch.setattr(seeds, "PINNED", pinned)
    with pytest.raises(SetupError, match=match):
        shards.pinned("env")


def test_the_committed_pinned_cases_load():
    for family in strategies.FAMILIES:
        shards.pinned(family)


@pytest.mark.parametrize("text, ok", [("0", True), ("20261129", True), (str(2**32 - 1), True),
                                      (str(2**32), False), ("-1", False), ("x", False),
                                      ("", False)])
def test_seeds_parse(text, ok, monkeypatch):
    if ok:
        assert seeds.parse_seed(text) == int(text)
        monkeypatch.setenv(seeds.SEED_ENV, text)
        assert seeds.run_seed() == int(text)
    else:
        with pytest.raises(SetupError, match="seed"):
            seeds.parse_seed(text)


def test_the_gate_seed_is_the_default(monkeypatch):
    monkeypatch.delenv(seeds.SEED_ENV, raising=False)
    assert seeds.run_seed() == seeds.GATE_SEED
