"""The library's shape, checked from its source: packages follow the stages and import in one
direction, through each other's exports, with no import circle (imports inside functions
count); one place names run folders; consumers of models never import training; user errors
share one base; one speed-settings object; training functions stay short; tests and
docs/architecture.md follow the packages. Modules are as long as their one concept needs: no
size cap (a cap split them by size, not concept)."""
from __future__ import annotations

import ast
import importlib
from pathlib import Path

from conftest import REPO

LIB = REPO / "londonlm"
MODULES = sorted(LIB.rglob("*.py"))
# Folder and file names of a run and of a stage's outputs: only the core's layout modules spell them.
LAYOUT_MODULES = (LIB / "core" / "layout.py", LIB / "core" / "checkpoints.py")
RUN_NAMES = {"final", "best", "best_info.json", "run_info.json", "pretokenized_data",
             "evaluation", "hub_stage", "sidecar.json", "runs"}
# Model consumers never import training: serving a model, evaluating it, sampling from it,
# exporting or publishing it needs no trainer.
CONSUMERS = ("serving", "evaluation", "generation", "publishing", "export")

# The stage packages, in the direction they may use each other: a package may import any
# package of an earlier tier, and a package of its own tier only where SIBLING_USES says so.
TIERS = (("core",), ("corpus",), ("tokens",), ("training",), ("evaluation", "generation"),
         ("serving", "chat", "export", "publishing"), ("pipeline", "family"))
SIBLING_USES = {("evaluation", "generation"),   # scoring a model goes through the model interface
                ("serving", "chat"),            # the server answers chat requests
                ("publishing", "chat"),         # a chat model's card and verification
                ("publishing", "export")}       # the GGUF files published beside the weights
TOP_LEVEL = ("pipeline", "family")  # the one-command runs: modules, not packages
PACKAGES = tuple(p for tier in TIERS for p in tier if p not in TOP_LEVEL)
TOP_MODULES = 6


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
        if path in LAYOUT_MODULES:
            continue
        for line in run_name_spellings(ast.parse(path.read_text())):
            offenders.append(f"{_rel(path)}:{line}")
    assert not offenders, f"use londonlm.core.layout instead of spelling run folders: {offenders}"


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(REPO).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


KNOWN = {_module_name(p) for p in MODULES}


def package_of(module: str) -> str | None:
    """``londonlm.core.layout`` -> ``core``; ``londonlm.pipeline`` -> ``pipeline``."""
    parts = module.split(".")
    return parts[1] if len(parts) > 1 and parts[0] == "londonlm" else None


def _target(module: str, is_package: bool, node: ast.ImportFrom) -> str:
    """The absolute module a ``from ... import`` reads from."""
    if not node.level:
        return node.module or ""
    base = module.split(".") if is_package else module.split(".")[:-1]
    base = base[:len(base) - node.level + 1]
    return ".".join(base + ([node.module] if node.module else []))


def _walk_imports(body, module_level_only: bool, skip_type_checking: bool = False):
    """Import statements of a body, nested ones too; with ``module_level_only``, not those
    that run later (inside functions); with either flag, not those that never run (under
    ``if TYPE_CHECKING``)."""
    for node in body:
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            yield node
        elif module_level_only and isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            continue
        elif (module_level_only or skip_type_checking) and isinstance(node, ast.If) \
                and "TYPE_CHECKING" in ast.unparse(node.test):
            yield from _walk_imports(node.orelse, module_level_only, skip_type_checking)
        else:
            for field in ("body", "orelse", "finalbody", "handlers"):
                yield from _walk_imports(getattr(node, field, []) or [], module_level_only, skip_type_checking)


def imports_of(path: Path, module_level_only: bool = False) -> list[tuple[str, list[str], int]]:
    """``(module read from, names, line)`` for every londonlm import of a file; a name that is
    itself a module (``from . import testhooks``) is reported as that module."""
    module, is_package = _module_name(path), path.name == "__init__.py"
    out = []
    for node in _walk_imports(ast.parse(path.read_text()).body, module_level_only):
        if isinstance(node, ast.Import):
            out += [(a.name, [], node.lineno) for a in node.names if a.name.startswith("londonlm")]
            continue
        target = _target(module, is_package, node)
        if not target.startswith("londonlm"):
            continue
        names = [a.name for a in node.names if f"{target}.{a.name}" not in KNOWN]
        out += [(f"{target}.{a.name}", [], node.lineno) for a in node.names if f"{target}.{a.name}" in KNOWN]
        if names:
            out.append((target, names, node.lineno))
    return out


