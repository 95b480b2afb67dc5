"""londonlm.generation (the model interface), londonlm.serving.repl and 06_inference/inference_unified.py
on the tiny fixture model."""
from __future__ import annotations

import io
import os
import shutil
import subprocess
import sys
import threading
from dataclasses import replace
from pathlib import Path

import pytest

from conftest import script_as_module
from londonlm.core.errors import LondonLMError, run_main
from londonlm.generation import (GenerationError, GenerationSettings, defaults_from_generation_config,
                                 encode_prompt, generate, generation_config_dict, load_model,
                                 new_tokens_for_max_length, normalize_era, stream,
                                 to_generation_config)
from londonlm.core.layout import Layout
from londonlm.serving.repl import apply_command, run_repl

REPO = Path(__file__).resolve().parents[2]
SCRIPT = REPO / "06_inference" / "inference_unified.py"


@pytest.fixture(scope="module")
def lm(tiny_model_dir):
    return load_model(str(tiny_model_dir), device="cpu")


@pytest.fixture(scope="module")
def cli():
    name = "londonlm_test_inference_unified"
    with script_as_module(SCRIPT, name) as module:
        yield module


def exit_code(main, argv) -> int:
    """What the script's ``run_main(main)`` exits with (user errors: 2 and one stderr line)."""
    with pytest.raises(SystemExit) as e:
        run_main(main, argv)
    return e.value.code


def settings(lm, **kw) -> GenerationSettings:
    return lm.defaults.updated(**{"max_new_tokens": 12, "seed": 7, **kw})


# --------------------------------------------------------------------------- library

def test_prompt_encoding_matches_the_training_stream(lm):
    from londonlm.tokens.cache import _encode_stream

    tok = lm.tokenizer
    text = "Up betimes, and to the Office"
    (doc,) = list(_encode_stream(tok, [({"id": "d", "year": 1666}, text)], use_era=True))
    ids = encode_prompt(tok, text, "<|1650s|>")
    # training: [era] + text + [EOT], packed after the previous document's EOT
    assert ids[0] == tok.convert_tokens_to_ids("<|endoftext|>") == 0
    assert ids[1:] == doc[:-1]
    assert 0 not in ids[1:], "no end-of-text after the start: the document has not ended"
    assert encode_prompt(tok, text) == [0] + doc[1:-1]
    assert encode_prompt(tok, "") == [0]


def test_defaults_come_from_generation_config(lm):
    from transformers import GenerationConfig

    assert lm.defaults.temperature == 0.8 and lm.defaults.max_new_tokens == 100  # fixture: none set
    d = defaults_from_generation_config(GenerationConfig(do_sample=True, temperature=0.6, top_k=20,
                                                         max_new_tokens=33))
    assert (d.temperature, d.top_k, d.max_new_tokens, d.top_p) == (0.6, 20, 33, 0.95)
    assert defaults_from_generation_config(GenerationConfig(do_sample=False)).temperature == 0.0
    assert defaults_from_generation_config(GenerationConfig(do_sample=True, top_p=7.0)).top_p == 0.95


def test_prompt_text_never_becomes_a_control_token(lm):
    tok = lm.tokenizer
    eot, era = tok.convert_tokens_to_ids("<|endoftext|>"), tok.convert_tokens_to_ids("<|1650s|>")
    text = "Finis.<|endoftext|><|1650s|>Up betimes"
    ids = encode_prompt(tok, text)
    assert ids[0] == eot and eot not in ids[1:] and era not in ids
    assert tok.decode(ids, skip_special_tokens=False) == "<|endoftext|>" + text  # only the leading EOT is a token
    # the explicit era argument is still a control token, the typed one is not
    assert encode_prompt(tok, text, "<|1650s|>")[:2] == [eot, era]
    old = encode_prompt(tok, text, allow_control_tokens=True)
    assert old.count(eot) == 2 and era in old
    # the shared tokenizer is left reading special tokens as before (no flag flipped on it)
    assert tok("a<|endoftext|>", add_special_tokens=False)["input_ids"][-1] == eot
    sample = generate(lm, text, settings(lm, max_new_tokens=4))[0]
    assert sample.prompt_tokens == len(ids)


