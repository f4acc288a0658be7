"""`python -m bench.render_cost [SERVICES SERVERS]`: the HAProxy config render, in process.

What a cold start's first render costs (1,000 services x 20 servers by default, the scale
benchmark's service blocks), split into its parts, and what re-rendering one changed
service costs. Prints milliseconds of CPU time (``process_time``: a loaded machine's
waits are not counted), the best of a few runs, each on a new Renderer (so nothing is
cached between them). ``--template PATH`` renders through a jinja2 template
(e.g. templates/haproxy.cfg.j2) instead of the default layout.
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable
from typing import Any

from synapse.config import HAProxyConfig, ServiceConfig
from synapse.haproxy.configtext import parse_blocks
from synapse.haproxy.render import Renderer
from synapse.model import DesiredService, Server, server_name


def fleet(services: int, servers: int) -> list[DesiredService]:
    """The scale benchmark's shape: `listen: [mode http]`, a port each, plain servers."""
    out = []
    for i in range(services):
        config = ServiceConfig.model_validate(
            {
                "discovery": {"method": "base"},
                "haproxy": {"listen": ["mode http"], "port": 20000 + i},
            }
        )
        members = [
            Server(
                server_name(f"10.{i // 250}.{i % 250}.{j}", 8080, f"i{j}"),
                f"10.{i // 250}.{i % 250}.{j}",
                8080,
            )
            for j in range(servers)
        ]
        out.append(DesiredService(f"svc{i:04d}", config, members))
    return out


def haproxy_config(template: str | None) -> HAProxyConfig:
    data: dict[str, Any] = {
        "global": ["maxconn 100000"],
        "defaults": ["mode http", "timeout connect 1s", "timeout client 10s", "timeout server 10s"],
        "config_file_path": "/tmp/render-cost/haproxy.cfg",
        "reload_command": "true",
    }
    if template:
        data["template"] = template
    return HAProxyConfig.model_validate(data)


def best_ms(runs: int, make: Callable[[], Callable[[], Any]]) -> float:
    """Best of ``runs``: ``make()`` prepares (untimed), what it returns is timed."""
    times = []
    for _ in range(runs):
        work = make()
        start = time.process_time()
        work()
        times.append((time.process_time() - start) * 1000)
    return min(times)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("services", type=int, nargs="?", default=1000)
    parser.add_argument("servers", type=int, nargs="?", default=20)
    parser.add_argument("--template", help="render through this jinja2 template")
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args(argv)
    config = haproxy_config(args.template)
    services = fleet(args.services, args.servers)

    first = best_ms(args.runs, lambda: lambda: Renderer(config).render(services))
    renderer = Renderer(config)
    renderer.render(services)  # the Renderer a reconciler keeps
    texts = renderer.render(services).parts
    parse = best_ms(args.runs, lambda: lambda: [parse_blocks(t) for t in texts])

    def one_change() -> Callable[[], Any]:
        changed = list(services)
        old = changed[len(changed) // 2]
        changed[len(changed) // 2] = DesiredService(old.name, old.config, old.servers[1:])
        return lambda: renderer.render(changed, {}, [old.backend_name])

    def back() -> None:  # undo: each timed change starts from the whole fleet
        renderer.render(services, {}, [services[len(services) // 2].backend_name])

    times = []
    for _ in range(max(args.runs, 20)):
        work = one_change()
        start = time.process_time()
        work()
        times.append((time.process_time() - start) * 1000)
        back()
    kind = f"template {args.template}" if args.template else "default layout"
    print(f"{args.services} services x {args.servers} servers, {kind}")
    print(f"first render (new Renderer, whole fleet): {first:8.1f} ms")
    print(f"  parsing its text back (a template's cost): {parse:6.1f} ms")
    print(f"one service changed (re-render, patch):   {min(times):8.3f} ms best, "
          f"{sorted(times)[len(times) // 2]:.3f} ms median")  # fmt: skip


if __name__ == "__main__":
    main()
