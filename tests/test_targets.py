"""Self-tests of the target seam (harness/targets): each pattern check holding, violated and
unknown; a stop run's measurements as verdicts; the private dockerd's command line, folder,
mounts and cgroups; the conformance matrix and its CLI. And one real check of the harness's
safety promise: a dockerd killed with SIGKILL mid-run, containers and all, is gone after the
target's teardown, with every mount it made (skipped where dockerd cannot run)."""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import subprocess
import tempfile
from collections.abc import Callable
from pathlib import Path

import pytest

from harness.common.errors import SpecError
from harness.common.procs import alive
from harness.faults.shim import Proc
from harness.jobs.conformance import matrix as conformance
from harness.judge.checks import HOLDS, UNKNOWN, VIOLATED, Verdict
from harness.leftovers.mounts import mounts_under, unmount_under
from harness.observe.processes import ProcRecord
from harness.runtime.spec import DEFAULT_SPEC
from harness.targets import pattern
from harness.targets.base import RecordView
from harness.targets.dockerd import (
    LONGEST_SOCKET,
    PRIVATE_MOUNTS,
    SOCKET_MAX,
    DockerDaemon,
    cgroup_dirs,
    daemon_root,
    shim_socket,
)
from harness.targets.scenario import DAEMON_EXIT_GRACE_S, StopRun, _ppid_at

DOCKER_ERROR = ('failed to create shim task: OCI runtime create failed: runc create failed: '
                'unable to start container process: exec: "/nonexistent/entrypoint": stat '
                '/nonexistent/entrypoint: no such file or directory: unknown')
BOXLITE_ERROR = "engine reported an error: The VM failed to start."


def inspect(status: str = "created", error: str | None = DOCKER_ERROR, present: bool = True,
            failed: bool | None = True, read_error: str | None = None,
            path: str = "after_failed_start.inspect", transitional: bool = False) -> RecordView:
    """A read through a path that shows errors (docker inspect, the BoxLite store)."""
    return RecordView(path, present, status if present else None, failed if present else None,
                      error, True, transitional, read_error)


def listing(status: str = "created", present: bool = True,
            path: str = "after_failed_start.list") -> RecordView:
    """A read through a path that cannot tell a failed record from another (docker ps)."""
    return RecordView(path, present, status if present else None)


def shim(pid: int = 77) -> dict:
    return {"pid": pid, "name": "containerd-shim-runc-v2", "create_time": 1.0}


# -- pattern_failed_record ------------------------------------------------------------------

@pytest.mark.parametrize("read", [inspect(), inspect("failed", BOXLITE_ERROR, path="x.store"),
                                  listing()])
def test_failed_record_holds(read):
    v = pattern.failed_record(read)
    assert v.status == HOLDS, v.summary
    assert v.check == f"pattern_failed_record[{read.path}]"


@pytest.mark.parametrize("read, words", [
    (inspect(present=False), "no record"),
    (listing(present=False), "no record"),
    (inspect("configured", None, failed=False), "'configured'"),     # BoxLite's stale get_info
    (inspect(error="   "), "without an error"),
    (inspect(error=None), "without an error"),
    (inspect("restarting", transitional=True), "stuck"),
])
def test_failed_record_violated(read, words):
    v = pattern.failed_record(read)
    assert v.status == VIOLATED
    assert words in v.summary


def test_failed_record_unknown_when_the_path_could_not_be_read():
    v = pattern.failed_record(inspect(read_error="ConnectionError: daemon gone"))
    assert v.status == UNKNOWN


# -- pattern_record_survives_restart --------------------------------------------------------

def test_record_survives_restart_holds():
    after = inspect(path="after_restart.inspect")
    assert pattern.record_survives_restart(after, True, DOCKER_ERROR).status == HOLDS
    # A start the daemon's death cut short: any settled status will do.
    assert pattern.record_survives_restart(listing("exited"), False, None).status == HOLDS


@pytest.mark.parametrize("after, words", [
    (inspect(present=False), "gone"),
    (inspect("configured", None, failed=False), "was failed, now 'configured'"),
    (inspect(error="another error"), "error changed"),
    (inspect(error=""), "error changed"),
    (inspect("removing", transitional=True), "stuck"),
])
def test_record_survives_restart_violated(after, words):
    v = pattern.record_survives_restart(after, True, DOCKER_ERROR)
    assert v.status == VIOLATED
    assert words in v.summary


def test_record_survives_restart_unknown_when_unreadable():
    assert pattern.record_survives_restart(inspect(read_error="x"), True, "e").status == UNKNOWN


