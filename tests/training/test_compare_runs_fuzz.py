"""compare_runs.py past its parser, on run folders no test thought of: hypothesis builds one to
three runs (run_info.json, two checkpoints' trainer_state.json, final/config.json, the leakage
probes' record) and damages any of their files (missing, cut, bytes, an empty file, a folder or
a link loop in its place, JSON of another shape, one field of another kind, nesting past any
parser's depth) or the validation curve inside them (not a list, losses as text, NaN, inf,
negative, steps missing or not increasing, 100,000 points); names runs oddly (unicode, a line
separator, bytes that are no UTF-8, a leading dash), names one twice, a file, a link loop or a
run that is not there; draws the script's own flags and an output folder (fresh, holding an
earlier comparison, relative, a run's own folder, the corpus, /dev/full, a link to /dev/full
in place of an output, one the user may not write: those run as ``nobody``).

Each run ends with exit 0, a table, a CSV that parses and a PNG that opens, or with one
``error:`` line and exit 2: never a traceback or another code, and never with a run folder or
the corpus changed, a temporary file left, or an earlier comparison replaced by a broken one."""
from __future__ import annotations

import csv
import functools
import io
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from conftest import REPO, tree_digest
from flags_fuzz import drawn_argv, flag_strategy, script_actions
from londonlm.core import is_plain_name
from unprivileged import unprivileged_prefix

# examples per run (~0.3 s each); LONDONLM_FUZZ_EXAMPLES=1000 searches longer
EXAMPLES = int(os.environ.get("LONDONLM_FUZZ_EXAMPLES", 25))
FUZZ = settings(max_examples=EXAMPLES, deadline=None, suppress_health_check=list(HealthCheck))
SCRIPT = REPO / "10_scripts" / "compare_runs.py"
SKIP = {"root", "out_dir"}  # the net places the root and the output folder itself

# what the training stage records (the fields the comparison reads), and a checkpoint's state
RECORD = {"preset": "micro", "parameters": 136960, "learning_rate": 0.001, "batch_size": 2, "global_step": 4,
          "tokens_seen": 512, "tokens_per_step": 128, "total_train_wall_seconds": 4.4, "best_eval_loss": 6.21,
          "best_step": 4, "final_eval_loss": 6.21, "cache": {"tokens_validation": 5399}, "validation_bytes": 12001,
          "parent": None, "interrupted": None, "corpus_time": {"cutoff_year": None, "years": [1722, 1722]},
          "eval_curve": "@CURVE@"}
STATE = {"global_step": 4, "log_history": "@CURVE@"}
CURVE = [(2, 6.24), (4, 6.21)]
CONFIG = {"model_type": "gpt2", "n_layer": 2, "n_head": 2, "n_embd": 64, "vocab_size": 512}
LEAKAGE = {"result": {"cutoff_year": 1700, "flag": False, "facts": {
    "n": 20, "before": {"n": 10, "per_byte": {"accuracy": 0.5, "ci95": [0.3, 0.7]}},
    "after": {"n": 10, "per_byte": {"accuracy": 0.2, "ci95": [0.1, 0.4]}}}}}
NAMES = ["base", "grid-lr0.001-bs2", "ü-run", "名前 run", "a\u2028b", "r\udcff", "-dash", " lead", "x" * 200]
JSON_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers(-10, 10) | st.just(10 ** 400) | st.floats(allow_nan=True)
    | st.text(max_size=8) | st.just("\ud800"),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=6), inner, max_size=3), max_leaves=6)
# values of another kind or size where a number or a record goes
VALUES = st.sampled_from([10 ** 400, -(10 ** 400), 0, -1, float("nan"), float("inf"), 1e308, "6.2", "", None, True,
                          [], {}, [1], "\ud800", "x" * 10_000]) | JSON_VALUES
DEEP = "[" * 100_000 + "]" * 100_000


def _png() -> bytes:
    from PIL import Image

    buf = io.BytesIO()
    Image.new("RGB", (4, 4)).save(buf, format="PNG")
    return buf.getvalue()


