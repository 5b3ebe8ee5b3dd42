#!/usr/bin/env bash
# Arize Phoenix (a real OpenTelemetry receiver users run) in a venv of its own, for the OTel test
# (tests/integration/test_otel_phoenix.py): its pins (SQLAlchemy, OpenTelemetry proto, pandas, ...)
# must not decide ours. Idempotent: skipped when that version is already installed there.
#
# Usage: scripts/setup_phoenix.sh
# Env:   SENTINEL_PHOENIX_VENV  venv path (default ~/.cache/entropy-sentinel/phoenix-venv)
set -euo pipefail

PHOENIX_VERSION="20.26.1"
VENV="${SENTINEL_PHOENIX_VENV:-${HOME}/.cache/entropy-sentinel/phoenix-venv}"
MARKER="${VENV}/.arize-phoenix-${PHOENIX_VERSION}"

if [ -f "${MARKER}" ] && [ -x "${VENV}/bin/phoenix" ]; then
    exit 0
fi
echo "setup_phoenix: installing arize-phoenix ${PHOENIX_VERSION} into ${VENV} (~1 min)" >&2
"${SENTINEL_PYTHON:-python3}" -m venv "${VENV}"
"${VENV}/bin/python" -m pip install -q --disable-pip-version-check "arize-phoenix==${PHOENIX_VERSION}" 2>&1 \
    | { grep -v "^WARNING: Location '" || true; }   # this machine's pip config: one such line per package
touch "${MARKER}"
