#!/usr/bin/env bash
# Idempotent set-up: a virtual environment in .venv with the project and its test/dev extras.
# torch is installed first and on its own so that the local CPU build (2.13.0) satisfies
# every later requirement and no CUDA packages are pulled.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
[ -x .venv/bin/python ] || "$PY" -m venv .venv
.venv/bin/python -m pip install -q --upgrade pip >/dev/null 2>&1 || true
.venv/bin/python -c "import torch" 2>/dev/null || .venv/bin/python -m pip install -q "torch==2.13.0"
.venv/bin/python -m pip install -q -e ".[dev]"
