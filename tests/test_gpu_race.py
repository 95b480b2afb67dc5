"""benchmarks/gpu_race.py on a CPU: the seed recipe's flags and fitted schedule, the data's
held-out rule, the snapshot shim, scoring by the shared bpb.py, the time to a bpb, the JSON and
the BENCHMARKS.md block (written to a copy), the dry run, its refusals, and a short smoke race
(the 30-second one is slow)."""
from __future__ import annotations

import importlib.util
import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import SHARED, write_micro_source

REPO = Path(__file__).resolve().parents[1]
SCRIPT = REPO / "benchmarks" / "gpu_race.py"
if str(REPO / "benchmarks") not in sys.path:
    sys.path.append(str(REPO / "benchmarks"))  # appended: benchmarks/ never shadows a package

from race import data as race_data, recipes as R, report  # noqa: E402

BPB = SHARED / "bench" / "bpb.py"
SLM_BEGIN, SLM_END = "<!-- gpu-race:begin -->", "<!-- gpu-race:end -->"  # the issue names these
needs_shared_bench = pytest.mark.skipif(not (SHARED / "bench" / "baseline_clm.py").exists() or not BPB.exists(),
                                        reason="needs ../shared/bench (baseline_clm.py, bpb.py): not here")


def run_script(*args: str, env: dict | None = None, timeout: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(SCRIPT), *args], capture_output=True, text=True, timeout=timeout,
                          cwd="/", env=env)


# --------------------------------------------------------------------------- recipes

def test_seed_recipe_is_the_guides_flags_for_gpt2_small():
    import config

    slm = config.get_preset("slm")
    cmd = R.seed_cmd(Path("baseline_clm.py"), [Path("a.txt")], Path("tok"), slm, R.seed_recipe("slm"),
                     steps=5000, warmup=83, seconds=180, out=Path("o"))
    flags = " ".join(cmd)
    # the docstring of ../shared/bench/baseline_clm.py, its schedule fitted to the seconds
    for f in ("--n-layer 12", "--n-head 12", "--n-embd 768", "--block-size 512", "--batch-size 16",
              "--grad-accum 2", "--lr 0.0003", "--warmup-steps 83", "--max-steps 5000", "--bf16",
              "--dropout 0.1", "--max-seconds 180"):
        assert f in flags, f
    regular = R.seed_cmd(Path("b.py"), [Path("a.txt")], Path("tok"), config.get_preset("regular"),
                         R.seed_recipe("regular"), 700, 23, 180, Path("o"))
    assert "--n-layer 24" in " ".join(regular) and "--block-size 1024" in " ".join(regular)
    assert "--batch-size 8 --grad-accum 4" in " ".join(regular)  # the same 32 sequences a step
    micro = R.seed_cmd(Path("b.py"), [Path("a.txt")], Path("tok"), config.get_preset("micro"),
                       R.seed_recipe("micro"), 100, 2, 30, Path("o"))
    assert "--n-layer 2" in " ".join(micro) and "--batch-size 16 --grad-accum 2" in " ".join(micro)


def test_ours_is_the_training_command_with_the_presets_defaults_and_a_time_budget():
    cmd = R.ours_cmd("slm", Path("/r"), Path("/t"), Path("/p"), 180)
    assert cmd[1].endswith("04_training/train_model_slm.py")
    assert " ".join(cmd[2:]).startswith("--preset slm --root /r --tokenizer_dir /t --processed_dir /p")
    assert "--time_budget 180" in " ".join(cmd)
    for override in ("--learning_rate", "--batch_size", "--warmup_steps", "--max_steps", "--dropout"):
        assert override not in cmd  # the preset decides


def test_slm_trains_without_dropout_since_the_h200_race_and_the_seed_recipe_keeps_the_guides():
    """The H200 race of 2026-11-30 (ours at 60 s, dropout 0 against 0.1, the same call): dropout 0
    reached each held-out bpb sooner and ended 0.046 bpb lower, so slm's default is 0; regular keeps
    the guide's 0.1 until its own race, and the seed recipe is the guide's whatever the presets say."""
    import config
    from londonlm.training import build_config, parse_train_flags
    from londonlm.training.cli import TrainDefaults

    def dropout(preset, *argv):
        defaults = TrainDefaults(config.PRESETS, preset, config.get_layout(), config.TOKENIZER.name, 0, "t")
        return build_config(parse_train_flags(["--preset", preset, *argv]), defaults).model.dropout

    assert (dropout("slm"), dropout("regular"), dropout("slm", "--dropout", "0.1")) == (0.0, 0.1, 0.1)
    seed = R.seed_cmd(Path("b.py"), [Path("a.txt")], Path("tok"), config.get_preset("slm"), R.seed_recipe("slm"),
                      100, 2, 30, Path("o"))
    assert "--dropout 0.1" in " ".join(seed)


def test_fitted_steps_skip_start_up_and_ignore_a_stalled_step():
    # 2 s of start-up in the first step, then 0.1 s a step
    clock = [(1, 2.0), *[(s, 2.0 + 0.1 * (s - 1)) for s in range(2, 41)]]
    # step n ends at 2.0 + 0.1 (n - 1) s: 281 end within 30 s (one fewer, from rounding, is fine)
    assert R.fit_steps(clock, 30.0) in (280, 281)
    stalled = [*clock[:20], *[(s, t + 5.0) for s, t in clock[20:]]]  # one 5-second stall at step 21
    assert abs(R.fit_steps(stalled, 30.0) - R.fit_steps(clock, 30.0)) <= 1  # a mean would lose 50 steps
    assert R.fit_steps([(1, 0.5)], 10.0) == 20  # one step: its own time
    with pytest.raises(ValueError):
        R.fit_steps([], 10.0)


def test_warmup_is_the_guides_share_of_the_fitted_steps():
    assert R.warmup_for(6000, R.seed_recipe("slm")) == 100       # 1,000 of 60,000
    assert R.warmup_for(6000, R.seed_recipe("regular")) == 200   # 2,000 of 60,000
    assert R.warmup_for(10, R.seed_recipe("micro")) == 1         # never none


def test_a_variant_is_ours_with_training_flags_changed_and_never_the_races_own():
    v = R.parse_variant("muon=--optimizer muon --learning_rate 0.02", 60)
    assert (v.name, v.flags, v.seconds, v.run_name) == ("muon", ("--optimizer", "muon", "--learning_rate", "0.02"),
                                                        60, "race_ours_muon")
    assert R.parse_variant("ctx-1024=--max-length=1024", 5).flags == ("--max-length=1024",)
    for spec, says in (("muon", "NAME=FLAGS"), ("Muon=--optimizer muon", "NAME=FLAGS"), ("=--dropout 0", "NAME=FLAGS"),
                       ("base=--dropout 0", "uses itself"), ("ours=--dropout 0", "uses itself"),
                       ("x=dropout 0", "starting with '--'"), ("x=", "starting with '--'"),
                       ("x=--optimizer 'muon", "quotation"),
                       ("x=--time-budget 5", "--time_budget"), ("x=--dropout 0 --root=/tmp", "--root"),
                       ("x=--max_steps 9 --fresh", "--fresh, --max_steps")):
        with pytest.raises(ValueError, match=says):
            R.parse_variant(spec, 60)


def test_variants_lead_with_ours_unchanged_when_their_seconds_differ():
    gpu_race = _race_module()
    same = gpu_race.variants(["muon=--optimizer muon"], 180, 180)
    assert [v.name for v in same] == ["muon"]  # compared with the race's own ours
    short = gpu_race.variants(["muon=--optimizer muon", "lr=--learning_rate 1e-3"], 60, 180)
    assert [(v.name, v.flags, v.seconds) for v in short] == [
        ("base", (), 60), ("muon", ("--optimizer", "muon"), 60), ("lr", ("--learning_rate", "1e-3"), 60)]
    assert gpu_race.variants([], 60, 180) == []
    with pytest.raises(ValueError, match="each name once"):
        gpu_race.variants(["a=--dropout 0", "a=--dropout 0.2"], 60, 180)


