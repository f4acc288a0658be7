"""`nerve -k` / `synapse -k` refuse bad files and hosts with one line each; --version."""

from __future__ import annotations

import json
import platform
import subprocess
import sys
from pathlib import Path

import pytest
from read_only_mount import read_only, require_private_mounts

from smartstack.build_info import version

NERVE_SERVICE = {"host": "10.0.0.1", "port": 80, "zk_hosts": ["h:2181"], "zk_path": "/s"}


def cli(daemon: str, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", f"{daemon}.cli", *args], capture_output=True, text=True, timeout=60
    )


def write(path: Path, doc: object) -> Path:
    path.write_text(doc if isinstance(doc, str) else json.dumps(doc))
    return path


def managed(tmp_path: Path, **haproxy: object) -> dict:
    return {
        "services": {
            "web": {
                "discovery": {"method": "base"},
                "default_servers": [{"name": "a", "host": "127.0.0.1", "port": 8080}],
                "haproxy": {"port": 3213, "listen": ["mode http"]},
            }
        },
        "haproxy": {
            "managed": {"stop_on_exit": True},
            "config_file_path": str(tmp_path / "haproxy.cfg"),
            "global": [],
            "defaults": [
                "mode http",
                "timeout connect 1s",
                "timeout client 5s",
                "timeout server 5s",
            ],
            **haproxy,
        },
    }


@pytest.mark.parametrize("daemon", ["nerve", "synapse"])
def test_version(daemon: str) -> None:
    result = cli(daemon, "--version")
    assert result.returncode == 0, result.stderr
    [line] = result.stdout.splitlines()  # one line, however long
    assert line.startswith(f"{daemon} {version()}")
    assert version() != "unknown"
    assert platform.python_version() in line and platform.system() in line


def test_nerve_check_refuses_a_typo_and_strict_refuses_the_rest(tmp_path: Path) -> None:
    typo = write(
        tmp_path / "typo.yaml",
        {"instance_id": "a", "services": {"w": {**NERVE_SERVICE, "chekcs": []}}},
    )
    result = cli("nerve", "-c", str(typo), "-k")
    assert result.returncode == 2
    assert (
        result.stderr == f"error: {typo}: services.w.chekcs: unknown key, did you mean 'checks'?\n"
    )

    extra = write(
        tmp_path / "extra.yaml",
        {"instance_id": "a", "services": {"w": {**NERVE_SERVICE, "zone": "a"}}},
    )
    loose = cli("nerve", "-c", str(extra), "-k")
    assert (
        loose.returncode == 0 and "warning:" in loose.stderr and "zone: unknown key" in loose.stderr
    )
    strict = cli("nerve", "-c", str(extra), "-k", "--strict")
    assert strict.returncode == 2
    assert f"error: {extra}: services.w.zone: unknown key (refused by --strict)" in strict.stderr


@pytest.mark.parametrize("daemon", ["nerve", "synapse"])
def test_empty_config_is_refused_by_both_daemons(tmp_path: Path, daemon: str) -> None:
    path = write(tmp_path / "c.yaml", "# all comments\n")
    for args in (["-k"], []):  # the daemon itself refuses it too, before starting anything
        result = cli(daemon, "-c", str(path), *args)
        assert result.returncode == 2
        assert result.stderr == f"error: {path}: the file is empty (no keys, or only comments)\n"


def test_synapse_check_runs_haproxy_on_the_rendered_config(tmp_path: Path) -> None:
    good = write(tmp_path / "good.json", managed(tmp_path))
    result = cli("synapse", "-c", str(good), "-k")
    assert result.returncode == 0, result.stderr
    assert "ok (1 services)" in result.stdout
    assert not (tmp_path / "haproxy.cfg").exists()  # -k writes nothing where synapse would

    bad = write(
        tmp_path / "bad.json", managed(tmp_path, defaults=["mode http", "timeout conect 1s"])
    )
    result = cli("synapse", "-c", str(bad), "-k")
    assert result.returncode == 2
    [line] = result.stderr.splitlines()
    # the key and the line; not the scratch copy -k rendered into (deleted by now)
    assert line.startswith(
        f"error: {bad}: haproxy.defaults[1]: HAProxy rejects 'timeout conect 1s': "
    )
    assert "conect" in line.partition("1s': ")[2] and "synapse-check-" not in line
    # --config-only: the file alone (a CI box without the target's paths or HAProxy).
    assert cli("synapse", "-c", str(bad), "-k", "--config-only").returncode == 0


