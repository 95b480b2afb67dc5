"""The acceptance run's record: the machine, gpu_acceptance.json, gpu_acceptance.md and its
section in BENCHMARKS.md between marker comments (replaced in place, appended when absent).

A full run (every step ``--steps all`` runs) owns the block between ``<!-- gpu-acceptance:begin -->``
and ``<!-- gpu-acceptance:end -->``. A run of some steps only writes a block of its own, named by
its steps (``--steps throughput``: ``<!-- gpu-acceptance-throughput:begin -->``), replaced by the
next run of the same steps and, when absent, placed after the last acceptance block: it never
erases what a run of other steps recorded."""
from __future__ import annotations

import json
import os
import platform
import re
import subprocess
from pathlib import Path

from londonlm.core.artifacts import write_text_atomic
from londonlm.training.step import kernels

BEGIN, END = "<!-- gpu-acceptance:begin -->", "<!-- gpu-acceptance:end -->"
# the end marker of any acceptance block, the full run's or a partial one's
ANY_END = re.compile(r"<!-- gpu-acceptance(?:-[\w.-]+)?:end -->")


def markers(part: str | None = None) -> tuple[str, str]:
    """The begin and end markers of a block: the full run's (``part`` None), else that of a run
    of the steps ``part`` names (:func:`part_name`)."""
    name = "gpu-acceptance" + (f"-{part}" if part else "")
    return f"<!-- {name}:begin -->", f"<!-- {name}:end -->"


def part_name(steps: list[str], full: list[str]) -> str | None:
    """None for a full run (it ran every step of ``full``, the default set), else the name of
    its own block: its steps in run order, joined by '-'."""
    return None if set(full) <= set(steps) else "-".join(steps)


