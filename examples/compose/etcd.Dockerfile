# etcd from Debian's package: the registry of the compose demo (no registry image needed).
ARG BASE_IMAGE=debian:bookworm-slim
FROM ${BASE_IMAGE}
RUN set -eux; \
    export DEBIAN_FRONTEND=noninteractive; \
    apt-get update; \
    apt-get install -y --no-install-recommends etcd-server; \
    apt-get clean; \
    rm -rf /var/lib/apt/lists/* /var/cache/apt/*
USER nobody
ENTRYPOINT ["/usr/bin/etcd", "--name=demo", "--data-dir=/tmp/etcd", \
            "--listen-client-urls=http://0.0.0.0:2379", "--advertise-client-urls=http://etcd:2379", \
            "--listen-peer-urls=http://127.0.0.1:2380", "--log-level=warn", "--logger=zap"]
