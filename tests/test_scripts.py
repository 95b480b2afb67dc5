"""Every stage script: runs from any working directory, answers --help, keeps the thin-script
shape (a docstring with a runnable command, 50-200 lines), and every config.py key is used."""
from __future__ import annotations

import ast
import dataclasses
import os
import re
import subprocess
import sys

import pytest

from conftest import REPO

SCRIPTS = sorted(p for p in REPO.glob("[01][0-9]_*/*.py"))
ROOT_ON_PATH = "sys.path.insert(0, str(Path(__file__).resolve().parents[1]))"

# The training and chat command lines (and the pipeline's, which holds both) answer --help and
# refuse a bad flag before the Trainer and the model code are imported (~4 s of a ~6-8 s start;
# a value out of range before TrainingArguments is built, which imports the model code: 8 s to
# 5.7 s on 2 Zen 3 cores); the other scripts of the chat and publishing stages never need that
# code to parse
TRAINING_FLAGS = ["04_training/train_model.py", "04_training/train_model_slm.py", "07_finetuning/finetune_chat.py",
                  "10_scripts/run_pipeline.py"]
HELP_ONLY = ["07_finetuning/build_chat_dataset.py", "07_finetuning/evaluate_chat.py",
             "10_scripts/publish_to_huggingface.py"]
TRAINER_MODULES = ("transformers.trainer", "transformers.modeling_utils", "londonlm.training.step.trainer",
                   "londonlm.chat.finetune")


def test_every_named_stage_script_exists():
    names = {str(p.relative_to(REPO)) for p in SCRIPTS}
    expected = {
        "02_data_collection/historical_data_collector.py", "02_data_collection/count_tokens.py",
        "03_tokenizer/train_historical_tokenizer.py", "03_tokenizer/test_tokenizer.py",
        "04_training/train_model_slm.py", "04_training/train_model.py",
        "04_training/test_checkpoint.py", "04_training/test_checkpoint_slm.py",
        "05_evaluation/run_evaluation.py", "06_inference/inference_unified.py",
        "10_scripts/publish_to_huggingface.py", "10_scripts/run_pipeline.py"}
    assert expected <= names, sorted(expected - names)


# (the training, chat and publishing scripts' --help is run from another directory, and judged
# the same way, by the test after this one, which also sees what it imported)
@pytest.mark.parametrize("script", [s for s in SCRIPTS if str(s.relative_to(REPO)) not in TRAINING_FLAGS + HELP_ONLY],
                         ids=lambda p: str(p.relative_to(REPO)))
def test_help_from_another_directory(script, tmp_path):
    env = dict(os.environ, LONDONLM_ROOT=str(tmp_path))
    res = subprocess.run([sys.executable, str(script), "--help"], cwd=tmp_path, env=env,
                         capture_output=True, text=True, timeout=180)
    assert res.returncode == 0, res.stderr[-2000:]
    assert "usage" in res.stdout.lower()
    assert not list(tmp_path.iterdir()), "--help must not write anything"


@pytest.mark.parametrize("script, argv", [*((s, ["--help"]) for s in TRAINING_FLAGS + HELP_ONLY),
                                          *((s, ["--learning_rate", "0"]) for s in TRAINING_FLAGS)])
def test_the_command_line_is_answered_before_the_trainer_is_imported(script, argv, tmp_path):
    out = _answered_without(script, argv, TRAINER_MODULES, tmp_path)
    if argv == ["--help"]:
        assert "usage" in out.lower() and not list(tmp_path.iterdir()), "--help must not write anything"


# The evaluation's and terminal generation's command lines are answered without torch: their
# --help took 4.0 and 4.8 s (torch and the model code imported with the package), now 0.3 and 1.6 s
@pytest.mark.parametrize("script, argv", [("05_evaluation/run_evaluation.py", ["--help"]),
                                          ("05_evaluation/run_evaluation.py", ["--seed", "-1"]),
                                          ("06_inference/inference_unified.py", ["--help"]),
                                          ("06_inference/inference_unified.py", ["--temperature", "-1"])])
def test_evaluation_and_generation_answer_the_command_line_without_torch(script, argv, tmp_path):
    _answered_without(script, argv, ("torch", "transformers.modeling_utils"), tmp_path)


