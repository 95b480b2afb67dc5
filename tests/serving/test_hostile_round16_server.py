"""Hostile round 16 on the OpenAI-compatible API's meaning (what OpenAI clients send and expect)
and on the chat evaluation fed damaged or foreign inputs: ``stream_options`` on an answer that is
not streamed, the sampling a chat request leaves unset, a chat evaluation whose base is of another
family, is the chat model itself, or was recorded on another machine, and years asked twice."""
from __future__ import annotations

import contextlib
import io
import json
import shutil
from pathlib import Path

import httpx
import pytest

from conftest import SAMPLE_TEXTS, script_as_module, serving_in_thread
from londonlm.chat.respond import ChatRequestError, ChatSettings, ReplyStream, generate_reply, with_era
from londonlm.chat.evaluate import ChatEvalOptions, evaluate_chat
from londonlm.core import CHAT_EVAL, CHAT_INFO, Layout
from londonlm.core.errors import run_main
from londonlm.generation import load_model
from londonlm.serving import create_app

pytestmark = pytest.mark.network_local
EVALUATE_CHAT = Path(__file__).resolve().parents[2] / "07_finetuning" / "evaluate_chat.py"
QUESTION = [{"role": "user", "content": "Where were you on the night of the robbery?"}]


@pytest.fixture(scope="module")
def lm(tiny_model_dir):
    return load_model(str(tiny_model_dir), device="cpu")


@pytest.fixture(scope="module")
def base(lm):
    with serving_in_thread(create_app(lm=lm, max_new_tokens_limit=8)) as url:
        yield url


@pytest.fixture(scope="module")
def chat_lm(chat_model_dir):
    return load_model(str(chat_model_dir), device="cpu")


# --------------------------------------------------------------------------- the API


@pytest.mark.parametrize("stream", [False, None])
def test_stream_options_on_an_answer_not_streamed_is_a_400_by_name(base, lm, stream):
    # was: 200, the option silently dropped (OpenAI answers 400 "only allowed when stream is enabled")
    body = {"model": lm.model_id, "prompt": "The", "max_tokens": 2, "stream_options": {"include_usage": True}}
    if stream is not None:
        body["stream"] = stream
    r = httpx.post(f"{base}/v1/completions", json=body, timeout=30)
    assert r.status_code == 400 and r.json()["error"]["param"] == "stream_options"
    assert "stream" in r.json()["error"]["message"]
    streamed = httpx.post(f"{base}/v1/completions", json={**body, "stream": True}, timeout=30)
    events = [line[6:] for line in streamed.text.splitlines() if line.startswith("data: ")]
    assert streamed.status_code == 200 and events[-1] == "[DONE]"
    last = json.loads(events[-2])
    assert last["choices"] == [] and last["usage"]["completion_tokens"] == 2  # the option still works streamed


def test_a_chat_request_that_leaves_sampling_unset_answers_as_the_chat_does(chat_lm):
    # was: top_k 50 and repetition penalty 1.1 (the pre-training defaults, which a fine-tuned chat
    # model's generation_config does not override) on every answer an OpenAI client asked for, so
    # the same question, seed and temperature got another answer than --chat and the chat
    # evaluation give (ChatSettings: no top-k cut, no repetition penalty, by design)
    messages = with_era(QUESTION, 1818)
    with serving_in_thread(create_app(lm=chat_lm, max_new_tokens_limit=16)) as url:
        for seed in (1, 2, 3):
            r = httpx.post(f"{url}/v1/chat/completions", timeout=60, json={
                "model": chat_lm.model_id, "messages": QUESTION, "year": 1818, "max_tokens": 12, "seed": seed})
            assert r.status_code == 200, r.text
            served = r.json()["choices"][0]["message"]["content"]
            cli = generate_reply(chat_lm.model, chat_lm.tokenizer, messages,
                                 ChatSettings(max_new_tokens=12, seed=seed))
            assert served.strip() == cli.text, seed


def test_a_chat_request_still_takes_the_sampling_it_names(chat_lm):
    """The chat defaults fill only what a request leaves out: top_k and repetition_penalty sent
    (in ``extra_body``) are the ones used."""
    messages = with_era(QUESTION, 1818)
    with serving_in_thread(create_app(lm=chat_lm, max_new_tokens_limit=16)) as url:
        r = httpx.post(f"{url}/v1/chat/completions", timeout=60, json={
            "model": chat_lm.model_id, "messages": QUESTION, "year": 1818, "max_tokens": 12, "seed": 4,
            "top_k": 5, "repetition_penalty": 1.5})
    cli = generate_reply(chat_lm.model, chat_lm.tokenizer, messages,
                         ChatSettings(max_new_tokens=12, seed=4, top_k=5, repetition_penalty=1.5))
    assert r.json()["choices"][0]["message"]["content"].strip() == cli.text


def test_a_chat_answer_ends_where_the_model_begins_the_next_turn(chat_model_dir):
    # was: --chat, its stream and the chat evaluation stopped only at <|end|>/<|endoftext|>: a
    # model that wrote <|user|> went on with a question of its own, shown as the answer's text
    # (the marker hidden), where the server's answer ended
    forced = load_model(str(chat_model_dir), device="cpu")
    user = forced.tokenizer.convert_tokens_to_ids("<|user|>")
    calls = {"n": 0}

    def second_token_is_user(module, args, output):  # forward 1 is the prompt's, 2 the first new token's
        calls["n"] += 1
        if calls["n"] == 2:
            output[..., user] += 1e4
        return output

    forced.model.lm_head.register_forward_hook(second_token_is_user)
    messages, settings = with_era(QUESTION, 1818), ChatSettings(max_new_tokens=12, seed=1)
    reply = generate_reply(forced.model, forced.tokenizer, messages, settings)
    assert reply.finish_reason == "stop" and reply.new_tokens == 2
    calls["n"] = 0
    stream = ReplyStream(forced.model, forced.tokenizer, messages, settings)
    assert "".join(stream) == stream.reply.text == reply.text and stream.reply.new_tokens == 2


