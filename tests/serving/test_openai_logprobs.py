"""What evaluation tools need from /v1/completions: ``logprobs`` (the chosen token's and the
likeliest alternatives'), ``echo`` with the prompt's own log-probabilities, prompts given as
token ids, ``max_tokens: 0``; and lm-evaluation-harness's ``local-completions`` model, pointed
at a loopback server, scoring as lm-eval scores the same folder in-process."""
from __future__ import annotations

import logging

import httpx
import pytest
import torch

from conftest import SAMPLE_TEXTS, serving_in_thread, short_probes
from londonlm.generation import encode_prompt, load_model
from londonlm.serving import create_app

pytestmark = pytest.mark.network_local


@pytest.fixture(scope="module")
def lm(tiny_model_dir):
    return load_model(str(tiny_model_dir), device="cpu")


@pytest.fixture(scope="module")
def base(lm):
    with serving_in_thread(create_app(lm=lm, max_prompt_chars=300, max_new_tokens_limit=48)) as url:
        yield url


def complete(base, lm, **body) -> httpx.Response:
    return httpx.post(f"{base}/v1/completions", json={"model": lm.model_id, **body}, timeout=60)


def reference(lm, ids: list[int]) -> torch.Tensor:
    """log P(ids[i] | ids[:i]) for i >= 1, straight from the model."""
    with torch.inference_mode():
        logits = lm.model(input_ids=torch.tensor([ids])).logits[0, :-1].float()
    return torch.log_softmax(logits, -1).gather(1, torch.tensor(ids[1:])[:, None])[:, 0]


def test_echo_with_max_tokens_zero_scores_the_prompt(base, lm):
    ids = encode_prompt(lm.tokenizer, "It was a cold morning in Cheapside")
    r = complete(base, lm, prompt=ids, max_tokens=0, echo=True, logprobs=2)
    assert r.status_code == 200, r.text
    choice = r.json()["choices"][0]
    lp = choice["logprobs"]
    assert choice["text"] == lm.tokenizer.decode(ids) and choice["finish_reason"] == "length"
    assert len(lp["tokens"]) == len(lp["token_logprobs"]) == len(lp["top_logprobs"]) == len(ids)
    assert lp["token_logprobs"][0] is None and lp["top_logprobs"][0] is None
    assert lp["token_logprobs"][1:] == pytest.approx(reference(lm, ids).tolist(), abs=1e-4)
    assert all(len(top) <= 3 and max(top.values()) >= chosen - 1e-6 and chosen in top.values()
               for top, chosen in zip(lp["top_logprobs"][1:], lp["token_logprobs"][1:]))
    assert "".join(lp["tokens"]) == lm.tokenizer.decode(ids)
    assert lp["text_offset"][1] == len(lp["tokens"][0])
    assert r.json()["usage"] == {"prompt_tokens": len(ids), "completion_tokens": 0, "total_tokens": len(ids)}


def test_a_text_prompt_with_max_tokens_zero_generates_nothing(base, lm):
    body = complete(base, lm, prompt="Upon my word", max_tokens=0, echo=True, logprobs=1).json()
    ids = encode_prompt(lm.tokenizer, "Upon my word")
    assert body["choices"][0]["text"] == "Upon my word" and body["usage"]["completion_tokens"] == 0
    assert body["choices"][0]["logprobs"]["token_logprobs"][1:] == pytest.approx(reference(lm, ids).tolist(),
                                                                                  abs=1e-4)


def assert_offsets_index_the_text(choice: dict) -> None:
    """OpenAI's meaning, which lm-eval reads: ``text[text_offset[i]:]`` starts with ``tokens[i]``;
    here every character of the text is in exactly one token's piece, in order."""
    text, lp = choice["text"], choice["logprobs"]
    assert len(lp["tokens"]) == len(lp["text_offset"]) == len(lp["token_logprobs"])
    for i, (piece, at) in enumerate(zip(lp["tokens"], lp["text_offset"])):
        assert text[at:].startswith(piece), (i, piece, at, text)
    assert "".join(lp["tokens"]) == text
    assert lp["text_offset"] == [sum(map(len, lp["tokens"][:i])) for i in range(len(lp["tokens"]))]


