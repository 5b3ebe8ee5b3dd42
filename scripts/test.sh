#!/usr/bin/env bash
# The whole test suite on a fresh machine: venv, install, build/cache the embedded llama-server, pytest.
# Extra arguments go to pytest. The vLLM differential suite is separate: scripts/test_vllm.sh.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/bootstrap.sh
bash scripts/system_deps.sh                 # chromium + promtool, only if missing
bash scripts/setup_phoenix.sh               # Arize Phoenix in its own venv (the OTel receiver test), ~1 min once
.venv/bin/entropy-sentinel prepare          # ~8-15 min the first time on 2 cores, then cached
.venv/bin/python -m pytest "$@"
