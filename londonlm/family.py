"""A family of time-locked models in one command (``run_grid.py --cutoffs 1700,1750,1800``).

From one collected corpus, each cutoff gets a view of it (documents dated up to that year),
a tokenizer trained on that view only, one run (``PREFIX-toYEAR``) and the leakage probes on
its final model; then one table compares them. Cutoffs whose views hold the same documents
share the tokenizer and the token cache (hard links), since they would be identical. A
finished member is skipped unless ``--fresh`` is given or it was made from another view,
tokenizer or training settings than this call's (then it starts over, the old run moved
aside); one member that fails does not stop the others.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from .core import Layout, LondonLMError, RunLayout, sha256_file, user_error_message
from .corpus import MANIFEST, cutoff_view, read_manifest
from .tokens import ERA_WIDTH, train_tokenizer_stage
from .training import TrainDefaults, TrainFlags, build_config, finished, run_changes, run_training, share_cache


_CUT = "does not apply to a family: each member's corpus view, tokenizer and cutoff come from --cutoffs"
# training flags the family sets for each member itself: given once, each was replaced without
# a word, or (--output_dir) put every member in one folder outside the project
FAMILY_OWNED = {**TrainFlags.run_naming_flags("a family", "PREFIX-toYEAR"),
                "processed_dir": _CUT, "tokenizer_dir": _CUT, "cutoff_year": _CUT}


@dataclass
class FamilyPlan:
    prefix: str
    cutoffs: list[int]
    layout: Layout
    processed_dir: Path          # the collected corpus every view is cut from
    tokenizer_name: str
    vocab_size: int
    min_frequency: int = 2
    era_tokens: bool = True
    context_length: int = 1024
    fresh: bool = False
    leakage_limit: int | None = None   # N probe items of each file, spread over 1500-1900 (tests)
    era_width: int = ERA_WIDTH         # years each era token covers

    def run(self, cutoff: int) -> RunLayout:
        return self.layout.run(self.layout.cutoff_run_name(self.prefix, cutoff))


@dataclass
class Member:
    cutoff: int
    run: RunLayout
    view_dir: Path
    tokenizer_dir: Path
    shared_with: str | None = None   # the member whose tokenizer and cache this one reuses


def prepare_member(plan: FamilyPlan, cutoff: int, seen: dict[str, Member], log) -> Member:
    """The cutoff's corpus view and tokenizer (another member's, when the views are identical)."""
    view = plan.layout.cutoff_dir(cutoff)
    cutoff_view(plan.processed_dir, view, cutoff, log=log)
    digest = sha256_file(view / MANIFEST)
    twin = seen.get(digest)
    member = Member(cutoff, plan.run(cutoff), view,
                    twin.tokenizer_dir if twin else plan.layout.tokenizer_dir(plan.tokenizer_name, cutoff),
                    twin.run.name if twin else None)
    if twin is None:
        train_tokenizer_stage(view, member.tokenizer_dir, vocab_size=plan.vocab_size,
                              min_frequency=plan.min_frequency, era_tokens=plan.era_tokens,
                              era_width=plan.era_width, model_max_length=plan.context_length, log=log)
        seen[digest] = member
    else:
        log(f"cutoff {cutoff}: the same documents as {twin.run.name}; sharing its tokenizer and token cache")
        share_cache(twin.run, member.run, log)
    return member


def member_flags(flags: TrainFlags, m: Member, fresh: bool) -> TrainFlags:
    return flags.override(run_name_dir=m.run.name, processed_dir=str(m.view_dir),
                          tokenizer_dir=str(m.tokenizer_dir), cutoff_year=m.cutoff,
                          **({"fresh": True} if fresh else {}))


def train_member(plan: FamilyPlan, m: Member, flags: TrainFlags, defaults: TrainDefaults, log) -> None:
    """Train the member, or skip it when it finished from its current view, tokenizer and
    settings; one made from others (a changed view, a new --vocab_size, more --max_steps)
    starts over, the old run moved aside."""
    config = build_config(member_flags(flags, m, plan.fresh), defaults)
    if finished(m.run) and not plan.fresh:
        changed = run_changes(m.run, config)
        if not changed:
            log(f"{m.run.name}: finished earlier, skipped (--fresh retrains)")
            return
        log(f"{m.run.name}: {changed}; starting it over (the old run is moved aside)")
        config = config.but(control={"fresh": True})
    run_training(config)


def probe_member(plan: FamilyPlan, m: Member, log) -> dict:
    """The leakage probes on the member's final model, kept in its evaluation folder and
    redone only when the weights change."""
    from .evaluation import leakage_for_model, leakage_summary

    result = leakage_for_model(m.run.final, m.cutoff, out=m.run.leakage, limit=plan.leakage_limit, log=log)
    log(f"{m.run.name}: {leakage_summary(result)}")
    return result


def run_family(plan: FamilyPlan, flags: TrainFlags, defaults: TrainDefaults,
               log=print) -> tuple[list[RunLayout], list[str]]:
    """Every cutoff in turn, earliest first. Returns (finished runs, names of failed ones).
    A corpus that is not there, or whose manifest cannot be read, is one error before any
    member: every member would fail alike."""
    read_manifest(plan.processed_dir)  # names the command that collects it, or the bad line
    done, failed, seen = [], [], {}
    cutoffs = sorted(set(plan.cutoffs))
    for i, cutoff in enumerate(cutoffs, 1):
        log(f"\n[{i}/{len(cutoffs)}] cutoff {cutoff}: {plan.run(cutoff).name}")
        try:
            member = prepare_member(plan, cutoff, seen, log)
            train_member(plan, member, flags, defaults, log)
            if finished(member.run):
                probe_member(plan, member, log)
                done.append(member.run)
                continue
        except (LondonLMError, OSError) as e:  # one bad member does not stop the family
            # (nor a file where its run, view or tokenizer folder goes: an OSError the user mends)
            why = user_error_message(e)
            if why is None:
                raise
            log(f"error: {plan.run(cutoff).name}: {why}")
        # failed in this call, or stopped early: the files an earlier call left (a finished
        # run, its leakage.json) do not make it done, nor put old figures in the table
        failed.append(plan.run(cutoff).name)
    return done, failed
