#!/usr/bin/env bash
# Start vLLM's OpenAI-compatible server on the CPU, in the foreground (exec: the PID a test
# fixture spawns is the server's; kill it to stop it). Run scripts/setup_vllm.sh once first.
#
# Usage: scripts/start_vllm.sh PORT [extra vLLM args...]
#   e.g. scripts/start_vllm.sh 18100 --chat-template proxy/entropy_sentinel/embedded/gemma_chat_template.jinja
# Ready when GET http://127.0.0.1:PORT/v1/models answers 200 (~70 s here).
# Env: SENTINEL_VLLM_VENV, SENTINEL_VLLM_MODEL_DIR (as in setup_vllm.sh); VLLM_CPU_* may be
# overridden. The model is served as "gemma-3-270m".
set -euo pipefail

if [[ $# -lt 1 || ! "$1" =~ ^[0-9]+$ ]]; then
    echo "usage: $0 PORT [extra vLLM args...]" >&2
    exit 2
fi
PORT="$1"
shift

CACHE_ROOT="${HOME}/.cache/entropy-sentinel"
VENV="${SENTINEL_VLLM_VENV:-${CACHE_ROOT}/vllm-venv}"
MODEL_DIR="${SENTINEL_VLLM_MODEL_DIR:-${CACHE_ROOT}/gemma-3-270m-hf}"

if [[ ! -x "${VENV}/bin/python" || ! -f "${VENV}/.entropy-sentinel-setup-ok" ]]; then
    echo "start_vllm: no vLLM venv at ${VENV}; run scripts/setup_vllm.sh" >&2
    exit 1
fi
if [[ ! -f "${MODEL_DIR}/.entropy-sentinel-complete" ]]; then
    echo "start_vllm: no converted model at ${MODEL_DIR}; run scripts/setup_vllm.sh" >&2
    exit 1
fi

NCPU="$(nproc)"
export HF_HUB_OFFLINE=1
export TRANSFORMERS_OFFLINE=1
export VLLM_CPU_KVCACHE_SPACE="${VLLM_CPU_KVCACHE_SPACE:-2}"
export VLLM_CPU_NUM_OF_RESERVED_CPU="${VLLM_CPU_NUM_OF_RESERVED_CPU:-0}"
export VLLM_CPU_OMP_THREADS_BIND="${VLLM_CPU_OMP_THREADS_BIND:-0-$((NCPU - 1))}"
export VLLM_NO_USAGE_STATS=1
export DO_NOT_TRACK=1

# `vllm serve` does not work here (the distribution is named vllm-cpu): use the module.
exec "${VENV}/bin/python" -m vllm.entrypoints.openai.api_server \
    --model "${MODEL_DIR}" \
    --served-model-name gemma-3-270m \
    --max-model-len 2048 \
    --dtype float32 \
    --enforce-eager \
    --host 127.0.0.1 \
    --port "${PORT}" \
    "$@"