# an earlier comparison in the output folder: each file whole, none the new run's
OLD = {".md": b"| run | old |\n", ".csv": b"run,old\nx,1\n", ".png": _png()}


# --------------------------------------------------------------------------- what is drawn

@st.composite
def curve_text(draw, pairs: bool, kind: str | None = None) -> str:
    """A validation curve as JSON text: run_info's [[step, loss]] (``pairs``) or the Trainer's
    log_history [{"step", "eval_loss"}], whole (``kind`` "good") or damaged."""
    kind = kind or draw(st.sampled_from(["value", "text loss", "nan", "inf", "negative", "no step", "unordered",
                                         "huge", "deep", "entry", "field"]))
    if kind in ("deep", "value"):
        return DEEP if kind == "deep" else json.dumps(draw(VALUES))
    points = [[s, v] for s, v in CURVE]
    if kind == "huge":
        points = [[i, 6 + i * 1e-6] for i in range(1, 100_001)]
    bad = {"text loss": "6.2", "nan": float("nan"), "inf": float("inf"), "negative": -1.0}
    if kind in bad:
        points[-1][1] = bad[kind]
    if kind == "unordered":
        points = points[::-1] + points[:1]
    items = [p if pairs else {"step": p[0], "eval_loss": p[1], "epoch": 0.1} for p in points]
    if kind == "no step":
        items[0] = items[0][1:] if pairs else {"eval_loss": items[0]["eval_loss"]}
    if kind == "entry":
        items[draw(st.integers(0, len(items) - 1))] = draw(VALUES)
    if kind == "field":  # one number of a point of another kind or size
        items[-1][draw(st.sampled_from([0, 1] if pairs else ["step", "eval_loss"]))] = draw(VALUES)
    return json.dumps(items)


@st.composite
def file_content(draw, good: dict, curve: str | None = None, kind: str | None = None):
    """Bytes for one JSON file, whole (``kind`` "good") or damaged, or ``None`` (absent),
    ``"dir"`` (a folder in its place) or ``"loop"`` (a link to itself)."""
    kind = kind or draw(st.sampled_from(["missing", "cut", "bytes", "empty", "value", "field", "field", "deep",
                                         "latin-1", "dir", "loop"]))
    record = dict(good)
    if kind == "field":
        record[draw(st.sampled_from(sorted(good)))] = draw(VALUES)
    if kind == "latin-1":
        record["preset"] = "Ætat"
    text = json.dumps(record, ensure_ascii=kind != "latin-1").replace('"@CURVE@"', curve or "[]")
    if kind in ("bytes", "value"):
        return draw(st.binary(max_size=40)) if kind == "bytes" else json.dumps(draw(VALUES)).encode()
    special = {"missing": None, "dir": "dir", "loop": "loop", "empty": b"", "deep": DEEP.encode()}
    if kind in special:
        return special[kind]
    data = text.encode("latin-1" if kind == "latin-1" else "utf-8")
    return data[:draw(st.integers(0, max(0, len(data) - 1)))] if kind == "cut" else data


# one thing damaged in a run (its other files whole), or every file drawn on its own
TARGETS = ["none", "run_info.json", "run_info curve", "checkpoint-2/trainer_state.json",
           "checkpoint-4/trainer_state.json", "trainer curves", "final/config.json", "evaluation/leakage.json",
           "several"]
GOOD = {"run_info.json": RECORD, "checkpoint-2/trainer_state.json": STATE, "checkpoint-4/trainer_state.json": STATE,
        "final/config.json": CONFIG, "evaluation/leakage.json": LEAKAGE}


@st.composite
def run_files(draw) -> dict:
    """One run's files, relative path -> content (see :func:`file_content`)."""
    target = draw(st.sampled_from(TARGETS))
    files = {}
    for rel, good in GOOD.items():
        curve = None
        if "@CURVE@" in good.values():
            damaged = {"run_info curve": rel == "run_info.json", "trainer curves": rel != "run_info.json",
                       "several": draw(st.booleans())}.get(target, False)
            curve = draw(curve_text(rel == "run_info.json", None if damaged else "good"))
        damaged = draw(st.booleans()) if target == "several" else target == rel
        files[rel] = draw(file_content(good, curve, None if damaged else "good"))
    if target != "evaluation/leakage.json" and draw(st.booleans()):
        files["evaluation/leakage.json"] = None  # most runs were never probed
    return files


