"""run_grid.py --cutoffs (a family of time-locked models) over damaged earlier families: one
tiny dated corpus and one real micro family (fam-to1700, fam-to1760, fam-to1780; the last two
hold the same documents and share a tokenizer and a hard-linked token cache) are made once;
each drawn example copies that root and puts each member's run folder in a drawn state
(finished; interrupted with a checkpoint to resume, that checkpoint damaged; its record
truncated, of another JSON kind, gone, or saying it was made from another view, tokenizer,
cutoff or settings; its final weights, token cache or leakage.json damaged; another member's
run or leakage.json in its place; a file where it should be; with its checkpoints or not),
damages cutoff views, member tokenizers and the collected corpus (damaged, or collected again
with one more document), and reruns the family in this process with drawn training flags and
a drawn list of cutoffs (a subset of the first, with a new year or not).

Every call ends with exit 0, 2 with one ``error:`` line on stderr (only for a damaged
corpus: every flag drawn is valid), or 1 with each failed member named in an
``error: NAME:`` line (or stopped early by --stop_after_steps): never a traceback. Every
earlier final/ weights file is still there (in its run or moved aside); nothing is written
outside the project root (nor in the root the records were made in); a member skipped as
"finished earlier" is unchanged; every member done in this call (trained, resumed from its
checkpoint, never begun again, or skipped) is current: its record names this call's view,
tokenizer, cutoff and settings, its leakage.json this model's figures at this cutoff; a stale
one is never skipped; the comparison table lists exactly the members done in this call."""
from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
import shutil
import subprocess
import tempfile
from pathlib import Path

import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from conftest import REPO, tree_digest, write_dated_source
from londonlm.core import Layout
from londonlm.corpus import CollectionOptions, build_corpus
from londonlm.training import recorded_settings
from script_fuzz import damage_folder, edit_json, final_weights, run_in_process, weights_kept

# examples per run (~1 s each); LONDONLM_FUZZ_EXAMPLES=200 searches longer (~3.5 min)
EXAMPLES = int(os.environ.get("LONDONLM_FUZZ_EXAMPLES", 12))
SCRIPT = REPO / "10_scripts" / "run_grid.py"
YEARS = [1650, 1680, 1705, 1722, 1740, 1790, 1820, 1850]
CUTOFFS = [1700, 1760, 1780]  # 1760 and 1780 hold the same documents: one tokenizer, one cache
TOKENIZER = "london_historical_bpe"
# every call's flags (a checkpoint at each step: an interrupted member has one to resume)
FAST = ["--preset", "micro", "--prefix", "fam", "--report_to", "none", "--disable_tqdm", "true",
        "--logging_steps", "1", "--save_steps", "1", "--eval_steps", "100", "--leakage_limit", "4"]
STEPS = ["--max_steps", "2"]


# --------------------------------------------------------------------------- the call

def run_family(argv: list[str], root: Path, cwd: Path) -> tuple[int, str, str]:
    """(exit code, stdout, stderr) of the script run in this process, in ``cwd``, with the
    project root ``root`` (an exception run_main lets through, a bug, fails the test)."""
    return run_in_process(SCRIPT, argv, cwd, {"LONDONLM_ROOT": str(root)}, timeout=900)


@contextlib.contextmanager
def sandbox():
    """(base, cwd): a throwaway folder and the call's (empty) working folder in it."""
    with tempfile.TemporaryDirectory(prefix="londonlm-family-") as d:
        base = Path(d)
        (base / "cwd").mkdir()
        yield base, base / "cwd"


