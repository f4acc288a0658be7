"""`synapse -k`: a line `haproxy -c` refuses is said as the file and key that wrote it
(review s31: it named the main file and a deleted scratch copy's line number)."""

from __future__ import annotations

from pathlib import Path

from haproxy_helpers import haproxy_config, render, server, service

from synapse.config import HAProxyConfig
from synapse.haproxy.check_blame import SCRATCH, Blame

MAIN = Path("/etc/synapse/synapse.yaml")
API_FILE = Path("/etc/synapse/services/api.yaml")
SCRATCH_PATH = Path("/tmp/synapse-check-abcd/haproxy.cfg")


def alert(text: str, line: str, said: str) -> str:
    """HAProxy's ALERT for the rendered line ``line`` of ``text``."""
    number = text.splitlines().index(f"    {line}") + 1
    return f"[ALERT]    (7) : config : parsing [{SCRATCH_PATH}:{number}] : {said}"


def setup() -> tuple[str, Blame]:
    api = service(
        "api",
        [server("127.0.0.1", 8080, "a")],
        listen=["mode http", "timeout server 5 s"],
        backend=["balance rondrobin"],
        server_options="check inter 2s rise 0x",
    )
    web = service("web", [server("127.0.0.1", 8081, "a")], frontend=["option forwardfor"])
    hap: HAProxyConfig = haproxy_config(defaults=["mode http", "timeout conect 1s"])
    text = render([api, web], hap).text
    sources = {"api": API_FILE}
    return text, Blame(hap, [api, web], MAIN, lambda name: sources.get(name, MAIN))


def test_a_refused_line_names_the_service_file_and_key_not_the_scratch_copy() -> None:
    text, blame = setup()
    said = "'timeout server' : unexpected extra argument 's' after value '5'."
    message = "\n".join(
        [
            alert(text, "timeout server 5 s", said),
            alert(text, "balance rondrobin", "unknown balance algorithm 'rondrobin'"),
            alert(text, "option forwardfor", "bad"),
            alert(text, "timeout conect 1s", "unknown keyword 'conect'"),
            f"[ALERT]    (7) : config : Error(s) found in configuration file : {SCRATCH_PATH}",
            "[ALERT]    (7) : config : Fatal errors found in configuration.",
        ]
    )
    assert blame.lines(message, SCRATCH_PATH, text) == [
        f"{API_FILE}: services.api.haproxy.listen[1]: HAProxy rejects 'timeout server 5 s': {said}",
        f"{API_FILE}: services.api.haproxy.backend[0]: HAProxy rejects 'balance rondrobin': "
        "unknown balance algorithm 'rondrobin'",
        f"{MAIN}: services.web.haproxy.frontend[0]: HAProxy rejects 'option forwardfor': bad",
        f"{MAIN}: haproxy.defaults[1]: HAProxy rejects 'timeout conect 1s': "
        "unknown keyword 'conect'",
    ]


def test_a_server_line_names_server_options_and_a_proxy_alert_the_block() -> None:
    text, blame = setup()
    [line] = [
        x.strip() for x in text.splitlines() if x.strip().startswith("server a_127.0.0.1:8080")
    ]
    number = text.splitlines().index(f"    {line}") + 1
    message = (
        f"[ALERT]    (7) : config : [{SCRATCH_PATH}:{number}] : 'server api/a' : 'rise' has to "
        "be > 0.\n"
        f"[ALERT]    (7) : config : backend 'api' has no server available! ({SCRATCH_PATH})"
    )
    first, second = blame.lines(message, SCRATCH_PATH, text)
    assert first == (
        f"{API_FILE}: services.api.haproxy.server_options: HAProxy rejects '{line}': "
        "'server api/a' : 'rise' has to be > 0."
    )
    assert second.startswith(f"{API_FILE}: services.api.haproxy: HAProxy rejects the rendered")
    assert str(SCRATCH_PATH) not in second and SCRATCH in second


def test_an_alert_no_key_can_be_named_for_is_said_as_it_is_and_many_in_ten_lines() -> None:
    text, blame = setup()
    assert blame.lines("[ALERT] (7) : config : out of memory", SCRATCH_PATH, text) == [
        f"{MAIN}: haproxy: HAProxy rejects the rendered config: out of memory"
    ]
    many = blame.lines("\n".join(["[ALERT] (7) : config : x"] * 25), SCRATCH_PATH, text)
    assert len(many) == 10 and many[-1] == f"{MAIN}: haproxy: and 16 more"


def test_an_exact_service_name_wins_over_a_zone_backend_prefix() -> None:
    """Review s31: services `web` and `web_zone_eu`: a line of web_zone_eu was blamed on web."""
    web = service("web", [server("127.0.0.1", 8081, "a")])
    eu = service("web_zone_eu", [server("127.0.0.1", 8082, "a")], backend=["balance rondrobin"])
    hap: HAProxyConfig = haproxy_config()
    text = render([web, eu], hap).text
    sources = {"web_zone_eu": API_FILE}
    blame = Blame(hap, [web, eu], MAIN, lambda name: sources.get(name, MAIN))
    message = alert(text, "balance rondrobin", "unknown balance algorithm 'rondrobin'")
    [line] = blame.lines(message, SCRATCH_PATH, text)
    assert line.startswith(f"{API_FILE}: services.web_zone_eu.haproxy.backend[0]: "), line
