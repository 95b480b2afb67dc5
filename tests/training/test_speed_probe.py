"""Measured speed defaults: the probe, its cache (written, reused, refreshed, a bad file
ignored with a warning) and explicit flags that always win."""
from __future__ import annotations

import json

import pytest
import torch

from londonlm.training.speed import cache, probe as autotune
from londonlm.training.speed.probe import resolve_speed_settings
from londonlm.training.speed.settings import SpeedSettings
from londonlm.core.errors import UsageError
from londonlm.training.model import ModelShape

from conftest import patch_core

SHAPE = ModelShape(n_layer=1, n_head=2, n_embd=16, n_positions=16, vocab_size=64)


class FakeTimer:
    """Step times per candidate label, without running a model. ``timed``: the candidates it
    was asked to time, in first-seen order; ``steps``: every step, in order. ``drift``: the
    machine slows by this fraction of a step's time with each step taken."""

    def __init__(self, seconds: dict[str, float], default: float = 1.0, drift: float = 0.0,
                 fail: tuple[str, ...] = ()):
        self.seconds, self.default, self.drift, self.fail = seconds, default, drift, fail
        self.timed, self.steps = [], []

    def __call__(self, shape, batch_size):
        return self.step

    def step(self, cand):
        if cand.label not in self.timed:
            self.timed.append(cand.label)
        self.steps.append(cand.label)
        if cand.label in self.fail:
            raise RuntimeError("out of memory")
        return self.seconds.get(cand.label, self.default) * (1 + self.drift * len(self.steps))


@pytest.fixture
def cpu_without_bf16(monkeypatch):
    patch_core(monkeypatch, "cpu_has_native_bf16", lambda: False)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)


def _resolve(mode, path, timer, logs=None, **kw):
    return resolve_speed_settings(mode, SHAPE, 4, cache_path=path, timer=timer,
                                  log=(logs.append if logs is not None else print), **kw)


def test_first_use_measures_every_candidate_and_caches_the_figures(tmp_path, cpu_without_bf16):
    path = tmp_path / "autotune.json"
    timer = FakeTimer({"fp32/eager/fused-on": 0.2})
    choice = _resolve("on", path, timer)
    # no native bf16 on this CPU: bf16 is not worth timing
    assert sorted(timer.timed) == sorted(["fp32/sdpa/fused-off", "fp32/sdpa/fused-on",
                                          "fp32/eager/fused-off", "fp32/eager/fused-on"])
    assert timer.timed[0] == "fp32/sdpa/fused-off"  # the fixed rules' choice is timed first
    assert choice.candidate == SpeedSettings("fp32", "eager", True, False) and choice.source == "measured"
    assert choice.step_seconds == 0.2
    assert "fp32/eager/fused-on 0.200" in choice.message and "fp32/sdpa/fused-off 1.000" in choice.message
    data = json.loads(path.read_text())
    (key, entry), = data["entries"].items()
    assert "shape=L1-H2-D16-T16-V64-B4" in key and "torch=" in key
    assert entry["figures"]["fp32/eager/fused-on"]["step_seconds"] == 0.2


def test_cache_is_reused_then_refreshed(tmp_path, cpu_without_bf16):
    path = tmp_path / "autotune.json"
    _resolve("on", path, FakeTimer({"fp32/eager/fused-on": 0.2}))
    again = FakeTimer({})
    choice = _resolve("on", path, again)
    assert again.timed == [] and choice.source == "cached"
    assert choice.candidate == SpeedSettings("fp32", "eager", True, False) and "in the cache" in choice.message
    fresh = FakeTimer({"fp32/sdpa/fused-on": 0.1})
    choice = _resolve("refresh", path, fresh)
    assert len(fresh.timed) == 4 and choice.candidate == SpeedSettings("fp32", "sdpa", True, False)
    assert _resolve("on", path, FakeTimer({})).candidate == SpeedSettings("fp32", "sdpa", True, False)


