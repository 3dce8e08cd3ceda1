"""The machine facts each run folder records."""

from harness.session.facts import (
    kvm_provider,
    machine_facts,
    own_cgroup,
    under_systemd_user_manager,
)


def test_kvm_provider_reads_the_module_that_is_loaded(tmp_path):
    assert kvm_provider(tmp_path) is None
    (tmp_path / "kvm_pvm").mkdir()
    assert kvm_provider(tmp_path) == "kvm_pvm"


def test_own_cgroup_takes_the_unified_line():
    text = "12:cpu,cpuacct:/legacy\n0::/user.slice/user-1000.slice/user@1000.service/app.slice\n"
    assert own_cgroup(text) == "/user.slice/user-1000.slice/user@1000.service/app.slice"
    assert own_cgroup("0::/\n") == "/"


def test_a_systemd_user_manager_is_recognised_by_its_service():
    assert under_systemd_user_manager("/user.slice/user-1000.slice/user@1000.service/x.scope")
    assert not under_systemd_user_manager("/")
    assert not under_systemd_user_manager("/docker/abc/user@x")


def test_machine_facts_carry_the_runtime_identity():
    facts = machine_facts({"spec": "boxlite==0.10.8", "version": "0.10.8",
                           "wheel_sha256": "ab" * 32})
    assert facts["cores"] >= 1 and facts["memory_mib"] > 0
    assert facts["runtime"]["wheel_sha256"] == "ab" * 32
    assert set(facts) >= {"kernel", "kvm_provider", "cgroup", "systemd_user_manager"}


def test_the_harness_commit_is_read_from_its_checkout(tmp_path):
    from harness.session.facts import harness_commit
    assert harness_commit(tmp_path) is None              # not a checkout
    commit = harness_commit()
    assert commit is None or len(commit.removesuffix("-dirty")) >= 7