@pytest.fixture(scope="module")
def family_root(tmp_path_factory):
    """A project root with a dated corpus and a finished micro family fam-to1700/1760/1780."""
    base = tmp_path_factory.mktemp("family-fuzz")
    root, cwd = base / "root", base / "cwd"
    cwd.mkdir()
    src = write_dated_source(base / "src", YEARS, validation_up_to=1700, percent=30)
    layout = Layout(root)
    build_corpus(layout.processed_dir, layout.metadata_dir,
                 options=CollectionOptions(validation_percent=30, log=lambda *_: None), source_dir=src)
    argv = [*FAST, *STEPS, "--cutoffs", ",".join(map(str, CUTOFFS))]
    code, out, err = run_family(argv, root, cwd)
    assert code == 0, (out[-3000:], err[-3000:])
    # the same corpus collected again with one more document, dated 1750: the views up to 1760
    # and 1780 change, the one up to 1700 does not
    grown = Layout(base / "grown")
    src = write_dated_source(base / "src-grown", [*YEARS, 1750], validation_up_to=1700, percent=30)
    build_corpus(grown.processed_dir, grown.metadata_dir,
                 options=CollectionOptions(validation_percent=30, log=lambda *_: None), source_dir=src)
    return root


# --------------------------------------------------------------------------- drawn damages

def _sha(path: Path) -> str | None:
    return hashlib.sha256(path.read_bytes()).hexdigest() if path.is_file() else None


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path)
    elif path.exists() or path.is_symlink():
        path.unlink()


def _file_in_place(path: Path) -> None:
    """A file where a folder goes."""
    _remove(path)
    path.write_text("not a folder\n")


def _interrupt(run: Path, keep_latest: bool = False) -> None:
    """As a member stopped after its first step (SIGTERM) leaves it: no final/, checkpoint-1."""
    info = json.loads((run / "run_info.json").read_text())
    info.update(interrupted="SIGTERM", global_step=1)
    (run / "run_info.json").write_text(json.dumps(info))
    shutil.rmtree(run / "final")
    if not keep_latest:
        _remove(run / "checkpoint-2")


ODD_JSON = [[], [1, 2], 0, 7, "finished", None, True, {}, {"interrupted": None}, {"settings": []},
            {"cache": "x", "tokenizer_sha256": 5}]
# a finished member's record as if trained from another view, tokenizer or settings (values
# no drawn flag asks for), or an older record without its "settings" (compared by its
# top-level keys)
RECORDS = {
    "another view": lambda i: i["cache"].update(manifest_sha256="0" * 64),
    "another tokenizer": lambda i: i.update(tokenizer_sha256="0" * 64),
    "another seed": lambda i: i["settings"].update(seed=1234),
    "more steps": lambda i: i["settings"].update(max_steps=5),
    "another rate": lambda i: i["settings"].update(learning_rate=0.5),
    "another cutoff": lambda i: i["settings"].update(cutoff_year=1899),
    "settings of another kind": lambda i: i.update(settings=[1]),
    "interrupted, final kept": lambda i: i.update(interrupted="SIGTERM"),
    "legacy": lambda i: i.pop("settings"),
    "legacy, another seed": lambda i: (i.pop("settings"), i.update(seed=1234)),
}
LEAKAGE = "evaluation/leakage.json"
# a file of the run damaged as script_fuzz.damage_folder does it: gone, cut, another JSON value
# (a cache file cut in place: a twin's cache is the same file, hard-linked)
FILE_DAMAGES = st.one_of(
    st.sampled_from([("delete", "run_info.json"), ("delete", LEAKAGE)]),
    st.tuples(st.just("truncate"), st.sampled_from(["run_info.json", LEAKAGE, "final/model.safetensors"]),
              st.floats(0, 0.99)),
    st.tuples(st.just("json"), st.sampled_from(["run_info.json", LEAKAGE]), st.sampled_from(ODD_JSON)),
    st.tuples(st.just("truncate"), st.sampled_from([f"pretokenized_data/{f}" for f in ("train.bin", "val.bin",
                                                                                       "metadata.json")]),
              st.just(0.5)))
MEMBER_STATES = st.one_of(
    st.sampled_from([("finished",), ("finished",), ("finished",), ("interrupted",), ("interrupted",),
                     ("gone",), ("file",), ("final gone",),
                     ("interrupted", "weights damaged"), ("interrupted", "state damaged"),
                     ("interrupted", "latest damaged"), ("cache gone",)]),
    st.tuples(st.just("record"), st.sampled_from(sorted(RECORDS))),
    st.tuples(st.just("another member's run"), st.sampled_from(CUTOFFS)),
    st.tuples(st.just("another member's leakage"), st.sampled_from(CUTOFFS)),
    st.tuples(st.just("damaged file"), FILE_DAMAGES))
