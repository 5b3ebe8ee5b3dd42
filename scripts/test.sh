#!/usr/bin/env bash
# The whole test suite on a fresh machine: venv, install, build/cache the embedded llama-server, pytest.
# Extra arguments go to pytest. The vLLM differential suite is separate: scripts/test_vllm.sh.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
[ -x .venv/bin/python ] || "$PY" -m venv .venv
.venv/bin/python -m pip install -q --disable-pip-version-check -e '.[test]'
.venv/bin/entropy-sentinel prepare          # ~8 min the first time on 2 cores, then cached
.venv/bin/python -m pytest "$@"
