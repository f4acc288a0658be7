"""The open files `global` lines make a managed HAProxy 2.6 insist on, against what the host
lets it have: `haproxy -c` never sets the limit, so `maxconn 100000` under a hard limit of
20000 passed ``synapse -k`` and the HAProxy synapse started never came up ("Cannot raise FD
limit to 200068, limit is 20000"). A lower bound: a config HAProxy accepts is never refused."""

from __future__ import annotations

import resource
import struct
from pathlib import Path

import pytest
from haproxy_helpers import haproxy_config

from synapse import preflight
from synapse.config import SynapseConfig
from synapse.haproxy import fd_limit
from synapse.haproxy.fd_limit import (
    cap_effective,
    fd_need,
    fd_problem,
    file_caps_permit,
    host_limit,
)

HARD_20000 = host_limit(20000, 1048576, may_raise=False)


@pytest.mark.parametrize(
    ("lines", "need"),
    [
        ([], None),
        (["daemon", "log stdout local0"], None),
        (["maxconn 100000"], 200013),  # HAProxy said 200068: 2 * 100000 + its own, listeners
        (["maxconn 256", "nbthread 4"], 512 + 10 + 12),
        (["ulimit-n 65536", "maxconn 256"], 65536),
        (["maxconn 100  # few", "maxconn 900000"], 213),  # the first counts, as in HAProxy
        (["maxconn 100000", "no strict-limits"], None),  # HAProxy warns and runs
        # (HAProxy 2.6: `no strict-limits` wins whatever the order of the lines)
        (["no strict-limits", "strict-limits", "ulimit-n 30000"], None),
        (["strict-limits", "ulimit-n 30000", "no strict-limits # late"], None),
        # ulimit-n does not lift maxconn's need: "FD limit (20000) too low for
        # maxconn=15000/maxsock=30067" (review s31)
        (["ulimit-n 12000", "maxconn 15000"], 30013),
        (['maxconn "15000"'], 30013),
        (["maxconn ${MAXCONN}"], None),  # (HAProxy's environment, not ours)
        (["maxconn x"], None),  # (haproxy -c's to refuse)
    ],
)
def test_the_need_of_the_global_lines(lines, need):
    found = fd_need(lines)
    assert (found.need if found else None) == need


def test_the_limit_is_the_hard_one_unless_haproxy_may_raise_it():
    assert host_limit(20000, 1048576, may_raise=False).limit == 20000
    assert host_limit(20000, 1048576, may_raise=True).limit == 1048576
    assert host_limit(resource.RLIM_INFINITY, 1048576, may_raise=False).limit == 1048576
    assert "nr_open" in host_limit(20000, 1048576, may_raise=True).raise_it


def test_capabilities_read_from_proc_and_from_the_binary():
    assert cap_effective("Name:\tx\nCapEff:\t000001fffeffffff\n") & (1 << 24) == 0  # (here)
    assert cap_effective("CapEff:\t000001ffffffffff\n") & (1 << 24)
    assert cap_effective("") == 0
    assert file_caps_permit(struct.pack("<IIIII", 0x02000000, 1 << 24, 0, 0, 0))
    assert not file_caps_permit(struct.pack("<IIIII", 0x02000000, 1 << 10, 0, 0, 0))
    assert not file_caps_permit(b"")


def test_the_error_names_the_line_the_need_the_limit_and_the_fix():
    line = fd_problem("s.yaml: haproxy", ["log stdout local0", "maxconn 100000"], HARD_20000)
    assert line is not None
    assert line.startswith("s.yaml: haproxy.global[1]: `maxconn 100000`: ")
    assert "at least 200013" in line and "this host allows 20000" in line
    assert line.endswith("lower maxconn, or raise LimitNOFILE / ulimit -Hn")
    line = fd_problem("s.yaml: haproxy", ["ulimit-n 65536"], HARD_20000)
    assert line is not None and line.endswith("lower ulimit-n, or raise LimitNOFILE / ulimit -Hn")


@pytest.mark.parametrize(
    "lines",
    [
        ["maxconn 9993"],
        ["ulimit-n 20000"],
        ["maxconn 100000", "no strict-limits"],
        ["no strict-limits", "maxconn 100000", "strict-limits"],
        ["ulimit-n 12000", "maxconn 9000"],
    ],
)
def test_what_fits_is_accepted(lines):
    assert fd_problem("s.yaml: haproxy", lines, HARD_20000) is None


def _config(tmp_path: Path, global_: list[str], **managed) -> SynapseConfig:
    hap = haproxy_config(
        config_file_path=str(tmp_path / "haproxy.cfg"),
        reload_command=None,
        managed={"stop_on_exit": True, **managed},
        **{"global": global_},
    )
    return SynapseConfig.model_validate({"services": {}, "haproxy": hap.model_dump(by_alias=True)})


@pytest.fixture
def host_20000(monkeypatch):
    monkeypatch.setattr(fd_limit, "this_host", lambda binary: HARD_20000)


def test_a_sighup_adding_such_a_line_is_refused(tmp_path: Path, host_20000):
    old = _config(tmp_path, ["maxconn 256"])
    new = _config(tmp_path, ["maxconn 100000"])
    [line] = preflight.reload_problems(old, new, tmp_path / "s.yaml")
    assert line.startswith(f"{tmp_path / 's.yaml'}: haproxy.global[0]: `maxconn 100000`")
    # unchanged lines are not vetted again (the running HAProxy has them)
    assert preflight.reload_problems(new, new, tmp_path / "s.yaml") == []
    # nor for an HAProxy synapse does not start (its own limits)
    elsewhere = _config(tmp_path, ["maxconn 100000"], launch=False)
    assert preflight.reload_problems(old, elsewhere, tmp_path / "s.yaml") == []