INTERRUPTED = [("interrupted",), ("interrupted", "latest damaged")]  # with a whole checkpoint-1 to resume
STALE = [("record", k) for k in RECORDS if k not in ("legacy", "settings of another kind", "interrupted, final kept")]


def damage_member(run: Path, state: tuple, bare: bool, pristine: Path) -> None:
    """Put ``run`` in ``state``; ``bare``: then without its checkpoints (as a run saved every
    100 steps leaves them: none); ``pristine``: the untouched family's checkpoints folder."""
    kind = state[0]
    if kind == "another member's run":
        _remove(run)
        shutil.copytree(pristine / f"fam-to{state[1]}", run)
    if bare and run.is_dir():
        for checkpoint in run.glob("checkpoint-*"):
            shutil.rmtree(checkpoint)
    if kind in ("finished", "another member's run"):
        return
    if kind == "gone":
        _remove(run)
    elif kind == "file":
        _file_in_place(run)
    elif kind in ("final gone", "cache gone"):
        _remove(run / {"final gone": "final", "cache gone": "pretokenized_data"}[kind])
    elif kind == "another member's leakage":
        if (run / LEAKAGE).parent.is_dir():
            shutil.copy(pristine / f"fam-to{state[1]}" / LEAKAGE, run / LEAKAGE)
    elif kind == "record":
        edit_json(run / "run_info.json", RECORDS[state[1]])
    elif kind == "interrupted":
        _interrupt(run, keep_latest=state[1:] == ("latest damaged",))
        target = {"weights damaged": "checkpoint-1/model.safetensors",
                  "state damaged": "checkpoint-1/trainer_state.json",
                  "latest damaged": "checkpoint-2/trainer_state.json"}.get(state[1] if len(state) > 1 else None)
        if target:
            damage_folder(run, ("truncate", target, 0.3))
    elif kind == "damaged file":
        damage_folder(run, state[1])
    else:
        raise ValueError(state)


def _cut_or_gone(*files: str):
    """A file of a folder gone or cut in half (script_fuzz.damage_folder's damages)."""
    return [d for f in files for d in (("delete", f), ("truncate", f, 0.5))]


ROOT_DAMAGES = st.one_of(
    st.tuples(st.just("view"), st.sampled_from([1700, 1760, 1780]),
              st.sampled_from(["gone", "file", "texts gone", "manifest other",
                               *_cut_or_gone("manifest.jsonl", "sidecar.json")])),
    st.tuples(st.just("tokenizer"), st.sampled_from([1700, 1760]),
              st.sampled_from(["gone", "file", "the other's", ("delete", "sidecar.json"),
                               ("delete", "tokenizer_config.json"), *_cut_or_gone("tokenizer.json")])),
    st.tuples(st.just("corpus"), st.sampled_from(["grown", "grown", *_cut_or_gone("manifest.jsonl")])))


def damage_root(layout: Layout, damage: tuple) -> None:
    kind, where, how = damage[0], damage[1], damage[-1]
    if kind == "corpus":
        if how == "grown":  # collected again, with a document dated 1750 more
            grown = Layout(layout.root.parent / "grown")  # (beside the root: see the test)
            for folder in ("processed_dir", "metadata_dir"):
                _remove(getattr(layout, folder))
                shutil.copytree(getattr(grown, folder), getattr(layout, folder))
        else:
            damage_folder(layout.processed_dir, how)
        return
    folder = layout.cutoff_dir(where) if kind == "view" else layout.tokenizer_dir(TOKENIZER, where)
    if how in ("gone", "file"):
        _file_in_place(folder) if how == "file" else _remove(folder)
    elif not folder.is_dir():  # an earlier damage put a file there, or took the folder
        return
    elif isinstance(how, tuple):
        damage_folder(folder, how)
    elif how == "manifest other":
        (folder / "manifest.jsonl").write_text('{"id": "x", "split": "train", "year": 1650}\n')
    elif how == "texts gone":
        for p in folder.rglob("*.txt"):
            p.unlink()
    elif how == "the other's":  # the other view's tokenizer (its sidecar too) in its place
        other = layout.tokenizer_dir(TOKENIZER, 1760 if where == 1700 else 1700)
        if other.is_dir():
            _remove(folder)
            shutil.copytree(other, folder)
    else:
        raise ValueError(damage)