# --------------------------------------------------------------------------- the chat evaluation


def evaluate_chat_cli(*argv) -> tuple[int, str]:
    err = io.StringIO()
    with script_as_module(EVALUATE_CHAT, "evaluate_chat_r16") as script, contextlib.redirect_stderr(err), \
            contextlib.redirect_stdout(io.StringIO()), pytest.raises(SystemExit) as stop:
        run_main(script.main, [str(a) for a in argv])
    return stop.value.code, err.getvalue()


SMALL = ChatEvalOptions(years=(1818,), bait_limit=1, max_new_tokens=4, transcripts=1, max_conversations=1)


def foreign_base(folder: Path) -> Path:
    """A base of another family: a Llama (its context is ``max_position_embeddings``, no
    ``n_positions``) with a tokenizer whose documents open with ``<s>`` (no ``<|endoftext|>``)."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

    bpe = Tokenizer(models.BPE())
    bpe.pre_tokenizer, bpe.decoder = pre_tokenizers.ByteLevel(add_prefix_space=False), decoders.ByteLevel()
    bpe.train_from_iterator(SAMPLE_TEXTS, trainers.BpeTrainer(
        vocab_size=300, special_tokens=["<s>", "</s>", "<pad>"], initial_alphabet=pre_tokenizers.ByteLevel.alphabet()))
    tok = PreTrainedTokenizerFast(tokenizer_object=bpe, bos_token="<s>", eos_token="</s>", pad_token="<pad>")
    config = LlamaConfig(vocab_size=len(tok), hidden_size=32, intermediate_size=64, num_hidden_layers=1,
                         num_attention_heads=2, num_key_value_heads=2, max_position_embeddings=128,
                         bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id)
    LlamaForCausalLM(config).save_pretrained(str(folder))
    tok.save_pretrained(str(folder))
    return folder


def test_a_base_of_another_family_is_compared_not_a_traceback(chat_model_dir, chat_root, tmp_path):
    # was: AttributeError: 'LlamaConfig' object has no attribute 'n_positions' (then a KeyError
    # for '<|endoftext|>'), after both models had loaded
    base = foreign_base(tmp_path / "llama")
    report = evaluate_chat(chat_model_dir, base, Layout(chat_root).chat_data_dir, tmp_path / "out", SMALL,
                           log=lambda *_: None)
    assert report["answer_loss"]["windows"] >= 1 and report["answer_loss"]["base"]["answer_loss"] > 0
    assert report["bait"]["all"]["questions"] == 1
    assert json.loads((tmp_path / "out" / CHAT_EVAL).read_text())["base_model"] == str(base)


def test_a_base_that_is_the_chat_model_itself_is_one_line(chat_model_dir, chat_root, tmp_path):
    # was: a report of the chat model against itself, its "base" answers written by the chat model
    code, err = evaluate_chat_cli("--model", "fixture-chat", "--base", chat_model_dir, "--root", chat_root,
                                  "--years", "1818", "--bait_limit", "1", "--max_new_tokens", "4",
                                  "--out_dir", tmp_path / "out")
    assert code == 2 and err.startswith("error: the base model") and "chat model itself" in err
    assert err.count("\n") == 1 and not (tmp_path / "out").exists()


def test_a_base_recorded_on_another_machine_names_the_record_and_the_flag(chat_model_dir, chat_root, tmp_path):
    # was: "error: model folder /home/someone/... does not exist": a path the user never typed,
    # with no word of where it came from or of --base
    model = tmp_path / "moved-chat" / "final"
    shutil.copytree(chat_model_dir, model)
    info = json.loads((model / CHAT_INFO).read_text())
    info["base_model"] = "/home/someone/londonlm/09_models/checkpoints/base/final"
    (model / CHAT_INFO).write_text(json.dumps(info))
    code, err = evaluate_chat_cli("--model", model, "--root", chat_root, "--years", "1818", "--bait_limit", "1",
                                  "--max_new_tokens", "4", "--out_dir", tmp_path / "out")
    assert code == 2 and err.count("\n") == 1
    assert CHAT_INFO in err and info["base_model"] in err and "--base" in err
    assert not (tmp_path / "out").exists()


def test_a_year_given_twice_is_one_line_not_counted_twice(chat_model_dir, chat_root, tmp_path):
    # was: every question asked twice at 1818, "all" counting each answer twice
    code, err = evaluate_chat_cli("--model", "fixture-chat", "--root", chat_root, "--years", "1818", "1756", "1818",
                                  "--bait_limit", "1", "--max_new_tokens", "4", "--out_dir", tmp_path / "out")
    assert code == 2 and err == "error: year 1818 is given twice: give each year once\n"
    assert not (tmp_path / "out").exists()
    with pytest.raises(ChatRequestError, match="given twice"):  # the library (the pipeline's options) too
        ChatEvalOptions(years=(1756, 1756))