def test_one_set_of_sampling_defaults():
    d = GenerationSettings()
    assert generation_config_dict() == {"do_sample": True, "temperature": d.temperature,
                                        "top_p": d.top_p, "top_k": d.top_k,
                                        "repetition_penalty": d.repetition_penalty,
                                        "max_new_tokens": d.max_new_tokens}
    assert generation_config_dict(eos_token_id=0, pad_token_id=None)["eos_token_id"] == 0
    assert defaults_from_generation_config(to_generation_config()) == d
    greedy = generation_config_dict(d.updated(temperature=0.0, no_repeat_ngram_size=3))
    assert greedy["do_sample"] is False and "temperature" not in greedy
    assert greedy["no_repeat_ngram_size"] == 3


def test_explicit_settings_beat_the_folders_generation_config(lm, tiny_model_dir, tmp_path):
    """generate() fills unset fields from the folder's generation_config.json: an "off" value
    must be passed explicitly or the folder's value comes back."""
    from transformers import GenerationConfig

    folder = tmp_path / "m"
    shutil.copytree(tiny_model_dir, folder)
    GenerationConfig(do_sample=False, no_repeat_ngram_size=1, repetition_penalty=1.0).save_pretrained(folder)
    other = load_model(str(folder), device="cpu")
    assert other.defaults.no_repeat_ngram_size == 1 and other.defaults.temperature == 0.0
    s = GenerationSettings(temperature=0.0, repetition_penalty=1.0, no_repeat_ngram_size=0,
                           max_new_tokens=40)
    assert generate(other, "London", s)[0].text == generate(lm, "London", s)[0].text


def test_model_specs_resolve_and_fail_clearly(tiny_model_dir, tmp_path):
    layout = Layout(tmp_path)
    shutil.copytree(tiny_model_dir, layout.run("myrun").final)
    lm = load_model("myrun", layout=layout, device="cpu")
    assert lm.model_id == "myrun/final" and lm.eras == ["<|1600s|>", "<|1650s|>", "<|1800s|>"]
    assert load_model("final", layout=layout, run="myrun", device="cpu").path.endswith("final")
    assert load_model("final", run=layout.run("myrun"), device="cpu").model_id == "myrun/final"
    with pytest.raises(GenerationError, match="checkpoint-5"):
        load_model("checkpoint-5", layout=layout, run="myrun", device="cpu")
    with pytest.raises(GenerationError, match="local cache"):
        load_model("nobody/no-such-model", layout=layout, run="none", device="cpu")
    with pytest.raises(GenerationError, match="does not exist"):
        load_model(str(tmp_path / "no-such-folder"), device="cpu")
    assert issubclass(GenerationError, LondonLMError) and issubclass(GenerationError, ValueError)


def test_a_checkpoint_without_tokenizer_borrows_the_runs(tiny_model_dir, tmp_path):
    from transformers import AutoModelForCausalLM

    run = Layout(tmp_path).run("r")
    shutil.copytree(tiny_model_dir, run.final)
    AutoModelForCausalLM.from_pretrained(str(tiny_model_dir)).save_pretrained(str(run.checkpoint(3)))
    assert not (run.checkpoint(3) / "tokenizer.json").exists()
    lm = load_model(str(run.checkpoint(3)), device="cpu")  # a plain folder: no layout needed
    assert lm.model_id == "r/checkpoint-3" and lm.step == 3 and len(lm.eras) == 3
    info = lm.info()
    assert "path" not in info and str(tmp_path) not in repr(info)


def test_hub_id_loads_from_the_local_cache_only(tiny_model_dir, tmp_path, monkeypatch):
    import huggingface_hub.constants as hub_constants

    repo = tmp_path / "hub" / "models--someone--tiny-london"
    shutil.copytree(tiny_model_dir, repo / "snapshots" / ("a" * 40))
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text("a" * 40)
    monkeypatch.setattr(hub_constants, "HF_HUB_CACHE", str(tmp_path / "hub"))
    lm = load_model("someone/tiny-london", device="cpu")
    assert lm.model_id == "someone/tiny-london" and lm.step is None and len(lm.eras) == 3
    with pytest.raises(GenerationError, match="huggingface-cli download someone/other"):
        load_model("someone/other", layout=Layout(tmp_path), run="no-run", device="cpu")


