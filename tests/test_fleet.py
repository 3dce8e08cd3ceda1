"""The fleet's parts without hosts: hosts and hosts files, shipments, shards, fingerprints,
the gate's arguments over hosts, the merge of shards, and the CLI's one-line errors."""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path

import pytest

from harness.common.errors import UsageError
from harness.jobs.fleet import gate as fleet_gate
from harness.jobs.fleet import hosts, loopback, merge, plugin, prepare, shard, soak, transport

PY = "/srv/bxc/.venv/bin/python"


# -- hosts ------------------------------------------------------------------------------------

def test_parse_tx_takes_counts_and_requires_a_remote_checkout() -> None:
    h = hosts.parse_tx(f"3*ssh=-p 2222 ci@gate-runner.example//python={PY}//chdir=/srv/bxc")
    assert (h.name, h.workers, h.remote) == ("ci@gate-runner.example", 3, True)
    assert h.tx().startswith("3*ssh=")
    assert not hosts.parse_tx("popen").remote
    with pytest.raises(UsageError, match="//python= and //chdir="):
        hosts.parse_tx("ssh=ci@h")
    with pytest.raises(UsageError, match="expected one of popen"):
        hosts.parse_tx("nonsense")
    with pytest.raises(UsageError, match="0 workers"):
        hosts.parse_tx("0*popen")


def test_host_name_prefers_the_name_key() -> None:
    import execnet
    assert hosts.host_name(execnet.XSpec(f"ssh=a@b//python={PY}//bxc_host=kvm-a")) == "kvm-a"
    assert hosts.host_name(execnet.XSpec("ssh=-p 22 a@b")) == "a@b"
    assert hosts.host_name(execnet.XSpec("popen")) == "local"


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "hosts.toml"
    path.write_text(text)
    return path


def test_hosts_file_turns_into_specs(tmp_path: Path) -> None:
    path = write(tmp_path, f'python = "{PY}"\nchdir = "/srv/bxc"\nworkers = 2\n\n'
                 '[[host]]\nname = "kvm-a"\nssh = "ci@gate-runner.example"\nport = 2201\n'
                 'identity = "/k/id"\nknown_hosts = "/k/kh"\n\n'
                 '[[host]]\nssh = "kvm-b"\nworkers = 1\nssh_config = "/k/cfg"\n')
    a, b = hosts.load_hosts_file(path)
    assert (a.name, a.workers, b.name, b.workers) == ("kvm-a", 2, "kvm-b", 1)
    assert "-p 2201" in a.spec and "-i /k/id" in a.spec and "UserKnownHostsFile=/k/kh" in a.spec
    assert "ServerAliveInterval=5" in a.spec and a.spec.endswith("//bxc_host=kvm-a")
    assert f"//python={PY}//chdir=/srv/bxc" in a.spec and "//ssh_config=/k/cfg" in b.spec
    assert hosts.parse_tx(a.tx()).name == "kvm-a"        # a valid --tx spec


@pytest.mark.parametrize(("text", "needle"), [
    ("[[host]]\nssh = 'a'\nchdir = '/x'\n", "no python"),
    (f"python = '{PY}'\nchdir = '/x'\n[[host]]\nssh = 'a'\nport = 0\n", "port = 0"),
    (f"python = '{PY}'\nchdir = '/x'\n[[host]]\nssh = 'a'\nworkers = 0\n", "workers = 0"),
    (f"python = '{PY}'\nchdir = '/x'\n[[host]]\nssh = 'a'\ncolour = 1\n", "unknown key"),
    (f"python = '{PY}'\nchdir = '/my dir'\n[[host]]\nssh = 'a'\n", "one word"),
    (f"python = '{PY}'\nchdir = '/x'\n[[host]]\nname = 'n'\n", "no ssh"),
    ("python = 1\n", "one or more [[host]]"),
    ("host = [\n", "not TOML"),
    ("bogus = 1\n[[host]]\nssh = 'a'\n", "unknown top-level"),
])
def test_bad_hosts_files_are_one_clear_error(tmp_path: Path, text: str, needle: str) -> None:
    with pytest.raises(UsageError) as exc:
        hosts.load_hosts_file(write(tmp_path, text))
    assert needle in str(exc.value)