def _answered_without(script: str, argv: list[str], modules: tuple[str, ...], tmp_path) -> str:
    """Run ``script argv`` (--help: exit 0, else a refusal: exit 2) and ask that none of
    ``modules`` was imported by then; its output."""
    code = ("import runpy, sys\n"
            f"sys.argv = [{str(REPO / script)!r}, *{argv!r}]\n"
            "try:\n    runpy.run_path(sys.argv[0], run_name='__main__')\n"
            "except SystemExit as e:\n    print('exit', e.code)\n"
            f"print('loaded', [m for m in {modules!r} if m in sys.modules])\n")
    res = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True,
                         env=dict(os.environ, LONDONLM_ROOT=str(tmp_path)), timeout=180)
    assert res.stdout.splitlines()[-2:] == [f"exit {0 if argv == ['--help'] else 2}", "loaded []"], \
        res.stdout[-1500:] + res.stderr[-1500:]
    return res.stdout


@pytest.mark.parametrize("script", SCRIPTS, ids=lambda p: str(p.relative_to(REPO)))
def test_thin_script_shape(script):
    src = script.read_text()
    doc = ast.get_docstring(ast.parse(src)) or ""
    assert re.search(r"python\S* \S*" + re.escape(script.name), doc), "docstring must give a runnable command"
    n = len(src.splitlines())
    assert 10 <= n <= 200, f"{n} lines: logic belongs in londonlm/"
    # config.py, in the repository root, is what checks the interpreter: each script reaches it
    # by this one line, and edits sys.path nowhere else
    lines = src.splitlines()
    before_config = lines[lines.index("import config") - 1] if "import config" in lines else ""
    assert src.count("sys.path") == 1 and before_config.startswith(ROOT_ON_PATH), \
        f"the one sys.path edit is `{ROOT_ON_PATH}`, just before `import config`"


def test_library_never_imports_config():
    for path in (REPO / "londonlm").rglob("*.py"):
        tree = ast.parse(path.read_text())
        for node in ast.walk(tree):
            names = ([a.name for a in node.names] if isinstance(node, ast.Import)
                     else [node.module or ""] if isinstance(node, ast.ImportFrom) and node.level == 0 else [])
            assert "config" not in names, f"{path} imports config.py; pass arguments instead"


def test_every_config_key_is_used():
    import config

    # config.py's own helpers (train_defaults) count: they hand values to the scripts
    user_texts = [p.read_text() for p in [*SCRIPTS, *REPO.glob("*.sh"), *REPO.glob("benchmarks/*.py"),
                                          REPO / "config.py"]]
    users = "\n".join(user_texts)
    unused = []
    for const in ("CORPUS", "TOKENIZER", "TRAINING", "EVALUATION", "HUB"):
        for f in dataclasses.fields(getattr(config, const)):
            # `CORPUS.x`, or `t = config.TRAINING` then `t.x` in the same script
            aliased = any(re.search(rf"=\s*config\.{const}\b", u) and re.search(rf"\.{f.name}\b", u)
                          for u in user_texts)
            if not re.search(rf"\b{const}\.{f.name}\b", users) and not aliased:
                unused.append(f"{const}.{f.name}")
    preset_fields = {f.name for f in dataclasses.fields(config.Preset)}
    # presets flow into training whole (training/job.py fills the configuration tree from them)
    lib = "".join(p.read_text() for p in (REPO / "londonlm" / "training").glob("*.py")) + users
    unused += [f"Preset.{n}" for n in preset_fields if n != "name" and n not in lib]
    assert not unused, f"config keys nobody uses: {unused}"


def _bare_python() -> str | None:
    """The interpreter the venv was made from, when it lacks the project's packages."""
    import shutil
    from pathlib import Path

    base = Path(sys.base_prefix) / "bin" / "python3"
    cand = str(base) if base.exists() else shutil.which("python3")
    if not cand or Path(cand) == Path(sys.executable):  # (a venv python may link to it)
        return None
    probe = subprocess.run([cand, "-c", "import torch"], capture_output=True, timeout=60)
    return cand if probe.returncode != 0 else None