SPECS = ["name", "name", "path", "twice", "a file", "loop", "missing", "corpus"]
OUTS = ["default", "fresh", "earlier", "relative", "run", "in run", "checkpoints", "corpus", "/dev/full",
        "png folder", "csv to /dev/full", "under a file", "loop", "read-only", "empty"]


@st.composite
def case(draw) -> dict:
    return {"runs": draw(st.lists(st.tuples(st.sampled_from(NAMES), run_files()), min_size=1, max_size=3,
                                  unique_by=lambda r: r[0])),
            "specs": draw(st.just([]) | st.lists(st.sampled_from(SPECS[:4]), min_size=1, max_size=2)
                          | st.lists(st.sampled_from(SPECS), min_size=1, max_size=3)),
            "out": draw(st.sampled_from(OUTS)),
            # the flags' own refusals are the parser's (tests/flags_fuzz.py): most cases go past it
            "flags": draw(st.just([]) | st.just([]) | st.lists(flag_strategy(script_actions(SCRIPT, SKIP)),
                                                               min_size=1, max_size=2, unique_by=lambda fv: fv[0])
                          | st.sampled_from([[("--name", ["x" * 240])], [("--name", ["ü" * 120])]])),  # past NAME_MAX
            "nobody": draw(st.sampled_from([False, False, False, True])) and _can_drop()}


@functools.cache
def _can_drop() -> bool:
    """Whether a command can run as a user without root's power over modes (where it cannot,
    the cases that would are run as this user: the net is not skipped for them)."""
    try:
        unprivileged_prefix()
    except pytest.skip.Exception:
        return False
    return True


# --------------------------------------------------------------------------- the scene

def place(path: Path, content) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    if content is None:
        return
    if content == "dir":
        (path / "x").mkdir(parents=True)
    elif content == "loop":
        path.symlink_to(path.name)
    else:
        path.write_bytes(content)


def build_root(base: Path, c: dict) -> Path:
    """A project root with the drawn runs, a corpus, a stray file and a link loop among them."""
    root = base / "root"
    runs = root / "09_models" / "checkpoints"
    for name, files in c["runs"]:
        for rel, content in files.items():
            place(runs / name / rel, content)
    (runs / "notes.txt").write_text("not a run\n")
    (runs / "loop").symlink_to("loop")
    corpus = root / "data" / "london_historical" / "processed"
    corpus.mkdir(parents=True)
    (corpus / "manifest.jsonl").write_text('{"id": "a"}\n')
    (corpus / "a.txt").write_text("Up betimes.\n")
    return root


def specs_argv(c: dict, root: Path) -> list[str]:
    """The runs as the command line names them (none: every run is discovered)."""
    runs = root / "09_models" / "checkpoints"
    first = c["runs"][0][0]
    words = {"name": [first], "path": [str(runs / first)], "twice": [first, str(runs / first)],
             "a file": [str(runs / "notes.txt")], "loop": ["loop"], "missing": ["nope"],
             "corpus": [str(root / "data" / "london_historical" / "processed")]}
    return [w for s in c["specs"] for w in words[s]]


def out_dir(kind: str, base: Path, root: Path, c: dict) -> str | None:
    """The --out_dir of this case (None: the default), with what the case puts in it first."""
    run = root / "09_models" / "checkpoints" / c["runs"][0][0]
    fixed = {"default": None, "relative": "x", "run": str(run), "in run": str(run / "evaluation"),
             "checkpoints": str(run.parent), "corpus": str(root / "data" / "london_historical" / "processed"),
             "/dev/full": "/dev/full", "under a file": str(run.parent / "notes.txt" / "out"),
             "loop": str(run.parent / "loop"), "empty": ""}
    if kind in fixed:
        return fixed[kind]
    out = base / "out"
    out.mkdir()
    out.chmod(0o755 if kind == "read-only" else 0o777)  # read-only bites for nobody only
    if kind in ("earlier", "read-only"):
        for suffix, data in OLD.items():
            (out / f"{_name(c)}{suffix}").write_bytes(data)
    if kind == "png folder":
        (out / f"{_name(c)}.png" / "x").mkdir(parents=True)
    if kind == "csv to /dev/full":
        (out / f"{_name(c)}.csv").symlink_to("/dev/full")
    return str(out)


