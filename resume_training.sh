#!/usr/bin/env bash
# Resume a run from a checkpoint.
#   ./resume_training.sh                      list checkpoints (step, loss, time) of the slm run
#   ./resume_training.sh checkpoint-3000 [--preset tiny] [extra flags]
# An unknown checkpoint name is an error that lists the valid ones (never a fresh start).
# Python: $PYTHON when set, else the project's .venv, else python3.
set -euo pipefail
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
if [ -n "${PYTHON:-}" ]; then PY="$PYTHON"
elif [ -x "$HERE/.venv/bin/python" ]; then PY="$HERE/.venv/bin/python"
else PY=python3; fi
PRESET="${PRESET:-slm}"
CKPT=""
REST=()
while [ $# -gt 0 ]; do
  case "$1" in
    --preset) PRESET="$2"; shift 2 ;;
    --preset=*) PRESET="${1#*=}"; shift ;;
    -h|--help) sed -n '2,6p' "$0"; exit 0 ;;
    *) if [ -z "$CKPT" ] && [[ "$1" != --* ]]; then CKPT="$1"; else REST+=("$1"); fi; shift ;;
  esac
done
if [ -z "$CKPT" ]; then
  exec "$PY" "$HERE/04_training/test_checkpoint_slm.py" --preset "$PRESET" --list-checkpoints "${REST[@]}"
fi
exec "$HERE/launch_training.sh" "$PRESET" --resume_from_checkpoint "$CKPT" "${REST[@]}"