def test_resolve_hosts_refuses_a_host_twice(tmp_path: Path) -> None:
    spec = f"ssh=a@b//python={PY}//chdir=/x"
    assert [h.name for h in hosts.resolve_hosts([spec, "popen", "popen"], None)] == \
        ["a@b", "local", "local"]
    with pytest.raises(UsageError, match="given twice"):
        hosts.resolve_hosts([spec, spec], None)
    with pytest.raises(UsageError, match="cannot be read"):
        hosts.resolve_hosts(None, str(tmp_path / "missing.toml"))


# -- shipments --------------------------------------------------------------------------------

def test_a_shipment_carries_results_and_files_back(tmp_path: Path) -> None:
    wd = tmp_path / "host" / "scenarios" / "s1"
    (wd / "artifacts").mkdir(parents=True)
    (wd / "history.jsonl").write_text('{"a": 1}\n')
    (wd / "artifacts" / "store.db").write_bytes(b"\0" * 100)
    line = {"nodeid": "scenarios/x.py::t", "outcome": "passed", "workdir": str(wd),
            "judgements": []}
    shipment = transport.pack(wd, [line], "kvm-a", limit=50)
    assert shipment["left_out"] == ["artifacts/store.db (100 bytes, over the 50 byte shipment)"]
    report = tmp_path / "report"
    [out] = transport.unpack(shipment, report)
    assert out["workdir"] == str(report / "scenarios" / "s1") and out["host"] == "kvm-a"
    assert (report / "scenarios" / "s1" / "history.jsonl").read_text() == '{"a": 1}\n'
    assert "store.db" in (report / "scenarios" / "s1" / "shipment-left-out.txt").read_text()
    assert line["workdir"] == str(wd)               # the worker's own line is untouched


@pytest.mark.parametrize("bad", ["../escape", "/etc/passwd", ""])
def test_a_shipment_cannot_write_outside_its_folder(tmp_path: Path, bad: str) -> None:
    with pytest.raises(ValueError):
        transport.unpack({"folder": "s", "files": {bad: b"x"}, "results": []}, tmp_path)
    with pytest.raises(ValueError):
        transport.unpack({"folder": "../s", "files": {}, "results": []}, tmp_path)


def test_results_for_picks_a_scenarios_lines(tmp_path: Path) -> None:
    path = tmp_path / "results.jsonl"
    path.write_text('{"nodeid": "a"}\nnot json\n{"nodeid": "b"}\n{"nodeid": "a", "n": 2}\n')
    assert transport.results_for(path, "a") == [{"nodeid": "a"}, {"nodeid": "a", "n": 2}]
    assert transport.results_for(tmp_path / "none", "a") == []


# -- shards -----------------------------------------------------------------------------------

def test_parse_shard() -> None:
    assert shard.parse_shard("2/3") == (2, 3)
    for bad in ("0/3", "4/3", "x", "1/0"):
        with pytest.raises(argparse.ArgumentTypeError):
            shard.parse_shard(bad)


def test_shares_are_balanced_complete_and_the_same_everywhere() -> None:
    ids = [f"scenarios/t.py::s{i}" for i in range(7)]
    table = {ids[0]: 90.0, ids[1]: 30.0, ids[2]: 30.0}       # the rest: 30 s (unknown)
    parts = shard.shares(ids, 3, table)
    assert sorted(sum(parts, [])) == sorted(ids)
    assert ids[0] in parts[0] and len(parts[0]) == 1        # the longest alone
    assert parts == shard.shares(list(ids), 3, table)
    assert shard.shard_of(ids, 1, 3, table) == parts[0]
    assert all(isinstance(v, float) for v in shard.committed_estimates().values())


# -- fingerprints, settings, arguments --------------------------------------------------------

def test_fingerprint_and_differences() -> None:
    mine = prepare.fingerprint()
    assert "harness/jobs/fleet/prepare.py" in mine and "pyproject.toml" in mine
    theirs = dict(mine)
    theirs["harness/cli.py"] = "0"
    del theirs["pyproject.toml"]
    theirs["extra.py"] = "1"
    assert prepare.differences(mine, theirs) == [
        "extra.py (only there)", "harness/cli.py", "pyproject.toml (only here)"]
    assert prepare.differences(mine, theirs, limit=1) == ["extra.py (only there)",
                                                          "... 2 more"]
    # Edited while the hosts were read: matching the later reading is the same checkout.
    assert prepare.differences(mine, theirs, also_mine=theirs) == []