# non-ASCII: BPE on bytes splits these characters between tokens (checked below)
OFFSET_PROMPTS = ["Up betimes", "Café naïve: “quoted” 日本語 ✠ 𝔊 done", "  two  spaces\nand a line",
                  "<|endoftext|> typed, as text"]


@pytest.mark.parametrize("prompt", OFFSET_PROMPTS)
@pytest.mark.parametrize("echo", [True, False])
@pytest.mark.parametrize("sampling", [{"temperature": 0}, {"temperature": 2.0, "top_k": 0, "top_p": 1.0, "seed": 4}])
def test_text_offset_indexes_the_returned_text(base, lm, prompt, echo, sampling):
    """``echo`` on "Up betimes" once gave text "Up betimes theg" but tokens ["<|endoftext|>",
    "U", ...] at offsets [0, 13, ...]. The <|endoftext|> the server puts before a text prompt is
    not in the text: it is reported as "" at offset 0, its log-probability None as before."""
    r = complete(base, lm, prompt=prompt, max_tokens=12, echo=echo, logprobs=1, **sampling)
    assert r.status_code == 200, r.text
    choice = r.json()["choices"][0]
    assert_offsets_index_the_text(choice)
    lp, ids = choice["logprobs"], encode_prompt(lm.tokenizer, prompt)
    if echo:
        assert choice["text"].startswith(prompt) and len(lp["tokens"]) >= len(ids)
        assert lp["tokens"][0] == "" and lp["text_offset"][0] == 0 and lp["token_logprobs"][0] is None


def test_a_token_that_splits_a_character_is_empty_and_the_next_carries_it(base, lm):
    """A byte-level token ending inside a multibyte character adds the characters it completes
    and none of the one it starts; the token completing that character carries all of it. So
    after each token the pieces so far are exactly the whole characters its bytes make."""
    prompt = OFFSET_PROMPTS[1]
    ids = encode_prompt(lm.tokenizer, prompt)

    def whole_characters(n: int) -> str:
        return lm.tokenizer.decode(ids[:n], skip_special_tokens=True).rstrip("\ufffd")

    split = [i for i in range(1, len(ids)) if lm.tokenizer.decode(ids[:i + 1]).endswith("\ufffd")]
    assert split, "the fixture tokenizer keeps these characters whole: the test tests nothing"
    choice = complete(base, lm, prompt=prompt, max_tokens=0, echo=True, logprobs=0).json()["choices"][0]
    pieces = choice["logprobs"]["tokens"]
    assert choice["text"] == prompt and "\ufffd" not in "".join(pieces)
    assert ["".join(pieces[:i + 1]) for i in range(len(ids))] == [whole_characters(i + 1) for i in range(len(ids))]
    assert any(pieces[i] == "" for i in split)  # a token that is only the first bytes of a character
    assert_offsets_index_the_text(choice)


def test_token_id_prompts_show_their_control_tokens_and_a_stop_cuts_the_pieces(base, lm):
    ids = encode_prompt(lm.tokenizer, "Up betimes")
    choice = complete(base, lm, prompt=ids, max_tokens=6, echo=True, logprobs=0, temperature=0).json()["choices"][0]
    assert choice["text"].startswith("<|endoftext|>Up betimes") and choice["logprobs"]["tokens"][0] == "<|endoftext|>"
    assert_offsets_index_the_text(choice)
    whole = complete(base, lm, prompt="Up betimes", max_tokens=12, temperature=0).json()["choices"][0]["text"]
    stop = whole.strip()[2:4]
    assert len(stop) == 2, whole
    cut = complete(base, lm, prompt="Up betimes", max_tokens=12, temperature=0, logprobs=0, echo=True,
                   stop=[stop]).json()["choices"][0]
    assert cut["text"] == "Up betimes" + whole[:whole.index(stop)] and cut["finish_reason"] == "stop"
    assert_offsets_index_the_text(cut)


def test_greedy_completion_tokens_are_the_likeliest(base, lm):
    """lm-eval's ``is_greedy``: each generated token's log-probability is the top one."""
    r = complete(base, lm, prompt="The watch was found", max_tokens=5, temperature=0, logprobs=1)
    assert r.status_code == 200, r.text
    lp = r.json()["choices"][0]["logprobs"]
    assert 1 <= len(lp["tokens"]) <= 5 and "".join(lp["tokens"]) == r.json()["choices"][0]["text"]
    for chosen, top in zip(lp["token_logprobs"], lp["top_logprobs"]):
        assert chosen == pytest.approx(max(top.values()), abs=1e-5)
    prompt = encode_prompt(lm.tokenizer, "The watch was found")
    echoed = complete(base, lm, prompt=prompt, max_tokens=5, temperature=0, logprobs=1, echo=True).json()
    assert echoed["choices"][0]["logprobs"]["token_logprobs"][len(prompt):] == pytest.approx(lp["token_logprobs"],
                                                                                            abs=1e-5)