def test_another_shape_is_measured_separately(tmp_path, cpu_without_bf16):
    path = tmp_path / "autotune.json"
    _resolve("on", path, FakeTimer({}))
    other = FakeTimer({})
    resolve_speed_settings("on", SHAPE, 8, cache_path=path, timer=other, log=print)
    assert len(other.timed) == 4
    assert len(json.loads(path.read_text())["entries"]) == 2


def test_a_run_with_dropout_times_the_candidates_with_it_and_files_them_apart(tmp_path, cpu_without_bf16):
    """A time budget is fitted from the probe's figure: slm's dropout 0.1 made a step 1.19x
    longer (BENCHMARKS.md), so it is timed with the run's dropout and a run without dropout
    does not reuse those figures (nor the other way round)."""
    path, built = tmp_path / "autotune.json", []

    class Timer(FakeTimer):
        def __call__(self, shape, batch_size, dropout=0.0):
            built.append(dropout)
            return self.step

    _resolve("on", path, Timer({}))
    with_masks = Timer({"fp32/sdpa/fused-off": 0.5})
    choice = _resolve("on", path, with_masks, dropout=0.1)
    assert built == [0.0, 0.1] and len(with_masks.timed) == 4 and choice.step_seconds == 0.5
    keys = list(json.loads(path.read_text())["entries"])
    assert len(keys) == 2 and sum("dropout=0.1" in k for k in keys) == 1
    assert not any("dropout=0 " in k or "dropout=0.0" in k for k in keys)  # no dropout: the key it had
    again = Timer({})
    assert _resolve("on", path, again, dropout=0.1).source == "cached" and again.timed == []


@pytest.mark.parametrize("content", ["{not json", json.dumps({"format": "other", "entries": {}}),
                                     json.dumps([1, 2])])
def test_a_bad_cache_file_is_ignored_with_a_warning_and_rewritten(tmp_path, cpu_without_bf16, content):
    path = tmp_path / "autotune.json"
    path.write_text(content)
    logs, timer = [], FakeTimer({})
    choice = _resolve("on", path, timer, logs)
    assert any(m.startswith("warning: ignoring the autotune cache") for m in logs)
    assert len(timer.timed) == 4 and choice.source == "measured"
    assert json.loads(path.read_text())["format"] == cache.CACHE_FORMAT


def test_a_malformed_entry_is_dropped_with_a_warning(tmp_path, cpu_without_bf16):
    path = tmp_path / "autotune.json"
    _resolve("on", path, FakeTimer({}))
    data = json.loads(path.read_text())
    key = next(iter(data["entries"]))
    data["entries"][key]["figures"]["fp32/sdpa/fused-off"] = {"step_seconds": "fast"}
    path.write_text(json.dumps(data))
    logs, timer = [], FakeTimer({})
    _resolve("on", path, timer, logs)
    assert any("malformed entry" in m for m in logs) and len(timer.timed) == 4


def test_explicit_flags_win_and_only_the_rest_is_measured(tmp_path, cpu_without_bf16):
    path = tmp_path / "autotune.json"
    _resolve("on", path, FakeTimer({"fp32/eager/fused-on": 0.2}))   # eager wins unpinned
    pinned = FakeTimer({})
    choice = _resolve("on", path, pinned, given=SpeedSettings(attn_implementation="sdpa"))
    assert pinned.timed == []  # both sdpa candidates are in the cache already
    assert choice.candidate.attn_implementation == "sdpa"
    assert "fixed by your flags: attn_implementation=sdpa" in choice.message
    # an explicit value outside the measured space (emulated bf16) is timed, not refused
    bf16 = FakeTimer({})
    choice = _resolve("on", path, bf16, given=SpeedSettings("bf16"))
    assert sorted(bf16.timed) == sorted(["bf16/sdpa/fused-off", "bf16/sdpa/fused-on",
                                         "bf16/eager/fused-off", "bf16/eager/fused-on"])
    assert choice.candidate.precision == "bf16"


