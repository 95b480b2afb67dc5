#!/usr/bin/env bash
# Launch training: one process per GPU with torchrun, or plain python on CPU.
#   ./launch_training.sh [slm|regular|tiny|micro] [extra training flags...]
# Multi-node: set NNODES, NODE_RANK, MASTER_ADDR, MASTER_PORT (torchrun's rendezvous).
# Existing checkpoints are resumed automatically; pass --fresh to start over.
set -euo pipefail
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
PRESET="${1:-slm}"
case "$PRESET" in
  slm|tiny|micro) SCRIPT="$HERE/04_training/train_model_slm.py" ;;
  regular) SCRIPT="$HERE/04_training/train_model.py" ;;
  -h|--help) sed -n '2,6p' "$0"; exit 0 ;;
  *) echo "error: unknown preset '$PRESET' (slm, regular, tiny, micro)" >&2; exit 2 ;;
esac
shift || true
PY="${PYTHON:-python}"
RUN_NAME="$PRESET"
ARGS=("$@")
for ((i = 0; i < ${#ARGS[@]}; i++)); do
  case "${ARGS[$i]}" in
    --run_name|--run_name_dir) RUN_NAME="${ARGS[$((i + 1))]:-$PRESET}" ;;
    --run_name=*|--run_name_dir=*) RUN_NAME="${ARGS[$i]#*=}" ;;
  esac
done
ROOT="${LONDONLM_ROOT:-$HERE}"
RUN_DIR="$ROOT/09_models/checkpoints/$RUN_NAME"
if ls -d "$RUN_DIR"/checkpoint-* >/dev/null 2>&1 && [[ " $* " != *" --fresh "* ]]; then
  echo "Checkpoints exist in $RUN_DIR: training will RESUME from the latest valid one."
  echo "(Use ./resume_training.sh checkpoint-N for a specific one, or add --fresh to start over.)"
fi
NGPU=0
if command -v nvidia-smi >/dev/null 2>&1; then
  NGPU=$(nvidia-smi --list-gpus 2>/dev/null | wc -l || echo 0)
fi
if [ "$NGPU" -eq 0 ]; then
  NGPU=$("$PY" -c 'import torch; print(torch.cuda.device_count())' 2>/dev/null || echo 0)
fi
if [ "$NGPU" -ge 1 ]; then
  echo "Launching on $NGPU GPU(s) x ${NNODES:-1} node(s) with torchrun"
  exec "$PY" -m torch.distributed.run --nproc_per_node="$NGPU" --nnodes="${NNODES:-1}" \
    --node_rank="${NODE_RANK:-0}" --master_addr="${MASTER_ADDR:-127.0.0.1}" \
    --master_port="${MASTER_PORT:-29500}" "$SCRIPT" --preset "$PRESET" "$@"
fi
echo "No GPU found: training on CPU"
exec "$PY" "$SCRIPT" --preset "$PRESET" "$@"
