"""Every shell command in README.md works as written, in a fresh copy of the repository, from a
shell where .venv is not activated.

Commands are read from the README itself (fenced bash blocks and backticked commands in
tables), so a new command is covered without editing this test. Heavy ones are made light by
the small SUBSTITUTIONS table below (micro preset, --help, --dry_run), never skipped. The copy
gets its own .venv that sees this interpreter's packages and the copy's own code, stamped as
installed, so `bash install.sh` takes its up-to-date path instead of downloading again.
"""
from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import sysconfig
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
README = REPO / "README.md"
ACTIVATE = "source .venv/bin/activate"

# (pattern, replacement) applied in order with re.sub; each says why it is needed.
SUBSTITUTIONS: list[tuple[str, str]] = [
    # The whole test suite inside a test: run one small test file instead.
    (r"-m pytest -q$", "-m pytest -q tests/core/test_artifacts.py"),
    (r"-m pytest -q -m slow$", "-m pytest -q -m slow --co tests/core/test_artifacts.py"),
    # Sources on the internet: no network here, so only the CLI itself is exercised.
    (r"(historical_data_collector\.py) .*", r"\1 --help"),
    # A user's own scans (scans.jsonl) and ../shared: the CLI only here; tests/corpus/ocr/test_jsonl.py
    # runs it end to end on in-process rows.
    (r"(repair_ocr\.py) .*", r"\1 --help"),
    # Long-running servers and multi-node rendezvous that wait for peers.
    (r"^(python .*serve\.py .*?)( then .*)?$", r"\1 --help"),
    (r"^(?:\w+=\S+ )*NNODES=2 .*launch_training\.sh .*", "./launch_training.sh --help"),
    # Named GPUs on a machine without them: training refuses to start (tests/training/test_launch.py
    # checks that one-line refusal), where it used to train on the CPU.
    (r"^CUDA_VISIBLE_DEVICES=\d\S* (\./launch_training\.sh) .*", r"\1 --help"),
    # Another torch build from its wheel index (a download): the script computes its stamp only.
    (r"^(TORCH_INDEX_URL=\S+ bash install\.sh)$", r"\1 --print-stamp"),
    (r"^(tensorboard) .*", "true"),
    (r"^sbatch (\S+).*", r"bash -n \1"),
    # Model sizes: GPT-2 Small/Medium and the CPU demo become the seconds-long micro preset.
    (r"--preset (tiny|slm|regular)\b", "--preset micro"),
    (r"(launch_training\.sh) (slm|regular|tiny)\b", r"\1 micro"),
    (r"(resume_training\.sh) (checkpoint-\d+)", r"\1 checkpoint-20 --preset micro"),
    (r"(resume_training\.sh)$", r"\1 --preset micro"),
    (r"(train_model(?:_slm)?\.py)(?! .*--preset)", r"\1 --preset micro"),
    (r"--run_name (tiny|slm|regular)\b", "--run_name micro"),
    (r"checkpoints/tiny/", "checkpoints/micro/"),
    (r"--n_layer 6 --n_embd 384 --n_head 6 --max_length 128", "--n_layer 3 --n_embd 96 --n_head 3 --max_length 64"),
    (r"(run_pipeline\.py)(?! .*--preset)", r"\1 --preset micro"),
    (r"(compare_runs\.py) tiny tiny_adapted", r"\1 micro tiny_adapted"),
    # GPT-2 Small's 30k tokenizer becomes the micro runs' 512 (the same settings: current, kept).
    (r"--vocab_size 30000", "--vocab_size 512"),
    # Consumers without a --preset read the default (tiny) run: point them at micro's.
    (r"((?:run_evaluation|inference_unified|export_gguf|publish_to_huggingface)\.py)(?! .*--preset)",
     r"\1 --preset micro"),
    (r"(--batch_size) 4 (--gradient_accumulation_steps) 8", r"\1 2 \2 2"),
]
MICRO_STEPS = "--max_steps 20"  # every training command stops after a checkpoint is written


def readme_commands(text: str) -> list[str]:
    """Shell commands in README order: lines of ```bash blocks (continuations joined,
    comments dropped) and backticked commands in table rows."""
    out: list[str] = []
    in_block = False
    pending = ""
    for line in text.splitlines():
        if line.startswith("```"):
            in_block = (not in_block) and line.strip() in ("```bash", "```sh", "```shell")
            continue
        if in_block:
            stripped = line.strip()
            if pending:
                stripped = pending + " " + stripped
            if stripped.endswith("\\"):
                pending = stripped[:-1].strip()
                continue
            pending = ""
            cmd = re.sub(r"\s+#.*$", "", stripped).strip()
            if cmd and not cmd.startswith("#"):
                out.append(cmd)
        elif line.startswith("|"):
            for span in re.findall(r"`([^`]+)`", line):
                if re.match(r"(python|\./|bash |\.venv/|source )", span):
                    out.append(span)
    return out


def prose_commands(text: str) -> list[str]:
    """Backticked commands in the README's prose (outside fenced blocks and tables), a span
    wrapped over lines joined: commands a reader copies as well."""
    prose = re.sub(r"^```.*?^```", "", text, flags=re.S | re.M)
    prose = "\n".join(line for line in prose.splitlines() if not line.startswith("|"))
    spans = (" ".join(span.split()) for span in re.findall(r"`([^`]+)`", prose))
    return [span for span in spans if re.match(r"(python|\./|bash |\.venv/|source |\w+/\S+\.py )", span)]