@pytest.mark.parametrize("script", SCRIPTS, ids=lambda p: str(p.relative_to(REPO)))
def test_wrong_interpreter_gets_one_line_naming_the_fix(script, tmp_path):
    bare = _bare_python()
    if bare is None:
        pytest.skip("no interpreter without the project's packages on this machine")
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    res = subprocess.run([bare, str(script), "--help"], cwd=tmp_path, env=env,
                         capture_output=True, text=True, timeout=60)
    assert res.returncode != 0
    assert "Traceback" not in res.stderr
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error:") and "bash install.sh" in lines[0]


def test_config_names_missing_packages(tmp_path):
    bare = _bare_python()
    if bare is None:
        pytest.skip("no interpreter without the project's packages on this machine")
    res = subprocess.run([bare, "-c", "import config"], cwd=REPO, capture_output=True,
                         text=True, timeout=60)
    assert res.returncode != 0 and "Traceback" not in res.stderr
    assert "lacks" in res.stderr and "torch" in res.stderr and "bash install.sh" in res.stderr


def test_config_names_a_missing_install(monkeypatch):
    """Another environment's torch without the project installed: one line, not a traceback
    (or untested versions) later; the londonlm.egg-info pip leaves in the repository does not count."""
    import config

    monkeypatch.setattr(sys, "path", [str(config.REPO_DIR)])  # what a stage script adds, and no install
    with pytest.raises(SystemExit, match=r"^error: londonlm is not installed for .*bash install\.sh"):
        config.require_dependencies(modules=())


def test_an_install_is_its_own_metadata_not_a_name_that_begins_alike(tmp_path):
    """The install found as importlib.metadata finds it: ``londonlm-VERSION.dist-info`` (or an
    ``.egg-info``), never another project whose name begins with londonlm's."""
    import config

    for other in ("londonlm_extra-1.0.dist-info", "londonlmx-2.dist-info", "londonlm-0.1.0.txt"):
        (tmp_path / other).mkdir()
    assert not config._installed("londonlm", [str(tmp_path), str(tmp_path / "gone")])
    (tmp_path / "londonlm-0.1.0.dist-info").mkdir()
    assert config._installed("londonlm", [str(tmp_path / "gone"), str(tmp_path)])
    egg = tmp_path / "egg"
    (egg / "londonlm.egg-info").mkdir(parents=True)
    assert config._installed("londonlm", [str(egg)])


# --------------------------------------------------------------------------- install.sh

FAKE_PYTHON = """#!/bin/sh
# a stand-in for .venv/bin/python: reports the torch build it was told, logs pip's arguments
if [ "$1" = "-c" ]; then echo "$FAKE_TORCH"; exit 0; fi
shift 3; echo "$*" >> "$PIP_LOG"  # after -m pip --disable-pip-version-check
"""


def _install(repo, log, torch_build, **env_extra):
    env = {k: v for k, v in os.environ.items() if k not in ("TORCH_INDEX_URL", "TORCH_VERSION")}
    env.update(PIP_LOG=str(log), FAKE_TORCH=torch_build, **env_extra)
    return subprocess.run(["bash", str(repo / "install.sh")], env=env, text=True, capture_output=True,
                          timeout=60)


def test_install_takes_a_torch_wheel_index_and_replaces_another_build(tmp_path):
    import shutil

    for f in ("install.sh", "requirements.txt", "pyproject.toml", "setup.py", "londonlm/corpus/ocr/_walk.c"):
        (tmp_path / f).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(REPO / f, tmp_path / f)
    (tmp_path / ".venv" / "bin").mkdir(parents=True)
    (tmp_path / ".venv" / "bin" / "python").write_text(FAKE_PYTHON)
    (tmp_path / ".venv" / "bin" / "python").chmod(0o755)
    log = tmp_path / "pip.log"
    assert _install(tmp_path, log, "2.13.0+cpu").returncode == 0
    assert log.read_text().splitlines()[0] == "install -q torch==2.13.0"
    assert "up to date" in _install(tmp_path, log, "2.13.0+cpu").stdout
    log.unlink()
    cu126 = "https://download.pytorch.org/whl/cu126"
    assert _install(tmp_path, log, "2.13.0+cpu", TORCH_INDEX_URL=cu126).returncode == 0  # the stamp saw the index
    assert log.read_text().splitlines()[0] == f"install -q --force-reinstall torch==2.13.0 --index-url {cu126}"
    log.unlink()
    (tmp_path / ".venv" / ".londonlm-installed").unlink()
    assert _install(tmp_path, log, "2.13.0+cu126", TORCH_INDEX_URL=cu126).returncode == 0
    assert "torch==" not in log.read_text()  # that build is there already: nothing replaced


