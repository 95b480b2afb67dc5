"""Warmup-stable-decay schedules and their fitting to a wall-clock budget."""
from __future__ import annotations

import math

import pytest
import torch

from conftest import micro_gpt2, micro_lm_dataset, micro_training_args
from londonlm.core.errors import LondonLMError
from londonlm.training.step.schedules import (BudgetError, BudgetFitCallback, WarmupStableDecay, check_budget,
                                make_lr_scheduler)


def test_wsd_shape_warms_up_holds_and_decays_to_the_floor():
    s = WarmupStableDecay(warmup_steps=10, total_steps=100, decay_fraction=0.2, min_lr_ratio=0.1)
    assert s(0) == 0.0 and s(5) == pytest.approx(0.5)
    assert s(10) == s(50) == s(82) == 1.0
    assert s.decay_start == pytest.approx(82.0)  # 10 + 0.8 * 90
    assert s(91) == pytest.approx(0.1 + 0.9 * 0.5)
    assert s(100) == pytest.approx(0.1) and s(150) == pytest.approx(0.1)


def test_full_cosine_decay_is_the_hugging_face_cosine_with_min_lr():
    from transformers import get_scheduler

    opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=1.0)
    hf = get_scheduler("cosine_with_min_lr", opt, num_warmup_steps=7, num_training_steps=60,
                       scheduler_specific_kwargs={"min_lr_rate": 0.1})
    ours = WarmupStableDecay(7, 60, decay_fraction=1.0, min_lr_ratio=0.1, decay_shape="cosine")
    for step in range(60):
        assert ours(step) == pytest.approx(hf.lr_lambdas[0](step), abs=1e-12)


def test_refit_in_the_stable_stretch_moves_only_the_decay():
    s = WarmupStableDecay(5, 100, decay_fraction=0.2)
    s.refit(200, at_step=40)
    assert s.total_steps == 200 and s.decay_start == pytest.approx(5 + 0.8 * 195)
    assert s(40) == 1.0
    # a much shorter total than planned: the decay starts now, never in the past
    s.refit(45, at_step=40)
    assert s.decay_start == 40 and s(40) == 1.0 and s(45) == 0.0


def test_refit_inside_the_decay_keeps_the_current_rate_and_ends_at_the_new_total():
    s = WarmupStableDecay(0, 100, decay_fraction=0.5, min_lr_ratio=0.0)
    before = s(75)
    s.refit(140, at_step=75)
    assert s(75) == pytest.approx(before)
    assert s(140) == pytest.approx(0.0) and s(139) > 0
    assert all(s(k) >= s(k + 1) for k in range(75, 140))


def test_fitted_schedule_survives_the_scheduler_state_dict():
    opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=1.0)
    s = WarmupStableDecay(3, 50)
    sched = make_lr_scheduler(opt, s)
    s.refit(80, at_step=10)
    s.elapsed_seconds = 12.5
    state = sched.state_dict()
    s2 = WarmupStableDecay(3, 50)
    sched2 = make_lr_scheduler(torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=1.0), s2)
    sched2.load_state_dict(state)
    assert (s2.total_steps, s2.decay_start, s2.elapsed_seconds) == (80, s.decay_start, 12.5)


def test_check_budget_refuses_a_budget_without_room_for_warmup():
    assert check_budget(100, warmup_steps=10, step_seconds=0.5) == 200
    assert check_budget(100, warmup_steps=10) is None  # step time unknown: checked when measured
    with pytest.raises(LondonLMError, match="fits only 10 steps.*10 warm-up steps"):
        check_budget(5, warmup_steps=10, step_seconds=0.5)
    with pytest.raises(BudgetError, match="positive"):
        check_budget(0, warmup_steps=1)


class SimulatedClock:
    """Step time without waiting: every step 'takes' ``tau`` seconds (the first ones longer,
    as real first steps do); the Trainer's clock reads it."""

    def __init__(self, tau: float, first: float):
        self.t, self.tau, self.first = 0.0, tau, first

    def __call__(self) -> float:
        return self.t


