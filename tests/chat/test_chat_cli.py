"""``inference_unified.py --chat``: one answer with --prompt, the chat loop (history kept across
turns, /year sets the system line, /reset, /help), answers streamed as they are generated, and
a model without a chat template refused in one line."""
from __future__ import annotations

import io
import os
import subprocess
import sys
import threading

import pytest

from conftest import REPO, scripted_input
from script_fuzz import completed_in_process
from londonlm.chat.respond import ChatSettings, chat_reply, chat_stream
from londonlm.chat.template import ChatIds
from londonlm.generation import load_model
from londonlm.serving.repl import ChatSession, run_chat_repl

SCRIPT = REPO / "06_inference" / "inference_unified.py"


def _cli(*args):
    env = dict(os.environ, TOKENIZERS_PARALLELISM="false")
    return subprocess.run([sys.executable, str(SCRIPT), *map(str, args)], env=env, capture_output=True, text=True,
                          timeout=300)


def _refusal(*args, root):
    """The script's answer to flags it refuses, run in this process (a new interpreter costs
    ~10 s of imports on 2 cores; what the script prints is the same)."""
    return completed_in_process(SCRIPT, args, root, env={"LONDONLM_ROOT": str(root)})


@pytest.fixture(scope="module")
def lm(chat_model_dir):
    return load_model(str(chat_model_dir), device="cpu")


def _spy_prompts(lm, monkeypatch) -> list[str]:
    """The prompts the model is asked to continue, decoded with their control tokens."""
    seen, real = [], lm.model.generate

    def spy(*a, **kw):
        seen.append(lm.tokenizer.decode(kw["input_ids"][0]))
        return real(*a, **kw)

    monkeypatch.setattr(lm.model, "generate", spy)
    return seen


def test_one_answer_with_prompt_and_year_then_exit(chat_model_dir):
    res = _cli("--chat", "--model", chat_model_dir, "--year", "1790", "--prompt", "Where do you live?",
               "--seed", "3", "--max_new_tokens", "8")
    assert res.returncode == 0, res.stderr[-2000:]
    assert res.stdout.endswith("\n") and res.stdout.count("\n") == 1
    assert "Old Bailey, London, 1790." in res.stderr and "tokens/s" in res.stderr
    lm = load_model(str(chat_model_dir), device="cpu")
    same = chat_reply(lm.model, lm.tokenizer, [{"role": "user", "content": "Where do you live?"}], year=1790,
                      settings=ChatSettings(max_new_tokens=8, seed=3))
    assert res.stdout.strip() == same.text


def test_loop_keeps_history_sets_the_year_and_resets(lm, monkeypatch):
    prompts = _spy_prompts(lm, monkeypatch)
    read = scripted_input(["Where do you live?", "/year 1790", "What did you see?", "/reset", "Who are you?",
                           "/year 1200", "/year", "/help", "/nonsense"])

    out = io.StringIO()
    session = ChatSession(ChatSettings(max_new_tokens=4, seed=1, temperature=0.0, do_sample=False))
    assert run_chat_repl(lm, session, out, read=read, stream_tokens=False) == 0
    text = out.getvalue()
    assert len(prompts) == 3
    assert prompts[0].startswith("<|endoftext|><|system|>Old Bailey, London, 1800.<|end|><|user|>Where do you live?")
    # the second question carries the first exchange, under the new year's system line
    assert prompts[1].startswith("<|endoftext|><|system|>Old Bailey, London, 1790.<|end|><|user|>Where do you live?"
                                 "<|end|><|assistant|>")
    assert prompts[1].endswith("<|user|>What did you see?<|end|><|assistant|>")
    # after /reset only the new question, and the year stays
    assert prompts[2] == "<|endoftext|><|system|>Old Bailey, London, 1790.<|end|><|user|>Who are you?<|end|><|assistant|>"
    assert "conversation cleared" in text and "error: year must be a whole year from 1674 to 1913" in text
    assert "system line: Old Bailey, London, 1790." in text and "/reset" in text
    assert "error: unknown command /nonsense" in text


