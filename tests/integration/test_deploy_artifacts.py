"""Deployment artefacts: the systemd units pass `systemd-analyze verify` and keep the
"restarts never touch traffic" promise, the example configs they run are valid, and the
image's HEALTHCHECK script tells a healthy daemon from an unhealthy one."""

from __future__ import annotations

import configparser
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from nerve.config import AdminConfig as NerveAdminConfig
from nerve.config import load_nerve_config
from synapse.config import DEFAULT_ADMIN_PORT, load_synapse_config
from testbed.process import free_port

ROOT = Path(__file__).resolve().parents[2]
UNITS = ROOT / "examples" / "systemd"
VENV_BIN = Path(sys.executable).parent
sys.path.insert(0, str(ROOT / "docker"))
import healthcheck  # noqa: E402  (docker/healthcheck.py, the image's HEALTHCHECK)


def verify(directory: Path) -> tuple[int, str]:
    """systemd-analyze verify on every unit there: (exit code, everything it said)."""
    analyze = shutil.which("systemd-analyze")
    assert analyze, "systemd-analyze missing: scripts/install.sh installs Debian's systemd"
    units = sorted(str(p) for p in directory.glob("*.service"))
    done = subprocess.run([analyze, "verify", "--man=no", *units], capture_output=True,
                          text=True, timeout=60)  # fmt: skip
    return done.returncode, (done.stdout + done.stderr).strip()


def installed_copy(tmp_path: Path) -> Path:
    """The units as installed by docs/deploy.md, with /opt/smartstack/bin being our venv
    (verify checks that every Exec command exists and is executable)."""
    for unit in UNITS.glob("*.service"):
        text = unit.read_text().replace("/opt/smartstack/bin/", f"{VENV_BIN}/")
        (tmp_path / unit.name).write_text(text)
    return tmp_path


def unit(name: str) -> configparser.ConfigParser:
    parser = configparser.ConfigParser(strict=False, interpolation=None)
    parser.optionxform = str  # type: ignore[assignment,method-assign]
    parser.read(UNITS / name)
    return parser


def test_the_units_pass_systemd_analyze_verify_without_a_warning(tmp_path: Path) -> None:
    code, said = verify(installed_copy(tmp_path))
    assert (code, said) == (0, ""), said


def test_verify_catches_a_broken_unit(tmp_path: Path) -> None:
    copy = installed_copy(tmp_path)
    path = copy / "synapse.service"
    path.write_text(path.read_text().replace("KillMode=control-group", "KillMode=proces"))
    _, said = verify(copy)
    assert "kill mode" in said.lower(), said  # the check this suite relies on can fail


def test_the_units_check_the_file_they_start_without_blocking_the_start() -> None:
    # "-" (docs/configuration.md, "The last good config"): its exit status is ignored, and so
    # is its executable by systemd-analyze verify: a wrong path there passes verify silently
    for name in ("nerve.service", "synapse.service"):
        service = unit(name)["Service"]
        assert service["ExecStartPre"] == f"-{service['ExecStart']} --check-config", name


def test_a_synapse_restart_never_stops_or_restarts_haproxy() -> None:
    synapse, haproxy = unit("synapse.service"), unit("smartstack-haproxy.service")
    assert "smartstack-haproxy.service" in synapse["Unit"]["Wants"]
    for key in ("Requires", "BindsTo", "PartOf", "Requisite"):
        assert "haproxy" not in synapse["Unit"].get(key, ""), key
        assert "synapse" not in haproxy["Unit"].get(key, ""), key
    config, _ = load_synapse_config(UNITS / "synapse.yaml")
    assert config.haproxy is not None and config.haproxy.managed is None  # not synapse's child
    assert "master.sock" in (config.haproxy.reload_command or "")
    assert "master.sock" in haproxy["Service"]["ExecStart"]