def test_forwarded_env_keeps_machine_settings_home() -> None:
    env = {"BOXLITE_CHAOS_SEED": "5", "BOXLITE_CHAOS_CACHE": "/c", "BOXLITE_CHAOS_TMP": "/t",
           "BOXLITE_CHAOS_HOSTILE_EXAMPLES": "3", "HOME": "/root"}
    assert plugin.forwarded_env(env) == {"BOXLITE_CHAOS_SEED": "5",
                                         "BOXLITE_CHAOS_HOSTILE_EXAMPLES": "3"}


def test_gate_arguments_over_remote_hosts_name_no_existing_path() -> None:
    from harness.common.paths import PROJECT
    remote = hosts.parse_tx(f"2*ssh=a@b//python={PY}//chdir=/srv/bxc")
    target = str(PROJECT / "scenarios" / "init" / "test_retry_remove.py")
    argv = fleet_gate.pytest_arguments([target], [remote], (1, 2))
    assert argv[:2] == ["-p", fleet_gate.PLUGIN] and "--chaos-shard=1/2" in argv
    assert f"--tx={remote.tx()}" in argv
    assert "testpaths=scenarios/init/test_retry_remove.py" in argv
    # xdist would rewrite (and refuse) any argument that is an existing path here.
    assert not [a for a in argv if os.path.exists(a.split("::")[0])]
    local = fleet_gate.pytest_arguments([target], None, (2, 2))
    assert target in local and "testpaths=scenarios" in local


def test_soak_arguments_per_host() -> None:
    args = argparse.Namespace(runtime="boxlite==0.10.8", max_boxes=4, max_starting=2,
                              shrink_s=0.0, duration=None, cycles=3, replay=None, seed=None)
    argv = soak.soak_argv(args, 8)
    assert argv[-4:] == ["--cycles", "3", "--seed", "8"]
    with pytest.raises(UsageError, match="--replay"):
        soak.soak_argv(argparse.Namespace(**{**vars(args), "replay": "s.json"}), None)


def test_soak_collects_a_lost_host_as_unknown(tmp_path: Path) -> None:
    h = hosts.parse_tx(f"ssh=a@b//python={PY}//chdir=/x")
    line = soak.collect(tmp_path, h, {"error": "EOFError: gone"}, "boxlite==0.10.8")
    assert line["outcome"] == "unknown" and "host a@b was lost" in \
        line["judgements"][0]["summary"]
    assert json.loads((tmp_path / "results.jsonl").read_text())["host"] == "a@b"



def test_the_fleet_names_a_hosts_soak_as_the_soak_job_writes_it() -> None:
    """The fleet reads a host's soak from its files (the jobs do not import each other): the
    node id it looks for must be the one the soak job writes."""
    from harness.jobs.soak.model import NODE_ID
    assert soak.NODE_ID == NODE_ID


