#!/usr/bin/env python3
"""Publish a trained run to the Hugging Face Hub: stage final/ (or --checkpoint) with a model
card, LICENSE and the evaluation metrics.json, verify the staged folder offline (load, special
token ids, generate, run the card's usage snippet), then upload; --dry_run uploads nothing.

    python 10_scripts/publish_to_huggingface.py --preset tiny --repo_id your-name/londonlm-tiny --dry_run

The token comes from HF_TOKEN or `hf auth login` and is never printed; HF_ENDPOINT picks the
Hub. --dataset_repo_id also publishes the processed corpus (manifest + texts, and a parquet
table per split for `datasets.load_dataset`) as a dataset. An evaluation that scored other
weights than the ones published (e.g. made before a --fresh retraining) is refused with the
command that evaluates them again.
"""
import argparse
import sys
from dataclasses import replace
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the repository root, where config.py checks this Python
import config
from londonlm.core.cli import StageParser, free_text, writable_dir
from londonlm.publishing.cards.licenses import LICENSES
from londonlm.core.errors import run_main


def build_parser() -> argparse.ArgumentParser:
    p = StageParser(prog="publish_to_huggingface.py",
                    description=__doc__.split("\n\n")[0],
                    epilog="example: " + __doc__.split("\n\n")[1].strip())
    p.add_argument("--repo_id", help="Hub model repo, 'your-username/model-name' (required "
                                     "unless --dry_run)")
    p.add_argument("--preset", default=config.DEFAULT_PRESET, choices=list(config.PRESETS),
                   help="run to publish when --run_name is not given (default: %(default)s)")
    p.add_argument("--run_name", help="run folder under 09_models/checkpoints/ (default: preset)")
    p.add_argument("--checkpoint", help="final (default), best, latest, checkpoint-N or a "
                                        "model folder path")
    p.add_argument("--root", help="project root (default $LONDONLM_ROOT or the repo)")
    p.add_argument("--private", action="store_true", help="create (or switch) the repo private")
    p.add_argument("--revision", help="branch to commit to (created if missing; default main)")
    p.add_argument("--commit_message", type=free_text, help=f"default: {config.HUB.commit_message!r}")
    p.add_argument("--license", default=config.HUB.license, choices=list(LICENSES),
                   help="licence of the weights (default: %(default)s)")
    p.add_argument("--model_name", type=free_text, help="title of the model card (default: the repo name)")
    p.add_argument("--prompt", type=free_text, default=config.EVALUATION.sample_prompts[0],
                   help="fixed prompt for the verification generation and the card's snippet")
    p.add_argument("--stage_dir", type=writable_dir, help="staging folder (default: <run>/hub_stage)")
    p.add_argument("--gguf", action="store_true",
                   help="also upload f16 and q8_0 GGUF files for llama.cpp/Ollama/LM Studio")
    p.add_argument("--dry_run", action="store_true",
                   help="stage, verify and list what would be sent; upload nothing")
    p.add_argument("--replace_other_repo", action="store_true",
                   help="publish into a repo that already holds a model (or corpus) this project did "
                        "not publish (its card lacks the 'londonlm' tag), replacing its weights, configs "
                        "and tokenizer; without it such a repo is refused before anything is sent")
    p.add_argument("--dataset_repo_id", help="also publish the processed corpus as this Hub "
                                             "dataset repo")
    p.add_argument("--dataset_stage_dir", type=writable_dir,
                   help="staging folder for the dataset (default: <data>/hub_dataset_stage)")
    return p


def main(argv=None) -> int:
    a = build_parser().parse_args(argv)
    from londonlm import publishing as hub

    layout = config.get_layout(a.root)
    run = layout.run(a.run_name or a.preset)
    endpoint = hub.hub_endpoint()
    shown = hub.mask_secret(endpoint, None)  # (printed below without a password it may hold)
    where = dict(private=a.private, revision=a.revision, endpoint=endpoint, replace_other=a.replace_other_repo)
    dataset = hub.HubTarget(a.dataset_repo_id, dry_run=a.dry_run, **where,
                            commit_message=a.commit_message or hub.DATASET_COMMIT_MESSAGE)
    ds_args = dict(stage_dir=Path(a.dataset_stage_dir) if a.dataset_stage_dir
                   else layout.data_dir / "hub_dataset_stage", model_repo_id=a.repo_id)
    corpus = layout.corpus_of(run.final)  # a time-locked run's own cutoff view
    if a.dataset_repo_id:  # stage and check the corpus, and its repo, before the model goes up
        hub.publish_dataset(corpus, replace(dataset, dry_run=True), **ds_args, log=lambda *_: None)
        hub.refuse_another_projects_repo(dataset, "dataset")
    res = hub.publish_model(
        layout, run, hub.HubTarget(a.repo_id, dry_run=a.dry_run, **where,
                                   commit_message=a.commit_message or config.HUB.commit_message),
        checkpoint=a.checkpoint, stage_dir=Path(a.stage_dir) if a.stage_dir else None,
        card=hub.CardOptions(license_id=a.license, model_name=a.model_name, prompt=a.prompt,
                             dataset_repo_id=a.dataset_repo_id), gguf=a.gguf)
    print(f"\nstaged {res.stage_dir}:\n{hub.describe_files(res.files)}")
    print(f"\nsample ({res.report.prompt!r}, greedy):\n  {res.report.generation}")
    target = f"{shown}/{res.repo_id}" if res.repo_id else "(no --repo_id given)"
    if a.dry_run:
        print(f"\ndry run: nothing uploaded; these {len(res.files)} files would be sent to {target}")
    else:
        print(f"\npublished {target} ({hub.mask_secret(res.upload.commit_url or res.upload.repo_url, None)})")
    if a.dataset_repo_id:
        ds = hub.publish_dataset(corpus, dataset, **ds_args)
        print(f"\nstaged dataset {ds.stage_dir}:\n{hub.describe_files(ds.files)}")
        print("dry run: dataset not uploaded" if a.dry_run else
              f"published dataset {shown}/datasets/{ds.repo_id}")
    return 0


if __name__ == "__main__":
    run_main(main)