def test_a_pidfile_in_a_missing_directory(tmp_path: Path, host_20000):
    old = _config(tmp_path, ["maxconn 256"])
    new = _config(tmp_path, ["maxconn 256", f"pidfile {tmp_path}/nodir/haproxy.pid"])
    [line] = preflight.reload_problems(old, new, tmp_path / "s.yaml")
    assert line.startswith(f"{tmp_path / 's.yaml'}: haproxy.global[1]: cannot write ")
    assert line.endswith(f"directory {tmp_path}/nodir does not exist")
    # -p (managed.pid_file) comes first: HAProxy ignores the line
    with_p = _config(tmp_path, new.haproxy.global_, pid_file=str(tmp_path / "h.pid"))
    assert preflight.reload_problems(old, with_p, tmp_path / "s.yaml") == []


@pytest.mark.parametrize(
    "line",
    [
        'pidfile "{d}/h.pid"',
        "pidfile '{d}/h.pid'",
        "pidfile {d}/h.pid# a comment",
        'pidfile "${{RUND}}/h.pid"',  # (HAProxy expands it: not judged)
        "pidfile ${{RUND}}/h.pid",
    ],
)
def test_a_quoted_or_environment_pidfile_is_read_as_haproxy_reads_it(
    tmp_path: Path, host_20000, line: str
) -> None:
    """Review s31: the quotes stayed in the path (`"/run/x` missing): a valid config
    refused at -k, at start and at SIGHUP."""
    old = _config(tmp_path, ["maxconn 256"])
    new = _config(tmp_path, ["maxconn 256", line.format(d=tmp_path)])
    assert preflight.reload_problems(old, new, tmp_path / "s.yaml") == []
    assert preflight.global_pidfile(new.haproxy) in (
        None, ("haproxy.global[1]", tmp_path / "h.pid"))  # fmt: skip


def test_an_error_where_synapse_starts_haproxy_a_note_where_it_does_not(tmp_path, host_20000):
    launched = _config(tmp_path, ["maxconn 100000"]).haproxy
    error, note = preflight.fd_limit_verdict(launched, tmp_path / "s.yaml")
    assert error is not None and "haproxy.global[0]" in error and note is None
    elsewhere = _config(tmp_path, ["maxconn 100000"], launch=False).haproxy
    error, note = preflight.fd_limit_verdict(elsewhere, tmp_path / "s.yaml")
    assert error is None and note is not None and "does not start this HAProxy" in note


def test_a_stats_socket_from_the_environment_is_not_a_path_to_judge(tmp_path: Path) -> None:
    """Review s31: `stats socket "${SOCKDIR}/admin.sock"` (HAProxy expands it) was refused."""
    config = _config(tmp_path, ['stats socket "${SOCKDIR}/admin.sock" level admin'])
    assert not [key for key in preflight.written_paths(config) if "socket_file_path" in key]
    quoted = _config(tmp_path, [f'stats socket "{tmp_path}/a.sock" level admin'])
    assert preflight.written_paths(quoted)["haproxy.socket_file_path[0]"] == tmp_path / "a.sock"


def _with_ports(config: SynapseConfig, count: int) -> SynapseConfig:
    services = {
        f"s{i}": {"discovery": {"method": "base"}, "haproxy": {"port": 20000 + i}}
        for i in range(count)
    }
    data = config.model_dump(by_alias=True)
    return SynapseConfig.model_validate({**data, "services": services})


def test_each_listening_port_is_an_open_file_beside_maxconns(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
):
    """Review s34: 1,000 services at `maxconn 256` under a hard limit of 1,024: `-k` said ok
    (the bound was 525), HAProxy needed 1,578 ("Cannot raise FD limit") and never started."""
    assert fd_need(["maxconn 256"], 1000).need == 1525  # type: ignore[union-attr]
    monkeypatch.setattr(fd_limit, "this_host", lambda binary: host_limit(1024, 1048576, False))
    base = _config(tmp_path, ["maxconn 256"])
    [error] = preflight.preflight(_with_ports(base, 1000), tmp_path / "s.yaml", False)[0]
    assert "at least 1525 (2 per connection, 13 of its own, 1000 listening ports)" in error
    assert preflight.preflight(_with_ports(base, 400), tmp_path / "s.yaml", False)[0] == []
    # a SIGHUP adding ports past the limit, the global lines unchanged: refused too
    [line] = preflight.reload_problems(
        _with_ports(base, 400), _with_ports(base, 1000), tmp_path / "s.yaml"
    )
    assert "1000 listening ports" in line


def test_a_disabled_services_port_is_not_a_listener(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
):
    """Review s34 (c90ae37): 600 services with a port, 300 of them `haproxy.disabled` (not
    rendered: no bind), `maxconn 256`, hard limit 1,024: HAProxy starts and serves, but the
    count took 600 listeners (bound 1,125): `-k` rc 2 and synapse refused to start."""
    monkeypatch.setattr(fd_limit, "this_host", lambda binary: host_limit(1024, 1048576, False))
    config = _with_ports(_config(tmp_path, ["maxconn 256"]), 600)
    for name in list(config.services)[:300]:
        config.services[name].haproxy.disabled = True
    assert preflight.listening_ports(config) == 300
    assert preflight.preflight(config, tmp_path / "s.yaml", False)[0] == []