def _name(c: dict) -> str:
    """The outputs' stem; a drawn --name that is no plain file name is refused, and the files
    the net places (and looks for) keep the default's, never a path such as /dev/null.csv
    (flags_fuzz's path values: placed as drawn, an earlier version of this net wrote there)."""
    name = next((words[0] for flag, words in c["flags"] if flag == "--name" and words), "comparison")
    return name if is_plain_name(name) else "comparison"


# --------------------------------------------------------------------------- the checks

def run_script(argv: list[str], base: Path, root: Path, nobody: bool) -> subprocess.CompletedProcess:
    """The script as its user runs it, in a throwaway working folder (a relative --out_dir lands
    there), with LONDONLM_ROOT at the case's root; as ``nobody`` when drawn."""
    cwd = base / "cwd"
    cwd.mkdir(mode=0o777)
    cwd.chmod(0o777)
    env = {**os.environ, "LONDONLM_ROOT": str(root), "HOME": str(cwd), "MPLCONFIGDIR": str(cwd / ".mpl")}
    prefix = []
    if nobody:
        readable(root)
        prefix = unprivileged_prefix()
    try:
        return subprocess.run([*prefix, sys.executable, str(SCRIPT), *argv], capture_output=True, text=True,
                              timeout=120, env=env, cwd=cwd, stdin=subprocess.DEVNULL)
    except subprocess.TimeoutExpired:
        pytest.fail(f"{argv!r}: still running after 120 s")


def readable(folder: Path) -> None:
    """Every folder 0755 and file 0644 (links left alone: a loop has no mode to change)."""
    for p in [folder, *folder.rglob("*")]:
        if not p.is_symlink():
            p.chmod(0o755 if p.is_dir() else 0o644)


def written_to(out: str | None, base: Path, root: Path) -> Path:
    """Where the comparison goes: the default folder, the throwaway working folder for a
    relative (or empty) --out_dir, else the folder named."""
    if out is None:
        return root / "09_models" / "comparisons"
    return base / "cwd" / out if not os.path.isabs(out) else Path(out)


def check_exit(r: subprocess.CompletedProcess, argv: list[str]) -> None:
    """Exit 0, or 2 with one ``error:`` line last on stderr; never a traceback."""
    assert "Traceback" not in r.stderr, (argv, r.stderr[-3000:])
    assert r.returncode in (0, 2), (argv, r.returncode, r.stderr[-3000:])
    if r.returncode == 2:
        lines = [line for line in r.stderr.splitlines() if line.strip()]
        assert [line for line in lines if line.startswith("error:")] == lines[-1:], (argv, r.stderr[-3000:])


def check_outputs(out: Path, name: str, ok: bool, kind: str, argv) -> None:
    """A success wrote a table, a CSV that parses and a PNG that opens; a failure left no
    temporary file, and an earlier comparison's files are each whole (old or new)."""
    if not out.is_dir():
        assert not ok or kind == "/dev/full", argv
        return
    assert not [p.name for p in out.iterdir() if p.name.endswith(".tmp")], (argv, os.listdir(out))  # atomic_writer
    files = {s: out / f"{name}{s}" for s in OLD}
    if ok:
        table = files[".md"].read_text(encoding="utf-8")
        rows = list(csv.DictReader(files[".csv"].open(encoding="utf-8", newline="")))
        assert table.startswith("| run") and len(rows) == table.count("\n") - 2, (argv, table, rows)
        _check_png(files[".png"].read_bytes())
        return
    if kind in ("earlier", "read-only"):
        assert files[".md"].read_bytes() == OLD[".md"], argv  # the table is written last
        _check_png(files[".png"].read_bytes())
        list(csv.DictReader(files[".csv"].open(encoding="utf-8", newline="")))


