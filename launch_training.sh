#!/usr/bin/env bash
# Launch training: torchrun with one process per visible GPU, or one CPU process when none.
#   ./launch_training.sh [slm|regular|tiny|micro] [extra training flags...]
# Python: $PYTHON when set, else the project's .venv, else python3.
# GPUs: those CUDA_VISIBLE_DEVICES names when it is set, else every GPU nvidia-smi lists;
#   NPROC_PER_NODE overrides the count (on a CPU-only machine it starts that many gloo ranks).
#   GPUs this torch cannot use (a CPU build, a driver too old for its CUDA) stop it before any rank;
#   so does an nvidia-smi that fails, prints no GPU or hangs (LONDONLM_NVIDIA_SMI_TIMEOUT_S, 30).
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
  -h|--help) sed -n '2,17p' "$0"; exit 0 ;;
  *) echo "error: unknown preset '$PRESET' (slm, regular, tiny, micro)" >&2; exit 2 ;;
esac
shift || true
if [ -n "${PYTHON:-}" ]; then PY="$PYTHON"
elif [ -x "$HERE/.venv/bin/python" ]; then PY="$HERE/.venv/bin/python"
else PY=python3; fi

# The run folder, found as the training script finds it (londonlm.training.job.run_of):
# --output_dir, else <root>/09_models/checkpoints/<--run_name_dir, else --run_name, else the preset>,
# the root being --root, else $LONDONLM_ROOT, else here. The notice below and the preemption
# message look there for checkpoints: under --root elsewhere, not in this repository.
ARGS=("$@")
flag_value() {  # the last value given to flag $1 (--flag V or --flag=V), else $2
  local i found="$2"
  for ((i = 0; i < ${#ARGS[@]}; i++)); do
    case "${ARGS[$i]}" in
      "$1") found="${ARGS[$((i + 1))]:-$found}" ;;
      "$1"=*) found="${ARGS[$i]#*=}" ;;
    esac
  done
  printf '%s' "$found"
}
RUN_NAME="$(flag_value --run_name_dir "$(flag_value --run_name "$PRESET")")"
ROOT="$(flag_value --root "${LONDONLM_ROOT:-$HERE}")"
RUN_DIR="$(flag_value --output_dir "$ROOT/09_models/checkpoints/$RUN_NAME")"
if ls -d "$RUN_DIR"/checkpoint-* >/dev/null 2>&1 && [[ " $* " != *" --fresh "* ]]; then
  echo "Checkpoints exist in $RUN_DIR: training will RESUME from the latest valid one"
  echo "(or skip the run, if it finished with these settings)."
  echo "(Use ./resume_training.sh checkpoint-N for a specific one, or add --fresh to start over.)"
fi

# Visible GPUs: CUDA_VISIBLE_DEVICES decides when set (empty or -1 hides them all), else the GPU
# lines nvidia-smi prints. An nvidia-smi that hangs (a stuck driver), fails or prints no GPU line
# is no proof that there are none: that is one error line (README: training never falls back to
# the CPU silently), or CPU training that says why when the flags ask for the CPU.
SMI_TIMEOUT="${LONDONLM_NVIDIA_SMI_TIMEOUT_S:-30}"  # as londonlm.core.hardware waits
if ! [[ "$SMI_TIMEOUT" =~ ^[0-9]+$ ]] || [ "$SMI_TIMEOUT" -lt 1 ]; then
  echo "error: LONDONLM_NVIDIA_SMI_TIMEOUT_S must be whole seconds >= 1, got '$SMI_TIMEOUT'" >&2; exit 2
fi
SMI_PROBLEM=""
list_gpus() {  # nvidia-smi --list-gpus into $1; returns its exit code, 124 when it did not answer
  nvidia-smi --list-gpus >"$1" 2>&1 </dev/null &
  local pid=$! tick rc=0
  for ((tick = 0; tick < SMI_TIMEOUT * 10; tick++)); do
    kill -0 "$pid" 2>/dev/null || break
    sleep 0.1
  done
  if kill -0 "$pid" 2>/dev/null; then  # killed, never waited for: a process stuck in the driver may not die
    disown "$pid" 2>/dev/null || true  # no "Killed" job notice on stderr
    kill -KILL "$pid" 2>/dev/null || true
    return 124
  fi
  wait "$pid" || rc=$?
  return "$rc"
}
count_gpus() {
  NGPU=0
  if [ -n "${CUDA_VISIBLE_DEVICES+set}" ]; then
    local ids="${CUDA_VISIBLE_DEVICES// /}"
    case "$ids" in ""|-1*) ;; *) NGPU="$(echo "$ids" | tr "," "\n" | grep -c . || true)" ;; esac
  elif command -v nvidia-smi >/dev/null 2>&1; then
    local out rc=0 said
    out="$(mktemp)"
    list_gpus "$out" || rc=$?
    NGPU="$(grep -c -E '^GPU [0-9]+: ' "$out" || true)"
    said="$(LC_ALL=C tr -d '\000-\011\013-\037\177-\377' <"$out" | grep -m1 . | cut -c1-200 || true)"
    rm -f "$out"
    [ -z "$said" ] || said="'$said'"
    if [ "$rc" -eq 124 ]; then SMI_PROBLEM="\`nvidia-smi --list-gpus\` did not answer within $SMI_TIMEOUT s"
    elif [ "$rc" -ne 0 ]; then SMI_PROBLEM="\`nvidia-smi --list-gpus\` failed (exit $rc): ${said:-nothing}"
    elif [ "$NGPU" -eq 0 ] && [ -n "$said" ]; then
      SMI_PROBLEM="\`nvidia-smi --list-gpus\` printed $said, not a list of GPUs"
    fi
    [ -z "$SMI_PROBLEM" ] || NGPU=0
  fi
}
cpu_asked() {  # the training flags ask for the CPU (--use_cpu true, --use_cpu=1, ...)
  local i value
  for ((i = 0; i < ${#ARGS[@]}; i++)); do
    case "${ARGS[$i]}" in
      --use_cpu) value="${ARGS[$((i + 1))]:-}" ;;
      --use_cpu=*) value="${ARGS[$i]#*=}" ;;
      *) continue ;;
    esac
    case "$(echo "$value" | tr '[:upper:]' '[:lower:]')" in true|1|yes|y|t) return 0 ;; esac
  done
  return 1
}
count_gpus
if [ -n "$SMI_PROBLEM" ]; then
  if ! cpu_asked; then  # the words of londonlm.core.hardware.nvidia_smi_failed
    echo "error: $SMI_PROBLEM, so whether this machine has GPUs is unknown and training would silently run on the CPU. Fix: make \`nvidia-smi\` work where training runs (the NVIDIA driver loaded; a container needs --gpus). To train on the CPU on purpose, set CUDA_VISIBLE_DEVICES= (empty) or pass --use_cpu true" >&2
    exit 2
  fi
  echo "$SMI_PROBLEM; training on the CPU, as --use_cpu asks"