def test_ours_row_says_when_final_is_an_earlier_evaluations_weights():
    gpu_race = _race_module()
    info = {"settings": {"batch_size": 8, "gradient_accumulation_steps": 1, "optimizer": "adamw",
                         "learning_rate": 3e-3, "warmup_steps": 5, "dropout": 0.0},
            "time_budget": {"fitted_total_steps": 116}, "precision": "bf16", "global_step": 116,
            "shape": {"n_layer": 2, "n_head": 2, "n_embd": 64, "context_length": 64, "vocab_size": 512}}
    last = gpu_race.ours_summary({**info, "final_weights_step": 116}, "not compiled")
    assert last.startswith("8 x 1 x 64, adamw 0.003 warmup-stable-decay fitted to the budget (116 steps)")
    assert "final/" not in last and "final/" not in gpu_race.ours_summary(info, "not compiled")
    assert gpu_race.ours_summary({**info, "final_weights_step": 100}, "not compiled").endswith(
        "not compiled; final/ is step 100's weights (its best evaluation)")
    # where the run's seconds went besides its steps, where it recorded them
    paused = {**info, "pauses": {"evaluating_seconds": 12.5, "evaluations": 5, "checkpoint_seconds": 3.25,
                                 "checkpoints": 6}}
    assert gpu_race.ours_summary(paused, "not compiled").endswith(
        "not compiled; 5 evaluations took 12.5 s, 6 checkpoints 3.25 s")


def test_ours_row_gives_the_warm_up_the_run_trained_with():
    """H200, 2026-11-28: ours' row said "warm-up 1000" (slm's, of 60,000 steps) where the run,
    fitted to 180 s, warmed up for 62 steps ("3726 steps, warm-up 62" in its log)."""
    gpu_race = _race_module()
    info = {"settings": {"batch_size": 16, "gradient_accumulation_steps": 2, "optimizer": "adamw",
                         "learning_rate": 3e-4, "warmup_steps": 1000, "dropout": 0.1},
            "warmup_steps": 69,  # the Trainer's: fitted to the estimated pace, before the measured one
            "time_budget": {"time_budget_seconds": 180.0, "fitted_total_steps": 3001, "warmup_steps": 62},
            "precision": "bf16", "global_step": 3001,
            "shape": {"n_layer": 12, "n_head": 12, "n_embd": 768, "context_length": 512, "vocab_size": 30000}}
    row = gpu_race.ours_summary(info, "not compiled")
    assert "fitted to the budget (3001 steps), warm-up 62, dropout 0.1" in row and "1000" not in row
    # a run whose record holds no refit: the warm-up it started with, said so; the preset's only
    # where the run recorded neither
    older = {**info, "time_budget": {"fitted_total_steps": 3001}}
    assert ", warm-up 69 (as started), " in gpu_race.ours_summary(older, "not compiled")
    oldest = {k: v for k, v in older.items() if k != "warmup_steps"}
    assert ", warm-up 1000 (as asked), " in gpu_race.ours_summary(oldest, "not compiled")


def test_ours_row_and_mfu_follow_the_context_a_variant_trained_at():
    gpu_race = _race_module()
    shape = {"n_layer": 12, "n_head": 12, "n_embd": 768, "context_length": 1024, "vocab_size": 30000,
             "embedding_rows": 30080}
    info = {"settings": {"batch_size": 16, "gradient_accumulation_steps": 2, "optimizer": "adamw",
                         "learning_rate": 3e-4}, "global_step": 10, "shape": shape}
    assert gpu_race.ours_summary(info, "compiled").startswith("16 x 2 x 1024, ")
    import config
    from londonlm.training.model import ModelShape

    slm = ModelShape(12, 12, 768, 512, 30000)  # context 512: attention's FLOPs grow with the context
    assert gpu_race.flops_per_token(shape) > slm.flops_per_token(512)
    # the real vocabulary's FLOPs, whatever the padding (as the acceptance's MFU)
    assert gpu_race.flops_per_token({**shape, "context_length": 512}) == slm.flops_per_token(512)
    assert gpu_race.flops_per_token({**config.asdict(config.PRESETS["slm"])}) == slm.flops_per_token(512)


def test_the_deadline_skips_a_variant_by_the_overhead_measured_so_far():
    gpu_race = _race_module()
    now = [100.0]
    clock = gpu_race.RaceClock(300, now=lambda: now[0])
    with clock.ours(60):          # ours: 60 s of training in 85 s
        now[0] += 85
    now[0] += 10
    clock.add(5)                  # its half of the scoring
    assert clock.overheads == [30] and clock.too_late(100) is None  # 95 + 100 + 30 = 225
    late = clock.too_late(200)    # 95 + 200 + 30 = 325
    assert late and "about 325 s" in late and "--deadline 300" in late
    with clock.ours(60):          # a slower one (50 s beside its training): the estimate from now on
        now[0] += 110
    assert clock.too_late(45) is None                                    # 205 + 45 + 50 = 300
    assert clock.too_late(50).startswith("would end at about 305 s (205 s gone, 50 s of training and 50 s beside")
    # scoring stops short of the deadline (15 s before it, for the report), never below 30 s
    assert clock.timeout(1000) == 300 - 205 - 15 and clock.timeout(20) == 20
    now[0] += 90
    assert clock.timeout(1000) == 30
    free = gpu_race.RaceClock(None, now=lambda: now[0])
    assert free.too_late(10 ** 6) is None and free.timeout(1234) == 1234