def test_answers_stream_as_they_are_generated(lm, monkeypatch):
    """The first words reach the reader while the model is still generating the rest."""
    words = lm.tokenizer("I saw the prisoner at the bar", add_special_tokens=False)["input_ids"]
    end = ChatIds.of(lm.tokenizer).end
    first_read, log = threading.Event(), []

    def fake_generate(input_ids, streamer, **kw):
        import torch

        streamer.put(input_ids[0])  # the prompt, as generate() hands it over first (skipped)
        out = input_ids[0].tolist()
        for i, tok in enumerate(words + [end]):
            streamer.put(torch.tensor([tok]))
            out.append(tok)
            if i == len(words) // 2:
                log.append(("generator waits", first_read.wait(10)))
        streamer.end()
        return torch.tensor([out])

    monkeypatch.setattr(lm.model, "generate", fake_generate)
    answer = chat_stream(lm.model, lm.tokenizer, [{"role": "user", "content": "What did you see?"}],
                         settings=ChatSettings(max_new_tokens=20))
    chunks = []
    for chunk in answer:
        chunks.append(chunk)
        first_read.set()
    assert log == [("generator waits", True)], "the first chunk came only after generation ended"
    assert len(chunks) >= 2 and "".join(chunks).strip() == answer.reply.text == "I saw the prisoner at the bar"
    assert answer.reply.finish_reason == "stop"


def test_streamed_and_whole_answers_agree(lm):
    settings = ChatSettings(max_new_tokens=10, seed=7)
    streamed, whole = io.StringIO(), io.StringIO()
    a = ChatSession(settings, year=1818).ask(lm, "Where were you?", streamed, None, stream_tokens=True)
    b = ChatSession(settings, year=1818).ask(lm, "Where were you?", whole, None, stream_tokens=False)
    assert a == b and streamed.getvalue().strip() == whole.getvalue().strip() == a.text


def test_a_model_without_a_chat_template_is_refused(tiny_model_dir, tmp_path):
    res = _refusal("--chat", "--model", tiny_model_dir, "--prompt", "Where do you live?", root=tmp_path)
    assert res.returncode == 2 and "Traceback" not in res.stderr
    line = res.stderr.strip().splitlines()[-1]
    assert line.startswith("error: --chat needs a chat model") and "no chat template" in line
    assert "finetune_chat.py" in line
    missing = _refusal("--chat", "--prompt", "hi", root=tmp_path)
    assert missing.returncode == 2 and "no chat model at" in missing.stderr and "Traceback" not in missing.stderr


@pytest.mark.parametrize("args, match", [
    (["--chat", "--era", "1650s"], "--era does not apply to --chat (use --year)"),
    (["--chat", "--year", "1500"], "--year: year must be a whole year from 1674 to 1913"),
    (["--year", "1790"], "use it with --chat"),
    (["--chat", "--num_samples", "2"], "--num_samples does not apply to --chat"),
])
def test_bad_chat_flags_are_refused_before_loading(args, match, tmp_path):
    res = _refusal(*args, "--prompt", "hi", root=tmp_path)
    assert res.returncode == 2 and match in res.stderr and "Traceback" not in res.stderr


def _stdin(monkeypatch, data: bytes) -> None:
    """``data`` as the process's stdin, decoded as a UTF-8 terminal would be (strict)."""
    monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO(data), encoding="utf-8", errors="strict"))


def test_an_undecodable_line_is_refused_and_the_conversation_goes_on(lm, monkeypatch):
    prompts = _spy_prompts(lm, monkeypatch)
    _stdin(monkeypatch, b"Where do you live?\n\xff\xfe\nWhat did you see?\n/year \xc2\xb2\n/year 1790\n")
    out = io.StringIO()
    session = ChatSession(ChatSettings(max_new_tokens=4, seed=1, temperature=0.0, do_sample=False))
    assert run_chat_repl(lm, session, out, stream_tokens=False) == 0  # the default reader: stdin
    text = out.getvalue()
    assert "error: not valid UTF-8 (byte 0xff at character 1); the line was not used" in text
    assert "error: /year needs a year such as 1790, got '²'" in text  # "²".isdigit(), yet no int
    assert len(prompts) == 2 and "What did you see?" in prompts[1] and "Where do you live?" in prompts[1]
    assert session.year == 1790 and len(session.history) == 4


def test_the_chat_script_reads_undecodable_stdin_without_dying(chat_model_dir):
    env = dict(os.environ, TOKENIZERS_PARALLELISM="false", PYTHONIOENCODING="utf-8:strict")
    res = subprocess.run([sys.executable, str(SCRIPT), "--chat", "--model", str(chat_model_dir), "--device", "cpu",
                          "--max_new_tokens", "4", "--seed", "1"],
                         input=b"Where do you live?\n\xff\xfe\nWho are you?\n", env=env, capture_output=True,
                         timeout=300)
    out = res.stdout.decode()
    assert res.returncode == 0, res.stderr.decode()[-2000:]
    assert out.count("error: not valid UTF-8 (byte 0xff at character 1)") == 1
    assert out.count("tokens/s") == 2  # both questions answered (the loop's stats lines)
