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
# The checkpoint is the first word that is not a flag nor a flag's value: after `--root DIR`
# (any `--flag` without `=`) DIR is the flag's, or `--root DIR` would take DIR for the
# checkpoint; a word named like one (checkpoint-N) after a flag without a value (`--use_cpu`) is.
is_checkpoint() { [[ "${1%/}" =~ (^|/)checkpoint-[0-9]+$ ]]; }
while [ $# -gt 0 ]; do
  case "$1" in
    --preset)
      if [ $# -lt 2 ]; then echo "error: --preset: expected one argument" >&2; exit 2; fi
      PRESET="$2"; shift 2 ;;
    --preset=*) PRESET="${1#*=}"; shift ;;
    -h|--help) sed -n '2,6p' "$0"; exit 0 ;;
    --*=*) REST+=("$1"); shift ;;
    --*) REST+=("$1"); shift
         if [ $# -gt 0 ] && [[ "$1" != --* ]] && ! { [ -z "$CKPT" ] && is_checkpoint "$1"; }; then
           REST+=("$1"); shift
         fi ;;
    *) if [ -z "$CKPT" ]; then CKPT="$1"; else REST+=("$1"); fi; shift ;;
  esac
done
if [ -z "$CKPT" ]; then
  exec "$PY" "$HERE/04_training/test_checkpoint_slm.py" --preset "$PRESET" --list-checkpoints "${REST[@]}"
fi
exec "$HERE/launch_training.sh" "$PRESET" --resume_from_checkpoint "$CKPT" "${REST[@]}"