def test_install_is_redone_when_the_compiled_part_changes(tmp_path):
    """A changed _walk.c (or setup.py) changes the install stamp, so install.sh builds it again
    instead of keeping a module compiled from older source."""
    import shutil

    for f in ("install.sh", "requirements.txt", "pyproject.toml", "setup.py", "londonlm/corpus/ocr/_walk.c"):
        (tmp_path / f).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(REPO / f, tmp_path / f)

    def stamp():
        return subprocess.run(["bash", "install.sh", "--print-stamp"], cwd=tmp_path, capture_output=True, text=True,
                              check=True).stdout

    before = stamp()
    with open(tmp_path / "londonlm/corpus/ocr/_walk.c", "a") as f:
        f.write("/* changed */\n")
    assert stamp() != before


# stand-ins for .venv/bin/python in install.sh's check of the compiled walk: the import fails
# (exit 1), a build prints what a compiler missing Python's headers prints
FAILED_BUILD_PYTHON = """#!/bin/sh
if [ "$1" = "-c" ]; then [ -f "$(dirname "$0")/built" ]; exit $?; fi
echo "building 'londonlm.corpus.ocr._walk' extension"
echo "londonlm/corpus/ocr/_walk.c:10:10: fatal error: Python.h: No such file or directory"
echo "compilation terminated."
echo ""
"""
BUILT_ON_SECOND_TRY_PYTHON = FAILED_BUILD_PYTHON.replace('echo ""', 'touch "$(dirname "$0")/built"')


def _check_walk(tmp_path, python: str, tools: tuple[str, ...]):
    """``install.sh --check-walk`` with a PATH of only ``tools`` (no compiler unless one is there)."""
    import shutil

    shutil.copy2(REPO / "install.sh", tmp_path / "install.sh")
    fake = tmp_path / "venv" / "python"
    fake.parent.mkdir(exist_ok=True)
    fake.write_text(python)
    fake.chmod(0o755)
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir(exist_ok=True)
    for tool in ("dirname", "mktemp", "rm", "grep", "tail", "sed", "touch", *tools):
        if not (bin_dir / tool).exists():
            (bin_dir / tool).symlink_to(shutil.which(tool) or "/bin/true")
    env = {k: v for k, v in os.environ.items() if k != "CC"}
    env["PATH"] = str(bin_dir)
    return subprocess.run([shutil.which("bash"), str(tmp_path / "install.sh"), "--check-walk", str(fake)],
                          env=env, text=True, capture_output=True, timeout=30)


def test_install_says_why_the_compiled_walk_was_not_built(tmp_path):
    """pip -q hides a failed optional build: install.sh names the reason (no compiler, or the
    compiler's own error) and still succeeds; a walk that imports is reported built."""
    none = _check_walk(tmp_path, FAILED_BUILD_PYTHON, ())
    assert none.returncode == 0
    assert "compiled walk was not built: no C compiler found (cc/gcc)" in none.stderr
    assert "Python walk" in none.stderr and "setup.py build_ext --inplace" in none.stderr
    assert "Python.h" not in none.stderr   # no build tried without a compiler

    failed = _check_walk(tmp_path, FAILED_BUILD_PYTHON, ("cc",))
    assert failed.returncode == 0
    assert f"{tmp_path / 'bin' / 'cc'} failed; its output ends:" in failed.stderr
    assert "    londonlm/corpus/ocr/_walk.c:10:10: fatal error: Python.h: No such file or directory" in failed.stderr
    assert "Python walk" in failed.stderr

    second = _check_walk(tmp_path, BUILT_ON_SECOND_TRY_PYTHON, ("cc",))
    assert (second.returncode, second.stderr) == (0, "")
    assert "compiled walk built (on a second try" in second.stdout
    built = _check_walk(tmp_path, BUILT_ON_SECOND_TRY_PYTHON, ("cc",))  # the marker is there now
    assert built.stdout == "install.sh: OCR search: compiled walk built\n" and built.stderr == ""
