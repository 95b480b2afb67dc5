#!/usr/bin/env python3
"""Learning-rate finder: one short exponential ramp of the learning rate on a freshly built
model of the chosen preset, writing lr_find.csv, lr_find.png and lr_find.json (with a
suggested --learning_rate) to <run folder>/lr_find/. The model is discarded; the run's token
cache is read when it fits the sweep, never rebuilt (else the sweep encodes its own, in
<output folder>/lr_find_tokens/).

    python 04_training/find_lr.py --preset tiny
    python 04_training/find_lr.py --preset micro --steps 60 --output_dir /tmp/lr
"""
import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the repository root, where config.py checks this Python
import config
from londonlm.core.cli import non_negative_int, positive_float, positive_int, StageParser, writable_dir
from londonlm.core.errors import run_main


def _bool(text: str) -> bool:
    if text.lower() in ("true", "1", "yes"):
        return True
    if text.lower() in ("false", "0", "no"):
        return False
    raise argparse.ArgumentTypeError(f"expected true or false, got {text!r}")


def parse(argv):
    t = config.TRAINING
    p = StageParser(prog="find_lr.py", description=__doc__.splitlines()[0],
                    allow_abbrev=False)
    p.add_argument("--preset", default=config.DEFAULT_PRESET, choices=list(config.PRESETS))
    p.add_argument("--root", help="project root (default $LONDONLM_ROOT or the repo)")
    p.add_argument("--run_name", help="run folder whose token cache is read when it fits the sweep, "
                                       "never rebuilt (default: preset)")
    p.add_argument("--tokenizer_dir", help="tokenizer folder (default: the trained project tokenizer)")
    p.add_argument("--processed_dir", help="processed corpus folder (default: the project's)")
    p.add_argument("--output_dir", type=writable_dir, help="where the table/plot (and the sweep's own token cache, "
                                                          "when needed) go (default: <run>/lr_find)")
    p.add_argument("--min_lr", type=positive_float, default=t.lr_find_min_lr)
    p.add_argument("--max_lr", type=positive_float, default=t.lr_find_max_lr)
    p.add_argument("--steps", type=positive_int, default=t.lr_find_steps, help="steps in the ramp")
    p.add_argument("--batch_size", type=positive_int, help="default: the preset's")
    for k in ("n_layer", "n_head", "n_embd", "max_length"):
        p.add_argument(f"--{k}", type=positive_int, help="override the preset's (as in training)")
    p.add_argument("--seed", type=non_negative_int, default=t.seed)
    p.add_argument("--bf16", type=_bool, help="true: bf16 autocast (emulated on CPUs without native "
                                               "bf16), false: fp32 (default: as training chooses)")
    p.add_argument("--autotune", choices=("off", "on", "refresh"), default="off",
                   help="measure the speed settings as training does (default: off, fixed rules)")
    a = p.parse_args(argv)
    if not 0 < a.min_lr < a.max_lr:
        p.error("need 0 < --min_lr < --max_lr")
    if a.steps < 10:
        p.error("--steps must be at least 10")
    return a


def main(argv=None) -> int:
    a = parse(argv)
    from londonlm.training.tools.lr_finder import LRFindOptions, find_lr

    preset, t = config.get_preset(a.preset), config.TRAINING
    layout = config.get_layout(a.root)
    run = layout.run(a.run_name or a.preset)
    s, res = find_lr(LRFindOptions(
        run=run, layout=layout,
        tokenizer_dir=Path(a.tokenizer_dir) if a.tokenizer_dir else layout.tokenizer_dir(config.TOKENIZER.name),
        processed_dir=Path(a.processed_dir) if a.processed_dir else layout.processed_dir,
        output_dir=Path(a.output_dir) if a.output_dir else run.dir / "lr_find",
        preset=a.preset, n_layer=a.n_layer or preset.n_layer, n_head=a.n_head or preset.n_head,
        n_embd=a.n_embd or preset.n_embd, context_length=a.max_length or preset.context_length,
        batch_size=a.batch_size or preset.batch_size, dropout=preset.dropout,
        weight_decay=preset.weight_decay, max_grad_norm=preset.max_grad_norm,
        preset_learning_rate=preset.learning_rate, min_lr=a.min_lr, max_lr=a.max_lr,
        steps=a.steps, smoothing=t.lr_find_smoothing, diverge_factor=t.lr_find_diverge_factor,
        seed=a.seed, precision=None if a.bf16 is None else "bf16" if a.bf16 else "fp32",
        autotune=a.autotune))
    if res.stopped_early:
        print(f"stopped: {res.stopped_early}")
    print(f"{s['steps_run']} steps in {s['seconds']:.0f}s; steepest descent at {s['steepest_lr']:.3g}, "
          f"minimum loss at {s['min_loss_lr']:.3g}")
    print(f"suggested --learning_rate {s['suggested_lr']:.2g} (preset uses {preset.learning_rate:g})")
    print(f"table {s['table']}\nplot  {s['plot']}")
    return 0


if __name__ == "__main__":
    run_main(main)