# training flags passed to every member: those in SETTINGS change what a finished member was
# trained with (it must start over, never be skipped); --stop_after_steps stops each member early
PASSED = [("--seed", ["7"]), ("--max_steps", ["3"]), ("--max_steps", ["1"]), ("--learning_rate", ["2e-3"]),
          ("--fresh", []), ("--eval_steps", ["1"]), ("--warmup_steps", ["1"]), ("--stop_after_steps", ["1"]),
          ("--leakage_limit", ["3"])]
# what the family trains with unless a drawn flag says otherwise (the micro preset's)
ASKED = {"max_steps": 2, "seed": 42, "learning_rate": 0.003, "warmup_steps": 5, "leakage_limit": 4}
SETTINGS = {"--seed", "--max_steps", "--learning_rate", "--warmup_steps"}
# cutoff lists: subsets of the first, and new years (1745: 1760's documents again; 1725: new ones)
CUTOFF_LISTS = st.lists(st.sampled_from([1700, 1760, 1780, 1700, 1760, 1780, 1745, 1725]),
                        min_size=1, max_size=4, unique=True)


# --------------------------------------------------------------------------- the checks

def check_exit(code: int, out: str, err: str, argv: list[str], names: list[str]) -> list[str]:
    """0; 2 with one ``error:`` line; 1 with every failed member named in an ``error: NAME:``
    line of its own (or stopped early, as --stop_after_steps asks). Returns the failed members."""
    assert "Traceback" not in out and "Traceback" not in err, (argv, out[-3000:], err[-3000:])
    assert code in (0, 1, 2), (argv, code, err[-3000:])
    lines = [line for line in err.splitlines() if line.strip()]
    errors = [line for line in lines if line.startswith("error:")]
    member_errors = re.findall(r"^error: (fam-to\d+): ", out, re.M)
    if code == 2:
        assert len(errors) == 1 and errors == lines[-1:], (argv, err[-3000:])
        return []
    failed = []
    if code == 1:
        assert errors and errors == lines[-1:], (argv, err[-3000:])
        m = re.search(r"run\(s\) failed or stopped early: (.*?); the lines", errors[0])
        assert m or "no run finished" in errors[0], (argv, errors)
        failed = m.group(1).split(", ") if m else names  # (none finished: every member failed)
        unsaid = [n for n in failed if n not in member_errors]
        stopped = len(re.findall(r"^stopped early \(--stop_after_steps", out, re.M))
        assert len(unsaid) <= stopped, (argv, failed, out[-3000:])
    else:
        assert not errors, (argv, err[-3000:])
    assert set(member_errors) <= set(failed), (argv, member_errors, failed)  # an error line is a failure
    return failed