def _run(tmp_path, budget, tau=0.5, first=2.0, warmup=3, max_steps=10_000, resume=None,
         stop_at=None, clock=None, logs=None, agree=None, share=None, on_fit=None):
    from transformers import Trainer, TrainerCallback

    clock = clock or SimulatedClock(tau, first)

    class Tick(TrainerCallback):
        def on_step_end(self, args, state, control, **kw):
            clock.t += clock.first if state.global_step <= 2 else clock.tau
            if stop_at and state.global_step == stop_at:  # an interruption, with a checkpoint
                control.should_training_stop = control.should_save = True

    sched = WarmupStableDecay(warmup, 1000, decay_fraction=0.25, min_lr_ratio=0.0, warmup_share=share)
    args = micro_training_args(tmp_path, max_steps=max_steps, save_strategy="steps", save_steps=10_000)
    model = micro_gpt2()
    opt = torch.optim.AdamW(model.parameters(), lr=args.learning_rate)
    fit = BudgetFitCallback(budget, clock=clock, log=(logs.append if logs is not None else None),
                            on_fit=on_fit, **({"agree": agree} if agree else {}))
    trainer = Trainer(model=model, args=args, train_dataset=micro_lm_dataset(400),
                      optimizers=(opt, make_lr_scheduler(opt, sched)), callbacks=[Tick(), fit])
    trainer.train(resume_from_checkpoint=resume)
    return trainer, sched, clock, fit


def test_budget_fitted_run_ends_at_the_budget_with_a_finished_schedule(tmp_path):
    logs = []
    trainer, sched, clock, fit = _run(tmp_path, budget=20.0, logs=logs)
    st = trainer.state
    # 2 slow first steps (4 s) then 0.5 s each: 34 steps fill 20 s exactly
    assert st.global_step == st.max_steps == sched.total_steps
    assert abs(clock.t - 20.0) <= 0.5
    assert sched.progress(st.global_step) == 1.0          # decayed all the way
    lrs = [h["learning_rate"] for h in st.log_history if "learning_rate" in h]
    assert lrs[-1] == pytest.approx(3e-3 * sched(st.global_step - 1)) and lrs[-1] < lrs[-5] / 2
    assert (tmp_path / f"checkpoint-{st.global_step}").is_dir()  # the Trainer's end-of-run save
    assert any("s per step measured" in m for m in logs)
    assert fit.report()["fitted_total_steps"] == st.global_step
    assert fit.report()["warmup_steps"] == sched.warmup_steps
    # the Trainer's own end-of-training figure counts the steps run, not the 10,000-step cap
    end = st.log_history[-1]
    batch = trainer.args.per_device_train_batch_size * trainer.args.gradient_accumulation_steps
    assert end["train_samples_per_second"] == pytest.approx(st.global_step * batch / end["train_runtime"],
                                                            rel=0.02)


def test_the_fitter_runs_before_the_loggers(tmp_path):
    """report_to integrations and the progress bar are the Trainer's own callbacks; the fitter
    runs ahead of them so they log its corrected figures, and the bar follows its step count."""
    from transformers.trainer_callback import ProgressCallback

    from londonlm.training.step.callbacks import TRAINER_OWN
    from londonlm.training.step.trainer import FittedProgress, RunTrainer

    fit = BudgetFitCallback(10)
    trainer = RunTrainer(model=micro_gpt2(), args=micro_training_args(tmp_path, max_steps=10, disable_tqdm=False),
                         train_dataset=micro_lm_dataset(16), callbacks=[fit, TRAINER_OWN])
    callbacks = trainer.callback_handler.callbacks
    assert callbacks[0] is fit and callbacks.count(fit) == 1
    bars = [c for c in callbacks if isinstance(c, ProgressCallback)]
    assert bars and all(isinstance(c, FittedProgress) for c in bars)  # resizes with the fitted total


def test_budget_is_shared_by_a_resumed_run(tmp_path):
    trainer, sched, clock, _ = _run(tmp_path, budget=20.0, stop_at=12)
    assert trainer.state.global_step == 12
    spent = clock.t
    ck = tmp_path / "checkpoint-12"
    clock2 = SimulatedClock(0.5, 0.5)
    trainer2, sched2, clock2, _ = _run(tmp_path, budget=20.0, resume=str(ck), clock=clock2)
    assert sched2.total_steps == trainer2.state.global_step
    # the second invocation only had the budget's remainder
    assert abs(spent + clock2.t - 20.0) <= 0.5


def test_budget_too_small_for_warmup_fails_clearly(tmp_path):
    with pytest.raises(BudgetError, match="warm-up"):
        _run(tmp_path, budget=5.0, warmup=20)