fi
# Each of torchrun's numbers a whole number in its range, or one line: NPROC_PER_NODE=gpu (or a
# typo) failed bash's test and trained one process on the CPU; NNODES=0 or MASTER_PORT=99999 was
# torchrun's traceback.
whole_number() {  # NAME VALUE LEAST [MOST]
  if ! [[ "$2" =~ ^[0-9]+$ ]] || [ "$((10#$2))" -lt "$3" ] || { [ -n "${4:-}" ] && [ "$((10#$2))" -gt "$4" ]; }; then
    echo "error: $1 must be a whole number from $3${4:+ to $4}, got '$2'" >&2; exit 2
  fi
}
[ -z "${NPROC_PER_NODE:-}" ] || whole_number NPROC_PER_NODE "$NPROC_PER_NODE" 1
NPROC="${NPROC_PER_NODE:-$NGPU}"

# Inside a Slurm allocation (one launcher task per node), take the nodes from Slurm.
if [ -n "${SLURM_JOB_ID:-}" ] && [ -n "${SLURM_NNODES:-}" ]; then
  NNODES="${NNODES:-$SLURM_NNODES}"
  NODE_RANK="${NODE_RANK:-${SLURM_NODEID:-0}}"
  if [ -z "${MASTER_ADDR:-}" ] && [ -n "${SLURM_JOB_NODELIST:-}" ] && command -v scontrol >/dev/null 2>&1; then
    MASTER_ADDR="$(scontrol show hostnames "$SLURM_JOB_NODELIST" | sed -n 1p)"
  fi
fi

whole_number NNODES "${NNODES:-1}" 1
whole_number NODE_RANK "${NODE_RANK:-0}" 0 "$((${NNODES:-1} - 1))"
whole_number MASTER_PORT "${MASTER_PORT:-29500}" 1 65535
whole_number SHUTDOWN_GRACE "${SHUTDOWN_GRACE:-300}" 0
if [ "$NPROC" -ge 1 ] || [ "${NNODES:-1}" -gt 1 ]; then
  [ "$NPROC" -ge 1 ] || NPROC=1
  echo "Launching $NPROC process(es) per node x ${NNODES:-1} node(s) with torchrun"
  RESUME_HINT="$(printf '%q ' "$0" "$PRESET" "$@")"  # quoted: a path with spaces pastes back whole
  exec "$PY" -m londonlm.training.launch --run_dir "$RUN_DIR" \
    --resume_hint "${RESUME_HINT% }" -- \
    --nproc_per_node="$NPROC" --nnodes="${NNODES:-1}" --node_rank="${NODE_RANK:-0}" \
    --master_addr="${MASTER_ADDR:-127.0.0.1}" --master_port="${MASTER_PORT:-29500}" \
    --shutdown_timeout="${SHUTDOWN_GRACE:-300}" \
    "$SCRIPT" --preset "$PRESET" "$@"
fi
echo "No GPU found: training on CPU"
exec "$PY" "$SCRIPT" --preset "$PRESET" "$@"
