"""Shared tiny fixtures: a byte-level BPE tokenizer and a 2-layer GPT-2 saved as HF folders."""
from __future__ import annotations

import contextlib
import importlib.util
import os
import shutil
import signal
import sys
from pathlib import Path

import hypothesis
import pytest

# (imports no torch: torch must load after OMP_NUM_THREADS is set below)
from londonlm.core.hardware import training_threads

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("WANDB_MODE", "disabled")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
# training runs in tests use the fixed speed rules (deterministic kernels, no probe per run);
# tests of --autotune pass it explicitly with a cache of their own
os.environ.setdefault("LONDONLM_AUTOTUNE", "off")
# no period lexicon tables written to the user's cache by tests; the cache's own tests turn it on
# with a cache directory of their own
os.environ.setdefault("LONDONLM_LEXICON_CACHE", "off")


def _threads_per_worker(environ) -> str | None:
    """OMP_NUM_THREADS for a ``-n`` worker: its share of the cores, by the rule torchrun's ranks
    get theirs (``training_threads``: usable physical cores / ranks on the node). Each worker's
    torch (and each script a test starts) would otherwise use every core: on 2 Zen 3 cores two
    workers of two threads each ran the training and evaluation tests in 151 s, of one thread
    each in 107 s. None outside a worker, or where the user set it."""
    workers = environ.get("PYTEST_XDIST_WORKER_COUNT")
    if not workers or environ.get("OMP_NUM_THREADS"):
        return None
    return str(training_threads({"LOCAL_WORLD_SIZE": workers})[0])


# before torch is imported: its OpenMP pool reads the variable once, when it loads
if (_threads := _threads_per_worker(os.environ)) is not None:
    os.environ["OMP_NUM_THREADS"] = _threads

# The nets (hypothesis) draw the same examples on every default run: the suite goes red for a
# change, never for a search that happened on a new example (CI would then fail at random).
# LONDONLM_FUZZ_EXAMPLES=N searches afresh, from a random start, as many examples as it says.
hypothesis.settings.register_profile("londonlm", derandomize="LONDONLM_FUZZ_EXAMPLES" not in os.environ)
hypothesis.settings.load_profile("londonlm")

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared"
SHARED_CORPUS = SHARED / "corpus"
# fixtures kept in their own modules (beside this file), offered to every test
pytest_plugins = ["hub_fixtures"]

SAMPLE_TEXTS = [
    "It was the best of times, it was the worst of times; the Thames ran black by Southwark.\n",
    "Thou hast ſeen the Cheapside stalls, where a pound (£1) bought a goose and æther.\n",
    "Up betimes, and to the Office, where Sir W. Pen and I sat all the morning.\n",
    "The prisoner was indicted for stealing a silver watch, value 40 s. the goods of John Smith.\n",
    "London, that great Wen, swallowed the country lads by the waggon-load — every day.\n",
]


def pytest_configure(config) -> None:
    """Ctrl-C as a terminal gives it, however the suite was started: a suite started in the
    background by a script (``cmd &`` without job control) inherits SIGINT ignored, and the tests
    of what Ctrl-C does (the OCR pools' stops, the REPL on a pty) then saw no KeyboardInterrupt
    in this process or in the programs it starts (a handled signal is the default again after
    ``exec``; an ignored one stays ignored). Each xdist worker runs this too."""
    if signal.getsignal(signal.SIGINT) is signal.SIG_IGN:
        signal.signal(signal.SIGINT, signal.default_int_handler)


def pytest_xdist_auto_num_workers(config) -> int:
    """``-n auto``'s processes: one per CPU this run may use, at most 4 (each imports torch and
    transformers, ~1 GB; the torchrun tests start 2-3 ranks of their own), none besides this one
    on a single CPU. The default suite took 19.5 min in one process on 2 Zen 4 cores, 11 in two.
    The long tests (``-m slow``) run one at a time: they race recipes against the clock, kill
    torchrun mid-run and time budgets; beside another of them on 2 cores, a SIGTERM to torchrun
    with dataloader workers ended with a rank killed (it passes alone, and beside busy loops).
    So do the ``gpu`` tests (the GPU acceptance's ``-m gpu``): they share one card and time it."""
    if config is not None and _one_at_a_time(config.getoption("markexpr", "") or ""):
        return 0
    try:
        cpus = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        cpus = os.cpu_count() or 1
    return 0 if cpus < 2 else min(cpus, 4)


