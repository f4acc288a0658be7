"""HAProxy in its own container (docs/docker.md): only HAProxy processes count as masters
(``adoption.running_masters``), a master pid synapse cannot see is not adopted
(``adoption.unseen``), and one living in another container outlives synapse
(``exit_policy.elsewhere``, ``stop_reason``). The layout itself: tests/system/docker/
test_docker_haproxy_container.py."""

from __future__ import annotations

from pathlib import Path

import pytest

from synapse.config import ManagedHAProxy as ManagedConfig
from synapse.haproxy import adoption, exit_policy
from synapse.haproxy.adoption import is_haproxy, running_masters, unseen
from synapse.haproxy.exit_policy import elsewhere, stop_reason

CFG, SOCK = "/var/lib/smartstack/haproxy.cfg", "/var/lib/smartstack/haproxy-master.sock"
HAPROXY = ["-W", "-db", "-S", f"{SOCK},mode,600", "-f", CFG]


def _process(proc: Path, pid: int, ppid: int, comm: str, args: list[str]) -> None:
    entry = proc / str(pid)
    entry.mkdir()
    (entry / "cmdline").write_bytes(b"\0".join(a.encode() for a in args) + b"\0")
    (entry / "comm").write_text(comm + "\n")
    (entry / "stat").write_text(f"{pid} ({comm}) S {ppid} {pid} {pid} 0 -1\n")


def test_an_init_or_shell_with_haproxy_s_arguments_is_no_master(tmp_path: Path) -> None:
    """tini (PID 1 of the HAProxy container) ran `tini -- haproxy ... -f cfg -S sock`: its
    command line matches and its child is a master; a reload's SIGUSR1 to it took HAProxy
    down (2,051 of 2,616 requests failed). Neither it nor a shell counts."""
    _process(tmp_path, 1, 0, "tini", ["tini", "--", "haproxy", *HAPROXY])
    _process(tmp_path, 5, 1, "sh", ["/bin/sh", "-c", "haproxy", *HAPROXY])
    _process(tmp_path, 7, 5, "haproxy", ["haproxy", *HAPROXY])
    _process(tmp_path, 9, 7, "haproxy", ["haproxy", *HAPROXY])
    _process(tmp_path, 12, 1, "python3.11", ["python3", "-m", "synapse"])
    assert running_masters(Path(CFG), Path(SOCK), tmp_path) == (7,)
    assert running_masters(Path(CFG), None, tmp_path) == (7,)


@pytest.mark.parametrize(
    ("comm", "haproxy"),
    [("haproxy\n", True), ("haproxy-new", True), ("hapee-lb", True), ("tini", False),
     ("sh", False), ("smartstack-entr", False), ("python3.11", False)],
)  # fmt: skip
def test_haproxy_is_known_by_its_name(comm: str, haproxy: bool) -> None:
    assert is_haproxy(comm) is haproxy


def test_a_master_pid_synapse_cannot_see_is_not_adopted(tmp_path: Path) -> None:
    """Separate PID namespaces: `show proc` gives HAProxy's own pid, which names nothing in
    synapse's namespace, or another process (synapse itself: a phantom crash loop, a second
    master started inside synapse's container)."""
    _process(tmp_path, 7, 1, "haproxy", ["haproxy", *HAPROXY])
    _process(tmp_path, 8, 1, "python3.11", ["python3", "-m", "synapse"])
    assert unseen(7, tmp_path) == ""
    assert unseen(None, tmp_path) == ""  # (no pid given: nothing to check)
    assert unseen(3, tmp_path).startswith("no pid 3 in synapse's PID namespace")
    assert "pid 8 in synapse's PID namespace is python3.11, not HAProxy" in unseen(8, tmp_path)
    assert 'pid: \\"service:haproxy\\"' not in unseen(8, tmp_path)
    assert 'pid: "service:haproxy"' in unseen(8, tmp_path)


@pytest.mark.parametrize(
    ("master", "ours", "its", "outlives"),
    [
        (1, "0::/\n", "0::/\n", True),  # PID 1 of the namespace synapse joined: its container's
        (31, "0::/\n", "0::/../a1b2\n", True),  # another container's cgroup (v2, private ns)
        (31, "4:memory:/docker/aaa\n", "4:memory:/docker/bbb\n", True),  # (v1)
        (31, "0::/\n", "0::/\n", False),  # synapse's child in its own container
        (31, "0::/system.slice/synapse.service\n", None, False),  # /proc does not say
    ],
)
def test_a_master_in_another_container_outlives_synapse(master, ours, its, outlives) -> None:
    assert elsewhere(master, ours, its) is outlives


def test_stop_on_exit_auto_leaves_a_master_of_another_container_serving(monkeypatch) -> None:
    """synapse is tini's child, PID 1 of its own namespace: its own HAProxy dies with it and
    is stopped; one in another container (a cgroup not synapse's) serves on."""
    monkeypatch.setattr("os.getpid", lambda: 7)
    monkeypatch.setattr("os.getppid", lambda: 1)
    monkeypatch.setattr(exit_policy, "init_name", lambda: "tini")
    cgroups = {"self": "0::/\n", "31": "0::/\n", "32": "0::/../other\n"}
    monkeypatch.setattr(exit_policy, "cgroup", cgroups.get)
    assert stop_reason(ManagedConfig(), 31) is not None  # its own child: stopped
    assert stop_reason(ManagedConfig(), 32) is None  # another container's: left serving
    assert stop_reason(ManagedConfig(stop_on_exit=True), 32) is not None  # (as it says)


def test_launch_false_never_stops_haproxy(monkeypatch) -> None:
    monkeypatch.setattr("os.getpid", lambda: 1)
    assert stop_reason(ManagedConfig(launch=False, stop_on_exit=True), 31) is None
    assert stop_reason(ManagedConfig(launch=False), None) is None
    assert ManagedConfig().launch is True


def test_a_binary_named_otherwise_counts_by_the_file_it_runs(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """managed.binary `lb -> /usr/sbin/haproxy`, or a build named `lb`: comm is the name
    executed, so by name alone a restarted synapse refused to adopt its own master (every
    reload failed after, review s28/cr-hapct). The file it runs (/proc/<pid>/exe) says."""
    monkeypatch.setattr(adoption, "_BINARIES", set())
    build = tmp_path / "opt" / "lb"
    build.parent.mkdir()
    build.write_text("#!/bin/sh\n")
    build.chmod(0o755)
    proc = tmp_path / "proc"
    proc.mkdir()
    for pid, exe in ((7, "/usr/sbin/haproxy"), (8, str(build)), (9, "/usr/bin/tini")):
        _process(proc, pid, 1, "lb" if pid != 9 else "tini", ["lb", *HAPROXY])
        (proc / str(pid) / "exe").symlink_to(exe)
    assert unseen(7, proc) == ""  # (a symlink to HAProxy: its file is HAProxy's)
    assert "is lb, not HAProxy" in unseen(8, proc)
    adoption.known_binary(str(build))  # (the controller's, from managed.binary)
    assert unseen(8, proc) == ""
    assert "is tini, not HAProxy" in unseen(9, proc)