def test_all_flags_explicit_or_autotune_off_measures_nothing(tmp_path, cpu_without_bf16):
    path = tmp_path / "autotune.json"
    timer = FakeTimer({})
    c = _resolve("on", path, timer, given=SpeedSettings("fp32", "eager", True))
    assert c.source == "explicit" and c.candidate == SpeedSettings("fp32", "eager", True, False)
    c = _resolve("off", path, timer)
    assert c.source == "default" and c.candidate == SpeedSettings("fp32", "sdpa", False, False)
    assert timer.timed == [] and not path.exists()
    with pytest.raises(UsageError, match="--autotune"):
        _resolve("sometimes", path, timer)


@pytest.mark.parametrize("fast", [True, False])
def test_native_bf16_cpus_time_bf16_too(tmp_path, monkeypatch, fast):
    """bf16 is timed wherever the CPU has it, the fixed rules' choice first: bf16 where it
    outruns fp32, fp32 where it does not (Intel's avx512_bf16 without AMX)."""
    patch_core(monkeypatch, "cpu_has_native_bf16", lambda: True)
    patch_core(monkeypatch, "cpu_has_fast_bf16", lambda: fast)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    timer = FakeTimer({})
    _resolve("on", tmp_path / "a.json", timer)
    assert len(timer.timed) == 8
    assert timer.timed[0] == ("bf16/eager/fused-on" if fast else "fp32/sdpa/fused-off")


def test_bf16_on_a_cpu_that_emulates_it_is_kept_and_named_with_the_fast_flag():
    from londonlm.training.speed.settings import MachineBf16, emulated_bf16_notice

    bf16, fp32 = SpeedSettings("bf16", "eager", True), SpeedSettings("fp32", "sdpa", False)
    emulating, native = MachineBf16(False, False, False), MachineBf16(True, False, False)
    assert "--bf16 false" in emulated_bf16_notice(bf16, emulating, cuda=False)
    assert emulated_bf16_notice(bf16, native, cuda=False) is None  # its own instructions
    assert emulated_bf16_notice(fp32, emulating, cuda=False) is None
    assert emulated_bf16_notice(bf16, emulating, cuda=True) is None  # the GPU computes it


def test_probe_time_cap_leaves_the_rest_for_the_next_run(tmp_path, cpu_without_bf16):
    """A probe cut by its time cap after one timed step decides nothing: the fixed rules, nothing
    cached (one step on a busy machine chose badly and every later run reused it: hostile inputs
    round 4, item 17), and the next run measures every candidate."""
    path, logs = tmp_path / "autotune.json", []
    first = FakeTimer({})
    choice = _resolve("on", path, first, logs, max_probe_seconds=0)
    assert first.timed == ["fp32/sdpa/fused-off"] and any("time cap" in m for m in logs)
    assert choice.candidate == SpeedSettings("fp32", "sdpa", False, False) and choice.source == "default"
    assert "too few or too noisy" in choice.message and "not cached" in choice.message
    assert not path.exists()
    rest = FakeTimer({"fp32/sdpa/fused-off": 0.5, "fp32/eager/fused-on": 0.7})
    choice = _resolve("on", path, rest)
    assert len(rest.timed) == 4 and choice.source == "measured"
    assert choice.candidate == SpeedSettings("fp32", "sdpa", False, False) and choice.step_seconds == 0.5


def test_a_probe_on_a_busy_machine_says_so_and_caches_nothing(tmp_path, cpu_without_bf16):
    """Steps of the winner that swing (another job on the cores) cannot decide: the fixed rules,
    the reason in the log line, no cache; steady figures are cached as before."""
    class Swinging(FakeTimer):
        def step(self, cand):
            seconds = super().step(cand)
            return seconds * (2 if self.steps.count(cand.label) % 2 else 1)  # every other step slow

    path = tmp_path / "autotune.json"
    choice = _resolve("on", path, Swinging({"fp32/eager/fused-on": 0.2}))
    assert choice.source == "default" and "slowest step took" in choice.message and not path.exists()
    steady = FakeTimer({"fp32/eager/fused-on": 0.2})
    assert _resolve("on", path, steady).source == "measured" and path.exists()


