#!/usr/bin/env bash
# The vLLM differential suite: sets up vLLM on the CPU (own venv, ~3 min once; model conversion
# ~1 min once), then runs the tests marked `vllm`, which start vLLM on a free port (~70 s).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/bootstrap.sh
bash scripts/setup_vllm.sh
.venv/bin/python -m pytest -m vllm "$@"