def _race_module():
    spec = importlib.util.spec_from_file_location("gpu_race_under_test", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_race_env_is_offline_with_the_shim_and_cpu_hides_gpus(tmp_path):
    env = R.race_env("cpu", tmp_path / "s", 30, hf_cache=tmp_path / "hf")
    assert env["PYTHONPATH"].split(os.pathsep)[0] == str(R.SHIM)
    assert env["CUDA_VISIBLE_DEVICES"] == "" and env["HF_DATASETS_OFFLINE"] == "1"
    assert env["LONDONLM_RACE_SNAPSHOTS"] == str(tmp_path / "s") and env["LONDONLM_RACE_EVERY"] == "30"
    assert R.race_env("cuda", tmp_path, 0, hf_cache=tmp_path).get("CUDA_VISIBLE_DEVICES") == os.environ.get("CUDA_VISIBLE_DEVICES")
    plain = R.race_env("cpu", None, 0, hf_cache=tmp_path / "hf")  # the scorer: no shim
    assert "LONDONLM_RACE_SNAPSHOTS" not in plain and str(R.SHIM) not in plain.get("PYTHONPATH", "")
    # a run given a compile cache of its own compiles from cold, not from an earlier run's kernels
    own = R.race_env("cuda", tmp_path / "s", 30, tmp_path / "cc" / "ours", hf_cache=tmp_path / "hf")
    assert own["TORCHINDUCTOR_CACHE_DIR"] == str(tmp_path / "cc" / "ours" / "inductor")
    assert own["TRITON_CACHE_DIR"] == str(tmp_path / "cc" / "ours" / "triton")
    assert plain.get("TORCHINDUCTOR_CACHE_DIR") == os.environ.get("TORCHINDUCTOR_CACHE_DIR")


def test_the_shim_leaves_the_processes_it_starts_alone(monkeypatch, tmp_path):
    """torch.compile's compile workers and spawned loader workers are started by the trainer:
    they must not import transformers (seconds each, inside ours' first step) nor time themselves."""
    shim = _load_shim(monkeypatch, tmp_path / "s", every=5)
    assert shim._EVERY == 5 and "LONDONLM_RACE_SNAPSHOTS" not in os.environ
    assert "LONDONLM_RACE_EVERY" not in os.environ


# --------------------------------------------------------------------------- data

def test_sources_taken_whole_in_a_fixed_order_up_to_the_cap(tmp_path):
    for i, size in enumerate((100, 150, 120, 90, 110, 130)):
        (tmp_path / f"doc{i}.txt").write_text("x" * size)
    (tmp_path / "_negatives.txt").write_text("x")
    (tmp_path / "README.md").write_text("x")
    order = sorted([f"doc{i}.txt" for i in range(6)], key=race_data.name_rank)
    assert [p.name for p in race_data.choose_sources(tmp_path, 0)] == order
    capped = race_data.choose_sources(tmp_path, 500)
    assert sum(p.stat().st_size for p in capped) <= 500 and 3 <= len(capped) < 6
    assert [p.name for p in capped] == [n for n in order if n in {p.name for p in capped}]
    assert len(race_data.choose_sources(tmp_path, 1)) == 3  # one held out, one to train, one to validate on
    lone = tmp_path / "lone"
    lone.mkdir()
    for name in ("a.txt", "b.txt"):
        (lone / name).write_text("x")
    with pytest.raises(race_data.RaceDataError, match="at least three"):
        race_data.choose_sources(lone, 0)


def test_held_out_files_are_whole_up_to_a_tenth_of_the_bytes_and_leave_two(tmp_path):
    files = []
    for i in range(20):
        files.append(tmp_path / f"doc{i:02d}.txt")
        files[-1].write_text("x" * 1000)
    corpus, held = race_data.split_heldout(files)
    assert len(held) == 2 and not set(held) & set(corpus) and set(held) | set(corpus) == set(files)
    assert held == sorted(files, key=lambda p: race_data.name_rank("heldout:" + p.name))[:2]
    assert race_data.split_heldout(list(reversed(files)))[1] == held  # by name, not by the order given
    held[0].write_text("x" * 5000)  # past a tenth alone: passed over, the next ones taken
    corpus, again = race_data.split_heldout(files)
    assert held[0] in corpus and held[1] in again and len(again) == 2
    assert sum(p.stat().st_size for p in again) <= 0.1 * sum(p.stat().st_size for p in files)
    for p in files:
        p.write_text("x" * 1000)
    assert len(race_data.split_heldout(files[:5])[1]) == 1  # none fits a tenth: the first file, whole
    corpus, held = race_data.split_heldout(files[:3])
    assert len(held) == 1 and len(corpus) == 2  # the corpus keeps its training and validation parts


@pytest.fixture(scope="module")
def prepared(tmp_path_factory) -> race_data.RaceData:
    import config

    base = tmp_path_factory.mktemp("race")
    bench = base / "bench"
    bench.mkdir()
    for name in race_data.REFERENCE_SCRIPTS:  # stand-ins: prepare only copies them
        (bench / name).write_text(f"# {name}\n")
    src = write_micro_source(base / "src", n_docs=8, chars=3000)
    return race_data.prepare(base / "data", src, config.get_preset("micro"), bench, 0, log=lambda *_: None)


def test_prepared_data_holds_whole_documents_out_and_everything_the_race_reads(prepared):
    rec = prepared.record
    assert rec["preset"] == "micro" and rec["heldout"] and rec["train"] and rec["validation"]
    held, train, val = ({d["id"] for d in rec[k]} for k in ("heldout", "train", "validation"))
    from londonlm.corpus import read_manifest

    splits = {r["id"]: r["split"] for r in read_manifest(prepared.processed)}
    assert train | val == set(splits) and not train & val  # every corpus document kept, on one side
    assert {i for i, s in splits.items() if s == "validation"} == val  # the corpus stage's own rule
    # the scored text is none of the corpus: neither trained on nor evaluated on (a best checkpoint
    # is chosen by validation documents, never by what the race scores)
    assert held and not held & set(splits)
    assert not {p.name for p in prepared.files("heldout")} & {p.name for p in prepared.files("validation")}
    assert all(p.exists() for p in prepared.files("heldout") + prepared.files("train") + prepared.files("validation"))
    assert rec["tokens"]["validation"] > 0 and "heldout" not in rec["tokens"]
    assert rec["tokenizer_vocab"] <= 512 and rec["tokens"]["train"] > 0
    assert (prepared.tokenizer / "tokenizer.json").exists() and (prepared.cache / "train.bin").exists()
    assert rec["bytes"] == race_data.folder_bytes(prepared.dir) - (prepared.dir / race_data.RECORD).stat().st_size


def test_data_prepared_by_an_older_race_is_refused_with_what_to_do(prepared, tmp_path):
    import shutil

    old = tmp_path / "old"
    shutil.copytree(prepared.dir, old)
    record = json.loads((old / race_data.RECORD).read_text())
    (old / race_data.RECORD).write_text(json.dumps({**record, "format": 1}))  # scored its validation split
    with pytest.raises(race_data.RaceDataError, match="older race .format 1, now 2.; prepare it again"):
        race_data.load(old)


def test_prepared_data_is_reused_and_another_folder_is_never_overwritten(prepared, tmp_path):
    import config

    made = prepared.record["made"]
    sources = [prepared.dir.parent / "src"]
    again = race_data.prepare(prepared.dir, sources[0], config.get_preset("micro"), prepared.dir.parent / "bench", 0,
                              log=lambda *_: None)
    assert again.record["made"] == made  # current: not rebuilt
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "notes.txt").write_text("keep me")
    with pytest.raises(race_data.RaceDataError, match="not a race data folder"):
        race_data.prepare(tmp_path / "mine", sources[0], config.get_preset("micro"), prepared.dir.parent / "bench", 0)
    assert (tmp_path / "mine" / "notes.txt").read_text() == "keep me"
    with pytest.raises(race_data.RaceDataError, match="--prepare"):
        race_data.load(tmp_path / "nothing")


# --------------------------------------------------------------------------- snapshots and scoring

def _load_shim(monkeypatch, out: Path, every: float):
    """The shim's module, loaded with its variables set; the Trainer patch and exit hook undone after."""
    import atexit

    import transformers

    monkeypatch.setenv("LONDONLM_RACE_SNAPSHOTS", str(out))
    monkeypatch.setenv("LONDONLM_RACE_EVERY", str(every))
    monkeypatch.setattr(transformers.Trainer, "__init__", transformers.Trainer.__init__)
    spec = importlib.util.spec_from_file_location("race_shim_under_test", R.SHIM / "sitecustomize.py")
    shim = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(shim)
    atexit.unregister(shim._write_last)
    return shim


def test_snapshot_shim_keeps_each_marks_weights_and_the_clock(monkeypatch, tmp_path, tiny_model_dir):
    import torch
    from transformers import AutoModelForCausalLM, TrainerControl, TrainerState, TrainingArguments

    shim = _load_shim(monkeypatch, tmp_path / "snaps", every=1e-9)  # a copy at every step
    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir)
    cb, state = shim._RaceSnapshots(), TrainerState()
    args = TrainingArguments(output_dir=str(tmp_path / "o"), use_cpu=True, report_to=[])
    cb.on_train_begin(args, state, TrainerControl(), model=model)
    seen = []
    for step in (1, 2):
        with torch.no_grad():
            for p in model.parameters():
                p.add_(0.5)  # "training"
        state.global_step = step
        cb.on_step_end(args, state, TrainerControl(), model=model)
        seen.append({k: v.clone() for k, v in model.state_dict().items()})
    with torch.no_grad():
        for p in model.parameters():
            p.add_(1.0)  # after the last copy: not in any snapshot
    shim._write_last()
    clock = json.loads((tmp_path / "snaps" / "clock.json").read_text())["steps"]
    assert [s for s, _ in clock] == [1, 2] and clock[0][1] <= clock[1][1]
    for step, weights in zip((1, 2), seen):
        folder = tmp_path / "snaps" / f"snap-{step:07d}"
        assert json.loads((folder / "snapshot.json").read_text())["step"] == step
        again = AutoModelForCausalLM.from_pretrained(folder).state_dict()
        assert all(torch.equal(again[k], weights[k]) for k in again)