def _tier(package: str) -> int:
    return next(i for i, tier in enumerate(TIERS) if package in tier)


def may_use(user: str, used: str) -> bool:
    """Whether package ``user`` may import package ``used`` (the direction above)."""
    return user == used or _tier(used) < _tier(user) or (user, used) in SIBLING_USES


def test_the_direction_is_one_way_and_says_what_it_is_for():
    assert may_use("chat", "training") and may_use("evaluation", "generation") and may_use("pipeline", "chat")
    assert not may_use("training", "chat") and not may_use("generation", "evaluation")
    assert not may_use("core", "corpus") and not may_use("chat", "serving")
    assert not any((b, a) in SIBLING_USES for a, b in SIBLING_USES)   # no two-way sibling use
    assert all(_tier(a) == _tier(b) for a, b in SIBLING_USES)


def test_packages_import_in_one_direction():
    """Every import, also those inside functions: core <- corpus <- tokens <- training <-
    (evaluation, generation) <- (serving, chat, export, publishing) <- pipeline."""
    offenders = []
    for path in MODULES:
        user = package_of(_module_name(path))
        for target, _, line in imports_of(path):
            used = package_of(target)
            if user and used and not may_use(user, used):
                offenders.append(f"{_rel(path)}:{line} ({user}) imports {target} ({used})")
    assert not offenders, offenders


def _exports(package: str) -> set[str]:
    return set(getattr(importlib.import_module(f"londonlm.{package}"), "__all__", ()))


def test_stages_use_each_other_only_through_their_exports():
    """Another stage package is read only as ``from londonlm.<pkg> import <name in __all__>``:
    its modules can move and split without touching the stages that use it."""
    offenders = []
    for path in MODULES:
        user = package_of(_module_name(path))
        for target, names, line in imports_of(path):
            used = package_of(target)
            if used == user or used is None or used in TOP_LEVEL:
                continue
            if target != f"londonlm.{used}":
                offenders.append(f"{_rel(path)}:{line} imports {target}: use londonlm.{used}'s exports")
            elif missing := set(names) - _exports(used):
                offenders.append(f"{_rel(path)}:{line}: {sorted(missing)} not in londonlm.{used}.__all__")
    assert not offenders, offenders


def _parents(module: str) -> list[str]:
    parts = module.split(".")
    return [".".join(parts[:i]) for i in range(1, len(parts))]


def import_edges(module: str, is_package: bool, imports) -> set[str]:
    """The modules ``imports`` of ``module`` run: importing ``a.b.c`` first runs the
    ``__init__`` of ``a`` and ``a.b``, unless the importer is inside them (already running)."""
    own = set(_parents(module)) | ({module} if is_package else set())
    return {m for target, _, _ in imports for m in [*_parents(target), target]
            if m in KNOWN and m not in own and m != module}


def module_graph(module_level_only: bool = False) -> dict[str, set[str]]:
    """Module -> the modules it imports: every import, at module level or inside a function
    (an import that runs later still ties the two modules into one), except those under
    ``if TYPE_CHECKING``, which never run; ``module_level_only``: those that run on import."""
    graph: dict[str, set[str]] = {}
    for path in MODULES:
        module = _module_name(path)
        imports = _imports_in(ast.parse(path.read_text()), module, path.name == "__init__.py", module_level_only)
        graph[module] = import_edges(module, path.name == "__init__.py", imports)
    return graph


def _imports_in(tree: ast.Module, module: str, is_package: bool, module_level_only: bool):
    """``(target, names, line)`` of the londonlm imports in ``tree`` (see :func:`imports_of`)."""
    out = []
    for node in _walk_imports(tree.body, module_level_only, skip_type_checking=True):
        if isinstance(node, ast.Import):
            out += [(a.name, [], node.lineno) for a in node.names if a.name.startswith("londonlm")]
            continue
        target = _target(module, is_package, node)
        if target.startswith("londonlm"):
            out += [(f"{target}.{a.name}" if f"{target}.{a.name}" in KNOWN else target, [a.name], node.lineno)
                    for a in node.names]
    return out


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The import circles of ``graph``: its strongly connected parts of more than one module."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    found = []

    def visit(v: str) -> None:   # Tarjan's algorithm
        index[v] = low[v] = len(index)
        stack.append(v)
        for w in graph.get(v, ()):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            part = []
            while True:
                w = stack.pop()
                part.append(w)
                if w == v:
                    break
            if len(part) > 1:
                found.append(sorted(part))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return found