def nvidia_smi(query: str) -> str | None:
    try:
        out = subprocess.run(["nvidia-smi", f"--query-gpu={query}", "--format=csv,noheader"],
                             capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return out.stdout.strip().splitlines()[0] if out.returncode == 0 and out.stdout.strip() else None


def machine_info() -> dict:
    """GPU, driver, CUDA and library versions, CPU: what a figure depends on."""
    import torch
    import transformers

    from train_throughput import cpu_description  # benchmarks/ is on sys.path (the entry's folder)

    props = torch.cuda.get_device_properties(0)
    return {"gpu": torch.cuda.get_device_name(0), "gpu_memory_gib": round(props.total_memory / 2**30, 1),
            "gpu_count": torch.cuda.device_count(), "compute_capability": f"{props.major}.{props.minor}",
            "driver": nvidia_smi("driver_version"), "cuda": torch.version.cuda,
            "cudnn": torch.backends.cudnn.version(), "torch": torch.__version__,
            "transformers": transformers.__version__, "python": platform.python_version(),
            "cpu": cpu_description()}


def fmt(v) -> str:
    """A table cell: thousands separators for large numbers, 4 significant digits for small."""
    if v is None:
        return "–"
    if isinstance(v, bool):
        return "yes" if v else "no"
    if isinstance(v, float):
        return f"{v:,.1f}" if abs(v) >= 1000 else f"{v:.4g}"
    if isinstance(v, int):
        return f"{v:,}"
    if isinstance(v, (list, tuple)):
        return " / ".join(fmt(x) for x in v)  # not commas: numbers carry thousands commas
    if isinstance(v, dict):
        return ", ".join(f"{k} {fmt(x)}" for k, x in v.items())
    return str(v).replace("|", "\\|").replace("\n", " ")


def table(rows: list[dict]) -> list[str]:
    """A Markdown table of ``rows`` (columns: every key, in order of first appearance)."""
    cols = list(dict.fromkeys(k for r in rows for k in r))
    return (["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
            + ["| " + " | ".join(fmt(r.get(c)) for c in cols) + " |" for r in rows])


def step_section(i: int, name: str, res: dict) -> list[str]:
    lines = [f"### {i}. {res.get('title', name)} — {res['status']} ({res['seconds']:.1f} s)", ""]
    if res.get("error"):
        lines += [f"Error: `{fmt(res['error'])[:500]}`", ""]
    if res.get("figures"):
        lines += table([{"figure": k, "value": v} for k, v in res["figures"].items()]) + [""]
    if res.get("rows"):
        lines += table(res["rows"]) + [""]
    for variant, profile in (res.get("kernels") or {}).items():
        lines += kernels.markdown(variant, profile)
    return lines


def markdown(results: dict, part: str | None = None) -> str:
    """The section for BENCHMARKS.md: heading (a partial run's names its steps), command,
    machine, one summary table, then a table per step."""
    m, steps = results["machine"], results["steps"]
    which = f", steps {', '.join(steps)}" if part else ""
    lines = [f"## GPU acceptance{which} ({m.get('gpu', 'no GPU')}, {results['date']})", "",
             f"    {results['command']}", "",
             f"{m.get('gpu')} ({fmt(m.get('gpu_memory_gib'))} GiB, compute capability "
             f"{m.get('compute_capability')}), driver {m.get('driver')}, CUDA {m.get('cuda')}, "
             f"torch {m.get('torch')}, transformers {m.get('transformers')}, Python {m.get('python')}; "
             f"CPU {m.get('cpu')}.", ""]
    lines += table([{"step": f"{i}. {name}", "status": r["status"], "seconds": round(r["seconds"], 1),
                     "result": r.get("summary") or r.get("error", "")[:200]}
                    for i, (name, r) in enumerate(steps.items(), 1)]) + [""]
    for i, (name, r) in enumerate(steps.items(), 1):
        lines += step_section(i, name, r)
    return "\n".join(lines).rstrip() + "\n"


def replace_section(text: str, section: str, begin: str = BEGIN, end: str = END,
                    after: re.Pattern | None = None) -> str:
    """``text`` with the block between the markers replaced by ``section`` (markers kept), or,
    when there are no markers yet, with the block put after the last match of ``after`` (where
    given and found), else appended. Markers that do not pair once (a block twice, an end with
    no begin before it) or a section holding them are a ValueError: replacing the first block of
    two left the other stale, and a marker inside the block moved the next one's end."""
    block = f"{begin}\n{section.strip()}\n{end}"
    inside = [m for m in (begin, end) if m in section]
    if inside:
        raise ValueError(f"the block's own text holds its marker {inside[0]}: nothing was written")
    nb, ne = text.count(begin), text.count(end)
    if nb > 1 or ne > 1:
        raise ValueError(f"{begin} is there {nb} times and {end} {ne}: keep one block (mend the file "
                         f"by hand first; nothing was written)")
    i = text.find(begin)
    if i < 0:
        if ne:
            raise ValueError(f"{end} without {begin} before it: mend the file by hand first")
        anchor = list(after.finditer(text)) if after is not None else []
        if anchor:
            k = anchor[-1].end()
            return text[:k] + "\n\n" + block + (text[k:] if text[k:].startswith("\n") else "\n" + text[k:])
        return (text.rstrip("\n") + "\n\n" if text.strip() else "") + block + "\n"
    j = text.find(end, i)
    if j < 0:
        raise ValueError(f"{begin} without {end} after it: mend the file by hand first")
    return text[:i] + block + text[j + len(end):]


def read_markdown(path: Path) -> str:
    """The text of a Markdown file a block goes in ("" when absent); one not UTF-8 is a ValueError
    naming it (rewriting it would change what it holds)."""
    try:
        return Path(path).read_text(encoding="utf-8") if Path(path).exists() else ""
    except UnicodeDecodeError as e:
        raise ValueError(f"{path} is not UTF-8 text (byte {e.start}): nothing was written") from None


def check_block(path: Path, begin: str, end: str, after: re.Pattern | None = None) -> None:
    """Before a long run: that its block can go into ``path`` at the end (readable UTF-8, its
    markers paired, its folder writable), so that a lease is not spent on a run whose record
    then fails to be written. ValueError or OSError, naming the file."""
    try:
        replace_section(read_markdown(path), "", begin, end, after)
    except ValueError as e:
        raise ValueError(f"{path}: {e}") from None
    folder = Path(path).resolve().parent
    while not folder.exists():  # (made when the block is written)
        folder = folder.parent
    if not os.access(folder, os.W_OK | os.X_OK):  # the file is replaced by a rename in its folder
        raise ValueError(f"{path}: its folder {folder} is not writable here")


def update_block(path: Path, section: str, begin: str, end: str, after: re.Pattern | None = None) -> Path:
    """The block between ``begin`` and ``end`` in ``path`` replaced by ``section``, the file
    written whole or not at all (a temporary file renamed over it: a write cut short by a kill
    or a full disk truncated the whole of BENCHMARKS.md). ValueError (naming the file) where
    its markers do not pair; OSError where it cannot be written."""
    try:
        text = replace_section(read_markdown(path), section, begin, end, after)
    except ValueError as e:
        raise ValueError(f"{path}: {e}") from None
    # an edit of the file the user sees: a link to BENCHMARKS.md elsewhere stays a link, its file edited
    write_text_atomic(Path(path).resolve(), text)
    return path


def write_reports(results: dict, out: Path, bench_md: Path | None = None,
                  part: str | None = None) -> dict[str, Path]:
    """gpu_acceptance.json and .md in ``out``; with ``bench_md``, the run's block there: the
    full run's (``part`` None) or, for a run of some steps, its own (:func:`part_name`), so
    that it never erases another run's."""
    out.mkdir(parents=True, exist_ok=True)
    paths = {"json": out / "gpu_acceptance.json", "md": out / "gpu_acceptance.md"}
    # whole or not at all: each is rewritten after every step, and a kill mid-write lost the steps before
    write_text_atomic(paths["json"], json.dumps(results, indent=2, default=str) + "\n")
    section = markdown(results, part)
    write_text_atomic(paths["md"], section)
    if bench_md is not None:
        paths["bench_md"] = update_block(bench_md, section, *markers(part), ANY_END if part else None)
    return paths
