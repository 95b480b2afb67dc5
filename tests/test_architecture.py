"""The library's shape, checked from its source: one module names run folders, consumers of
models never import training, user errors share one base, modules and functions stay small."""
from __future__ import annotations

import ast
from pathlib import Path

import pytest

from conftest import REPO

LIB = REPO / "londonlm"
MODULES = sorted(LIB.rglob("*.py"))
LAYOUT = LIB / "layout.py"
# Folder and file names of a run and of a stage's outputs: only layout.py spells them.
RUN_NAMES = {"final", "best", "best_info.json", "run_info.json", "pretokenized_data",
             "evaluation", "hub_stage", "sidecar.json", "runs"}
TRAINING_MODULES = ("londonlm.training", "londonlm.train_cli", "londonlm.train_args",
                    "londonlm.callbacks", "londonlm.checkpoints", "londonlm.checkpoint_cli",
                    "londonlm.lr_finder", "londonlm.pipeline")
# Model consumers: serving, evaluation, generation/inference, publishing and cards.
CONSUMER_PARTS = ("serving", "evaluation", "generation", "repl", "hub", "cards", "model_card",
                  "export")


def _rel(path: Path) -> str:
    return str(path.relative_to(REPO))


def _is_run_name(node: ast.AST) -> bool:
    if isinstance(node, ast.Constant) and isinstance(node.value, str):
        return node.value in RUN_NAMES or node.value.startswith("checkpoint-")
    if isinstance(node, ast.JoinedStr):  # f"checkpoint-{step}"
        return any(_is_run_name(v) for v in node.values)
    return False


def run_name_spellings(tree: ast.AST) -> list[int]:
    """Lines where a run-folder name is used as a path: ``x / "final"``, ``Path("final")``,
    ``os.path.join(..., "final")`` or ``p.name == "final"``."""
    lines = []
    for node in ast.walk(tree):
        if isinstance(node, ast.BinOp) and isinstance(node.op, ast.Div):
            if _is_run_name(node.left) or _is_run_name(node.right):
                lines.append(node.lineno)
        elif isinstance(node, ast.Call):
            fn = node.func
            name = fn.attr if isinstance(fn, ast.Attribute) else getattr(fn, "id", "")
            if name in ("Path", "join", "joinpath") and any(_is_run_name(a) for a in node.args):
                lines.append(node.lineno)
        elif isinstance(node, ast.Compare):
            sides = [node.left, *node.comparators]
            if any(isinstance(s, ast.Attribute) and s.attr == "name" for s in sides) and \
                    any(_is_run_name(s) for s in sides):
                lines.append(node.lineno)
    return lines


def test_checker_sees_the_spellings_it_is_for():
    src = ('a = run / "final"\nb = Path("pretokenized_data")\nc = d.name == "best"\n'
           'e = run / f"checkpoint-{n}"\nf = {"evaluation": 1}\ng = os.path.join(r, "hub_stage")\n')
    assert run_name_spellings(ast.parse(src)) == [1, 2, 3, 4, 6]


def test_only_layout_spells_run_folder_names():
    offenders = []
    for path in MODULES:
        if path == LAYOUT:
            continue
        for line in run_name_spellings(ast.parse(path.read_text())):
            offenders.append(f"{_rel(path)}:{line}")
    assert not offenders, f"use londonlm.layout instead of spelling run folders: {offenders}"


def _imports(tree: ast.AST, module: str) -> set[str]:
    """Absolute names of every module a file imports (relative imports resolved)."""
    out = set()
    pkg = module.rsplit(".", 1)[0]
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            out.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = module.split(".")[:-node.level] if node.level else []
                base = ".".join(base) or pkg
                name = f"{base}.{node.module}" if node.module else base
            else:
                name = node.module or ""
            out.add(name)
            out.update(f"{name}.{a.name}" for a in node.names)
    return out


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(REPO).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts = parts[:-1] + ["__init__"]
    return ".".join(parts)


def test_model_consumers_never_import_training():
    offenders = []
    for path in MODULES:
        rel = path.relative_to(LIB).with_suffix("")
        if not any(part.startswith(CONSUMER_PARTS) for part in rel.parts):
            continue
        for name in _imports(ast.parse(path.read_text()), _module_name(path)):
            if name.startswith(TRAINING_MODULES):
                offenders.append(f"{_rel(path)} imports {name}")
    assert not offenders, offenders


def test_every_user_error_shares_one_base():
    from londonlm.errors import LondonLMError

    import importlib
    bad = []
    for path in MODULES:
        tree = ast.parse(path.read_text())
        for node in ast.walk(tree):
            if isinstance(node, ast.ClassDef) and node.name.endswith(("Error", "Missing")):
                mod = importlib.import_module(_module_name(path).removesuffix(".__init__"))
                cls = getattr(mod, node.name, None)
                if isinstance(cls, type) and not issubclass(cls, LondonLMError):
                    bad.append(f"{_rel(path)}:{node.name}")
    assert not bad, f"user-facing errors must subclass londonlm.errors.LondonLMError: {bad}"


@pytest.mark.parametrize("path", MODULES, ids=_rel)
def test_module_size(path):
    n = len(path.read_text().splitlines())
    assert n <= 420, f"{n} lines: split {_rel(path)} by what it does"


def test_training_path_functions_are_short():
    long = []
    for path in MODULES:
        rel = _rel(path)
        if "train" not in rel and "pipeline" not in rel and "callbacks" not in rel:
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                n = node.end_lineno - node.lineno + 1
                if n > 80:
                    long.append(f"{rel}:{node.name} ({n} lines)")
    assert not long, long


TRAINER_CLASSES = ("TrainingArguments", "Trainer", "Seq2SeqTrainer", "Seq2SeqTrainingArguments")


def trainer_constructions(tree: ast.AST) -> list[str]:
    """``TrainingArguments(...)`` / ``Trainer(...)`` calls, by name or as an attribute
    (``transformers.Trainer(...)``): the places that build a trainer or its arguments."""
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Call):
            fn = node.func
            name = fn.attr if isinstance(fn, ast.Attribute) else getattr(fn, "id", "")
            if name in TRAINER_CLASSES:
                found.append(f"{name}:{node.lineno}")
    return found


def test_trainer_checker_sees_what_it_is_for():
    src = ("from transformers import Trainer, TrainingArguments\n"
           "a = TrainingArguments(output_dir='x')\nt = transformers.Trainer(model=m)\n"
           "ok = RunTrainer(model=m)\n")
    assert trainer_constructions(ast.parse(src)) == ["TrainingArguments:2", "Trainer:3"]


def test_only_the_training_package_builds_trainers():
    """One trainer: chat fine-tuning, the LR finder, the grid and every other job train
    through londonlm/training/ (one precision policy, one set of flags, agreed stops)."""
    training = LIB / "training"
    offenders = [f"{_rel(path)} {where}" for path in MODULES
                 if training not in path.parents
                 for where in trainer_constructions(ast.parse(path.read_text()))]
    assert not offenders, f"build TrainingArguments/Trainer in londonlm/training/ only: {offenders}"