# -- pattern_no_leaked_helpers --------------------------------------------------------------

def test_no_leaked_helpers_holds():
    v = pattern.no_leaked_helpers({"c1": [], "c2": []}, observed=3, bound_s=10.0)
    assert v.status == HOLDS, v.summary


def test_no_leaked_helpers_violated_by_a_live_shim():
    v = pattern.no_leaked_helpers({"c1": [], "c2": [shim()]}, observed=3, bound_s=10.0)
    assert v.status == VIOLATED
    assert "containerd-shim-runc-v2[77]" in v.summary and list(v.evidence["left"]) == ["c2"]


def test_no_leaked_helpers_unknown_when_no_helper_was_ever_seen():
    assert pattern.no_leaked_helpers({"c1": []}, observed=0, bound_s=10.0).status == UNKNOWN


# -- target_cleaned_up ----------------------------------------------------------------------

def test_target_cleaned_up_holds():
    assert pattern.target_cleaned_up([], [], observed=4).status == HOLDS


@pytest.mark.parametrize("procs, mounts", [([shim()], []), ([], ["/run/x/data/overlay2/m"])])
def test_target_cleaned_up_violated(procs, mounts):
    assert pattern.target_cleaned_up(procs, mounts, observed=4).status == VIOLATED


def test_target_cleaned_up_unknown_without_a_daemon_seen():
    assert pattern.target_cleaned_up([], [], observed=0).status == UNKNOWN


# -- rows of the matrix ---------------------------------------------------------------------

@pytest.mark.parametrize("check_id, row", [
    ("pattern_failed_record[after_failed_start.live.get_info]", "failed_record"),
    ("within_bound[daemon_exit_after_sigterm]", "sigterm_stop"),
    ("runtime_gone_within[daemon_exit]", "sigterm_stop"),
    ("no_zombies", "no_zombies"),
    ("target_cleaned_up", "cleaned_up"),
    ("within_bound[host_exit_after_sigterm]", None),
    ("op_failed_cleanly[start]", None),
])
def test_row_of(check_id, row):
    assert pattern.row_of(check_id) == row


# -- a stop run as verdicts -----------------------------------------------------------------

def stopped(exit_s, *ends) -> StopRun:
    return StopRun("SIGTERM", exit_s, [{"pid": i, "name": f"p{i}", "kind": "shim",
                                        "ended_s": e} for i, e in enumerate(ends, 1)])


def test_stop_run_holds_when_everything_ends_with_the_daemon():
    vs = stopped(11.1, 11.0, 11.1 + DAEMON_EXIT_GRACE_S / 2).verdicts()
    assert [v.check for v in vs] == ["within_bound[daemon_exit_after_sigterm]",
                                     "runtime_gone_within[sigterm]",
                                     "runtime_gone_within[daemon_exit]"]
    assert all(v.status == HOLDS for v in vs), [v.summary for v in vs]


def test_stop_run_violated_by_a_process_outliving_the_daemon():
    vs = {v.check: v.status for v in stopped(2.0, 1.0, 5.0).verdicts()}
    assert vs["runtime_gone_within[sigterm]"] == HOLDS            # within 60 s of the signal
    assert vs["runtime_gone_within[daemon_exit]"] == VIOLATED     # but 3 s after the exit


def test_stop_run_violated_by_a_daemon_that_never_exits():
    vs = {v.check: v.status for v in stopped(None, 1.0, None).verdicts()}
    assert vs["within_bound[daemon_exit_after_sigterm]"] == VIOLATED
    assert vs["runtime_gone_within[sigterm]"] == VIOLATED


def test_zombie_parent_is_the_one_it_had_when_it_became_one():
    rec = ProcRecord(9, 1.0, "exe", 100, "", 0.0, 3.0)
    rec.ppids = [(0.0, 100), (2.5, 4242)]                  # re-parented after its parent died
    assert _ppid_at(rec, 1.0) == 100
    assert _ppid_at(rec, 2.6) == 4242


# -- the private dockerd ----------------------------------------------------------------------

def test_dockerd_listens_only_on_its_own_socket(dockerd_root):
    root = dockerd_root
    d = DockerDaemon(root)
    argv = d.argv()
    hosts = [argv[i + 1] for i, a in enumerate(argv) if a == "-H"]
    assert hosts == [f"unix://{root}/docker.sock"]
    assert not any("tcp://" in a or a.startswith("--tls") for a in argv)
    for flag in ("--bridge=none", "--iptables=false", "--ip6tables=false", "--ip-forward=false"):
        assert flag in argv
    for flag in ("--data-root", "--exec-root", "--pidfile", "--config-file"):
        assert argv[argv.index(flag) + 1].startswith(str(root) + "/"), flag
    assert "--storage-driver" not in argv
    # Its mounts stay in a namespace of its own (none of the daemon's state runs yet).
    assert argv[:argv.index("dockerd")] == list(PRIVATE_MOUNTS)
    assert DockerDaemon(root, "vfs").argv()[-2:] == ["--storage-driver", "vfs"]