def test_a_warm_up_that_is_a_share_of_the_budget_follows_the_pace_measured(tmp_path):
    """The warm-up was sized from an estimate of the pace (a probe at 0.05 s a step: 400 steps in
    20 s, a preset's 1/8 of them 50); the steps take 0.5 s, so 20 s hold 34: the warm-up keeps its
    share of those (4) where a fixed one of 50 is refused."""
    logs = []
    trainer, sched, clock, _ = _run(tmp_path, budget=20.0, warmup=50, logs=logs, share=0.125)
    st = trainer.state
    assert st.global_step == st.max_steps == sched.total_steps and abs(clock.t - 20.0) <= 0.5
    assert sched.warmup_steps == round(st.global_step * 0.125) and sched.progress(st.global_step) == 1.0
    assert any(f"warm-up {sched.warmup_steps}," in m for m in logs)
    with pytest.raises(BudgetError, match="warm-up"):
        _run(tmp_path / "fixed", budget=20.0, warmup=50)


def test_a_shared_warm_up_is_at_least_a_step_never_the_whole_run_nor_past_its_bound():
    from londonlm.training.step.schedules import shared_warmup

    assert shared_warmup(500, 1 / 60) == 8 and shared_warmup(10, 0.01) == 1
    assert shared_warmup(1, 0.5) == 0                       # a one-step run warms up for none
    assert shared_warmup(120_000, 1 / 60, most=1000) == 1000  # a longer fixed run keeps the preset's
    assert shared_warmup(120_000, 1 / 60) == 2000             # a budget's share of what it holds


def test_a_shared_warm_up_is_its_share_of_the_steps_a_step_cap_leaves(tmp_path):
    """20 s hold 34 steps at 0.5 s; --max_steps (or --num_train_epochs) caps the run at 16: the
    warm-up is the preset's share of the 16 it will run (2), not of the 34 the budget holds (4)."""
    trainer, sched, _, _ = _run(tmp_path, budget=20.0, warmup=50, share=0.125, max_steps=16)
    assert trainer.state.global_step == sched.total_steps == 16
    assert sched.warmup_steps == 2 and sched.progress(16) == 1.0


def test_callback_refuses_a_scheduler_it_cannot_fit(tmp_path):
    from transformers import Trainer

    trainer = Trainer(model=micro_gpt2(), args=micro_training_args(tmp_path, max_steps=3),
                      train_dataset=micro_lm_dataset(16), callbacks=[BudgetFitCallback(10)])
    with pytest.raises(TypeError, match="WarmupStableDecay"):
        trainer.train()


def test_every_rank_joins_the_budget_agreement_at_every_step(tmp_path):
    """The agreement is a collective: a rank that joins it only when its own clock has decided
    (before the step time is known, a clock alone says the budget is spent) would wait there for
    ranks that never come. Here the fitter joins once per step from the first, and the fewest
    steps any rank proposes wins."""
    from londonlm.training.step.schedules import agreed_total

    calls = []

    def one_rank(values):  # the agreement as one rank sees it: its own proposal
        calls.append(values)
        return values
    trainer, sched, clock, fit = _run(tmp_path, budget=20.0, agree=one_rank)
    assert len(calls) == trainer.state.global_step  # one per step, whether or not it proposed
    assert agreed_total(None, lambda v: v) is None and agreed_total(7, lambda v: v) == 7
    other_rank_proposes = lambda v: [max(v[0], -5)]  # noqa: E731  (MAX over -total: the fewest)
    assert agreed_total(None, other_rank_proposes) == 5 and agreed_total(9, other_rank_proposes) == 5


def test_the_fitter_tells_its_first_fitted_total_once(tmp_path):
    """What the data note (RepetitionNote) is told: the steps the budget holds, when measured."""
    told = []
    trainer, sched, clock, fit = _run(tmp_path, budget=20.0, on_fit=told.append)
    assert len(told) == 1 and abs(told[0] - trainer.state.global_step) <= 1


# --------------------------------------------------------------------------- --decay_on_plateau

def _plateau_fit(patience=2, warmup=10, budget=1000.0, end_step=None):
    from types import SimpleNamespace

    sched = WarmupStableDecay(warmup, 10_000, decay_fraction=0.2, min_lr_ratio=0.0, decay_shape="linear")
    sched.end_step = end_step
    logs, clock = [], SimulatedClock(0.01, 0.01)
    fit = BudgetFitCallback(budget, clock=clock, log=logs.append, plateau_patience=patience,
                            agree=lambda xs: xs)
    state = SimpleNamespace(global_step=0, max_steps=10_000_000)
    fit.on_train_begin(None, state, None, lr_scheduler=SimpleNamespace(lr_lambdas=[sched]))
    return fit, sched, state, logs, clock