@pytest.mark.parametrize("every, seconds, copied", [
    (5, (0.5, 5.2, 12.7, 14.0, 15.0, 15.1), [2, 3, 5]),   # a mark passed over is not owed later
    (1e-9, (3600.0, 3600.5), [1, 2]),                       # a tiny interval: every step, at once
])
def test_snapshot_shim_copies_at_each_interval_mark_it_reaches(monkeypatch, tmp_path, every, seconds, copied):
    import types

    import torch
    from transformers import TrainerControl, TrainerState

    shim = _load_shim(monkeypatch, tmp_path / "snaps", every=every)
    clock = iter((0.0, *seconds))    # the first reading starts training
    monkeypatch.setattr(shim, "time", types.SimpleNamespace(perf_counter=lambda: next(clock)))
    model = torch.nn.Linear(2, 2)
    cb, state = shim._RaceSnapshots(), TrainerState()
    args = types.SimpleNamespace(process_index=0)
    cb.on_train_begin(args, state, TrainerControl(), model=model)
    for step in range(1, len(seconds) + 1):
        state.global_step = step
        cb.on_step_end(args, state, TrainerControl(), model=model)
    assert [step for step, _, _ in cb.copies] == copied
    assert cb.next_mark > seconds[-1]


def _padded_tiny_gpt2(vocab: int = 300):
    """A tiny GPT-2 (tied head) with its vocabulary padded for training as our trainer pads it
    on CUDA: 300 rows -> 384, ``config.vocab_size`` still 300."""
    import torch
    from transformers import GPT2Config, GPT2LMHeadModel

    from londonlm.training.step.vocab_padding import pad_vocabulary

    torch.manual_seed(0)
    model = GPT2LMHeadModel(GPT2Config(vocab_size=vocab, n_positions=32, n_embd=16, n_layer=1, n_head=2))
    pad_vocabulary(model)
    assert model.get_input_embeddings().weight.shape[0] == 384 and model.config.vocab_size == vocab
    return model.eval()


def test_snapshot_shim_saves_a_padded_vocabulary_as_a_plain_model(monkeypatch, tmp_path):
    """H200, 2026-11-28: our snapshots kept the 30,080 padded rows and bpb.py could not load them
    ("transformer.wte.weight MISMATCH ckpt [30080, 768] vs model [30000, 768]")."""
    import torch
    from safetensors import safe_open
    from transformers import AutoModelForCausalLM, TrainerControl, TrainerState, TrainingArguments

    shim = _load_shim(monkeypatch, tmp_path / "snaps", every=1e-9)
    model = _padded_tiny_gpt2()
    cb, state = shim._RaceSnapshots(), TrainerState()
    args = TrainingArguments(output_dir=str(tmp_path / "o"), use_cpu=True, report_to=[])
    cb.on_train_begin(args, state, TrainerControl(), model=model)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.01 * torch.randn_like(p))  # "training" (the padded rows' values are never used)
    state.global_step = 1
    cb.on_step_end(args, state, TrainerControl(), model=model)
    ids = torch.randint(0, 300, (2, 12))
    with torch.no_grad():
        expected = model(ids).logits
        for p in model.parameters():
            p.add_(1.0)  # after the copy: not in the snapshot
    shim._write_last()
    folder = tmp_path / "snaps" / "snap-0000001"
    again = AutoModelForCausalLM.from_pretrained(folder).eval()  # as bpb.py loads it
    assert again.get_input_embeddings().weight.shape == (300, 16)
    assert again.lm_head.weight.data_ptr() == again.transformer.wte.weight.data_ptr()  # still tied
    with torch.no_grad():
        assert torch.allclose(again(ids).logits, expected, atol=1e-5)
    with safe_open(str(folder / "model.safetensors"), "pt") as f:  # the tied head saved once
        assert [k for k in f.keys() if "wte" in k or "lm_head" in k] == ["transformer.wte.weight"]
        assert f.get_slice("transformer.wte.weight").get_shape() == [300, 16]


def test_snapshot_shim_does_nothing_without_its_variable(monkeypatch):
    import transformers

    monkeypatch.delenv("LONDONLM_RACE_SNAPSHOTS", raising=False)
    before = transformers.Trainer.__init__
    spec = importlib.util.spec_from_file_location("race_shim_off", R.SHIM / "sitecustomize.py")
    shim = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(shim)
    assert transformers.Trainer.__init__ is before and not hasattr(shim, "_RaceSnapshots")


@needs_shared_bench
def test_scoring_in_one_process_is_bpb_py_itself(tiny_model_dir, tmp_path):
    from race import score

    held = tmp_path / "held.txt"
    held.write_text("The prisoner at the bar was indicted for stealing a silver watch. " * 30)
    ran = subprocess.run([sys.executable, str(BPB), str(tiny_model_dir), str(held), "--max-bytes", "1200"],
                         capture_output=True, text=True, timeout=120)
    assert ran.returncode == 0, ran.stderr
    alone = json.loads(ran.stdout.strip().splitlines()[-1])
    here = score.score(score.load_bpb(BPB), tiny_model_dir, [held], 1200)
    assert here.pop("model") == str(tiny_model_dir) and here == alone


@needs_shared_bench
def test_scoring_goes_on_past_a_folder_it_cannot_load(tiny_model_dir, tmp_path, capsys):
    """H200, 2026-11-28: one snapshot bpb.py could not load ended the scoring process, and every
    folder after it went unscored. Now that folder is a line with an error and the rest score."""
    from race import score

    from londonlm.training.step.vocab_padding import pad_vocabulary
    from transformers import AutoModelForCausalLM

    bad = tmp_path / "padded"  # saved as the old shim saved ours: its padded rows kept
    model = pad_vocabulary(AutoModelForCausalLM.from_pretrained(tiny_model_dir), multiple=1000)
    model.save_pretrained(bad)
    for f in tiny_model_dir.iterdir():
        if not (bad / f.name).exists():
            (bad / f.name).write_bytes(f.read_bytes())  # its tokenizer
    held = tmp_path / "held.txt"
    held.write_text("The prisoner at the bar was indicted for stealing a silver watch. " * 10)
    rc = score.main(["--bpb", str(BPB), "--max_bytes", "400", "--files", str(held),
                     "--models", str(tiny_model_dir), str(bad), str(tiny_model_dir)])
    rows = [json.loads(ln) for ln in capsys.readouterr().out.splitlines() if ln.startswith("{")]
    assert [r["model"] for r in rows] == [str(tiny_model_dir), str(bad), str(tiny_model_dir)]
    assert rows[0]["bpb"] == rows[2]["bpb"] > 0 and "bpb" not in rows[1]
    assert rows[1]["error"].startswith("RuntimeError: ") and "\n" not in rows[1]["error"]
    assert rc == 1  # not every folder scored