def test_daemon_units_reload_with_sighup_and_are_hardened() -> None:
    for name in ("nerve.service", "synapse.service"):
        service = unit(name)["Service"]
        assert service["ExecReload"] == "/bin/kill -HUP $MAINPID", name
        # started = READY=1: the daemon handles SIGHUP (smartstack.sd_notify); its children
        # may not speak for it
        assert (service["Type"], service["NotifyAccess"]) == ("notify", "main"), name
        assert service["User"] == "smartstack", name
        for key, value in {"NoNewPrivileges": "yes", "ProtectSystem": "strict",
                           "PrivateTmp": "yes", "ProtectHome": "yes",
                           "CapabilityBoundingSet": ""}.items():  # fmt: skip
            assert service[key] == value, (name, key)
        state = "/var/lib/" + service["StateDirectory"]
        assert state in service["ReadWritePaths"].split(), name


def test_nerve_s_restart_stop_recipe_signals_the_main_process_alone() -> None:
    """SIGUSR2 is nerve's restart stop; sent to the whole control group (KillMode's default)
    its default action would end the exec checks' processes too."""
    recipe = "systemctl kill --kill-whom=main --signal=SIGUSR2 nerve && systemctl restart nerve"
    assert unit("nerve.service")["Service"].get("KillMode", "control-group") == "control-group"
    text = (UNITS / "nerve.service").read_text()
    deploy = (ROOT / "docs" / "deploy.md").read_text()
    assert recipe in text and recipe in deploy
    assert "kill -s USR2" not in deploy and "--signal=SIGUSR2 nerve" in deploy


def test_the_example_configs_load_and_haproxy_accepts_the_bootstrap_config(tmp_path) -> None:
    nerve, warnings = load_nerve_config(UNITS / "nerve.yaml")
    assert not warnings and nerve.state_dir == "/var/lib/smartstack/nerve"
    synapse, warnings = load_synapse_config(UNITS / "synapse.yaml")
    assert not warnings and synapse.haproxy is not None
    bootstrap = (UNITS / "haproxy-bootstrap.cfg").read_text()
    lines = [line.strip() for line in bootstrap.split("defaults")[0].splitlines()[1:]]
    assert synapse.haproxy.global_ == [x for x in lines if x and not x.startswith(("#", "global"))]
    # The group exists on a deployed host (docs/deploy.md); here root stands in for it.
    config = tmp_path / "haproxy.cfg"
    config.write_text(bootstrap.replace("group smartstack", "group root"))
    checked = subprocess.run(["haproxy", "-c", "-q", "-f", str(config)], capture_output=True,
                             text=True, timeout=30)  # fmt: skip
    assert checked.returncode == 0, checked.stderr


def test_the_dockerfile_has_healthcheck_expose_and_oci_labels() -> None:
    text = (ROOT / "Dockerfile").read_text()
    assert re.search(r"^HEALTHCHECK .*\\\n\s+CMD .*smartstack-healthcheck", text, re.M)
    assert re.search(r"^EXPOSE 1026 1025$", text, re.M)
    for label in ("title", "description", "version", "licenses"):
        assert f"org.opencontainers.image.{label}=" in text, label


def test_the_healthcheck_asks_the_daemons_default_admin_ports_first() -> None:
    # synapse's default moved from 3212 (Airbnb's HAProxy stats port) to 1026: a check that
    # did not follow it called a healthy synapse unhealthy, and orchestrators restarted it.
    synapse_port, nerve_port = str(DEFAULT_ADMIN_PORT), str(NerveAdminConfig().port)
    assert healthcheck.DEFAULT_PORTS[:2] == (synapse_port, nerve_port)
    exposed = re.search(r"^EXPOSE (.*)$", (ROOT / "Dockerfile").read_text(), re.M)
    assert exposed is not None and exposed.group(1).split() == [synapse_port, nerve_port]


def test_the_healthcheck_tells_healthy_from_unhealthy(http_backend_factory) -> None:
    backend = http_backend_factory("daemon")  # GET /health: 200, or 503 once unhealthy
    closed = str(free_port())
    assert healthcheck.check([closed, str(backend.port)])[0]  # the first port that answers
    backend.set_healthy(False)
    healthy, detail = healthcheck.check([str(backend.port)])
    assert not healthy and detail.endswith(": 503")
    assert not healthcheck.check([closed])[0]


@pytest.mark.parametrize("name", ["nerve.service", "synapse.service"])
def test_units_check_the_config_before_starting(name: str) -> None:
    service = unit(name)["Service"]
    assert service["ExecStartPre"].endswith("--check-config")