def check_current(layout: Layout, name: str, asked: dict, out: str) -> None:
    """A member done in this call (trained, or skipped as finished earlier) is finished and
    made from this call's view, tokenizer and settings, as its record says."""

    run, cutoff = layout.run(name), int(name.rsplit("to", 1)[1])
    info = json.loads(run.run_info.read_text())
    assert (run.final / "model.safetensors").is_file() and not info.get("interrupted"), (name, info)
    # the tokenizer this call gave it: its own, or (its view the same as an earlier member's)
    # that member's; compared by content, as the family does (the record names the folders of
    # the root and call it was made in: this root is a copy, and a twin may have failed since)
    twin = re.search(rf"^cutoff {cutoff}: the same documents as fam-to(\d+);", out, re.M)
    tokenizer = layout.tokenizer_dir(TOKENIZER, int(twin.group(1)) if twin else cutoff) / "tokenizer.json"
    assert info["tokenizer_sha256"] == _sha(tokenizer), (name, "made with another tokenizer")
    view = layout.cutoff_dir(cutoff)
    assert Path(info["processed_dir"]).name == view.name, (name, info["processed_dir"])
    assert info["cache"]["manifest_sha256"] == _sha(view / "manifest.jsonl"), (name, "made from another view")
    recorded = recorded_settings(info)
    for key, value in {**asked, "cutoff_year": cutoff}.items():
        if key != "leakage_limit" and (key in recorded or "settings" in info):
            assert recorded.get(key) == value, (name, key, recorded.get(key), value)
    # the leakage figures tabulated are this model's, probed at its cutoff as asked
    leakage = json.loads(run.leakage.read_text())
    assert leakage["model"]["weights_sha256"] == _sha(run.final / "model.safetensors"), (name, leakage["model"])
    assert leakage["settings"] == {"cutoff_year": cutoff, "limit": asked["leakage_limit"]}, (name, leakage["settings"])
    assert leakage["result"]["cutoff_year"] == cutoff, name


class Digest(dict):
    """A folder's :func:`tree_digest`, shown short in a failing example."""

    def __repr__(self) -> str:
        return f"<digest of {len(self)} files>"


@pytest.fixture(scope="module")
def pristine(family_root):
    """The family's files as made: no example may change them (the records name their paths)."""
    return Digest(tree_digest(family_root))


@pytest.mark.slow  # a net, ~24 s on 2 cores
@given(states=st.lists(MEMBER_STATES, min_size=3, max_size=3), bare=st.lists(st.booleans(), min_size=3, max_size=3),
       damages=st.lists(ROOT_DAMAGES, max_size=2),
       passed=st.lists(st.sampled_from(PASSED), max_size=2, unique_by=lambda fv: fv[0]),
       cutoffs=st.one_of(st.just(CUTOFFS), CUTOFF_LISTS))