def light_version(cmd: str) -> str:
    # " [--preset tiny] [--source_dir DIR]" style usage lines are documentation, not commands.
    cmd = re.sub(r"\s*\[[^\]]*\]", "", cmd)
    for pattern, repl in SUBSTITUTIONS:
        cmd = re.sub(pattern, repl, cmd)
    # Training entry points finish within seconds on micro.
    if re.search(r"train_model(_slm)?\.py|launch_training\.sh micro|run_grid\.py", cmd) \
            and "--help" not in cmd and "--max_steps" not in cmd:
        cmd = re.sub(r"((?:train_model(?:_slm)?\.py|launch_training\.sh|run_grid\.py)\s+[^&|;]*)",
                     rf"\1 {MICRO_STEPS}", cmd, count=1)
    return cmd


def test_extraction_finds_table_and_block_commands():
    text = ("| a | `python x.py --y 1` | `data/` |\n\n```bash\n./run.sh a \\\n   --b 2   # why\n"
            "# comment\n```\n```text\nnot a command\n```\n")
    assert readme_commands(text) == ["python x.py --y 1", "./run.sh a --b 2"]


def test_no_readme_command_needs_the_development_machines_folders():
    """`../shared` holds this repository's test data on its development machines; a user has
    their own texts, the corpus they collected and the registry's sources."""
    text = README.read_text(encoding="utf-8")
    commands = readme_commands(text) + prose_commands(text)
    assert "python 10_scripts/run_pipeline.py --source_dir my_texts/" in commands  # prose is read too
    assert [c for c in commands if "../shared" in c or "shared/corpus" in c] == []


def test_light_version_keeps_downloads_and_rendezvous_away():
    assert light_version("GLOO_SOCKET_IFNAME=ib0 NNODES=2 NODE_RANK=0 MASTER_ADDR=10.0.0.1 "
                         "./launch_training.sh slm") == "./launch_training.sh --help"
    assert light_version("CUDA_VISIBLE_DEVICES=0,1 ./launch_training.sh slm") == "./launch_training.sh --help"
    assert light_version("TORCH_INDEX_URL=https://download.pytorch.org/whl/cu126 bash install.sh") == \
        "TORCH_INDEX_URL=https://download.pytorch.org/whl/cu126 bash install.sh --print-stamp"


def test_light_version_uses_micro_and_help():
    assert light_version("python 04_training/train_model_slm.py") == \
        "python 04_training/train_model_slm.py --preset micro --max_steps 20"
    assert light_version("python 02_data_collection/historical_data_collector.py --sources x") \
        .endswith("--help")
    assert light_version("python 10_scripts/run_pipeline.py [--preset tiny] [--source_dir DIR]") \
        == "python 10_scripts/run_pipeline.py --preset micro"


def _copy_checkout(dst: Path) -> None:
    """The files a fresh clone would have, plus uncommitted ones not ignored by git."""
    files = subprocess.run(["git", "ls-files", "-co", "--exclude-standard", "-z"], cwd=REPO,
                           capture_output=True, check=True).stdout.decode().split("\0")
    for rel in filter(None, files):
        src = REPO / rel
        if src.is_file():
            (dst / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, dst / rel)


def _make_venv(copy: Path) -> None:
    """A .venv in the copy whose python sees this interpreter's packages and the copy's code."""
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(copy / ".venv")], check=True)
    site = next((copy / ".venv" / "lib").glob("python*/site-packages"))
    (site / "londonlm_readme_test.pth").write_text(
        f"{copy}\n{sysconfig.get_paths()['purelib']}\n")
    env = {k: v for k, v in os.environ.items() if k not in ("TORCH_VERSION", "TORCH_INDEX_URL")}
    stamp = subprocess.run(["bash", "install.sh", "--print-stamp"], cwd=copy, capture_output=True,
                           text=True, check=True, env=env)
    (copy / ".venv" / ".londonlm-installed").write_text(stamp.stdout)


def _plain_env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items()
           if k not in ("VIRTUAL_ENV", "PYTHONPATH", "LONDONLM_ROOT", "PYTHONHOME")}
    venv_bin = str(Path(sys.executable).parent)
    env["PATH"] = os.pathsep.join(p for p in env.get("PATH", "").split(os.pathsep) if p != venv_bin)
    return env


@pytest.mark.slow
def test_every_readme_command_runs_in_a_fresh_copy(tmp_path):
    copy = tmp_path / "londonlm"
    _copy_checkout(copy)
    _make_venv(copy)
    commands = readme_commands(README.read_text(encoding="utf-8"))
    assert len(commands) >= 10, commands
    activated = False
    failures = []
    for cmd in commands:
        light = light_version(cmd)
        script = f"{ACTIVATE} && {light}" if activated and cmd != ACTIVATE else light
        run = subprocess.run(["bash", "-c", script], cwd=copy, env=_plain_env(), text=True,
                             capture_output=True, timeout=900)
        activated = activated or cmd == ACTIVATE
        if run.returncode != 0 or "Traceback (most recent call last)" in run.stdout + run.stderr:
            failures.append(f"$ {cmd}\n  ran: {light}\n  exit {run.returncode}\n"
                            f"{(run.stdout + run.stderr)[-1500:]}")
    assert not failures, "\n\n".join(failures)