def test_the_race_keeps_every_score_past_a_folder_that_failed(tmp_path, monkeypatch):
    """score_all reads score.py's lines: a snapshot that failed is recorded as unscored with
    why, the rest of the curve kept; a final model that failed fails its run with why."""
    from types import SimpleNamespace

    gpu_race = _race_module()
    tok = tmp_path / "tok"
    tok.mkdir()
    (tok / "tokenizer.json").write_text("{}")
    snaps = []
    for step in (10, 20, 30):
        snaps.append(tmp_path / "ours_snapshots" / f"snap-{step:07d}")
        snaps[-1].mkdir(parents=True)
        (snaps[-1] / "snapshot.json").write_text(json.dumps({"step": step, "seconds": step / 10}))
    final, seed = tmp_path / "final", tmp_path / "seed"
    lines = [{"model": str(final), "bpb": 2.0}, {"model": str(seed), "error": "OSError: no weights"},
             {"model": str(snaps[0]), "bpb": 3.0}, {"model": str(snaps[1]), "error": "RuntimeError: size mismatch"},
             {"model": str(snaps[2]), "bpb": 2.5}]

    def scorer(cmd, env, log, timeout):  # score.py's log: a traceback between its lines
        log.parent.mkdir(parents=True, exist_ok=True)
        log.write_text("\n".join([*map(json.dumps, lines[:4]), "Traceback (most recent call last):",
                                   json.dumps(lines[4])]) + "\n")
        return f"exit 1: ... (see {log})"

    monkeypatch.setattr(gpu_race, "run_logged", scorer)
    rec = lambda model, snapshots: {"status": "ok", "model": str(model), "steps": 40, "train_seconds": 4.0,  # noqa: E731
                                    "snapshots": [str(p) for p in snapshots]}
    results = {"ours": rec(final, snaps), "seed_recipe": rec(seed, [])}
    d = SimpleNamespace(tokenizer=tok, script=lambda name: tmp_path / name, files=lambda split: [tmp_path / "h.txt"])
    a = SimpleNamespace(device="cpu", score_bytes=100, seconds=4.0)
    gpu_race.score_all(a, d, results, tmp_path / "run", lambda *args: {}, gpu_race.RaceClock(None))
    ours = results["ours"]
    assert ours["status"] == "ok" and ours["bpb"] == 2.0
    assert [(p["step"], p["bpb"]) for p in ours["curve"]] == [(10, 3.0), (30, 2.5), (40, 2.0)]
    assert ours["unscored"] == [{"model": str(snaps[1]), "error": "RuntimeError: size mismatch"}]
    assert results["seed_recipe"]["status"] == "failed"
    assert results["seed_recipe"]["error"] == "scoring: OSError: no weights"
    assert "(1 folder not scored: RuntimeError: size mismatch)" in report._curve(ours)


# --------------------------------------------------------------------------- report

def _results(ours_bpb=3.0, seed_bpb=3.5) -> dict:
    curve = lambda b, c: [{"seconds": 30.0, "step": 100, "bpb": b + 1.0}, {"seconds": 60.0, "step": 200, "bpb": b + 0.4},  # noqa: E731
                          {"seconds": 120.0, "step": 400, "bpb": c}]
    rec = lambda b: {"status": "ok", "bpb": b, "steps": 400, "tokens": 6_553_600, "train_seconds": 120.0,  # noqa: E731
                     "tokens_per_s": 54_613.3, "mfu": 0.31, "summary": "16 x 2 x 512", "curve": curve(b, b)}
    return {"meta": {"command": "python benchmarks/gpu_race.py --seconds 120", "date": "2026-11-26", "device": "cuda",
                     "machine": {"gpu": "NVIDIA H200", "gpu_memory_gib": 139.8, "driver": "580.159.04", "cuda": "13.0",
                                 "torch": "2.11.0+cu130", "transformers": "5.24.0", "python": "3.12.3", "cpu": "Xeon"},
                     "preset": "slm", "seconds": 120.0, "curve_every": 30.0, "score_bytes": 100_000,
                     "data": {"train_documents": 20, "heldout_documents": 2, "heldout_ids": ["a", "b"],
                              "validation_documents": 1, "validation_ids": ["v"],
                              "train_tokens": 4_000_000, "tokenizer_vocab": 30000, "scored_bytes": 200_000}},
            "ours": rec(ours_bpb), "seed_recipe": rec(seed_bpb)}


def test_time_to_a_bpb_is_read_off_the_curve():
    curve = [{"seconds": 30.0, "bpb": 4.0}, {"seconds": 60.0, "bpb": 3.0}, {"seconds": 90.0, "bpb": 2.5}]
    assert report.time_to(curve, 3.5) == {"seconds": 45.0, "at_most": False}   # halfway from 4.0 to 3.0
    assert report.time_to(curve, 4.2) == {"seconds": 30.0, "at_most": True}    # there by the first point
    assert report.time_to(curve, 2.0) is None


def test_compare_says_which_is_lower_and_when_each_reaches_the_other():
    res = _results(3.0, 3.5)
    report.compare(res)
    assert res["ours_lower"] is True
    ours = next(t for t in res["time_to_bpb"] if t["recipe"] == "ours")
    # ours' curve 4.0 (30 s), 3.4 (60 s), 3.0 (120 s) reaches 3.5 at 30 + 30 * (0.5 / 0.6) s
    assert ours["reaches"] == "seed_recipe" and ours["seconds"] == pytest.approx(55.0)
    seed = next(t for t in res["time_to_bpb"] if t["recipe"] == "seed_recipe")
    assert seed["seconds"] is None
    failed = _results()
    failed["seed_recipe"] = {"status": "failed", "error": "exit 1"}
    report.compare(failed)
    assert failed["ours_lower"] is None and failed["time_to_bpb"] == []


def test_block_written_to_a_copy_replaced_in_place(tmp_path):
    res = _results()
    report.compare(res)
    md = tmp_path / "BENCHMARKS.md"
    md.write_text("# Benchmarks\n\nintro\n\n## Later section\n\ntext\n")
    report.write_block(res, md)
    first = md.read_text()
    assert first.count(SLM_BEGIN) == 1 and "## Later section" in first and first.startswith("# Benchmarks")
    block = first[first.index(SLM_BEGIN):first.index(SLM_END)]
    assert "| ours | 400 | 6,553,600 | 1.6 | 120 | 54,613.3 | 31.0% | 3 |" in block  # 1.6 passes over 4M tokens
    assert "NVIDIA H200 (139.8 GiB), driver 580.159.04, CUDA 13.0, torch 2.11.0+cu130" in block
    assert "30.0 s: 4.0000 · 60.0 s: 3.4000 · 120 s: 3.0000" in block
    assert "`ours` reaches the final 3.5 bpb of `seed_recipe` after 55 s of training" in block
    res["ours"]["bpb"] = 2.9
    report.write_block(res, md)
    second = md.read_text()
    assert second.count(SLM_BEGIN) == 1 and "| 2.9 |" in second and "## Later section" in second
    assert report.write_json(res, tmp_path / "r" / "race.json").exists()


def test_each_variant_is_set_against_ours_unchanged_at_the_same_seconds(tmp_path):
    res = _results(3.0, 3.5)
    res["meta"]["seconds"] = 120.0
    base, muon = (_results(b)["ours"] for b in (3.2, 3.1))
    base.update(flags=[], seconds=60.0)
    muon.update(flags=["--optimizer", "muon"], seconds=60.0, best_bpb=3.05, best_step=300)
    res["variants"] = {"base": base, "muon": muon,
                       "lr": {"status": "skipped", "error": "would end at about 700 s", "flags": ["--lr"], "seconds": 60.0}}
    report.compare(res)
    assert muon["vs_base"] == pytest.approx(-0.1) and base["vs_base"] is None
    # muon's curve 4.1 (30 s), 3.5 (60 s), 3.1 (120 s): the seed's 3.5 at 60 s
    assert muon["reaches_seed"] == {"seconds": 60.0, "at_most": False}
    md = report.markdown(res)
    assert "| ours+muon | 400 |" in md and "best/ (step 300): 3.05 bpb" in md
    assert "| ours+lr | – |" in md and "skipped: would end at about 700 s" in md
    assert "against ours unchanged (`base`, 60 s, 3.2 bpb)" in md
    assert "| muon | --optimizer muon | 60 | 3.1 | -0.1000 | 60 s |" in md
    assert "| base | (none: ours unchanged) | 60 | 3.2 | – |" in md
    same = _results(3.0, 3.5)
    same["variants"] = {"muon": {**_results(2.9)["ours"], "flags": ["--optimizer", "muon"], "seconds": 120.0}}
    report.compare(same)
    assert same["variants"]["muon"]["vs_base"] == pytest.approx(-0.1)
    assert "against ours unchanged (`ours`, 120 s, 3.0 bpb)" in report.markdown(same)