@settings(max_examples=EXAMPLES, deadline=None, suppress_health_check=list(HealthCheck))
def test_a_family_over_a_damaged_earlier_family_keeps_its_promises(family_root, pristine, states, bare, damages,
                                                                    passed, cutoffs):
    repo_before = sorted(os.listdir(REPO))
    with sandbox() as (base, cwd):
        root = base / "root"
        # (cp -a keeps the hard links the family made: twins share their token cache)
        subprocess.run(["cp", "-a", str(family_root), str(root)], check=True)
        shutil.copytree(family_root.parent / "grown", base / "grown")
        layout = Layout(root)
        runs = layout.checkpoints_dir
        for cutoff, state, no_checkpoints in zip(CUTOFFS, states, bare):
            damage_member(runs / f"fam-to{cutoff}", state, no_checkpoints, family_root / runs.relative_to(root))
        for damage in damages:
            damage_root(layout, damage)
        shutil.rmtree(layout.models_dir / "comparisons")  # written again only by this call
        before = {p.name: tree_digest(p) for p in runs.glob("*") if p.is_dir()}
        weights = final_weights(runs)
        flags = [w for name, values in passed for w in (name, *values)]
        asked = {**ASKED, **{name[2:]: json.loads(values[0]) for name, values in passed if name[2:] in ASKED}}
        argv = [*FAST, *(STEPS if "--max_steps" not in flags else []), *flags,
                "--cutoffs", ",".join(map(str, cutoffs))]

        code, out, err = run_family(argv, root, cwd)

        names = [f"fam-to{c}" for c in sorted(cutoffs)]
        failed = check_exit(code, out, err, argv, names)
        event(f"exit {code}" + (": " + re.sub(r"/\S*|\d+", "N", err.strip().splitlines()[-1])[:90] if code else ""))
        for line in re.findall(r"^error: fam-to\d+: (.*)$", out, re.M):
            event("member: " + re.sub(r"/\S*|\d+", "N", line)[:90])
        if not any(d[0] == "corpus" and d[1] != "grown" for d in damages):  # only a member can fail
            assert code != 2, (argv, states, damages, err[-2000:])
        # nothing lost, nothing written elsewhere
        weights_kept(runs, weights)
        assert sorted(os.listdir(base)) == ["cwd", "grown", "root"] and not list(cwd.iterdir()), os.listdir(base)
        assert sorted(os.listdir(REPO)) == repo_before
        assert tree_digest(family_root) == pristine, "an example wrote into the root its records came from"
        if code == 2:
            return
        done = [n for n in names if n not in failed]
        skipped = re.findall(r"^(fam-to\d+): finished earlier, skipped", out, re.M)
        for name in done:  # finished in this call or skipped as current
            check_current(layout, name, asked, out)
        for name in skipped:
            assert "--fresh" not in flags, (argv, name)
            # unchanged (the leakage probes are redone when their file does not hold this model's
            # figures; a twin's token cache is linked in again where it was taken: data, not the model)
            keep = lambda d: {k: v for k, v in d.items()  # noqa: E731
                              if not k.startswith(("evaluation/", "pretokenized_data/"))}
            assert keep(tree_digest(runs / name)) == keep(before[name]), (name, "a skipped member changed")
        for cutoff, state, no_checkpoints in zip(CUTOFFS, states, bare):
            name = f"fam-to{cutoff}"
            if name not in names or "--fresh" in flags:
                continue
            if state == ("finished",) and not damages and not SETTINGS & set(flags):
                assert name in skipped, (argv, out[-3000:])  # current: never retrained
            if state in STALE or (state == ("finished",) and SETTINGS & set(flags)):
                assert name not in skipped, (argv, state, out[-3000:])  # stale: never skipped
                if name in done:  # started over, the old run moved aside
                    assert re.search(rf"^{name}: .*; starting it over", out, re.M), (argv, out[-3000:])
                    assert list(runs.glob(f"{name}.previous-*")), (argv, name)
            if state in INTERRUPTED and not no_checkpoints and name in done:  # resumed, never begun again
                resumed = json.loads(layout.run(name).run_info.read_text()).get("resumed_from")
                assert str(resumed).endswith("checkpoint-1"), (argv, name, resumed)
        table = layout.models_dir / "comparisons" / "fam.md"
        if table.is_file():
            rows = [line.split("|")[1].strip() for line in table.read_text().splitlines()
                    if line.startswith("| fam-to")]
            assert rows == done, (argv, rows, done, out[-3000:])
        else:
            assert not done, (argv, out[-3000:])


# --------------------------------------------------------------------------- what the net found

@pytest.mark.parametrize("where", ["run", "view", "tokenizer"])
def test_a_file_where_a_members_folder_goes_fails_that_member_only(family_root, where):
    """A file where fam-to1700's run, cutoff view or tokenizer folder goes: the OSError (EEXIST,
    ENOTDIR) ended the whole family in one line, exit 2, before fam-to1760 was looked at; it is
    that member's error now, and the others go on."""
    with sandbox() as (base, cwd):
        root = base / "root"
        subprocess.run(["cp", "-a", str(family_root), str(root)], check=True)
        layout = Layout(root)
        folder = {"run": layout.run("fam-to1700").dir, "view": layout.cutoff_dir(1700),
                  "tokenizer": layout.tokenizer_dir(TOKENIZER, 1700)}[where]
        _remove(folder)
        folder.write_text("not a folder\n")
        code, out, err = run_family([*FAST, *STEPS, "--cutoffs", "1700,1760"], root, cwd)
        assert check_exit(code, out, err, [], ["fam-to1700", "fam-to1760"]) == ["fam-to1700"], err
        assert code == 1 and re.search(r"^error: fam-to1700: cannot (make|use) .*(file|folder)", out, re.M), out
        assert "fam-to1760: finished earlier, skipped" in out
        assert folder.read_text() == "not a folder\n"  # left as it was
        table = (layout.models_dir / "comparisons" / "fam.md").read_text()
        assert "| fam-to1760 " in table and "fam-to1700" not in table
