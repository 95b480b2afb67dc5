"""What a preset gives the Trainer: the best evaluation's weights as final/ where its steps allow."""
import pytest
from transformers.trainer_utils import IntervalStrategy, SaveStrategy

import config
from londonlm.training.defaults import preset_trainer_values, why_not_load_best


def steps(save, every, eval_strategy="steps", save_strategy="steps"):
    return {"save_steps": save, "eval_steps": every, "eval_strategy": eval_strategy,
            "save_strategy": save_strategy}


@pytest.mark.parametrize("values", [
    steps(20, 20), steps(40, 20), steps(40.0, 20), steps(10, 10, "epoch", "epoch"),
    steps(7, 3, "steps", "best"), steps(4, 2, IntervalStrategy.STEPS, SaveStrategy.STEPS)])
def test_a_checkpoint_at_every_evaluation_allows_it(values):
    assert why_not_load_best(values) is None


@pytest.mark.parametrize("values, why", [
    (steps(30, 20), "--save_steps 30 is not a multiple of --eval_steps 20"),
    (steps(10, 20), "--save_steps 10 is not a multiple of --eval_steps 20"),
    (steps(0.5, 0.25), "is not a multiple"),  # ratios of the run: the Trainer's own rule is stricter
    (steps(20, 20, "no"), "--eval_strategy no and --save_strategy steps differ"),
    (steps(20, 20, IntervalStrategy.STEPS, SaveStrategy.NO), "--eval_strategy steps and --save_strategy no differ"),
])
def test_save_steps_that_miss_evaluations_say_why(values, why):
    assert why in why_not_load_best(values)


def test_each_preset_says_whether_final_is_the_best_evaluation():
    # micro and tiny measured on CPUs; slm on an H200, where 180 s over 2.4M tokens overfitted
    # (BENCHMARKS.md, the GPU race); regular, a larger model, overfits the same data sooner
    chosen = {name: preset_trainer_values(config.asdict(p), p.batch_size, 0, 0)["load_best_model_at_end"]
              for name, p in config.PRESETS.items()}
    assert chosen == {"micro": True, "tiny": True, "slm": True, "regular": True}
    for p in config.PRESETS.values():  # every preset checkpoints at each evaluation
        assert why_not_load_best(steps(p.save_steps, p.eval_steps)) is None


def test_the_training_process_reads_the_blocks_on_a_gpu_too(monkeypatch):
    """Workers cost the training process more CPU than reading the blocks itself, and were forked
    anew at each pass and evaluation (BENCHMARKS.md): none by default, on a GPU too."""
    defaults = config.train_defaults("slm")
    _, slm = defaults.preset("slm")
    monkeypatch.setattr("torch.cuda.is_available", lambda: True)  # the values as on a GPU machine
    values = preset_trainer_values(slm, 16, 0, defaults.dataloader_workers)
    assert values["dataloader_num_workers"] == 0 and values["dataloader_pin_memory"] is True