def test_processes_of_a_distributed_run_never_probe_on_their_own(tmp_path, cpu_without_bf16):
    timer = FakeTimer({})
    c = _resolve("on", tmp_path / "a.json", timer, world_size=2)
    assert timer.timed == [] and c.source == "default" and "one process" in c.message


def test_default_cache_lives_under_xdg_cache_home(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    assert autotune.default_cache_path() == tmp_path / "londonlm" / "autotune.json"


def test_real_probe_times_steps_and_keeps_training_rng_untouched():
    torch.manual_seed(123)
    expected = torch.rand(3)
    torch.manual_seed(123)
    figures = autotune.probe([SpeedSettings("fp32", "sdpa", False), SpeedSettings("fp32", "eager", True)],
                             SHAPE, 2, max_seconds=600, log=print)  # no cap on a loaded machine
    assert torch.equal(torch.rand(3), expected)
    assert all(f["step_seconds"] > 0 for f in figures.values()) and len(figures) == 2
    assert all(f["timed_steps"] == 3 or f.get("cut") for f in figures.values())
    assert len(autotune.time_candidate(SpeedSettings("fp32", "sdpa", False), SHAPE, 2, timed_steps=2)) == 2


class CompiledLike(torch.nn.Module):
    """What ``torch.compile`` returns, as far as the timer can tell: a wrapper that runs the
    model and, like ``OptimizedModule``, has no truth value of its own (it asks for len())."""

    def __init__(self, model):
        super().__init__()
        self.inner, self.calls = model, 0

    def forward(self, **kw):
        self.calls += 1
        return self.inner(**kw)

    def __len__(self):
        raise TypeError(f"{type(self.inner).__name__} does not support len()")


def test_a_compiled_candidate_is_timed_through_the_compiled_model(monkeypatch):
    made = []
    monkeypatch.setattr(torch, "compile", lambda m, **kw: made.append(CompiledLike(m)) or made[-1])
    times = autotune.time_candidate(SpeedSettings("fp32", "sdpa", False), SHAPE, 2, warmup_steps=1,
                                    timed_steps=2, compile=True)
    assert len(times) == 2 and all(t > 0 for t in times)
    assert made[0].calls == 3  # the warm-up and both timed steps ran the compiled model


A, B, C = (SpeedSettings("fp32", "sdpa", False), SpeedSettings("fp32", "eager", True),
           SpeedSettings("fp32", "sdpa", True))


def test_probe_interleaves_candidates_round_by_round():
    timer = FakeTimer({})
    figures = autotune.probe([A, B, C], SHAPE, 2, max_seconds=600, timer=timer)
    a, b, c = A.label, B.label, C.label
    # one warm-up step each, then three rounds, each starting one candidate later
    assert timer.steps == [a, b, c, a, b, c, b, c, a, c, a, b]
    assert all(f == {"step_seconds": 1.0, "timed_steps": 3, "spread": 1.0} for f in figures.values())


def test_a_drifting_machine_does_not_decide_the_winner():
    """B is 10% faster, but the machine slows by 10% of a step with every step: timed one
    candidate after the other, A (timed first, on the faster machine) would win."""
    timer = FakeTimer({A.label: 1.0, B.label: 0.9}, drift=0.1)
    figures = autotune.probe([A, B], SHAPE, 2, max_seconds=600, timer=timer)
    assert autotune.fastest([A, B], figures) == B
    sequential = FakeTimer({A.label: 1.0, B.label: 0.9}, drift=0.1)
    step = sequential(SHAPE, 2)
    per_cand = {c.label: sorted(step(c) for _ in range(4))[1:][1] for c in (A, B)}
    assert per_cand[A.label] < per_cand[B.label]  # what the one-after-another probe measured


def test_a_clearly_slower_candidate_is_cut_after_one_timed_step_and_a_failing_one_recorded():
    timer = FakeTimer({A.label: 1.0, B.label: 2.0}, fail=(C.label,))
    figures = autotune.probe([A, B, C], SHAPE, 2, max_seconds=600, timer=timer)
    assert figures[B.label] == {"step_seconds": 2.0, "timed_steps": 1, "cut": True}
    assert figures[C.label]["error"].startswith("RuntimeError: out of memory")
    assert figures[A.label]["timed_steps"] == 3 and timer.steps.count(C.label) == 1


def test_the_step_timer_switches_attention_and_loss_on_one_model(monkeypatch):
    from londonlm.training.step import fused_loss

    calls = []
    real = fused_loss.linear_cross_entropy
    monkeypatch.setattr(fused_loss, "linear_cross_entropy", lambda *a: calls.append(1) or real(*a))
    step = autotune.StepTimer(SHAPE, 2)
    assert step(SpeedSettings("fp32", "eager", True)) > 0
    assert step.model.config._attn_implementation == "eager" and calls == [1]
    step(SpeedSettings("fp32", "sdpa", False))
    assert step.model.config._attn_implementation == "sdpa" and calls == [1]


def test_on_a_gpu_the_fixed_rules_are_used_and_nothing_is_timed(tmp_path, monkeypatch):
    """The probe times eager steps while a GPU run trains compiled, and its eager-attention
    candidate alone would hold B*H*T^2 scores per layer: on CUDA, the fixed rules."""
    monkeypatch.setattr(autotune, "device_key", lambda: {"device": "cuda", "gpu": "NVIDIA H100"})
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: True)
    timer = FakeTimer({})
    choice = _resolve("on", tmp_path / "a.json", timer)
    assert timer.timed == [] and not (tmp_path / "a.json").exists()
    assert choice.candidate == SpeedSettings("bf16", "sdpa", False, True) and choice.source == "default"
    assert "fixed rules on a GPU" in choice.message
    pinned = _resolve("refresh", tmp_path / "a.json", timer, given=SpeedSettings(fused_loss=True))
    assert pinned.candidate == SpeedSettings("bf16", "sdpa", True, True) and timer.timed == []


