#!/usr/bin/env bash
# `make compose-demo [ARGS=--keep]`: the docker-compose demo end to end (scripts/compose_demo.py).
# Installs what is missing first (the venv, Debian's docker.io / docker-compose / busybox-static /
# debootstrap), starts a private dockerd when none is running, cleans everything up.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
bash scripts/install.sh
bash scripts/install.sh
exec .venv/bin/python scripts/compose_demo.py "$@"