def _one_at_a_time(markexpr: str) -> bool:
    """Whether ``-m`` asks for the long tests or the GPU's (``slow``, ``gpu``, ``slow and not
    gpu``), not only excludes them (``not slow``, the default)."""
    return any(mark in markexpr and f"not {mark}" not in markexpr for mark in ("slow", "gpu"))


def pytest_collection_modifyitems(config, items):
    """``gpu`` tests need CUDA: skipped, with the reason, on a machine without it."""
    if not any("gpu" in item.keywords for item in items):
        return
    import torch

    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs a CUDA GPU (none here); run them on one with "
                                   "`python benchmarks/gpu_acceptance.py`")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip)


# Both precisions on every machine: bf16 autocast runs on any x86 CPU (natively with
# avx512_bf16/AMX, emulated elsewhere), so a path that breaks in one precision on another
# machine kind fails here too. Training-path tests take this fixture and pass its flags.
PRECISIONS = ("bf16", "fp32")


@pytest.fixture(params=PRECISIONS)
def precision(request) -> str:
    return request.param


def precision_flags(precision: str) -> list[str]:
    """The command-line flags that force ``precision`` (as a user would give them)."""
    return ["--bf16", "true" if precision == "bf16" else "false"]


@pytest.fixture(scope="session")
def tiny_tokenizer_dir(tmp_path_factory) -> Path:
    from londonlm.tokens.tokenizer import save_tokenizer, train_bpe

    out = tmp_path_factory.mktemp("tok")
    eras = ["<|1600s|>", "<|1650s|>", "<|1800s|>"]
    tok = train_bpe(SAMPLE_TEXTS * 20, vocab_size=512, min_frequency=2, era_tokens=eras,
                    show_progress=False)
    save_tokenizer(tok, out, model_max_length=64, era_tokens=eras)
    return out


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory, tiny_tokenizer_dir) -> Path:
    """A randomly initialised 2-layer GPT-2 + tokenizer in one save_pretrained folder."""
    from transformers import AutoTokenizer

    from londonlm.training.model import ModelShape, build_model, padded_vocab

    tok = AutoTokenizer.from_pretrained(str(tiny_tokenizer_dir))
    shape = ModelShape(n_layer=2, n_head=2, n_embd=32, n_positions=64,
                       vocab_size=padded_vocab(len(tok)))
    model = build_model(shape, tok.bos_token_id, tok.eos_token_id, tok.pad_token_id, seed=0)
    out = tmp_path_factory.mktemp("model")
    model.save_pretrained(str(out))
    tok.save_pretrained(str(out))
    return out


MICRO_TEXT_SOURCE = SHARED_CORPUS / "gutenberg_journal_of_the_plague_year.txt"