def test_a_tmp_daemon_root_ends_in_the_report_not_in_tmp(tmp_path):
    """A daemon folder that had to be made under /tmp (the report's path too long for its
    sockets) goes at close: what it kept (the log, the config) moves to the report's symlink
    (seen: 28 chaos-dockerd-* folders left in /tmp by conformance runs of long report paths)."""
    from harness.leftovers.markers import MARKER
    from harness.targets.base import keep_with_report
    fake_tmp = tmp_path / "tmp"
    root = fake_tmp / "chaos-dockerd-1-1"
    (root / "tmp").mkdir(parents=True)
    (root / "dockerd.log").write_text("level=info msg=started\n")
    (root / "daemon.json").write_text("{}")
    (root / MARKER).write_text("{}")
    link = tmp_path / "scenario" / "dockerd"
    link.parent.mkdir()
    link.symlink_to(root)
    assert keep_with_report(root, link, tmp=fake_tmp) == link
    assert not root.exists() and not link.is_symlink() and link.is_dir()
    assert (link / "dockerd.log").read_text() == "level=info msg=started\n"
    assert sorted(p.name for p in link.iterdir()) == ["daemon.json", "dockerd.log", "tmp"]
    # A folder in the report already, or a link that is not its own: nothing moves.
    inside = tmp_path / "report" / "dockerd" / "1-2"
    inside.mkdir(parents=True)
    other = tmp_path / "scenario" / "other"
    other.symlink_to(inside)
    assert keep_with_report(inside, other, tmp=fake_tmp) is None and other.is_symlink()
    root2 = fake_tmp / "chaos-dockerd-1-3"
    root2.mkdir()
    assert keep_with_report(root2, other, tmp=fake_tmp) is None and root2.is_dir()


def test_daemon_root_is_short_enough_for_its_sockets(tmp_path):
    parent = Path(tempfile.mkdtemp(prefix="t-", dir="/tmp"))
    try:
        short = daemon_root(parent)
        assert short.parent == parent and short.is_dir()
    finally:
        shutil.rmtree(parent)
    fallback = daemon_root(tmp_path / ("x" * 90))
    try:
        assert fallback.parent == Path("/tmp")
        assert len(str(fallback / LONGEST_SOCKET)) <= SOCKET_MAX
    finally:
        shutil.rmtree(fallback)


MOUNTINFO = """\
22 1 254:0 / / rw,relatime shared:1 - ext4 /dev/vda rw
44 22 254:0 /run/r/data /run/r/data rw,relatime shared:1 - ext4 /dev/vda rw
48 44 0:51 / /run/r/data/overlay2/abc/merged rw - overlay overlay rw,lowerdir=/x
49 22 0:52 / /run/r/data\\040two rw - tmpfs tmpfs rw
172 27 0:4 net:[4026532191] /run/r/exec/netns/4bf7 rw - nsfs nsfs rw
173 22 0:53 / /run/rr/data rw - tmpfs tmpfs rw
"""


def test_mounts_under_finds_the_daemons_mounts_only():
    assert mounts_under(Path("/run/r"), MOUNTINFO) == [
        "/run/r/data", "/run/r/data/overlay2/abc/merged", "/run/r/data two",
        "/run/r/exec/netns/4bf7"]
    assert mounts_under(Path("/run/q"), MOUNTINFO) == []


@pytest.mark.skipif(os.geteuid() != 0, reason="mounting needs root")
def test_unmount_under_undoes_stacked_and_nested_mounts(tmp_path):
    outer = tmp_path / "data"
    inner = outer / "overlay2" / "merged"
    outer.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "chaos-test", str(outer)], check=True)
    inner.mkdir(parents=True)
    subprocess.run(["mount", "-t", "tmpfs", "chaos-test", str(inner)], check=True)
    subprocess.run(["mount", "-t", "tmpfs", "chaos-test", str(outer)], check=True)   # stacked
    try:
        assert len(mounts_under(tmp_path.resolve())) == 3
        done = unmount_under(tmp_path.resolve())
        assert all(d["error"] is None for d in done), done
        assert mounts_under(tmp_path.resolve()) == []
    finally:
        for _ in range(3):
            subprocess.run(["umount", "-l", str(outer)], capture_output=True)