def test_the_circle_finder_finds_circles():
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert cycles({"a": {"b"}, "b": set()}) == []


def test_an_import_inside_a_function_still_closes_a_circle():
    """The self-test: a circle carried by an import inside a function is found; one under
    ``if TYPE_CHECKING`` (never run) is not."""
    a = ast.parse("from londonlm.core import layout\n")
    b = ast.parse("def f():\n    from londonlm.core.errors import run_main\n")
    c = ast.parse("from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from londonlm.core import errors\n")
    graph = {"londonlm.core.errors": import_edges("londonlm.core.errors", False,
                                                  _imports_in(a, "londonlm.core.errors", False, False)),
             "londonlm.core.layout": import_edges("londonlm.core.layout", False,
                                                  _imports_in(b, "londonlm.core.layout", False, False))}
    assert cycles(graph) == [["londonlm.core.errors", "londonlm.core.layout"]]
    graph["londonlm.core.layout"] = import_edges("londonlm.core.layout", False,
                                                 _imports_in(c, "londonlm.core.layout", False, False))
    assert cycles(graph) == []
    only_module_level = import_edges("londonlm.core.layout", False,
                                     _imports_in(b, "londonlm.core.layout", False, True))
    assert only_module_level == set()  # what the module-level reading missed


def test_no_import_circles():
    """Among londonlm's modules, counting every import (inside functions too): an import moved
    into a function to dodge a circle is still one."""
    found = cycles(module_graph())
    assert not found, f"import circles: {found}"


def test_a_few_modules_at_the_top_and_one_package_per_stage():
    top = sorted(p.name for p in LIB.glob("*.py"))
    assert len(top) <= TOP_MODULES, top
    packages = {p.parent.name for p in LIB.glob("*/__init__.py")}
    assert packages == set(PACKAGES), packages ^ set(PACKAGES)


def test_tests_mirror_the_packages():
    folders = {p.name for p in (REPO / "tests").iterdir() if p.is_dir() and any(p.glob("test_*.py"))}
    assert folders == set(PACKAGES), folders ^ set(PACKAGES)


def test_architecture_doc_names_every_module():
    doc = (REPO / "docs" / "architecture.md").read_text()
    missing = [_rel(p) for p in MODULES
               if p.name != "__init__.py" and str(p.relative_to(LIB)) not in doc]
    assert not missing, f"add a line for each to docs/architecture.md: {missing}"


def test_model_consumers_never_import_training():
    offenders = []
    for path in MODULES:
        if package_of(_module_name(path)) not in CONSUMERS:
            continue
        for target, _, line in imports_of(path):
            if package_of(target) == "training":
                offenders.append(f"{_rel(path)}:{line} imports {target}")
    assert not offenders, offenders

def test_every_user_error_shares_one_base():
    from londonlm.core.errors import LondonLMError

    bad = []
    for path in MODULES:
        tree = ast.parse(path.read_text())
        for node in ast.walk(tree):
            if isinstance(node, ast.ClassDef) and node.name.endswith(("Error", "Missing")):
                mod = importlib.import_module(_module_name(path))
                cls = getattr(mod, node.name, None)
                if isinstance(cls, type) and not issubclass(cls, LondonLMError):
                    bad.append(f"{_rel(path)}:{node.name}")
    assert not bad, f"user-facing errors must subclass londonlm.core.errors.LondonLMError: {bad}"


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


def classes_with_field(tree: ast.AST, name: str) -> list[str]:
    """Classes that declare ``name`` as a field (an annotated or assigned class attribute)."""
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.ClassDef):
            for item in node.body:
                target = item.target if isinstance(item, ast.AnnAssign) else (
                    item.targets[0] if isinstance(item, ast.Assign) and len(item.targets) == 1 else None)
                if isinstance(target, ast.Name) and target.id == name:
                    found.append(node.name)
    return found