def test_synapse_check_names_the_service_file_and_key_haproxy_refuses(tmp_path: Path) -> None:
    """Review s31: a service_conf_dir service's bad line was said as the main file and a
    line of the deleted scratch copy."""
    (tmp_path / "services").mkdir()
    doc = managed(tmp_path)
    doc["service_conf_dir"] = str(tmp_path / "services")
    main = write(tmp_path / "synapse.json", doc)
    api = {
        "discovery": {"method": "base"},
        "default_servers": [{"name": "a", "host": "127.0.0.1", "port": 8081}],
        "haproxy": {
            "port": 3214,
            "listen": ["mode http", "timeout server 5 s"],
            "server_options": "check inter 2s rise 0x",
        },
    }
    api_file = write(tmp_path / "services" / "api.json", api)
    result = cli("synapse", "-c", str(main), "-k")
    assert result.returncode == 2
    said = result.stderr.splitlines()
    listen, options = [line for line in said if line.startswith("error: ")]
    # (and a warning that `timeout server 5` alone would be 5 ms: haproxy_units)
    assert [line for line in said if "perhaps `timeout server 5s`" in line] != []
    assert listen.startswith(
        f"error: {api_file}: services.api.haproxy.listen[1]: HAProxy rejects 'timeout server 5 s': "
        "'timeout server' : unexpected extra argument 's'"
    )
    assert options.startswith(f"error: {api_file}: services.api.haproxy.server_options: ")
    assert "rise 0x" in options and "'rise'" in options and "synapse-check-" not in options


def test_synapse_refuses_paths_it_cannot_write(tmp_path: Path) -> None:
    missing = tmp_path / "nope"
    blocker = write(tmp_path / "file", "x")
    doc = managed(tmp_path)
    # synapse makes missing directories for its own files (mkdir -p) ...
    doc["haproxy"]["config_file_path"] = str(tmp_path / "new" / "dir" / "haproxy.cfg")
    # ... but not below a file, and an HAProxy synapse does not start (its own container)
    # opens its sockets where they are (one synapse starts gets its directory made: review
    # s34, a /run/synapse emptied by a reboot).
    doc["haproxy"]["state_file_path"] = str(blocker / "sub" / "state.json")
    doc["haproxy"]["managed"] = {
        "master_socket_path": str(missing / "master.sock"),
        "launch": False,
    }
    path = write(tmp_path / "s.json", doc)
    for args in (["-k"], []):  # checked at start too: one line instead of a traceback loop
        result = cli("synapse", "-c", str(path), *args)
        assert result.returncode == 2, result.stderr
        assert "Traceback" not in result.stderr
        assert result.stderr.splitlines() == [
            f"error: {path}: haproxy.state_file_path: cannot write {blocker}/sub/state.json: "
            f"{blocker} is not a directory",
            f"error: {path}: haproxy.managed.master_socket_path: cannot write "
            f"{missing}/master.sock: directory {missing} does not exist",
        ]
    assert not (tmp_path / "new").exists()  # refused before anything was written


def test_synapse_check_passes_a_socket_dir_a_reboot_emptied(tmp_path: Path) -> None:
    """Review s34: /run/synapse/ (master socket, pid file) is gone after a reboot; synapse
    makes it before it starts HAProxy, so `-k` (the unit's ExecStartPre) must not refuse it
    (before: exit 2, and the start too, nothing served)."""
    run = tmp_path / "run" / "synapse"
    doc = managed(tmp_path)
    doc["haproxy"]["managed"] = {
        "stop_on_exit": True,
        "master_socket_path": str(run / "master.sock"),
        "pid_file": str(run / "haproxy.pid"),
    }
    result = cli("synapse", "-c", str(write(tmp_path / "s.json", doc)), "-k")
    assert result.returncode == 0, result.stderr
    assert not run.exists()  # (-k makes nothing)


def test_check_notes_a_read_only_filesystem(tmp_path: Path) -> None:
    """A real read-only mount (a private mount namespace): the host's state of this moment,
    which the daemons survive, so `-k` (the units' ExecStartPre) notes it and passes. Before
    (review s29): exit 2, and the unit did not start (nerve: 0 registrations until the disk
    was writable again; synapse: a left-running HAProxy kept its old servers)."""
    require_private_mounts()
    ro = tmp_path / "ro"
    ro.mkdir()
    doc = managed(tmp_path)
    doc["haproxy"]["state_file_path"] = str(ro / "state.json")
    synapse_path = write(tmp_path / "s.json", doc)
    nerve_doc = {"instance_id": "a", "state_dir": str(ro), "heartbeat_path": str(ro / "beat")}
    nerve_path = write(tmp_path / "n.json", {**nerve_doc, "services": {"w": NERVE_SERVICE}})
    for daemon, path, key, file in (
        ("synapse", synapse_path, "haproxy.state_file_path", "state.json"),
        ("nerve", nerve_path, "state_dir", "x.json"),
        ("nerve", nerve_path, "heartbeat_path", "beat"),
    ):
        result = check_in_namespace(daemon, path, empty=[ro])
        assert result.returncode == 0, result.stderr
        assert (
            f"note: {path}: {key}: cannot write {ro}/{file}: "
            f"directory {ro} is on a read-only filesystem"
        ) in result.stderr


