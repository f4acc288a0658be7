# One image for both daemons: `docker run IMAGE nerve -c ...` or `docker run IMAGE synapse -c ...`
# (synapse starts and reloads HAProxy itself: haproxy.managed in its config).
# The base is selectable: --build-arg BASE_IMAGE=smartstack-base:bookworm uses the debootstrap base
# made by scripts/build-base-image.sh (no registry needed).
ARG BASE_IMAGE=debian:bookworm-slim

FROM ${BASE_IMAGE} AS runtime
# HAProxy and Python from Debian; tini as PID 1 forwards signals and reaps.
RUN set -eux; \
    export DEBIAN_FRONTEND=noninteractive; \
    apt-get update; \
    apt-get install -y --no-install-recommends haproxy python3 tini; \
    apt-get clean; \
    rm -rf /var/lib/apt/lists/* /var/cache/apt/* /var/log/apt /var/log/dpkg.log

FROM runtime AS build
RUN set -eux; \
    export DEBIAN_FRONTEND=noninteractive; \
    apt-get update; \
    apt-get install -y --no-install-recommends python3-venv
# Dependencies first (their layer survives code changes), then the package itself.
# Without a network to PyPI, put wheels in the build context's wheels/ folder (images.py does,
# with `pip wheel` on the host): pip then installs from them only.
COPY pyproject.toml README.m[d] wheel[s] /src/
RUN set -eux; \
    mkdir -p /wheels; \
    if ls /src/*.whl >/dev/null 2>&1; then \
        mv /src/*.whl /wheels/; \
        printf '[global]\nno-index = true\nfind-links = /wheels\n' > /etc/pip.conf; \
    fi; \
    python3 -m venv /opt/smartstack; \
    deps="$(python3 -c 'import tomllib; print(*tomllib.load(open("/src/pyproject.toml", "rb"))["project"]["dependencies"])')"; \
    /opt/smartstack/bin/pip install --no-cache-dir --disable-pip-version-check $deps
COPY smartstack /src/smartstack
COPY nerve /src/nerve
COPY synapse /src/synapse
COPY templates /src/templates
# Bytecode ships in the image, hash-checked (valid whatever the mtimes after COPY --from;
# a patched source is still read): the non-root daemon cannot write it, so each start
# compiled ~500 modules from source, and the compiler's leftovers cost a synapse sidecar
# ~5 MB of RSS (50 -> 45 MB), for <= 15 MB more image.
RUN set -eux; \
    /opt/smartstack/bin/pip install --no-cache-dir --disable-pip-version-check --no-deps /src; \
    /opt/smartstack/bin/pip uninstall -y -q pip setuptools; \
    find /opt/smartstack -name __pycache__ -prune -exec rm -rf {} +; \
    /opt/smartstack/bin/python -m compileall -q -j 0 --invalidation-mode checked-hash \
        /opt/smartstack/lib

FROM runtime
ARG VERSION=0.1.0
LABEL org.opencontainers.image.title="smartstack" \
      org.opencontainers.image.description="SmartStack-style service discovery: nerve registers healthy services in ZooKeeper or etcd, synapse keeps HAProxy in step" \
      org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.licenses="Apache-2.0" \
      org.opencontainers.image.documentation="docs/deploy.md, docs/docker.md in the source tree"
COPY --from=build /opt/smartstack /opt/smartstack
COPY docker/entrypoint.sh /usr/local/bin/smartstack-entrypoint
COPY docker/healthcheck.py /usr/local/bin/smartstack-healthcheck
# Non-root: configs are mounted read-only at /etc/smartstack; HAProxy's config, sockets and
# state live in /var/lib/smartstack (writable by the daemon user).
RUN set -eux; \
    groupadd --system smartstack; \
    useradd --system --gid smartstack --home-dir /var/lib/smartstack --shell /usr/sbin/nologin smartstack; \
    install -d -o smartstack -g smartstack /var/lib/smartstack /etc/smartstack
ENV PATH=/opt/smartstack/bin:$PATH PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1
USER smartstack
WORKDIR /var/lib/smartstack
# Admin HTTP servers (/health, /status, /metrics): synapse 1026, nerve 1025. They bind
# 127.0.0.1 by default; set admin.host: 0.0.0.0 in the config to publish them.
EXPOSE 1026 1025
# /health of whichever daemon runs (SMARTSTACK_ADMIN_PORT if the config moves its port).
HEALTHCHECK --interval=10s --timeout=5s --start-period=20s --retries=3 \
    CMD ["/opt/smartstack/bin/python", "/usr/local/bin/smartstack-healthcheck"]
ENTRYPOINT ["/usr/bin/tini", "--", "/usr/local/bin/smartstack-entrypoint"]
CMD ["synapse"]