def test_a_failed_recipe_is_a_row_saying_why():
    res = _results()
    res["ours"] = {"status": "failed", "error": "exit 2: error: the budget cannot hold the warm-up"}
    report.compare(res)
    assert "failed: exit 2: error: the budget cannot hold the warm-up" in report.markdown(res)


def test_the_picture_draws_every_scored_curve_the_seed_line_and_the_third_of_its_seconds(tmp_path, monkeypatch):
    """The race's picture: one line per run with a scored curve (a failed run has none), the
    seed recipe's final bpb across, a mark at a third of its seconds; nothing drawn without a
    curve. Read back from the PNG's axes as matplotlib drew them."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from race import plot

    res = _results(3.0, 3.5)
    res["variants"] = {"muon": {**_results(2.9)["ours"], "flags": ["--optimizer", "muon"], "seconds": 120.0},
                       "lr": {"status": "skipped", "error": "late", "flags": [], "seconds": 120.0}}
    report.compare(res)
    assert [name for name, _ in plot.series(res)] == ["ours", "seed_recipe", "ours+muon"]
    drawn = []
    real_savefig = plt.Figure.savefig

    def keep(fig, *a, **k):
        drawn.append({"lines": [(ln.get_label(), list(ln.get_xdata()), list(ln.get_ydata()))
                                for ln in fig.axes[0].get_lines()]})
        return real_savefig(fig, *a, **k)

    monkeypatch.setattr(plt.Figure, "savefig", keep)
    png = plot.draw(res, tmp_path / "p" / "race.png")
    assert png == tmp_path / "p" / "race.png" and png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    lines = {label: (xs, ys) for label, xs, ys in drawn[0]["lines"]}
    assert lines["ours"] == ([30.0, 60.0, 120.0], [4.0, 3.4, 3.0])
    assert lines["seed recipe's final bpb (3.5)"][1] == [3.5, 3.5]
    assert lines["40 s: 3x the seed recipe's time"][0] == [40.0, 40.0]  # 120 s of the seed recipe's
    only = _results()
    del only["ours"], only["seed_recipe"]
    only["meta"]["seed_bpb_given"] = 2.4342  # a variants-only call: the race's seconds stand for the seed's
    only["variants"] = {"base": {**_results(2.4)["ours"], "flags": [], "seconds": 60.0}}
    assert plot.seed_seconds(only) == 120.0
    assert plot.draw({"meta": res["meta"], "ours": {"status": "failed"}}, tmp_path / "none.png") is None
    assert not (tmp_path / "none.png").exists()


def test_an_earlier_races_json_gives_its_picture_and_block_and_the_block_links_a_picture_beside_it(tmp_path):
    res = _results(3.0, 3.5)
    report.compare(res)
    (tmp_path / "lease").mkdir()
    (tmp_path / "lease" / "gpu_race.json").write_text(json.dumps(res))
    md = tmp_path / "repo" / "BENCHMARKS.md"
    md.parent.mkdir()
    md.write_text("# Benchmarks\n")
    png = tmp_path / "repo" / "benchmarks" / "plots" / "gpu_race_slm.png"
    r = run_script("--from_json", str(tmp_path / "lease" / "gpu_race.json"), "--bench_md", str(md), "--plot", str(png))
    assert r.returncode == 0, r.stderr
    assert png.exists() and f"wrote {png}" in r.stdout
    block = md.read_text()
    assert SLM_BEGIN in block and "| ours | 400 |" in block
    assert "![held-out bpb over training time, every run](benchmarks/plots/gpu_race_slm.png)" in block
    # the picture beside the JSON by default: outside the file's folder, so not linked
    r = run_script("--from_json", str(tmp_path / "lease" / "gpu_race.json"), "--bench_md", str(md))
    assert r.returncode == 0 and (tmp_path / "lease" / "gpu_race.png").exists()
    assert "![" not in md.read_text() and md.read_text().count(SLM_BEGIN) == 1
    for bad in ("{not json", "[1, 2]", '{"meta": {}}', '{"meta": {"preset": "slm"}, "ours": {"curve": 3}}',
                '{"meta": {"preset": "slm"}}'):
        (tmp_path / "bad.json").write_text(bad)
        r = run_script("--from_json", str(tmp_path / "bad.json"), "--bench_md", str(md))
        assert r.returncode == 2 and r.stderr.startswith("error: ") and "Traceback" not in r.stderr, (bad, r.stderr)
        assert len(r.stderr.strip().splitlines()) == 1
    r = run_script("--from_json", str(tmp_path / "missing.json"))
    assert r.returncode == 2 and "error: cannot read" in r.stderr
    # a picture that cannot be written costs the picture, not the block
    (tmp_path / "file").write_text("")
    r = run_script("--from_json", str(tmp_path / "lease" / "gpu_race.json"), "--bench_md", str(md),
                   "--plot", str(tmp_path / "file" / "race.png"))
    assert r.returncode == 0 and "no picture: " in r.stdout and "wrote the gpu-race block" in r.stdout
    r = run_script("--from_json", str(tmp_path / "lease" / "gpu_race.json"), "--bench_md", str(tmp_path / "lease"))
    assert r.returncode == 2 and r.stderr.startswith("error: cannot write the block") and "Traceback" not in r.stderr


# --------------------------------------------------------------------------- the script

def test_dry_run_lists_the_steps_and_runs_nothing(tmp_path):
    r = run_script("--dry_run", "--work", str(tmp_path / "w"))
    assert r.returncode == 0, r.stderr
    for i, name in enumerate(("data", "seed_recipe first pass", "seed_recipe fitted", "ours", "score", "report"), 1):
        assert f"\n{i}. {name}\n" in r.stdout
    assert "baseline_clm.py" in r.stdout and "--bf16" in r.stdout and "--time_budget 180" in r.stdout
    assert "bpb.py" in r.stdout and "--max-steps STEPS" in r.stdout
    assert not (tmp_path / "w").exists()


def test_dry_run_lists_each_variant_after_the_race(tmp_path):
    r = run_script("--dry_run", "--work", str(tmp_path / "w"), "--variant_seconds", "60", "--deadline", "540",
                   "--variant", "muon=--optimizer muon")
    assert r.returncode == 0, r.stderr
    assert "\n6. variant base\n" in r.stdout and "\n7. variant muon\n" in r.stdout and "\n8. report\n" in r.stdout
    assert "--run_name_dir race_ours_muon --fresh --time_budget 60" in r.stdout and "--optimizer muon" in r.stdout
    assert "skipped if it would end past 540 s" in r.stdout
    r = run_script("--dry_run", "--variant", "x=--time_budget 9")
    assert r.returncode == 2 and "the race sets --time_budget" in r.stderr and "Traceback" not in r.stderr


def test_variants_only_runs_ours_unchanged_beside_them_and_no_race(tmp_path):
    r = run_script("--dry_run", "--work", str(tmp_path / "w"), "--variants_only", "--variant_seconds", "60",
                   "--variant", "nodrop=--dropout 0", "--bench_md", str(tmp_path / "B.md"))
    assert r.returncode == 0, r.stderr
    steps = [ln for ln in r.stdout.splitlines() if ln[:1].isdigit()]
    assert steps == ["1. data", "2. variant base", "3. variant nodrop", "4. report"]
    assert r.stdout.startswith("GPU race plan: slm, variants of ours only, 60 s each on cuda")
    assert "baseline_clm.py" not in r.stdout and "gpu-race-variants block" in r.stdout
    # with the race's seconds too, ours unchanged still runs: there is no race's ours to compare with
    assert "\n2. variant base\n" in run_script("--dry_run", "--variants_only", "--variant", "x=--dropout 0").stdout
    r = run_script("--dry_run", "--variants_only")
    assert r.returncode == 2 and "--variants_only needs at least one --variant" in r.stderr


def test_a_variants_only_block_is_its_own_and_leaves_the_race_alone(tmp_path):
    raced = _results(3.0, 3.5)
    report.compare(raced)
    md = tmp_path / "BENCHMARKS.md"
    report.write_block(raced, md)
    only = _results()
    del only["ours"], only["seed_recipe"]
    only["variants"] = {"base": {**_results(3.2)["ours"], "flags": [], "seconds": 60.0},
                        "nodrop": {**_results(3.3)["ours"], "flags": ["--dropout", "0"], "seconds": 60.0}}
    only["meta"].update(seconds=180.0, curve_points=6, variants=[{"name": n, "flags": [], "seconds": 60.0}
                                                                    for n in ("base", "nodrop")])
    report.compare(only)
    report.write_block(only, md)
    text = md.read_text()
    race = text[text.index(SLM_BEGIN):text.index(SLM_END)]
    begin, end = report.markers("slm", race=False)
    assert (begin, end) == ("<!-- gpu-race-variants:begin -->", "<!-- gpu-race-variants:end -->")
    variants = text[text.index(begin):text.index(end)]
    assert "| ours | 400 |" in race and "| seed_recipe |" in race and "ours+" not in race
    assert "variants of ours only" in variants and "| seed_recipe |" not in variants and "| ours |" not in variants
    assert "| nodrop | --dropout 0 | 60 | 3.3 | +0.1000 | – |" in variants
    assert "every 30.0 s (10.0 s for the variants)" in variants
    assert "--seed_bpb" not in variants  # none given: nothing to read the variants against
    regular = _results()
    regular["meta"]["preset"] = "regular"  # GPT-2 Medium's race beside GPT-2 Small's
    report.compare(regular)
    report.write_block(regular, md)
    assert md.read_text().count("<!-- gpu-race-regular:begin -->") == 1 and md.read_text().count(SLM_BEGIN) == 1


def test_a_variants_only_call_reads_ours_against_an_earlier_races_seed_bpb():
    """The issue's question, answered by the lease's first call: ours given 60 s against the
    seed recipe's 180-s bpb of the race before it (a variants call runs no seed recipe)."""
    only = _results()
    del only["ours"], only["seed_recipe"]
    only["meta"].update(seconds=180.0, seed_bpb_given=3.5)
    curve = [{"seconds": 20.0, "step": 100, "bpb": 4.0}, {"seconds": 40.0, "step": 200, "bpb": 3.5},
             {"seconds": 60.0, "step": 300, "bpb": 3.2}]
    only["variants"] = {"base": {**_results(3.2)["ours"], "flags": [], "seconds": 60.0, "curve": curve},
                        "nodrop": {**_results(3.6)["ours"], "flags": ["--dropout", "0"], "seconds": 60.0}}
    report.compare(only)
    assert only["variants"]["base"]["reaches_seed"] == {"seconds": 40.0, "at_most": False}
    md = report.markdown(only)
    assert "| base | (none: ours unchanged) | 60 | 3.2 | – | 40 s |" in md
    assert "3.5 bpb, given (`--seed_bpb`) from an earlier race" in md
    assert "- `base` (ours unchanged, 60 s) reaches the seed recipe's 3.5 bpb after 40 s of training." in md
    only["meta"]["seed_bpb_given"] = 3.0
    report.compare(only)
    assert "- `base` (ours unchanged, 60 s) does NOT reach the seed recipe's 3.0 bpb (ends at 3.2)." in \
        report.markdown(only)
    assert "| nodrop | --dropout 0 | 60 | 3.6 | +0.4000 | no |" in report.markdown(only)