def check_in_namespace(
    daemon: str, path: Path, **mounts: list[Path]
) -> subprocess.CompletedProcess:
    """``<daemon> -c path -k`` in a private mount namespace with ``mounts`` read-only."""
    argv = [sys.executable, "-m", f"{daemon}.cli", "-c", str(path), "-k"]
    return subprocess.run(read_only(argv, **mounts), capture_output=True, text=True, timeout=60)


def test_check_refuses_a_read_only_mount_of_a_writable_filesystem(tmp_path: Path) -> None:
    """A read-only bind mount (a container's read-only root, a read-only /usr) is the
    deployment's, not the host's state of this moment: no write will ever work there, so
    `-k` refuses it as it does a permission problem. Before (review s29 MEDIUM-1): both
    exit 0 with a note, and synapse started on a fresh host served nothing for ever."""
    require_private_mounts()
    ro = tmp_path / "ro"
    (ro / "exists").mkdir(parents=True)
    doc = managed(tmp_path)
    doc["haproxy"]["config_file_path"] = str(ro / "exsits" / "sub" / "haproxy.cfg")  # a typo
    synapse_path = write(tmp_path / "s.json", doc)
    nerve_doc = {"instance_id": "a", "state_dir": str(tmp_path), "heartbeat_path": str(ro / "b")}
    nerve_path = write(tmp_path / "n.json", {**nerve_doc, "services": {"w": NERVE_SERVICE}})
    for daemon, path, key, file in (
        ("synapse", synapse_path, "haproxy.config_file_path", "exsits/sub/haproxy.cfg"),
        ("nerve", nerve_path, "heartbeat_path", "b"),
    ):
        result = check_in_namespace(daemon, path, bind=[ro])
        assert result.returncode == 2, result.stderr
        assert (
            f"error: {path}: {key}: cannot write {ro}/{file}: "
            f"directory {ro} is on a read-only mount ({ro}) of a writable filesystem"
        ) in result.stderr.splitlines()


def test_nerve_check_names_files_it_cannot_write_and_start_only_notes_them(
    tmp_path: Path,
) -> None:
    blocker = write(tmp_path / "file", "x")
    doc = {
        "instance_id": "a",
        "heartbeat_path": str(tmp_path / "missing" / "beat"),
        "state_dir": str(blocker / "state"),
        "services": {"w": NERVE_SERVICE},
    }
    path = write(tmp_path / "n.json", doc)
    result = cli("nerve", "-c", str(path), "-k")
    assert result.returncode == 2
    # state_dir only holds maintenance flags (nerve runs without them): a note
    assert result.stderr.splitlines() == [
        f"note: {path}: state_dir: cannot write {blocker}/state/x.json: "
        f"{blocker} is not a directory (nerve starts all the same)",
        f"error: {path}: heartbeat_path: cannot write {tmp_path}/missing/beat: "
        f"directory {tmp_path}/missing does not exist",
    ]
    assert cli("nerve", "-c", str(path), "-k", "--config-only").returncode == 0


def test_check_writes_route_maps_and_crt_list_in_its_scratch_dir_only(tmp_path):
    certs = tmp_path / "certs"
    certs.mkdir()
    tls = {"cert_dir": str(certs), "port": 3243, "bind_address": "127.0.0.1"}
    doc = managed(tmp_path, shared_frontend=["bind 127.0.0.1:3280"], tls=tls)
    doc["services"]["web"]["haproxy"]["routes"] = {"hosts": ["shop.test"], "paths": ["/api/"]}
    done = cli("synapse", "-k", "-c", str(write(tmp_path / "s.json", doc)))
    assert done.returncode == 0, done.stdout + done.stderr
    # haproxy -c read maps and a crt-list; the running synapse's own files are untouched
    assert sorted(p.name for p in tmp_path.iterdir()) == ["certs", "s.json"]