def _steps(fit, state, clock, steps):
    for step in steps:  # 0.01 s each: a 1,000 s budget would hold 100,000 steps
        clock.t += 0.01
        state.global_step = step
        fit.on_step_begin(None, state, None)


def _evaluate(fit, state, step, loss):
    state.global_step = step
    fit.on_evaluate(None, state, None, metrics={"eval_loss": loss})


def test_a_stalled_validation_loss_begins_the_decay_and_ends_the_run_early():
    """The H200 race's slm run: the validation loss lowest at step 1000 of 3001 (20 passes over
    its data), then rising; with --decay_on_plateau the rate decays from the stall instead."""
    fit, sched, state, logs, clock = _plateau_fit(patience=2)
    _steps(fit, state, clock, range(4))
    assert state.max_steps > 50_000  # the budget's own fit
    for step, loss in [(100, 5.1), (200, 4.85), (300, 4.89)]:
        _evaluate(fit, state, step, loss)
    assert sched.end_step is None and sched.progress(300) == 0.0  # one evaluation is not enough
    _evaluate(fit, state, 400, 5.17)
    end = 400 + math.ceil(0.25 * (400 - 10))  # the decay: a fifth of the steps run by its end
    assert sched.end_step == sched.total_steps == state.max_steps == end
    assert sched(400) == pytest.approx(1.0) and sched(450) < 1.0 and sched(end) == pytest.approx(0.0)
    assert any("decay begins at step 400" in m and f"ends at step {end}" in m for m in logs)
    _steps(fit, state, clock, range(401, 405))  # the budget's pace holds far more steps
    assert state.max_steps == sched.total_steps == end
    assert fit.report()["decay_on_plateau_end_step"] == end


def test_an_improvement_resets_the_count_and_a_decay_under_way_is_left_alone():
    fit, sched, state, logs, _ = _plateau_fit(patience=2)
    for step, loss in [(100, 5.0), (200, 5.1), (300, 4.9), (400, 4.95)]:
        _evaluate(fit, state, step, loss)
    assert sched.end_step is None  # 4.9 at step 300 started the count again
    fit2, sched2, state2, _, _ = _plateau_fit(patience=1)
    sched2.refit(500, 400)  # the budget's own decay has begun by step 450
    _evaluate(fit2, state2, 440, 5.0)
    _evaluate(fit2, state2, 450, 5.5)
    assert sched2.end_step is None and sched2.total_steps == 500


def test_the_early_end_survives_a_resume():
    """scheduler.pt carries the schedule's fields: a resumed run's fitter keeps its end."""
    fit, sched, state, _, clock = _plateau_fit(end_step=600)
    _steps(fit, state, clock, range(4))
    assert state.max_steps == sched.total_steps == 600


def test_decay_on_plateau_without_a_time_budget_is_refused():
    from londonlm.training.flags import RunControlArguments, UsageError

    with pytest.raises(UsageError, match="needs --time_budget"):
        RunControlArguments(decay_on_plateau=2)
    assert RunControlArguments(decay_on_plateau=2, max_seconds=60).decay_on_plateau == 2


def test_decay_on_plateau_without_evaluations_is_refused():
    import config
    from londonlm.training import build_config, parse_train_flags
    from londonlm.training.cli import TrainDefaults
    from londonlm.training.flags import UsageError

    defaults = TrainDefaults(config.PRESETS, "micro", config.get_layout(), config.TOKENIZER.name, 0, "t")
    argv = ["--preset", "micro", "--time_budget", "10", "--decay_on_plateau", "2"]
    with pytest.raises(UsageError, match="--eval_strategy no holds none"):
        build_config(parse_train_flags([*argv, "--eval_strategy", "no", "--save_strategy", "no"]), defaults)
    assert build_config(parse_train_flags(argv), defaults).control.decay_on_plateau == 2


@pytest.mark.parametrize("fraction", [0.2, 0.5])  # (1.0 decays from the warm-up on: no stable phase)
def test_the_total_decaying_from_a_step_plans_its_decay_there(fraction):
    for step in (11, 57, 400, 999):
        s = WarmupStableDecay(10, 100_000, decay_fraction=fraction)
        total = s.total_decaying_from(step)
        s.refit(total, step)  # what --decay_on_plateau does at the stall
        assert total > step and s.decay_start == pytest.approx(step, abs=1.0) and s(step) == 1.0
        assert s(total) == pytest.approx(0.0)