def test_seeded_sampling_is_reproducible_and_streaming_matches(lm):
    s = settings(lm, max_new_tokens=16)
    a, b = generate(lm, "Up betimes, and", s), generate(lm, "Up betimes, and", s)
    assert a[0].text == b[0].text and a[0].new_tokens == 16 and a[0].finish_reason == "length"
    assert generate(lm, "Up betimes, and", s.updated(seed=8))[0].text != a[0].text
    chunks = list(stream(lm, "Up betimes, and", s))
    assert len(chunks) > 1 and "".join(chunks) == a[0].text
    two = generate(lm, "Up", s.updated(num_samples=2))
    assert [x.seed for x in two] == [7, 8] and two[0].text != two[1].text


def test_era_and_settings_validation(lm):
    assert normalize_era("1660s", lm.eras, lm.era_width) == normalize_era(1666, lm.eras, lm.era_width) == "<|1650s|>"
    assert normalize_era("none", lm.eras, lm.era_width) is None
    with pytest.raises(GenerationError, match="1600s, 1650s, 1800s"):
        normalize_era("1900s", lm.eras, lm.era_width)
    with pytest.raises(GenerationError, match="year or decade"):
        normalize_era("Tudor", lm.eras, lm.era_width)
    for bad in (dict(temperature=-0.1), dict(top_p=0.0), dict(top_p=1.5), dict(top_k=-1),
                dict(max_new_tokens=0), dict(temperature=float("nan")), dict(seed=2**32)):
        with pytest.raises(GenerationError):
            lm.defaults.updated(**bad)
    era_out = generate(lm, "London", settings(lm, era="<|1800s|>"))[0]
    assert era_out.prompt_tokens == len(encode_prompt(lm.tokenizer, "London", "<|1800s|>"))


def test_long_prompts_are_trimmed_to_the_context(lm):
    out = generate(lm, "the Thames ran black " * 40, settings(lm, max_new_tokens=50))[0]
    assert out.truncated_prompt and out.prompt_tokens + out.new_tokens <= lm.context_length
    assert new_tokens_for_max_length(lm, "Up", 10) == 10 - len(encode_prompt(lm.tokenizer, "Up"))
    with pytest.raises(GenerationError, match="max_length"):
        new_tokens_for_max_length(lm, "Up betimes, and to the Office", 3)


def test_greedy_is_deterministic_without_a_seed(lm):
    s = replace(settings(lm, temperature=0.0), seed=None)
    assert generate(lm, "London", s)[0].text == generate(lm, "London", s)[0].text


def test_greedy_generation_warns_of_no_sampling_flag_it_does_not_use(lm, monkeypatch):
    """A folder's generation_config.json samples (temperature 0.8, top_p 0.95); generate() fills
    what a request leaves unset from it, and transformers warned that those flags "are not valid
    and may be ignored" on every greedy generation (the evaluation's, temperature 0)."""
    import transformers.generation.configuration_utils as hf_config

    said = []
    monkeypatch.setattr(hf_config.logger, "warning_once", lambda msg, *a, **k: said.append(str(msg)))
    folder = to_generation_config(bos_token_id=0, eos_token_id=0, pad_token_id=1)  # a trained run's
    assert folder.do_sample and folder.temperature != 1.0 and folder.top_p != 1.0
    monkeypatch.setattr(lm.model, "generation_config", folder)
    greedy = generate(lm, "London", settings(lm, temperature=0.0))[0].text
    assert not [m for m in said if "not valid" in m], said
    assert greedy == generate(lm, "London", settings(lm, temperature=1e-40))[0].text