def test_synapse_refuses_socket_paths_the_managed_haproxy_cannot_bind(tmp_path: Path) -> None:
    """HAProxy binds '<path>.<pid>.tmp' first (108-byte sun_path, its NUL included); `haproxy
    -c` binds nothing, so `-k` said ok and the HAProxy synapse started never came up."""
    pid_max = int(Path("/proc/sys/kernel/pid_max").read_text())
    limit = 108 - 1 - len(f".{pid_max - 1}.tmp")  # 97 with 5-digit pids
    # (synapse's own admin socket, the longest default name: beside the config file, as the
    # master socket)
    name = "/haproxy-synapse.sock"
    fits = tmp_path / ("d" * (limit - len(name) - len(str(tmp_path)) - 1))
    over = Path(f"{fits}x")
    for directory in (fits, over):
        directory.mkdir()
    good = write(tmp_path / "good.json", managed(fits))
    result = cli("synapse", "-c", str(good), "-k")
    assert result.returncode == 0 and len(str(fits) + name) == limit, result.stderr
    bad = write(tmp_path / "bad.json", managed(over))
    for args in (["-k"], []):  # at start too: before, HAProxy never came up, synapse ran on
        result = cli("synapse", "-c", str(bad), *args)
        assert result.returncode == 2, result.stderr
        first, *rest = result.stderr.splitlines()
        assert first == (
            f"error: {bad}: haproxy.config_file_path: the unix socket {over}{name} "
            f"is {limit + 1} bytes; HAProxy binds at most {limit} on this host "
            "('<path>.<pid>.tmp' must fit in the 108-byte sun_path): move the config file "
            "(synapse's own admin socket is beside it)"
        ), result.stderr
        # (-k's `haproxy -c` refuses the same `stats socket` line, when it runs)
        assert all(f"{over}{name}" in line for line in rest), result.stderr
    assert not (over / "haproxy.cfg").exists()


ZK = {"method": "zookeeper", "hosts": ["127.0.0.1:1"], "path": "/web"}  # (-k connects to none)


def discovered(tmp_path: Path, zone: str | None = None, **service: object) -> dict:
    """``managed`` with a service of the usual kind: no default servers, a registry."""
    doc = managed(tmp_path)
    hap = {"port": 3213, "listen": ["mode http"], **service.pop("haproxy", {})}
    web = {"discovery": ZK, **service, "haproxy": hap}
    return {**doc, "services": {"web": web}, **({"zone": zone} if zone else {})}


def test_synapse_check_renders_server_options_of_a_service_without_default_servers(tmp_path):
    """Before, only default servers were rendered: a typo in server_options passed -k and
    HAProxy refused the service once the registry listed a server (left out of HAProxy)."""
    typo = discovered(tmp_path, haproxy={"server_options": "check inter 2s fall2"})
    result = cli("synapse", "-c", str(write(tmp_path / "typo.json", typo)), "-k")
    assert result.returncode == 2, result.stdout
    assert "'server web/synapse-check_127.0.0.1:1' : unknown keyword 'fall2'" in result.stderr


@pytest.mark.parametrize(
    ("zone", "service"),
    [
        (None, {"haproxy": {"server_options": "check port %{port}", "server_port_override": 8443}}),
        (None, {"backend_port_override": 8443, "haproxy": {"server_options": "check"}}),
        # with nerve weights the record's weight replaces the options' (-k renders one)
        (None, {"haproxy": {"server_options": "check weight 999", "use_nerve_weights": True}}),
        (None, {"leader_election": True, "haproxy": {"server_options": "check"}}),
        (None, {"discovery": {**ZK, "label_filters": [{"label": "az", "value": "a"}]}}),
        ("az1", {"zone_routing": {"zones": ["az1", "az2"], "sticky": "Z", "header": "X-Z"}}),
        (
            "az1",
            {"zone_routing": {"zones": ["az1", "az2"]}, "haproxy": {"server_options": "check"}},
        ),
        (None, {"zone_routing": {}, "haproxy": {"server_options": "check weight 999"}}),
        (None, {"haproxy": {"backend": ["server-template spare 3 127.0.0.1:9 disabled"]}}),
        (None, {"haproxy": {"backend": ["server synapse-check_127.0.0.1:1 127.0.0.1:7"]}}),
        (None, {"haproxy": {"backend": ["cookie SRV insert indirect nocache"]}}),
        (None, {"haproxy": {"send_proxy_v2": True, "maxconn": 5, "maxqueue": 2}}),
        # never rendered with a server: base lists none, a disabled service is not written
        (None, {"discovery": {"method": "base"}, "haproxy": {"server_options": "fall2"}}),
        (None, {"haproxy": {"disabled": True, "server_options": "fall2"}}),
    ],
)
def test_synapse_check_placeholder_refuses_nothing_the_daemon_runs(tmp_path, zone, service):
    doc = discovered(tmp_path, zone, **service)
    result = cli("synapse", "-c", str(write(tmp_path / "s.json", doc)), "-k")
    assert result.returncode == 0, result.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["s.json"]  # (the zone map too)