def test_cgroup_dirs_sit_under_the_harness_cgroup_in_each_hierarchy(tmp_path):
    for name in ("memory", "cpu", "systemd", "unified"):
        (tmp_path / name).mkdir()
    proc_cgroup = ("9:name=systemd:/\n4:memory:/process_api/abc\n1:cpu:/\n0::/\n")
    dirs = cgroup_dirs("boxlite-chaos-1-1", proc_cgroup, tmp_path)
    assert sorted(str(d.relative_to(tmp_path)) for d in dirs) == [
        "cpu/boxlite-chaos-1-1", "memory/process_api/abc/boxlite-chaos-1-1",
        "systemd/boxlite-chaos-1-1", "unified/boxlite-chaos-1-1"]
    v2 = cgroup_dirs("p", "0::/user.slice/x\n", tmp_path)
    assert {str(d.relative_to(tmp_path)) for d in v2} >= {"unified/user.slice/x/p"}


def test_a_killed_dockerd_leaves_nothing_after_teardown(dockerd_root, docker_target):
    """The worst case for the fixture: dockerd SIGKILLed with a container running leaves
    containerd, a shim, the container, its overlay and netns mounts. The teardown must end
    them all (by pid and start time) and unmount everything under the daemon's folder."""
    root, target = dockerd_root, docker_target
    try:
        iid = target.create("victim")
        assert target.start(iid, 60).error is None
        target.helpers(iid)
        target.family()
        # A running container has mounts under the daemon's folder, in its namespace only.
        assert target.daemon.mounts() and not mounts_under(root)
        target.signal_daemon(signal.SIGKILL)
        assert target.wait_daemon_exit(30) is not None
        assert any(alive(p) for p in target.family_seen), "the shim and container run on"
    finally:
        cleanup = target.close()
    assert cleanup.left_by_daemon["processes"], cleanup.left_by_daemon
    assert cleanup.processes_left == [] and cleanup.mounts_left == []
    assert not any(alive(p) for p in target.family_seen)
    assert mounts_under(root) == []
    assert (root / "key.json").is_file(), "the trust key stays in the daemon's folder"
    # The SIGKILLed shim's socket (in containerd's shared folder) went with it.
    assert cleanup.notes["shim_sockets_removed"]
    assert not any(shim_socket(target.daemon.exec_root, i).exists() for i in target.created)
    v = pattern.target_cleaned_up(cleanup.processes_left, cleanup.mounts_left,
                                  cleanup.observed)
    assert v.status == HOLDS, v.summary


# -- the conformance matrix -------------------------------------------------------------------

def row(target: str, label: str, *judgements: tuple[str, str, str | None]) -> dict:
    return {"nodeid": "scenarios/conformance/test_pattern.py::t", "target": target,
            "label": label, "version": label.split()[-1],
            "judgements": [{"check": c, "status": s, "summary": f"{c} {s}",
                            "known_failure": k, "outcome": "pass"} for c, s, k in judgements]}


