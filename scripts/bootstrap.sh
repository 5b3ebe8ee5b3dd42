#!/usr/bin/env bash
# Creates .venv (if missing) and installs the project with its test extras, editable.
set -euo pipefail
cd "$(dirname "$0")/.."
[ -x .venv/bin/python ] || "${PYTHON:-python3}" -m venv .venv
.venv/bin/python -m pip install -q --disable-pip-version-check -e '.[test]'