def test_token_id_prompts_generate_what_the_text_does(base, lm):
    text = "Upon my word"
    by_text = complete(base, lm, prompt=text, max_tokens=6, temperature=0).json()["choices"][0]["text"]
    ids = encode_prompt(lm.tokenizer, text)
    batch = complete(base, lm, prompt=[ids, ids[:2]], max_tokens=6, temperature=0).json()
    assert [c["index"] for c in batch["choices"]] == [0, 1]
    assert batch["choices"][0]["text"] == by_text


@pytest.mark.parametrize("body, param", [
    ({"prompt": [], "max_tokens": 1}, "prompt"),
    ({"prompt": [[]], "max_tokens": 1}, "prompt"),
    ({"prompt": [-1, 5]}, "prompt"),
    ({"prompt": [10**9]}, "prompt"),
    ({"prompt": [1, "a"]}, "prompt"),
    ({"prompt": [True, 2]}, "prompt"),
    ({"prompt": [5] * 64, "max_tokens": 1}, "prompt"),       # no room left in the 64-token context
    ({"prompt": [5] * 65, "max_tokens": 0, "echo": True}, "prompt"),
    ({"prompt": "x", "logprobs": 6}, "logprobs"),
    ({"prompt": "x", "logprobs": -1}, "logprobs"),
    ({"prompt": "x", "max_tokens": -1}, "max_tokens"),
    ({"prompt": "x", "logprobs": 1, "stream": True}, "stream"),
    ({"prompt": "x", "max_tokens": 0, "stream": True}, "stream"),
])
def test_bad_scoring_requests_get_openai_errors(base, lm, body, param):
    r = complete(base, lm, **body)
    assert r.status_code == 400, r.text
    err = r.json()["error"]
    assert err["type"] == "invalid_request_error" and err["message"] and (err["param"] or "").startswith(param)


def test_a_prompt_at_the_full_context_is_scored(base, lm):
    ids = encode_prompt(lm.tokenizer, " ".join(SAMPLE_TEXTS))[:lm.context_length]
    lp = complete(base, lm, prompt=ids, max_tokens=0, echo=True, logprobs=0).json()["choices"][0]["logprobs"]
    assert len(lp["token_logprobs"]) == lm.context_length
    assert lp["token_logprobs"][1:] == pytest.approx(reference(lm, ids).tolist(), abs=1e-4)
    # logprobs 0: no alternatives, but the chosen token itself, as OpenAI reports it
    assert [top for top in lp["top_logprobs"][1:]] == [
        {lm.tokenizer.decode([token]): pytest.approx(value)} for token, value in zip(ids[1:], lp["token_logprobs"][1:])]


def test_a_chosen_token_outside_the_top_is_reported_beside_them(base, lm):
    """OpenAI: "the API will always return the logprob of the sampled token, so there may be up to
    logprobs+1 elements". A hot sample, or an echoed prompt, holds tokens other than the likeliest,
    and clients read their probabilities from ``top_logprobs``. (Plain words, so that no two
    tokens decode to the same key, as the halves of a character would.)"""
    ids = encode_prompt(lm.tokenizer, "Tom Jones was taken up at Newgate for a theft of ten shillings")
    lp = complete(base, lm, prompt=ids, max_tokens=0, echo=True, logprobs=1).json()["choices"][0]["logprobs"]
    outside = 0
    for token, chosen, top in zip(ids[1:], lp["token_logprobs"][1:], lp["top_logprobs"][1:]):
        assert top[lm.tokenizer.decode([token])] == pytest.approx(chosen, abs=1e-6)
        assert len(top) in (1, 2) and max(top.values()) >= chosen - 1e-6
        outside += len(top) == 2
    assert outside, lp  # a tiny model's likeliest token is not the text's at every one of these