def _check_png(data: bytes) -> None:
    from PIL import Image

    Image.open(io.BytesIO(data)).verify()


def inputs_digest(root: Path) -> dict:
    """Every file of every run folder and the corpus (the comparison's files may sit beside the
    runs, in the checkpoints folder itself, or in the corpus folder: those are left out)."""
    runs, corpus = root / "09_models" / "checkpoints", root / "data" / "london_historical" / "processed"
    digest = {p.name: tree_digest(p) for p in runs.iterdir() if p.is_dir() and not p.is_symlink()}
    digest["corpus"] = {k: v for k, v in tree_digest(corpus).items() if k in ("manifest.jsonl", "a.txt")}
    return digest


@pytest.mark.slow  # a net, ~23 s on 2 cores
@given(c=case())
@FUZZ
def test_any_run_folders_compare_or_are_one_line(c):
    compare_case(c)


def compare_case(c: dict) -> None:
    """One drawn case, end to end (apart from the test, so a search can call it case by case)."""
    repo_before = sorted(os.listdir(REPO))
    with tempfile.TemporaryDirectory(prefix="londonlm-compare-") as d:
        base = Path(d)
        base.chmod(0o755)  # reachable for nobody
        root = build_root(base, c)
        out = out_dir(c["out"], base, root, c)
        argv = [*specs_argv(c, root), *drawn_argv(c["flags"]), *([] if out is None else ["--out_dir", out])]
        before = inputs_digest(root)
        r = run_script(argv, base, root, c["nobody"])
        check_exit(r, argv)
        check_outputs(written_to(out, base, root), _name(c), r.returncode == 0, c["out"], argv)
        assert inputs_digest(root) == before, argv
    assert sorted(os.listdir(REPO)) == repo_before  # nothing written in the repository


# --------------------------------------------------------------------------- what the net found

def _compare(argv: list[str]) -> int:
    """compare_runs.py's main in this process, as run_main runs it (its exit code)."""
    import importlib.util

    from londonlm.core.errors import run_main

    spec = importlib.util.spec_from_file_location("compare_runs_fuzz", SCRIPT)
    script = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(script)
    with pytest.raises(SystemExit) as done:
        run_main(script.main, argv)
    return done.value.code


def _record(**fields) -> str:
    return json.dumps({**RECORD, "eval_curve": [list(p) for p in CURVE], **fields})


FOUND = [  # (case, {relative path under the run "a": content}, run "b"'s run_info.json or None, exit code)
    ("a record's text holds a lone surrogate", {"run_info.json": _record(preset="\ud800")}, None, 0),
    ("parameters past a float's range", {"run_info.json": _record(parameters=10 ** 400)}, _record(), 0),
    ("validation tokens past a float's range", {"run_info.json": _record(cache={"tokens_validation": 10 ** 400})},
     _record(), 0),
    ("tokens per step past a float's range", {"run_info.json": _record(tokens_per_step=10 ** 400)}, _record(), 0),
    ("a curve's step past a float's range", {"run_info.json": _record(eval_curve=[[10 ** 400, 6.2]])}, _record(), 0),
    ("a checkpoint's step past a float's range", {"run_info.json": _record(eval_curve=None),
     "checkpoint-4/trainer_state.json": json.dumps({"global_step": 4, "log_history": [
         {"step": 10 ** 400, "eval_loss": 6.0}]})}, None, 0),
    ("a cutoff of another kind beside a year", {"run_info.json": _record(corpus_time={"cutoff_year": "x"})},
     _record(corpus_time={"cutoff_year": 1700}), 0),
    ("a best loss as text beside a number", {"run_info.json": _record(eval_curve=None, best_eval_loss="x", cache={})},
     _record(eval_curve=None, best_eval_loss=5.0), 0),
    ("a best loss as a list times 10**12 tokens", {"run_info.json": _record(
        eval_curve=None, best_eval_loss=[1], cache={"tokens_validation": 10 ** 12})}, _record(), 0),
    ("probes nested past the parser's depth", {"run_info.json": _record(), "evaluation/leakage.json": DEEP}, None, 0),
    ("a probe accuracy past a float's range", {"run_info.json": _record(), "evaluation/leakage.json": json.dumps(
        {"result": {"facts": {"before": {"n": 1, "per_byte": {"accuracy": 10 ** 400}}}}})}, None, 0),
]