@pytest.mark.parametrize("temperature", [1e-40, 1e-320, 9e-6])
def test_a_temperature_too_small_to_divide_by_is_greedy(lm, temperature):
    """generate() at 1e-40 raised transformers' "probability tensor contains either inf, nan or
    element < 0" (the logits divided by it overflow); below GREEDY_BELOW it is greedy, as at 0,
    in generate(), stream() and the REPL's /temp alike."""
    tiny, greedy = settings(lm, temperature=temperature), settings(lm, temperature=0.0)
    assert not tiny.sampling and generate(lm, "Up betimes", tiny)[0].text == generate(lm, "Up betimes", greedy)[0].text
    assert "".join(stream(lm, "London", tiny)) == generate(lm, "London", greedy)[0].text
    assert not apply_command(settings(lm), f"/temp {temperature}", lm.eras, lm.era_width)[0].sampling


def test_repl_commands(lm):
    s = settings(lm)
    s2, msg = apply_command(s, "/temp 0.7", lm.eras, lm.era_width)
    assert s2.temperature == 0.7 and s.temperature == 0.8 and "0.7" in msg
    assert apply_command(s, "/era 1660s", lm.eras, lm.era_width)[0].era == "<|1650s|>"
    assert apply_command(s, "/seed none", lm.eras, lm.era_width)[0].seed is None
    assert "/temp" in apply_command(s, "/help", lm.eras, lm.era_width)[1]
    for bad in ("/temp hot", "/temp 9", "/top_k -2", "/era 1900s", "/warp 9"):
        with pytest.raises(GenerationError):
            apply_command(s, bad, lm.eras, lm.era_width)


def test_repl_loop_in_process(lm):
    lines = iter(["Up betimes", "/temp 0", "/bogus", "/history", "London", "/era 1900s"])

    def read(prompt):
        try:
            return next(lines)
        except StopIteration:
            raise KeyboardInterrupt from None  # Ctrl-C at the prompt leaves cleanly

    out = io.StringIO()
    assert run_repl(lm, settings(lm), out, read=read, stream_tokens=True) == 0
    text = out.getvalue()
    assert "temperature = 0.0" in text and "unknown command /bogus" in text
    assert "1  Up betimes" in text and "available: 1600s, 1650s, 1800s" in text
    assert text.count("tokens/s") == 2


# --------------------------------------------------------------------------- CLI

def test_cli_seed_is_reproducible(cli, tiny_model_dir, capsys):
    argv = ["--model", str(tiny_model_dir), "--prompt", "Up betimes, and", "--seed", "5",
            "--max_new_tokens", "15", "--num_samples", "2", "--device", "cpu"]
    assert cli.main(argv) == 0
    first = capsys.readouterr()
    assert cli.main(argv) == 0
    second = capsys.readouterr()
    assert first.out == second.out and first.out.count("Up betimes, and") == 2
    assert "seed 5" in first.err and "seed 6" in first.err
    assert cli.main([*argv[:5], "6", *argv[6:]]) == 0
    assert capsys.readouterr().out != first.out


def test_cli_stream_prints_while_generating(cli, tiny_model_dir, monkeypatch, capsys):
    class Recorder(io.StringIO):
        def __init__(self):
            super().__init__()
            self.live = []  # (chunk, generation thread still running?)

        def write(self, s):
            alive = any(t.name == "londonlm-generate" and t.is_alive() for t in threading.enumerate())
            self.live.append((s, alive))
            return super().write(s)

    rec = Recorder()
    monkeypatch.setattr(sys, "stdout", rec)
    assert cli.main(["--model", str(tiny_model_dir), "--prompt", "London", "--seed", "3",
                     "--max_new_tokens", "40", "--stream", "--device", "cpu"]) == 0
    monkeypatch.undo()
    written_live = [s for s, alive in rec.live if alive and s.strip()]
    assert len(written_live) >= 2, f"chunks were not printed during generation: {rec.live}"
    assert cli.main(["--model", str(tiny_model_dir), "--prompt", "London", "--seed", "3",
                     "--max_new_tokens", "40", "--device", "cpu"]) == 0
    assert capsys.readouterr().out == rec.getvalue(), "streamed and plain output differ"