def test_candidates_whose_step_would_not_fit_in_memory_are_never_timed(tmp_path, cpu_without_bf16):
    """A probe step past the memory is killed by the kernel, with the run: at a long context the
    eager-attention candidates (T x T scores per head and layer) are left out, and the message
    says so."""
    shape = ModelShape(n_layer=2, n_head=8, n_embd=64, n_positions=2048, vocab_size=512)
    sdpa, eager = (shape.training_memory(4, attention=a, precision="fp32").total for a in ("sdpa", "eager"))
    free = (sdpa / autotune.PROBE_MEMORY_SHARE + eager / autotune.PROBE_MEMORY_SHARE) / 2
    timer = FakeTimer({})
    choice = resolve_speed_settings("on", shape, 4, cache_path=tmp_path / "a.json", timer=timer,
                                    log=lambda _m: None, free_bytes=free)
    assert timer.timed and all("/sdpa/" in label for label in timer.timed)
    assert "not timed" in choice.message and "fp32/eager/fused-off" in choice.message
    nothing = resolve_speed_settings("on", shape, 4, cache_path=tmp_path / "b.json", timer=timer,
                                     log=lambda _m: None, free_bytes=1e6)
    assert nothing.source == "default" and "would not fit" in nothing.message


def test_a_timer_frees_its_model_without_waiting_for_the_garbage_collector():
    """The fused loss's forward stored on the model used to be a bound method of it: a cycle
    that kept each probe's model (GBs at GPT-2 Medium's size) alive until the GC ran."""
    import gc
    import weakref

    timer = autotune.StepTimer(SHAPE, 2)
    model = weakref.ref(timer.model)
    for cand in (SpeedSettings("fp32", "sdpa", True), SpeedSettings("fp32", "eager", False), SpeedSettings("fp32", "sdpa", True)):
        assert timer(cand) > 0
    gc.collect()
    gc.disable()
    try:
        timer.close()
        assert model() is None
    finally:
        gc.enable()