def write_rows(folder: Path, *rows: dict) -> None:
    folder.mkdir(parents=True)
    (folder / "conformance.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))


def test_matrix_cells_from_every_verdict_of_their_row(tmp_path):
    docker = conformance.Column("docker", None)
    new, old = conformance.Column("boxlite", "boxlite==0.10.8"), \
        conformance.Column("boxlite", "boxlite==0.9.4")
    write_rows(tmp_path / "docker", row("docker", "docker 20.10.24",
               ("pattern_failed_record[a.inspect]", HOLDS, None),
               ("pattern_failed_record[a.list]", HOLDS, None),
               ("pattern_no_leaked_helpers", VIOLATED, None),
               ("no_zombies", HOLDS, None)))
    write_rows(tmp_path / "new", row("boxlite", "boxlite==0.10.8",
               ("pattern_failed_record[a.get_info]", VIOLATED, "live-get-info"),
               ("pattern_failed_record[a.store]", HOLDS, None),
               ("no_zombies", UNKNOWN, None), ("op_failed_cleanly[start]", HOLDS, None)))
    write_rows(tmp_path / "old", {"nodeid": "n", "target": "boxlite", "label": "boxlite==0.9.4",
                                  "skipped": "boxlite: needs a local registry"})
    m = conformance.build_matrix([
        (docker, {"folder": str(tmp_path / "docker"), "returncode": 1}),
        (new, {"folder": str(tmp_path / "new"), "returncode": 1}),
        (old, {"folder": str(tmp_path / "old"), "returncode": 0})])
    cells = {r["key"]: r["cells"] for r in m["rows"]}
    assert [c["label"] for c in m["columns"]] == ["docker 20.10.24", "boxlite==0.10.8",
                                                  "boxlite==0.9.4"]
    assert cells["failed_record"]["docker"]["status"] == HOLDS
    assert cells["failed_record"]["boxlite==0.10.8"]["status"] == VIOLATED
    assert cells["failed_record"]["boxlite==0.10.8"]["known"] == ["live-get-info"]
    assert cells["no_leaked_helpers"]["docker"]["status"] == VIOLATED
    assert cells["no_zombies"]["boxlite==0.10.8"]["status"] == UNKNOWN
    # Nothing judged: unknown, saying why (the skip's reason, else how the run ended).
    assert cells["failed_record"]["boxlite==0.9.4"] | {} == {
        "status": UNKNOWN, "summary": "boxlite: needs a local registry", "known": [],
        "verdicts": 0}
    assert cells["sigterm_stop"]["docker"]["status"] == UNKNOWN
    assert "no scenario judged this" in cells["sigterm_stop"]["docker"]["summary"]
    text = conformance.render(m)
    assert "violated (known)" in text and "boxlite==0.9.4: unknown" in text


def test_a_torn_rows_file_still_makes_a_matrix(tmp_path):
    (tmp_path / "d").mkdir()
    (tmp_path / "d" / "conformance.jsonl").write_text('{"nodeid": "x", "targ')
    m = conformance.build_matrix([(conformance.Column("docker", None),
                                   {"folder": str(tmp_path / "d"), "returncode": None,
                                    "error": "the column's run passed its 10s limit"})])
    assert m["rows"][0]["cells"]["docker"]["summary"] == "the column's run passed its 10s limit"


def test_columns_docker_first_default_once_and_specs_checked():
    cols = conformance.columns([DEFAULT_SPEC, "boxlite==0.9.4"])
    assert [c.name for c in cols] == ["docker", DEFAULT_SPEC, "boxlite==0.9.4"]
    assert [c.name for c in conformance.columns([], docker=False)] == [DEFAULT_SPEC]
    with pytest.raises(SpecError):
        conformance.columns(["boxlite=0.9.4"])


def test_conformance_parser():
    p = argparse.ArgumentParser()
    conformance.add_parser(p.add_subparsers(dest="cmd"))
    a = p.parse_args(["conformance", "--runtime", "boxlite==0.9.4", "--runtime", "wheel:x.whl",
                      "--no-docker"])
    assert a.runtime == ["boxlite==0.9.4", "wheel:x.whl"] and a.no_docker and callable(a.fn)
    d = p.parse_args(["conformance"])
    assert d.runtime == [] and not d.no_docker and not d.no_default


def test_a_column_that_cannot_run_says_why(tmp_path, monkeypatch):
    """A column whose pytest run breaks (here: a scenario folder that is not there) becomes
    a column of unknowns carrying the run's last words, and the next column still runs."""
    monkeypatch.setattr(conformance, "SCENARIOS", tmp_path / "missing")
    col = conformance.Column("boxlite", "boxlite==0.9.4")
    run = conformance.run_column(col, tmp_path, timeout_s=120)
    assert run["returncode"] not in (0, None)
    m = conformance.build_matrix([(col, run)])
    c = m["rows"][0]["cells"]["boxlite==0.9.4"]
    assert c["status"] == UNKNOWN and "no scenario judged this" in c["summary"]


# -- every target check's violating case (tests/test_checks.py collects VIOLATING from here
# for its meta-test) ---------------------------------------------------------------------

VIOLATING: dict[str, Callable[[], Verdict]] = {
    "pattern_failed_record": lambda: pattern.failed_record(inspect(present=False)),
    "pattern_record_survives_restart": lambda: pattern.record_survives_restart(
        inspect("configured", None, failed=False), True, BOXLITE_ERROR),
    "pattern_no_leaked_helpers": lambda: pattern.no_leaked_helpers({"c": [shim()]}, 1, 10.0),
    "target_cleaned_up": lambda: pattern.target_cleaned_up([], ["/run/r/data"], 2),
}


@pytest.mark.parametrize("name", sorted(VIOLATING))
def test_violating_case(name):
    v = VIOLATING[name]()
    assert v.status == VIOLATED, v
    assert v.check.split("[")[0] == name


def test_proc_identity_is_pid_and_start_time():
    me = Proc(os.getpid(), 0.0, "python")            # a start time that is not ours
    assert not alive(me)