def test_soak_over_hosts_bad_input_is_one_line(tmp_path: Path) -> None:
    import subprocess
    import sys
    proc = subprocess.run([sys.executable, "-m", "harness.cli", "soak", "--cycles", "1",
                           "--tx", "nonsense", "--report", str(tmp_path / "r")],
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert "expected one of popen" in proc.stderr, proc.stderr


# -- merge ------------------------------------------------------------------------------------

def shard_folder(tmp: Path, k: int, n: int, results: list[dict], collected: list[str],
                 finished: list[str]) -> Path:
    folder = tmp / f"shard-{k}"
    (folder / "scenarios" / f"s{k}").mkdir(parents=True)
    (folder / "scenarios" / f"s{k}" / "history.jsonl").write_text("")
    (folder / "results.jsonl").write_text("".join(json.dumps(r) + "\n" for r in results))
    (folder / plugin.SHARD_FILE).write_text(json.dumps(
        {"shard": [k, n], "collected": collected, "finished": finished}))
    (folder / "junit.xml").write_text("<testsuites/>")
    return folder


def result(nodeid: str, outcome: str, workdir: str | None = None) -> dict:
    return {"nodeid": nodeid, "outcome": outcome, "duration_s": 1.0, "runtime": "r",
            "runtime_version": "v", "workdir": workdir, "judgements": []}


def test_merge_joins_shards_and_fails_on_what_is_missing(tmp_path: Path) -> None:
    a = shard_folder(tmp_path, 1, 3, [result("scenarios/a.py::t", "passed", "/x/s1")],
                     ["scenarios/a.py::t", "scenarios/a.py::u"], ["scenarios/a.py::t"])
    b = shard_folder(tmp_path, 2, 3, [result("scenarios/b.py::t", "passed", "/y/s2")],
                     ["scenarios/b.py::t", "scenarios/b.py::skipped"],
                     ["scenarios/b.py::t", "scenarios/b.py::skipped"])
    out = tmp_path / "merged"
    res = merge.merge(out, [a, b])
    assert res["missing"] == [3] and res["merged"] == [1, 2]
    assert sorted(res["failing"]) == ["scenarios/a.py::u", "shard 3/3"]
    lines = {r["nodeid"]: r for r in map(json.loads,
                                         (out / "results.jsonl").read_text().splitlines())}
    assert lines["scenarios/a.py::t"]["workdir"] == str(out / "scenarios" / "s1")
    assert "shard 1/3's run ended" in lines["scenarios/a.py::u"]["judgements"][0]["summary"]
    assert (out / "junit-1.xml").is_file() and (out / "report.html").is_file()
    assert merge.main([str(tmp_path / "again"), str(a), str(b)]) == 1


def test_merge_refuses_what_is_not_a_shard(tmp_path: Path) -> None:
    with pytest.raises(UsageError, match="not a shard"):
        merge.merge(tmp_path / "out", [tmp_path])
    a = shard_folder(tmp_path, 1, 2, [], [], [])
    with pytest.raises(UsageError, match="given twice"):
        merge.merge(tmp_path / "out", [a, a])


def test_merge_passes_when_every_shard_passed(tmp_path: Path, capsys) -> None:
    a = shard_folder(tmp_path, 1, 2, [result("scenarios/a.py::t", "passed")],
                     ["scenarios/a.py::t"], ["scenarios/a.py::t"])
    b = shard_folder(tmp_path, 2, 2, [], [], [])
    assert merge.main([str(tmp_path / "out"), str(a), str(b)]) == 0
    assert "merged shards [1, 2] of 2" in capsys.readouterr().out


# -- loopback helpers -------------------------------------------------------------------------

def test_loopback_helpers() -> None:
    why = loopback.missing()
    assert why is None or isinstance(why, str)
    port = loopback.free_port()
    assert 0 < port < 65536
    assert loopback.pid_namespace(os.getpid()) is not None
    assert loopback.pid_namespace(2**22 + 12345) is None
    assert all(isinstance(p, str) for p in loopback.carried())


# -- the command line -------------------------------------------------------------------------

def run_gate(tmp_path: Path, *args: str):
    import subprocess
    import sys
    env = {**os.environ, "BOXLITE_CHAOS_KVM": "/nonexistent/kvm",
           "BOXLITE_CHAOS_CACHE": str(tmp_path / "cache"), "PYTEST_ADDOPTS": "--collect-only"}
    env.pop("BOXLITE_CHAOS_REPORT", None)
    return subprocess.run([sys.executable, "-m", "harness.cli", "gate",
                           "--report", str(tmp_path / "r"), *args], capture_output=True,
                          text=True, env=env, cwd=tmp_path, timeout=60)


@pytest.mark.parametrize(("args", "needle"), [
    (["--tx", "nonsense"], "expected one of popen"),
    (["--tx", "ssh=ci@h"], "//python= and //chdir="),
    (["--hosts", "missing.toml"], "cannot be read"),
    (["--tx", "popen", "--repeat", "2"], "--repeat runs on this machine only"),
])
def test_gate_over_hosts_bad_input_is_one_line(tmp_path: Path, args: list[str],
                                              needle: str) -> None:
    proc = run_gate(tmp_path, *args)
    assert proc.returncode == 2, proc
    assert "Traceback" not in proc.stdout + proc.stderr
    lines = [x for x in proc.stderr.splitlines() if x.strip()]
    assert len(lines) == 1 and lines[0].startswith("boxlite-chaos: error: ") and \
        needle in lines[0], proc.stderr
    assert not (tmp_path / "r").exists()


def test_gate_shard_is_checked_by_argparse(tmp_path: Path) -> None:
    proc = run_gate(tmp_path, "--shard", "4/3")
    assert proc.returncode == 2 and "is not a shard" in proc.stderr


def test_a_checkout_under_a_covered_folder_is_carried_into_the_host(tmp_path):
    """A checkout in /tmp (a CI clone) stays readable inside the host's private /tmp."""
    from harness.jobs.fleet.loopback import carried
    assert str(tmp_path.resolve()) in carried(tmp_path)
    assert "/srv/checkout" not in carried(Path("/srv/checkout"))