@pytest.mark.parametrize("args, message", [
    (["--temperature", "-1"], "temperature"), (["--top_p", "1.5"], "top_p"),
    (["--top_k", "-2"], "top_k"), (["--max_new_tokens", "0"], "max_new_tokens"),
    (["--max_new_tokens", "5", "--max_length", "9"], "not both"), (["--era", "1900s"], "1900s"),
    (["--model", "no-such-run"], "not found"), (["--seed", "-4"], "seed"),
])
def test_cli_bad_values_fail_cleanly(cli, tiny_model_dir, capsys, args, message):
    model = [] if "--model" in args else ["--model", str(tiny_model_dir)]
    assert exit_code(cli.main, [*model, "--prompt", "Up", *args]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error:") and message in err and "Traceback" not in err


def test_cli_tiny_temperature_is_greedy_not_a_traceback(cli, tiny_model_dir, capsys):
    """``--temperature 1e-40`` died with RuntimeError: probability tensor contains inf/nan."""
    argv = ["--model", str(tiny_model_dir), "--prompt", "Up betimes", "--max_new_tokens", "12", "--device", "cpu"]
    assert cli.main([*argv, "--temperature", "0"]) == 0
    greedy = capsys.readouterr().out
    assert cli.main([*argv, "--temperature", "1e-40"]) == 0
    assert capsys.readouterr().out == greedy
    chat = cli.parse(cli.build_parser("micro"), ["--chat", "--temperature", "1e-40"])
    assert chat.chat_settings().do_sample is False  # --chat: greedy too


@pytest.mark.parametrize("penalty", ["1e-300", "1e-40", "0.0009"])
def test_a_repetition_penalty_too_small_to_divide_by_is_one_line(cli, lm, tiny_model_dir, capsys, penalty):
    """``--repetition_penalty 1e-300 --temperature 1`` died in transformers' sampler ("probability
    tensor contains either inf, nan or element < 0": float32 holds the penalty as 0, a seen
    token's logit divided by it is inf); greedy, it answered nothing ("eos"). Below
    MIN_REPETITION_PENALTY it is one line before the model loads, and /rep refuses it in the REPL."""
    argv = ["--model", str(tiny_model_dir), "--prompt", "Up betimes and", "--max_new_tokens", "4",
            "--device", "cpu", "--temperature", "1", "--repetition_penalty", penalty]
    assert exit_code(cli.main, argv) == 2
    err = capsys.readouterr().err
    assert err.startswith("error:") and "repetition_penalty" in err and "Traceback" not in err
    with pytest.raises(GenerationError):
        apply_command(settings(lm), f"/rep {penalty}", lm.eras, lm.era_width)
    lowest = settings(lm, repetition_penalty=0.001, temperature=1.0, seed=1, max_new_tokens=4)
    assert generate(lm, "Up betimes and", lowest)[0].finish_reason in ("length", "eos")  # the smallest taken samples


def test_cli_allow_control_tokens_flag(cli, tiny_model_dir, capsys):
    argv = ["--model", str(tiny_model_dir), "--prompt", "<|endoftext|><|1800s|>", "--temperature", "0",
            "--max_new_tokens", "12", "--device", "cpu"]
    assert cli.main(argv) == 0
    plain = capsys.readouterr().out
    assert cli.main([*argv, "--allow_control_tokens"]) == 0
    assert capsys.readouterr().out != plain


def test_cli_help(cli, capsys):
    with pytest.raises(SystemExit) as e:
        cli.main(["--help"])
    assert e.value.code == 0 and "--repetition_penalty" in capsys.readouterr().out


def test_cli_interactive_through_stdin_from_another_cwd(tiny_model_dir, tmp_path):
    """A real process: stdin piped, run from outside the repository, Ctrl-D (EOF) ends it."""
    script = "Up betimes\n/temp 0\n/era 1660s\nLondon\n/top_p 3\n/history\n"
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    proc = subprocess.run([sys.executable, str(SCRIPT), "--model", str(tiny_model_dir), "--interactive",
                           "--max_new_tokens", "8", "--seed", "1", "--device", "cpu"],
                          input=script, capture_output=True, text=True, cwd=tmp_path, env=env,
                          timeout=120)
    assert proc.returncode == 0, proc.stderr
    out = proc.stdout
    assert "temperature = 0.0" in out and "era = <|1650s|>" in out and "error: top_p" in out
    assert out.count("tokens/s") == 2 and "2  London" in out
    assert "Traceback" not in proc.stderr