def test_refusals_are_one_line_and_exit_2(tmp_path):
    hidden = {**os.environ, "CUDA_VISIBLE_DEVICES": ""}
    r = run_script("--work", str(tmp_path / "w"), env=hidden)  # cuda by default, and none here
    assert r.returncode == 2 and r.stderr.strip().startswith("error: no CUDA GPU")
    r = run_script("--device", "cpu", "--data", str(tmp_path / "none"), "--work", str(tmp_path / "w"))
    assert r.returncode == 2 and len(r.stderr.strip().splitlines()) == 1 and "--prepare" in r.stderr
    assert "Traceback" not in r.stderr
    r = run_script("--device", "cpu", "--source_dir", str(tmp_path / "absent"), "--work", str(tmp_path / "w"))
    assert r.returncode == 2 and r.stderr.strip() == f"error: --source_dir {tmp_path / 'absent'} is not a folder"
    r = run_script("--dry_run", "--preset", "huge")
    assert r.returncode == 2 and "invalid choice" in r.stderr
    for extra in ([], ["--variants_only", "--variant", "x=--dropout 0", "--seed_bpb", "0"]):
        r = run_script("--dry_run", "--seed_bpb", "2.4", *extra)  # a race measures its own
        assert r.returncode == 2 and "--seed_bpb" in r.stderr and "Traceback" not in r.stderr


LEASE = REPO / "benchmarks" / "gpu_lease.sh"


def lease(tmp_path, *args: str) -> subprocess.CompletedProcess:
    """benchmarks/gpu_lease.sh with DRY=1: the commands it would run, shell-quoted."""
    env = {**os.environ, "DRY": "1", "OUT": str(tmp_path / "out")}
    return subprocess.run(["bash", str(LEASE), *args], capture_output=True, text=True, timeout=60, env=env)


def _race_argv(stdout: str) -> list[str]:
    import shlex

    line = next(ln for ln in stdout.splitlines() if "benchmarks/gpu_race.py" in ln and "--prepare" not in ln)
    argv = shlex.split(line[2:])
    return argv[argv.index("benchmarks/gpu_race.py") + 1:]


