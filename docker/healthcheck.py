"""The image's HEALTHCHECK: GET /health on the daemon's admin port inside the container.

The image runs synapse (admin port 1026 by default) or nerve (1025); 3212 is tried last,
for configs written when that was synapse's port (Airbnb configs give 3212 to HAProxy's
stats page, so it must not come first). The first port that accepts a connection
decides: 200 is healthy, anything else is not. SMARTSTACK_ADMIN_PORT names the port when
the config moves it. Exit 0 healthy, 1 not (Docker's convention).
"""

from __future__ import annotations

import os
import sys
import urllib.error
import urllib.request

DEFAULT_PORTS = ("1026", "1025", "3212")  # synapse, nerve, synapse's old default


def check(ports: list[str], timeout: float = 3.0) -> tuple[bool, str]:
    for port in ports:
        url = f"http://127.0.0.1:{port}/health"
        try:
            with urllib.request.urlopen(url, timeout=timeout) as response:
                return response.status == 200, f"{url}: {response.status}"
        except urllib.error.HTTPError as exc:  # the daemon answered: unhealthy
            return False, f"{url}: {exc.code}"
        except OSError:
            continue  # nothing listens here: the other daemon's port
    return False, f"no admin server answers on 127.0.0.1 ports {', '.join(ports)}"


def main() -> int:
    configured = os.environ.get("SMARTSTACK_ADMIN_PORT")
    healthy, detail = check([configured] if configured else list(DEFAULT_PORTS))
    print(detail)
    return 0 if healthy else 1


if __name__ == "__main__":
    sys.exit(main())