def micro_texts(n_docs: int = 6, chars: int = 6000) -> list[str]:
    """A few KB of real period prose: Defoe from ../shared when present, else a built-in
    paragraph set (so the suite runs without ../shared)."""
    if MICRO_TEXT_SOURCE.exists():
        raw = MICRO_TEXT_SOURCE.read_text(encoding="utf-8")
        body = raw[raw.find("It was about the beginning"):] if "It was about the beginning" in raw else raw[5000:]
        return [body[i * chars:(i + 1) * chars] for i in range(n_docs)]
    # Without ../shared: the embedded offline sample (First Folio, installed by install.sh),
    # one play per document, skipping each file's header.
    from londonlm.corpus.sources.sample import sample_files

    texts = [f.read_text(encoding="utf-8", errors="replace") for f in sample_files()[:n_docs]]
    return [t[len(t) // 3:len(t) // 3 + chars] for t in texts]


def write_micro_source(folder: Path, n_docs: int = 6, chars: int = 6000) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for i, t in enumerate(micro_texts(n_docs, chars)):
        (folder / f"plague_part{i}_1722.txt").write_text(t, encoding="utf-8")
    return folder


def train_exit_code(root, *argv) -> int:
    """The training script's exit code for a micro run under ``root`` (its main wrapped in
    run_main, as the scripts run it: one `error:` line and 2 on bad input)."""
    import config
    from londonlm.core.errors import run_main
    from londonlm.training.cli import TrainDefaults, main as train_main

    defaults = TrainDefaults(config.PRESETS, "micro", config.get_layout(), config.TOKENIZER.name,
                             config.TRAINING.seed, "londonlm-test")
    with pytest.raises(SystemExit) as stop:
        run_main(lambda a: train_main(a, defaults),
                 ["--preset", "micro", "--root", str(root), "--report_to", "none",
                  "--disable_tqdm", "true", *argv])
    return stop.value.code


def evaluation_exit_code(argv) -> int:
    """The evaluation script's wiring with the micro preset as default; the exit code run_main
    gives (one `error:` line and 2 on bad input)."""
    import config
    from londonlm.core.errors import run_main
    from londonlm.evaluation.cli import build_parser, run

    def main(argv):
        args = build_parser("run_evaluation.py", list(config.PRESETS), "micro").parse_args(argv)
        return run(args, config.get_layout(args.root))

    with pytest.raises(SystemExit) as e:
        run_main(main, argv)
    return e.value.code


def write_dated_source(folder: Path, years, validation_up_to: int | None = None,
                       percent: float = 5.0) -> Path:
    """Micro period prose, one file per year (the year in its name dates it), named so that the
    first document dated up to ``validation_up_to`` falls in the validation split (a cutoff
    view of it can then be evaluated) and every other one in train."""
    from londonlm.corpus import assign_split

    folder.mkdir(parents=True, exist_ok=True)
    texts = micro_texts(len(years), 6000)
    held = min((y for y in years if validation_up_to is None or y <= validation_up_to), default=None)
    for i, (text, y) in enumerate(zip(texts, years)):
        want = "validation" if y == held else "train"
        stem = next(f"part{i}v{k}_{y}" for k in range(2000)
                    if assign_split(f"local_part{i}v{k}_{y}", percent) == want)
        (folder / f"{stem}.txt").write_text(text, encoding="utf-8")
    return folder


@pytest.fixture(scope="session")
def micro_root(tmp_path_factory) -> Path:
    """A project root with a processed micro corpus and its tokenizer (stages 02-03 done)."""
    from londonlm.corpus import CollectionOptions, build_corpus
    from londonlm.tokens.stage import train_tokenizer_stage

    root = tmp_path_factory.mktemp("root")
    src = write_micro_source(root / "src")
    data = root / "data" / "london_historical"
    build_corpus(data / "processed", data / "metadata",
                 options=CollectionOptions(validation_percent=20, log=lambda *_: None), source_dir=src)
    train_tokenizer_stage(data / "processed", root / "09_models" / "tokenizers" / "london_historical_bpe",
                          vocab_size=512, min_frequency=2, era_tokens=True, model_max_length=64,
                          log=lambda *_: None)
    return root


@pytest.fixture
def micro_root_copy(micro_root, tmp_path) -> Path:
    """A copy of :func:`micro_root` a test may train in, damage and rerun."""
    dst = tmp_path / "root"
    shutil.copytree(micro_root, dst)
    return dst


# --- micro Trainer parts (test_schedules, test_optim) --------------------------------------

def micro_gpt2(seed: int = 0, vocab: int = 64, ctx: int = 16, n_layer: int = 1):
    """A GPT-2 small enough for dozens of Trainer steps per second on one CPU core."""
    import torch
    from transformers import GPT2Config, GPT2LMHeadModel

    torch.manual_seed(seed)
    cfg = GPT2Config(vocab_size=vocab, n_positions=ctx, n_embd=16, n_layer=n_layer, n_head=2,
                     resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0)
    return GPT2LMHeadModel(cfg)


def micro_lm_dataset(n: int = 64, vocab: int = 64, ctx: int = 16, seed: int = 0) -> list[dict]:
    import torch

    # counting sequences from random starts: learnable in a few steps, so losses move
    g = torch.Generator().manual_seed(seed)
    starts = torch.randint(0, vocab, (n, 1), generator=g)
    ids = (starts + torch.arange(ctx)) % vocab
    return [{"input_ids": row, "labels": row.clone()} for row in ids]


def micro_training_args(out, **overrides):
    from transformers import TrainingArguments

    values = dict(output_dir=str(out), per_device_train_batch_size=4, learning_rate=3e-3,
                  max_steps=20, warmup_steps=2, logging_steps=1, save_strategy="no",
                  eval_strategy="no", report_to=[], use_cpu=True, disable_tqdm=True, seed=0,
                  data_seed=0, dataloader_num_workers=0, weight_decay=0.1, adam_beta2=0.95)
    values.update(overrides)
    return TrainingArguments(**values)


# --------------------------------------------------------------------------- chat (07_finetuning)

OLD_BAILEY_1818 = """<?xml version="1.0" encoding="UTF-8"?>
<TEI.2><text><body><div0 type="sessionsPaper" id="18181028">
<interp inst="18181028" type="date" value="18181028"/>
<div1 type="trialAccount" id="t18181028-1">
<interp inst="t18181028-1" type="date" value="18181028"/>
<p>1393. <persName id="t1-d1" type="defendantName">PATRICK <interp type="given" value="PATRICK"/>LEESON
<interp type="surname" value="LEESON"/></persName> was indicted for stealing a watch, the goods of Robert Little.</p>
<p><persName type="witnessName">ROBERT LITTLE</persName>. I am one of the money-takers at Covent Garden Theatre, and took him into custody.</p>
<p>Q. How did he run against you - A. Not with any great force; it appeared to be done to put me off my guard.</p>
<p>COURT. Q. Where do you <rs type="x">live</rs> - A. In Tothil-street, <placeName>Westminster</placeName>.</p>
<p>Prisoner. Q. Will you positively say I took your watch - A. He is the man.</p>
<p>Q. What is your business - A. |{~ ### 1l1l ~}| ^^</p>
<p>Q. Was the watch found - A. (The watch produced and sworn to.)</p>
<p>HANNAH STEPHENS. I am the prosecutor's servant, and live in the house.</p>
<p>Cross-examined by MR. ANDREWS. Q. Were you in the room when he was taken into cus<lb/>tody? <hi rend="italic">A.</hi> Yes; I was there all the time.</p>
<p>Q. Did you see him take the watch - A. I did not see him take</p>
<p>it; I saw him run away.</p>
<p>Q. Where do you live - A. In Tothil-street, Westminster.</p>
<p>GUILTY. Transported for Seven years.</p>
</div1></div0></body></text></TEI.2>
"""

OLD_BAILEY_1756 = """<?xml version="1.0" encoding="UTF-8"?>
<TEI.2><text><body><div0 type="sessionsPaper" id="17561020">
<interp inst="17561020" type="date" value="17561020"/>
<div1 type="trialAccount" id="t17561020-4">
<interp inst="t17561020-4" type="date" value="17561020"/>
<p>400. (M.) <persName type="defendantName">Peter <interp type="given" value="Peter"/>Careless
<interp type="surname" value="Careless"/></persName> was indicted for stealing one sword.</p>
<p>George Keith. I work in the sword-cutlery way, and live in Gardner's-Lane.</p>
<p>Q. to G. Keith. Is this the sword you lost?</p>
<p>G. Keith. It is No. 19. the same sword.</p>
<p>Q. How long have you known the prisoner at the bar?</p>
<p>Acquitted.</p>
</div1>
<div1 type="trialAccount" id="t17561020-5">
<interp inst="t17561020-5" type="date" value="17561020"/>
<p>401. <persName type="defendantName">Charles <interp type="given" value="Charles"/>Gutteridge
<interp type="surname" value="Gutteridge"/></persName> was indicted for stealing one cloth coat.</p>
<p>Mary Holyland. My husband keeps the Bell tavern in Friday Street.</p>
<p>Q. Look at this paper.</p>
<p>M. Holyland. This is the same paper that I kept in the tobacco box.</p>
<p>Q. from Prisoner. Did not the constable say he would make it up?</p>
<p>M. Holyland. No, I know of no such thing.</p>
</div1>
<div1 type="trialAccount" id="t17561020-6">
<interp inst="t17561020-6" type="date" value="17561020"/>
<p>JONAS HOLMES sworn.</p>
<p>Court. Was this pipe fixed to your house? - It was fixed up with wall hooks.</p>
<p>Did you see him cut it? - Yes. Was he alone? - He was alone, my lord.</p>
<p>Court to the Prisoner. Did you know that this was a capital indictment? - No, my lord.</p>
<p>Upon his Cross-Examination was asked, whether the others had their hats off? - He said no.</p>
</div1></div0></body></text></TEI.2>
"""


def write_old_bailey_tei(folder: Path) -> Path:
    """Two small sessions papers in the three house styles of examination, with nested markup,
    a line break inside a word, a page-split answer, a missing answer, OCR debris, a stage
    direction, reported speech and a duplicate; plus a TEI file with no trials."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "oldbailey_proceedings_1818-10-28.xml").write_text(OLD_BAILEY_1818, encoding="utf-8")
    (folder / "oldbailey_proceedings_1756-10-20.xml").write_text(OLD_BAILEY_1756, encoding="utf-8")
    (folder / "other.xml").write_text("<TEI.2><text><body><p>No trials here.</p></body></text></TEI.2>",
                                      encoding="utf-8")
    return folder


@pytest.fixture(scope="session")
def chat_root(tmp_path_factory, tiny_tokenizer_dir) -> Path:
    """A project root with a micro base run (``base/final``, context 128) and the dialogue
    dataset built from the TEI fixtures."""
    from transformers import AutoTokenizer

    from londonlm.chat.dataset import ChatDatasetOptions, build_chat_dataset
    from londonlm.training.model import ModelShape, build_model, padded_vocab

    root = tmp_path_factory.mktemp("chatroot")
    tok = AutoTokenizer.from_pretrained(str(tiny_tokenizer_dir))
    shape = ModelShape(n_layer=2, n_head=2, n_embd=32, n_positions=128, vocab_size=padded_vocab(len(tok)))
    model = build_model(shape, tok.bos_token_id, tok.eos_token_id, tok.pad_token_id, seed=0)
    final = root / "09_models" / "checkpoints" / "base" / "final"
    model.save_pretrained(str(final))
    tok.save_pretrained(str(final))
    src = write_old_bailey_tei(root / "src")
    build_chat_dataset(src, root / "data" / "london_historical" / "chat",
                       ChatDatasetOptions(validation_percent=34.0), log=lambda *_: None)
    return root


from contextlib import contextmanager  # noqa: E402  (appended section: serving helpers)


@contextmanager
def serving_in_thread(app, **options):
    """Serve an ASGI ``app`` with uvicorn in a thread on a free 127.0.0.1 port, as ``serve.py``
    runs it (``uvicorn_options(**options)``); yields the base URL."""
    import socket

    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    with uvicorn_in_thread(app, sock, **options) as (url, _):
        yield url


def scripted_input(lines):
    """A REPL's ``read(prompt)`` that gives ``lines`` one by one, then EOF (the user's Ctrl-D)."""
    lines = iter(lines)

    def read(_prompt=""):
        try:
            return next(lines)
        except StopIteration:
            raise EOFError from None
    return read


@contextmanager
def uvicorn_in_thread(app, sock, **options):
    """``app`` served by uvicorn in a thread on ``sock`` (a socket not yet bound: bound here to a
    free 127.0.0.1 port), with ``uvicorn_options(**options)``; yields the base URL and the server."""
    import threading
    import time

    import uvicorn

    from londonlm.serving.httpio import uvicorn_options

    sock.bind(("127.0.0.1", 0))
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning", lifespan="off", **uvicorn_options(**options)))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        assert thread.is_alive() and time.monotonic() < deadline, "server did not start"
        time.sleep(0.02)
    try:
        yield f"http://127.0.0.1:{sock.getsockname()[1]}", server
    finally:
        server.should_exit = True
        thread.join(10)
        sock.close()


@pytest.fixture(scope="session")
def chat_model_dir(chat_root) -> Path:
    """A micro chat model fine-tuned (2 steps) from the ``chat_root`` base run."""
    from londonlm.chat.finetune import finetune_chat
    from londonlm.chat.preset import ChatTrainOptions
    from londonlm.core.layout import Layout

    layout = Layout(chat_root)
    run = layout.run("fixture-chat")
    finetune_chat(layout.run("base").final, layout.chat_data_dir, run,
                  ChatTrainOptions(max_steps=2, batch_size=4, warmup_steps=1, save_steps=2, eval_steps=2,
                                   logging_steps=1), log=lambda *_: None)
    return run.final


def patch_core(monkeypatch, name: str, value) -> None:
    """Replace a ``londonlm.core`` function wherever a stage can look it up: among the package's
    exports (other stages import it from there) and in every core module that holds it."""
    import sys

    import londonlm.core as core

    for module_name, module in list(sys.modules.items()):
        if module_name.startswith("londonlm.core.") and hasattr(module, name):
            monkeypatch.setattr(module, name, value)
    monkeypatch.setattr(core, name, value)


def short_probes(path, tok, n=12):
    """Items from the shipped probes whose context + longest choice fit the 64-token model
    (longer ones are cut from the left, where lm-eval keeps one token more than we do)."""
    from londonlm.evaluation.metrics.probes import default_probes_path, load_mc_jsonl

    lines = default_probes_path().read_text(encoding="utf-8").splitlines()
    kept = []
    for line, it in zip(lines, load_mc_jsonl(default_probes_path())):
        longest = max(len(tok(it.context + c)["input_ids"]) for c in it.continuations)
        if longest < 60:
            kept.append(line)
    path.write_text("\n".join(kept[:n]) + "\n", encoding="utf-8")
    return path


def fake_nvidia_smi(folder, gpus: int, driver: str = "535.104.05"):
    """An ``nvidia-smi`` that lists ``gpus`` H100s and reports ``driver``."""
    folder.mkdir(parents=True, exist_ok=True)
    listing = "".join(f"echo 'GPU {i}: NVIDIA H100 80GB HBM3 (UUID: GPU-{i})'; " for i in range(gpus))
    exe = folder / "nvidia-smi"
    exe.write_text(f"#!/bin/sh\ncase \"$*\" in\n  *--list-gpus*) {listing or 'true'} ;;\n"
                   f"  *driver_version*) echo '{driver}' ;;\nesac\n")
    exe.chmod(0o755)
    return folder


# nvidia-smi as it misbehaves: a driver stuck in the kernel, a driver not loaded, nonsense output
NVIDIA_SMI_HANGS = "exec sleep 10"
NVIDIA_SMI_FAILS = ("echo \"NVIDIA-SMI has failed because it couldn't communicate with the NVIDIA driver. Make "
                    "sure that the latest NVIDIA driver is installed and running.\"; exit 9")
NVIDIA_SMI_GARBLED = "printf 'GPU \\377garbage\\000 ~~\\n'"


def broken_nvidia_smi(folder, body: str):
    """An ``nvidia-smi`` that runs the shell ``body`` whatever it is asked."""
    folder.mkdir(parents=True, exist_ok=True)
    exe = folder / "nvidia-smi"
    exe.write_text(f"#!/bin/sh\n{body}\n")
    exe.chmod(0o755)
    return folder


def tree_digest(folder) -> dict:
    """Every file under ``folder`` with its bytes' sha256: equal before and after a refused
    command means it changed nothing there."""
    import hashlib

    folder = Path(folder)
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}


def vouch_for_corpus(processed) -> Path:
    """A corpus sidecar, written by the library's own writer, over what ``processed`` holds now
    (as the collection writes it last): for a fixture corpus written or edited by hand, which the
    readers of a corpus (the tokenizer stage, a token cache build) refuse as unfinished without."""
    from londonlm.core import SIDECAR, write_sidecar
    from londonlm.corpus.manifest import CORPUS_OUTPUTS, CORPUS_STAGE

    return write_sidecar(Path(processed) / SIDECAR, CORPUS_STAGE, {}, {}, outputs=CORPUS_OUTPUTS)


@contextlib.contextmanager
def script_as_module(script: Path, name: str):
    """A stage script imported as the module ``name`` (in sys.modules while used: dataclasses
    resolve annotations through it), for calling its main() in process."""
    spec = importlib.util.spec_from_file_location(name, script)
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    try:
        yield module
    finally:
        sys.modules.pop(name, None)