def test_the_lease_script_runs_each_step_with_flags_the_race_takes(tmp_path):
    for step, says in (("race", ["--data", ".gpu_race"]), ("regular", ["--preset", "regular"]),
                       ("variants", ["--variants_only", "--variant_seconds", "60"])):
        r = lease(tmp_path, step)
        assert r.returncode == 0, r.stderr
        assert "+ python3 -m pip install -q --no-deps --no-build-isolation -e .\n" in r.stdout
        assert "assert torch.cuda.is_available()" in r.stdout and f"cp BENCHMARKS.md {tmp_path / 'out'}/" in r.stdout
        argv = _race_argv(r.stdout)
        assert all(a in argv for a in says), argv
        assert ("--seed_bpb" in argv) == (step == "variants")  # read against the race's seed bpb
        # what the call has left, less the files' way back: DRY spends none of its 600 s
        assert 575 <= float(argv[argv.index("--deadline") + 1]) <= 580
        plan = run_script(*argv, "--dry_run")  # the race's own parser takes every flag and variant
        assert plan.returncode == 0, plan.stderr
    steps = [ln for ln in plan.stdout.splitlines() if ln[:1].isdigit()]
    # what the lease of 2026-11-30 did not reach first, then what it measured
    assert steps == ["1. data", "2. variant base", "3. variant regional", "4. variant last", "5. variant flash",
                     "6. variant drop0.1", "7. variant workers2", "8. variant muon", "9. variant lr1e-3",
                     "10. report"]
    plan = run_script(*_race_argv(lease(tmp_path, "variants", "shape").stdout), "--dry_run")
    assert plan.returncode == 0, plan.stderr
    assert [ln for ln in plan.stdout.splitlines() if ln[:1].isdigit()] == [
        "1. data", "2. variant base", "3. variant ctx1024", "4. variant accum1", "5. variant accum4", "6. report"]
    argv = _race_argv(lease(tmp_path, "variants", "plateau").stdout)
    assert argv[argv.index("--variant_seconds") + 1] == "180"  # the race's seconds: room to stall
    plan = run_script(*argv, "--dry_run")
    assert plan.returncode == 0, plan.stderr
    assert [ln for ln in plan.stdout.splitlines() if ln[:1].isdigit()] == [
        "1. data", "2. variant base", "3. variant passes5", "4. variant passes8", "5. variant plateau2",
        "6. report"]
    argv = _race_argv(lease(tmp_path, "variants", "compile").stdout)
    assert argv[argv.index("--variant_seconds") + 1] == "120" and "compiled=--torch_compile true" in argv
    assert "regional=--compile_regions true" in argv
    plan = run_script(*argv, "--dry_run")
    assert plan.returncode == 0, plan.stderr
    assert [ln for ln in plan.stdout.splitlines() if ln[:1].isdigit()] == [
        "1. data", "2. variant base", "3. variant compiled", "4. variant regional", "5. report"]
    r = lease(tmp_path, "throughput", "240")
    assert r.returncode == 0 and "gpu_acceptance.py --steps throughput --throughput_seconds 140" in r.stdout
    assert f"--out {tmp_path / 'out'}/acceptance " in r.stdout  # in what the call brings back, killed or not
    assert "benchmarks/checkpoint_save.py --runs 3" in r.stdout  # the H200's checkpoint writes, first
    for args, says in (((), "give one of"), (("throughput",), "the seconds the lease has left"),
                       (("throughput", "100"), "too little"), (("fly",), "give one of"),
                       (("variants", "wide"), "'shape'")):
        r = lease(tmp_path, *args)
        assert r.returncode == 2 and r.stderr.strip().startswith("error: ") and says in r.stderr, r.stderr
    r = lease(tmp_path, "prepare", "regular")
    assert "--prepare --preset regular --data .gpu_race_regular" in r.stdout and "transformers==5.24.0" in r.stdout


def test_what_a_lease_carries_is_ignored_by_git():
    """The prepared data and the wheels travel only when a call carries them (64 MiB in all):
    never committed, never sent with every call as part of the tree."""
    import shutil

    if not shutil.which("git") or not (REPO / ".git").exists():
        pytest.skip("not a git checkout")
    for folder in (".gpu_race", ".gpu_race_regular", ".whl"):
        r = subprocess.run(["git", "check-ignore", "-q", "--no-index", f"{folder}/x"], cwd=REPO)
        assert r.returncode == 0, f"{folder} is not ignored by git"


def _smoke(tmp_path, seconds: float, *extra: str, src: Path | None = None):
    src = src or write_micro_source(tmp_path / "src", n_docs=4, chars=6000)
    md = tmp_path / "BENCHMARKS.copy.md"
    md.write_text("# Benchmarks\n")
    r = run_script("--device", "cpu", "--preset", "micro", "--seconds", f"{seconds:g}", "--source_dir", str(src),
                   "--work", str(tmp_path / "w"), "--json", str(tmp_path / "race.json"), "--bench_md", str(md),
                   *extra, timeout=900)
    res = json.loads((tmp_path / "race.json").read_text()) if (tmp_path / "race.json").exists() else {}
    return r, res, md.read_text()


@needs_shared_bench
def test_smoke_race_on_cpu_writes_both_bpb(tmp_path):
    """The race end to end, without variants: each training process costs ~10 s of imports on 2
    cores, the most of this test's time (a variant, another ~26 s, runs in the slow 30-second
    race below; which ours a variant is set against: test_each_variant_is_set_against_ours_...)."""
    r, res, md = _smoke(tmp_path, 2, "--curve_points", "2", "--score_bytes", "1500", "--first_pass_seconds", "1")
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-2000:]
    for name in ("ours", "seed_recipe"):
        rec = res[name]
        assert rec["status"] == "ok" and math.isfinite(rec["bpb"]) and rec["bpb"] > 0, rec
        assert rec["steps"] > 0 and rec["tokens"] > 0 and rec["curve"][-1]["bpb"] == rec["bpb"]
    assert not res.get("variants") and "What each change bought" not in md
    assert res["seed_recipe"]["fitted_steps"] >= 1 and res["meta"]["data"]["heldout_documents"] >= 1
    assert res["ours_lower"] in (True, False)
    assert md.count("<!-- gpu-race-micro:begin -->") == 1 and "| seed_recipe |" in md
    # the picture beside the JSON, linked from the block, which is in the same folder
    assert (tmp_path / "race.png").read_bytes()[:4] == b"\x89PNG" and f"wrote {tmp_path / 'race.png'}" in r.stdout
    assert "![held-out bpb over training time, every run](race.png)" in md


# six files of ../shared/corpus, 1.3 MB (5 documents, 426k tokens to train on, one held out)
RACE_FILES = ("gutenberg_beggars_opera.txt", "gutenberg_diary_of_a_nobody.txt", "gutenberg_sign_of_the_four.txt",
              "gutenberg_study_in_scarlet.txt", "oldbailey_ordinarys_account_1741-05-04.txt",
              "oldbailey_proceedings_1699-10-11.xml")


@pytest.mark.slow
@needs_shared_bench
def test_the_30_second_micro_race(tmp_path):
    """The issue's smoke race: both bpb written, ours lower. On these six files it held in every
    run on 2 shared Zen 5 cores, loaded or not (2026-11-26: 3.456 against 4.022, 3.889 against
    4.245, and at 10 s 3.909 against 4.444). Not on the four 6,000-character parts of the quick
    test above (5,001 tokens to train on): there ours overfits within 15 s (BENCHMARKS.md)."""
    if not all((SHARED / "corpus" / f).exists() for f in RACE_FILES):
        pytest.skip("needs ../shared/corpus: not here")
    src = tmp_path / "src"
    src.mkdir()
    for f in RACE_FILES:
        (src / f).symlink_to(SHARED / "corpus" / f)
    r, res, md = _smoke(tmp_path, 30, "--variant_seconds", "5", "--variant", "best=--save_best --eval_steps 4",
                        src=src)
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-2000:]
    assert all(math.isfinite(res[n]["bpb"]) for n in ("ours", "seed_recipe"))
    assert len(res["ours"]["curve"]) >= 3 and len(res["seed_recipe"]["curve"]) >= 3
    assert res["ours"]["bpb"] < res["seed_recipe"]["bpb"] and res["ours_lower"] is True
    # a variant at other seconds than the race's: ours unchanged trains beside it, at its seconds,
    # each in a run folder of its own
    assert list(res["variants"]) == ["base", "best"]
    for name, v in res["variants"].items():
        assert v["status"] == "ok" and math.isfinite(v["bpb"]) and v["seconds"] == 5, v
        assert f"--run_name_dir race_ours_{name} " in v["command"]
    best = res["variants"]["best"]
    assert best["vs_base"] == pytest.approx(best["bpb"] - res["variants"]["base"]["bpb"], abs=1e-4)