def text_of(lm, lo: int, hi: int) -> str:
    """A prefix of the sample texts that encodes (``<|endoftext|>`` first) to lo..hi tokens."""
    whole = " ".join(SAMPLE_TEXTS)
    text = next(whole[:n] for n in range(len(whole)) if len(encode_prompt(lm.tokenizer, whole[:n])) >= lo)
    assert len(encode_prompt(lm.tokenizer, text)) <= hi and len(text) <= 300  # the server's character limit
    return text


@pytest.mark.parametrize("max_tokens", [0, 1])
@pytest.mark.parametrize("as_list", [False, True])
def test_a_text_prompt_longer_than_the_context_is_refused_as_token_ids_are(base, lm, max_tokens, as_list):
    """Once scored only its last 64 tokens (200, the offsets covering a fraction of the text)."""
    text = text_of(lm, 70, 80)
    n = len(encode_prompt(lm.tokenizer, text))
    r = complete(base, lm, prompt=["Up", text] if as_list else text, max_tokens=max_tokens, echo=True, logprobs=0)
    assert r.status_code == 400, r.text[:300]
    err = r.json()["error"]
    assert err["param"] == "prompt" and err["code"] == "context_length_exceeded"
    assert f"{n} tokens" in err["message"] and "(64" in err["message"]
    assert complete(base, lm, prompt="Up", max_tokens=1).status_code == 200  # still serving


def test_a_text_prompt_is_never_cut_to_make_room_for_new_tokens(base, lm):
    """A text prompt that fits is generated from whole (as token ids are): max_tokens is cut to
    the room left, and the echo's scores cover every prompt token."""
    text = text_of(lm, 40, 44)
    ids = encode_prompt(lm.tokenizer, text)
    r = complete(base, lm, prompt=text, max_tokens=48, echo=True, logprobs=0, temperature=0)
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["usage"]["prompt_tokens"] == len(ids)
    assert body["usage"]["completion_tokens"] <= lm.context_length - len(ids)
    lp = body["choices"][0]["logprobs"]
    assert lp["token_logprobs"][1:len(ids)] == pytest.approx(reference(lm, ids).tolist(), abs=1e-4)
    assert body["choices"][0]["text"].startswith(text)


# --------------------------------------------------------------------------- lm-eval, served

@pytest.fixture(scope="module")
def lm_eval_inputs(tmp_path_factory, lm):
    pytest.importorskip("lm_eval")
    pytest.importorskip("tenacity")
    logging.getLogger("lm_eval").setLevel(logging.ERROR)
    folder = tmp_path_factory.mktemp("texts")
    for i, text in enumerate(SAMPLE_TEXTS):
        (folder / f"doc{i}.txt").write_text(text[:400], encoding="utf-8")   # several 64-token windows each
    return folder, short_probes(folder.parent / "probes.jsonl", lm.tokenizer, n=10)


def test_lm_eval_scores_the_served_model_as_it_scores_the_folder(base, tiny_model_dir, lm_eval_inputs):
    from londonlm.evaluation.harness import run_harness

    texts, probes = lm_eval_inputs
    tasks = ["london_text_bpb", "london_probes"]
    # served, lm-eval's windows are two tokens shorter (one kept for the token it asks the server
    # for, one for the window's context): the same windows in-process, for a like-for-like check
    local = run_harness(tiny_model_dir, tasks, text_dir=texts, probes_path=probes, max_length=62)
    served = run_harness(tiny_model_dir, tasks, text_dir=texts, probes_path=probes, served_at=base)
    assert served["london_text_bpb"]["bits_per_byte"] == pytest.approx(local["london_text_bpb"]["bits_per_byte"],
                                                                       rel=0.005)
    assert served["london_probes"]["acc"] == local["london_probes"]["acc"]
    assert served["london_probes"]["acc_norm"] == local["london_probes"]["acc_norm"]
    assert served["london_probes"]["sample_len"] == local["london_probes"]["sample_len"] >= 6


def test_no_server_is_one_clear_error(tiny_model_dir, lm_eval_inputs):
    from londonlm.evaluation.harness import HarnessError, run_harness

    texts, probes = lm_eval_inputs
    with pytest.raises(HarnessError, match="no londonlm server answers at http://127.0.0.1:9"):
        run_harness(tiny_model_dir, ["london_probes"], probes_path=probes, served_at="http://127.0.0.1:9")