def test_one_speed_settings_object():
    """One setting, one shape: the flags (``SpeedArguments``) and the one speed-settings object
    everything else refers to (``SpeedSettings``) declare ``fused_loss``; the request, the
    probe's candidates, a run's choice and its record hold that object, not copies of its fields."""
    src = "class A:\n    fused_loss: bool = False\nclass B:\n    x: int\nclass C:\n    fused_loss = 'auto'\n"
    assert classes_with_field(ast.parse(src), "fused_loss") == ["A", "C"]
    owners = [f"{_rel(p)}:{c}" for p in MODULES if (LIB / "training") in p.parents
              for c in classes_with_field(ast.parse(p.read_text()), "fused_loss")]
    assert len(owners) <= 2, owners


# --------------------------------------------------------------------------- one training configuration

def training_arguments_fields() -> set[str]:
    import dataclasses

    from transformers import TrainingArguments

    # and what it derives as it builds (the accelerator reads these)
    return {f.name for f in dataclasses.fields(TrainingArguments)} | {"fsdp_plugin_args", "mixed_precision"}


def assigned_trainer_fields(tree: ast.AST, names: set[str]) -> list[int]:
    """Lines assigning a ``TrainingArguments`` field on an object after it exists: ``args.bf16 =``,
    ``trainer.args.x =``, ``x.args.y, z = ...``, ``setattr(args, "bf16", ...)``, and item writes into
    one of its fields (``args.fsdp_plugin_args[k] =``)."""
    def on_args(node) -> bool:
        return (isinstance(node, ast.Name) and node.id.endswith("args")) or (
            isinstance(node, ast.Attribute) and node.attr.endswith("args"))

    def hits(target) -> bool:
        if isinstance(target, (ast.Tuple, ast.List)):
            return any(hits(t) for t in target.elts)
        if isinstance(target, ast.Subscript):
            return hits(target.value)
        return isinstance(target, ast.Attribute) and target.attr in names and on_args(target.value)

    lines = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Assign) and any(hits(t) for t in node.targets):
            lines.append(node.lineno)
        elif isinstance(node, (ast.AugAssign, ast.AnnAssign)) and hits(node.target):
            lines.append(node.lineno)
        elif (isinstance(node, ast.Call) and getattr(node.func, "id", "") == "setattr" and node.args
              and on_args(node.args[0])):
            lines.append(node.lineno)
    return lines


def test_no_module_changes_training_arguments_after_they_are_built():
    """The Trainer's arguments are generated from the configuration tree (training/job.py) after
    every decision and never changed: a decision returns a new tree instead."""
    names = training_arguments_fields()
    src = ("args.bf16 = True\ntrainer.args.remove_unused_columns, x = 1, 2\nargs.fsdp_plugin_args['k'] = 1\n"
           "setattr(args, 'fp16', 1)\nself.args = args\nspec.bf16 = 1\n")
    assert assigned_trainer_fields(ast.parse(src), names) == [1, 2, 3, 4]
    found = [f"{_rel(p)}:{n}" for p in MODULES for n in assigned_trainer_fields(ast.parse(p.read_text()), names)]
    assert not found, found


def test_the_library_holds_no_test_hooks():
    """The multi-process tests' hooks live with the tests and are wired in by a test-side entry
    point: no library module imports them or reads their variables."""
    found = [_rel(p) for p in MODULES if "testhooks" in p.read_text() or "LONDONLM_TEST_" in p.read_text()]
    assert not found, found
    assert (REPO / "tests" / "training" / "testhooks.py").is_file()


def test_chat_declares_no_speed_settings_of_its_own():
    """Chat fine-tuning takes the training package's configuration tree; none of its classes
    declares its own precision, compile or loss kernel."""
    chat = [p for p in MODULES if (LIB / "chat") in p.parents]
    found = [f"{_rel(p)}:{c}:{field}" for p in chat for field in ("fused_loss", "torch_compile", "bf16", "precision")
             for c in classes_with_field(ast.parse(p.read_text()), field)]
    assert not found, found


def test_the_architecture_doc_names_only_files_that_exist():
    """Every file path docs/architecture.md names (``training/job.py``, ``tests/...``,
    ``02_data_collection/x.py``) exists, under londonlm/ or the repository."""
    import re

    doc = (REPO / "docs" / "architecture.md").read_text()
    paths = set(re.findall(r"`([\w./-]+\.(?:py|c|json|txt|jsonl|md|sh|yaml))`", doc))
    missing = sorted(p for p in paths if "/" in p and not (LIB / p).exists() and not (REPO / p).exists()
                     and not p.startswith(("data/", "09_models/", "processed/", "tokenizers/")))
    assert not missing, missing