@pytest.mark.parametrize("files, other, code", [c[1:] for c in FOUND], ids=[c[0] for c in FOUND])
def test_a_damaged_record_is_left_out_or_shown(tmp_path, capsys, files, other, code):
    """Each was a traceback (UnicodeEncodeError writing the CSV, OverflowError, RecursionError,
    TypeError sorting the rows) or, for a list times a token count, memory exhausted."""
    runs = tmp_path / "root" / "09_models" / "checkpoints"
    for rel, content in files.items():
        place(runs / "a" / rel, content.encode("utf-8", "surrogatepass"))
    if other is not None:
        place(runs / "b" / "run_info.json", other.encode())
    assert _compare(["--root", str(tmp_path / "root"), "--out_dir", str(tmp_path / "out")]) == code
    rows = list(csv.DictReader((tmp_path / "out" / "comparison.csv").open(encoding="utf-8", newline="")))
    assert rows and all("\ufffd" in r["preset"] or r["preset"] == "micro" for r in rows), rows
    assert "Traceback" not in capsys.readouterr().err


def test_a_run_folder_named_in_bytes_that_are_no_utf8_is_shown(tmp_path, capsys):
    """A run folder named in Latin-1 (b'r\\xff'): UnicodeEncodeError writing the CSV, a traceback."""
    runs = tmp_path / "root" / "09_models" / "checkpoints"
    place(runs / os.fsdecode(b"r\xff") / "run_info.json", _record().encode())
    assert _compare(["--root", str(tmp_path / "root"), "--out_dir", str(tmp_path / "out")]) == 0
    assert "| r\ufffd " in (tmp_path / "out" / "comparison.md").read_text(encoding="utf-8")
    rows = csv.DictReader((tmp_path / "out" / "comparison.csv").open(encoding="utf-8"))
    assert [r["run"] for r in rows] == ["r\ufffd"]


@pytest.mark.parametrize("where", ["a", "a/final", "b", "b/new"])
def test_out_dir_in_a_run_folder_is_one_line_and_writes_nothing(tmp_path, capsys, where):
    """--out_dir a compared run's folder (or one inside it, or any run's under the checkpoints
    folder): the table, CSV and plot were written among the run's files (in final/ they would
    go to the Hub with the model), exit 0."""
    runs = tmp_path / "root" / "09_models" / "checkpoints"
    for name in ("a", "b"):
        place(runs / name / "run_info.json", _record().encode())
        place(runs / name / "final" / "config.json", json.dumps(CONFIG).encode())
    before = tree_digest(runs)
    assert _compare(["a", "--root", str(tmp_path / "root"), "--out_dir", str(runs / where)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: --out_dir") and "run folder" in err[0], err
    assert tree_digest(runs) == before and not (runs / "b" / "new").exists()
    assert _compare(["a", "--root", str(tmp_path / "root"), "--out_dir", str(runs)]) == 0  # beside the runs: fine


@pytest.mark.parametrize("name", ["x" * 240, "x" * 300, "ü" * 120])
def test_a_name_too_long_for_its_files_is_one_line(tmp_path, capsys, name):
    """NAME.png written through .NAME.png.XXXXXXXX.tmp: past a file name's 255 bytes, an
    OSError (ENAMETOOLONG) traceback as the CSV was written."""
    place(tmp_path / "root" / "09_models" / "checkpoints" / "a" / "run_info.json", _record().encode())
    assert _compare(["--root", str(tmp_path / "root"), "--out_dir", str(tmp_path / "out"), "--name", name]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: --name") and "237 bytes" in err[0], err
    assert not (tmp_path / "out").exists()