def test_the_budget_check_times_the_step_as_the_run_trains(monkeypatch):
    """Compiled when the run compiles: the eager step time is another program's."""
    from types import SimpleNamespace

    from londonlm.training.speed import choice as speed

    asked = {}
    monkeypatch.setattr(speed, "time_candidate", lambda cand, shape, batch, **kw: asked.update(kw) or [0.01])
    for regions in (False, True):  # --compile_regions: timed compiled by regions, as it trains
        config = SimpleNamespace(speed=SimpleNamespace(micro_batch=4, grad_accum=1, torch_compile=True,
                                                       request=SimpleNamespace(compile_regions=regions)),
                                 optim=SimpleNamespace(warmup_steps=1, warmup_share=None),
                                 control=SimpleNamespace(time_budget=100.0), model=SimpleNamespace(dropout=0.1))
        plan = speed.SpeedPlan(SpeedSettings("bf16", "sdpa", False), True, "default", "", None)
        speed.check_time_budget(config, SHAPE, plan)
        assert asked["compile"] is True and asked["dropout"] == 0.1 and asked["regions"] is regions


def test_the_step_timer_compiles_by_regions_when_asked():
    from torch._dynamo.eval_frame import OptimizedModule

    timer = autotune.StepTimer(SHAPE, 2, compile=True, regions=True)  # compiling is lazy: nothing built
    try:
        assert not isinstance(timer.compiled, OptimizedModule)
        assert all(isinstance(b, OptimizedModule) for b in timer.compiled.transformer.h)
    finally:
        timer.close()


def test_the_probe_gives_its_memory_back_when_it_closes(monkeypatch):
    calls = []
    monkeypatch.setattr(autotune, "return_freed_memory", lambda: calls.append(1) or True)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    cands = [SpeedSettings("fp32", "sdpa", False), SpeedSettings("fp32", "eager", True)]
    autotune.probe(cands, SHAPE, 2, rounds=1, timer=FakeTimer({}))
    assert calls  # on the CPU the heap is trimmed once the probe's model is gone


def test_a_cached_choice_the_run_misses_by_2x_is_measured_again(tmp_path, cpu_without_bf16):
    """The run's own step time against the cached estimate: within 2x the entry stays; 2.5x
    slower (figures taken under another load) drops it, says so, and the next run measures."""
    from types import SimpleNamespace

    from londonlm.training.speed.choice import EstimateCheck

    path = tmp_path / "autotune.json"
    choice = _resolve("on", path, FakeTimer({"fp32/eager/fused-on": 0.2}))
    assert choice.cache == (path, next(iter(json.loads(path.read_text())["entries"])))

    def run(step_seconds: float) -> tuple[str, list]:
        t, logs = [0.0], []
        check = EstimateCheck(choice.step_seconds, choice.cache, clock=lambda: t[0], log=logs.append)
        state = SimpleNamespace(global_step=0)
        for _ in range(12):
            t[0] += step_seconds
            check.on_step_end(None, state, None)
        return check.verdict, logs

    assert run(0.3) == ("held", []) and json.loads(path.read_text())["entries"]
    verdict, logs = run(0.5)
    assert verdict == "missed" and "2.5x" in logs[0] and "measures again" in logs[0]
    assert json.loads(path.read_text())["entries"] == {}
    again = FakeTimer({})
    assert _resolve("on", path, again).source == "measured" and len(again.timed) == 4
