#!/usr/bin/env bash
# Launch training: torchrun with one process per visible GPU, or one CPU process when none.
#   ./launch_training.sh [slm|regular|tiny|micro] [extra training flags...]
# Python: $PYTHON when set, else the project's .venv, else python3.
# GPUs: those CUDA_VISIBLE_DEVICES names when it is set, else every GPU nvidia-smi lists;
#   NPROC_PER_NODE overrides the count (on a CPU-only machine it starts that many gloo ranks).
#   GPUs this torch cannot use (a CPU build, a driver too old for its CUDA) stop it before any rank.
# Nodes: NNODES, NODE_RANK, MASTER_ADDR, MASTER_PORT (torchrun's rendezvous); inside a Slurm
#   allocation they default to SLURM_NNODES, SLURM_NODEID and the first host (slurm/train.sbatch);
#   GLOO_SOCKET_IFNAME / NCCL_SOCKET_IFNAME pick the network interface on multi-interface nodes.
# Preemption: SIGTERM/SIGINT reach every rank (DataLoader workers ignore them); the ranks agree
#   on the step, save one checkpoint together and exit 0; torchrun waits SHUTDOWN_GRACE seconds
#   (default 300) before killing them, then exits 143 (SIGTERM) or 130 (SIGINT).
# Threads: OMP_NUM_THREADS when set, else this node's usable cores (affinity, cgroup quota)
#   shared among its ranks.
# Existing checkpoints are resumed automatically; pass --fresh to start over.
set -euo pipefail
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
PRESET="${1:-slm}"
case "$PRESET" in
  slm|tiny|micro) SCRIPT="$HERE/04_training/train_model_slm.py" ;;
  regular) SCRIPT="$HERE/04_training/train_model.py" ;;
  -h|--help) sed -n '2,16p' "$0"; exit 0 ;;
  *) echo "error: unknown preset '$PRESET' (slm, regular, tiny, micro)" >&2; exit 2 ;;
esac
shift || true
if [ -n "${PYTHON:-}" ]; then PY="$PYTHON"
elif [ -x "$HERE/.venv/bin/python" ]; then PY="$HERE/.venv/bin/python"
else PY=python3; fi

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

# Visible GPUs: CUDA_VISIBLE_DEVICES decides when set (empty or -1 hides them all).
count_gpus() {
  if [ -n "${CUDA_VISIBLE_DEVICES+set}" ]; then
    local ids="${CUDA_VISIBLE_DEVICES// /}"
    case "$ids" in ""|-1*) echo 0 ;; *) echo "$ids" | tr "," "\n" | grep -c . || true ;; esac
  elif command -v nvidia-smi >/dev/null 2>&1; then
    nvidia-smi --list-gpus 2>/dev/null | grep -c '^GPU' || true
  else
    echo 0
  fi
}
NGPU="$(count_gpus)"
NPROC="${NPROC_PER_NODE:-$NGPU}"

# Inside a Slurm allocation (one launcher task per node), take the nodes from Slurm.
if [ -n "${SLURM_JOB_ID:-}" ] && [ -n "${SLURM_NNODES:-}" ]; then
  NNODES="${NNODES:-$SLURM_NNODES}"
  NODE_RANK="${NODE_RANK:-${SLURM_NODEID:-0}}"
  if [ -z "${MASTER_ADDR:-}" ] && [ -n "${SLURM_JOB_NODELIST:-}" ] && command -v scontrol >/dev/null 2>&1; then
    MASTER_ADDR="$(scontrol show hostnames "$SLURM_JOB_NODELIST" | sed -n 1p)"
  fi
fi

if [ "$NPROC" -ge 1 ] || [ "${NNODES:-1}" -gt 1 ]; then
  [ "$NPROC" -ge 1 ] || NPROC=1
  echo "Launching $NPROC process(es) per node x ${NNODES:-1} node(s) with torchrun"
  exec "$PY" -m londonlm.training.launch --run_dir "$RUN_DIR" \
    --resume_hint "./launch_training.sh $PRESET $*" -- \
    --nproc_per_node="$NPROC" --nnodes="${NNODES:-1}" --node_rank="${NODE_RANK:-0}" \
    --master_addr="${MASTER_ADDR:-127.0.0.1}" --master_port="${MASTER_PORT:-29500}" \
    --shutdown_timeout="${SHUTDOWN_GRACE:-300}" \
    "$SCRIPT" --preset "$PRESET" "$@"
fi
echo "No GPU found: training on CPU"
exec "$PY" "$SCRIPT" --preset "$PRESET" "$@"
