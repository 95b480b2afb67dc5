#!/usr/bin/env python3
"""Learning-rate finder: one short exponential ramp of the learning rate on a freshly built
model of the chosen preset, writing lr_find.csv, lr_find.png and lr_find.json (with a
suggested --learning_rate) to <run folder>/lr_find/. The model is discarded.

    python 04_training/find_lr.py --preset tiny
    python 04_training/find_lr.py --preset micro --steps 60 --output_dir /tmp/lr
"""
import argparse
import sys
from pathlib import Path

import config


def parse(argv):
    t = config.TRAINING
    p = argparse.ArgumentParser(prog="find_lr.py", description=__doc__.splitlines()[0])
    p.add_argument("--preset", default=config.DEFAULT_PRESET, choices=list(config.PRESETS))
    p.add_argument("--root", help="project root (default $LONDONLM_ROOT or the repo)")
    p.add_argument("--run_name", help="run folder whose token cache is used/built (default: preset)")
    p.add_argument("--tokenizer_dir", help="tokenizer folder (default: the trained project tokenizer)")
    p.add_argument("--processed_dir", help="processed corpus folder (default: the project's)")
    p.add_argument("--output_dir", help="where the table/plot go (default: <run>/lr_find)")
    p.add_argument("--min_lr", type=float, default=t.lr_find_min_lr)
    p.add_argument("--max_lr", type=float, default=t.lr_find_max_lr)
    p.add_argument("--steps", type=int, default=t.lr_find_steps, help="steps in the ramp")
    p.add_argument("--batch_size", type=int, help="default: the preset's")
    for k in ("n_layer", "n_head", "n_embd", "max_length"):
        p.add_argument(f"--{k}", type=int, help="override the preset's (as in training)")
    p.add_argument("--seed", type=int, default=t.seed)
    a = p.parse_args(argv)
    if not 0 < a.min_lr < a.max_lr:
        p.error("need 0 < --min_lr < --max_lr")
    if a.steps < 10:
        p.error("--steps must be at least 10")
    return a


def main(argv=None) -> int:
    a = parse(argv)
    from transformers import AutoTokenizer

    from londonlm.data import PackedBlocks
    from londonlm.lr_finder import lr_schedule, run_lr_sweep, write_lr_find
    from londonlm.modeling import ModelShape, build_model, padded_vocab
    from londonlm.token_cache import CacheError, ensure_cache
    from londonlm.tokenizer import era_tokens_of

    preset = config.get_preset(a.preset)
    paths = config.get_paths(a.root)
    run_dir = paths.run_dir(a.run_name or a.preset)
    tok_dir = Path(a.tokenizer_dir) if a.tokenizer_dir else paths.tokenizer_dir(config.TOKENIZER.name)
    ctx = a.max_length or preset.context_length
    bs = a.batch_size or preset.batch_size
    try:
        if not (tok_dir / "tokenizer.json").exists():
            raise FileNotFoundError(f"no tokenizer at {tok_dir}: run "
                                    f"`python 03_tokenizer/train_historical_tokenizer.py` first")
        tok = AutoTokenizer.from_pretrained(str(tok_dir))
        shape = ModelShape(a.n_layer or preset.n_layer, a.n_head or preset.n_head,
                           a.n_embd or preset.n_embd, ctx, padded_vocab(len(tok)))
        shape.validate()
        print(f"model: {shape.n_params / 1e6:.2f}M parameters; sweep {a.min_lr:g} -> {a.max_lr:g} "
              f"over {a.steps} steps at batch {bs} x {ctx} tokens", flush=True)
        cache = run_dir / "pretokenized_data"
        ensure_cache(cache, tok_dir, Path(a.processed_dir) if a.processed_dir else paths.processed_dir,
                     ctx, bool(era_tokens_of(tok)), progress=False, log=print)
        blocks = PackedBlocks.from_cache(cache, "train", ctx)
        if len(blocks) == 0:
            raise ValueError(f"the training split has fewer than {ctx} tokens; add text")
    except (CacheError, FileNotFoundError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    import torch

    from londonlm.hardware import physical_cores

    if not torch.cuda.is_available():
        torch.set_num_threads(physical_cores())  # as training does: hyperthreads only contend
    model = build_model(shape, tok.bos_token_id, tok.eos_token_id, tok.pad_token_id,
                        dropout=preset.dropout, seed=a.seed)
    res = run_lr_sweep(model, blocks, bs, lr_schedule(a.min_lr, a.max_lr, a.steps),
                       weight_decay=preset.weight_decay, max_grad_norm=preset.max_grad_norm,
                       smoothing=config.TRAINING.lr_find_smoothing,
                       diverge_factor=config.TRAINING.lr_find_diverge_factor, seed=a.seed,
                       device="cuda" if torch.cuda.is_available() else "cpu")
    out = Path(a.output_dir) if a.output_dir else run_dir / "lr_find"
    s = write_lr_find(res, out, title=f"LR range test: {a.preset} preset ({shape.n_params / 1e6:.1f}M)",
                      extra={"preset": a.preset, "batch_size": bs, "context_length": ctx,
                             "preset_learning_rate": preset.learning_rate})
    if res.stopped_early:
        print(f"stopped: {res.stopped_early}")
    print(f"{s['steps_run']} steps in {s['seconds']:.0f}s; steepest descent at {s['steepest_lr']:.3g}, "
          f"minimum loss at {s['min_loss_lr']:.3g}")
    print(f"suggested --learning_rate {s['suggested_lr']:.2g} (preset uses {preset.learning_rate:g})")
    print(f"table {s['table']}\nplot  {s['plot']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
