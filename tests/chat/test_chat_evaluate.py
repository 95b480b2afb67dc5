"""Chat evaluation: the modern-bait list, anachronisms judged against the year asked, the
base model's view of the same answers, and the report with transcripts."""
from __future__ import annotations

import json

import pytest

from londonlm.chat.dataset import load_chat_dataset
from londonlm.chat.evaluate import (
    ChatEvalError, ChatEvalOptions, bait_hits, base_window_ids, evaluate_chat, human_eval_samples, load_bait, printed_answer)
from londonlm.evaluation.metrics.generation_quality import load_wordlist
from londonlm.chat.respond import ChatRequestError
from londonlm.core.layout import CHAT_EVAL, Layout


def test_bait_list_has_at_least_50_dated_questions():
    items = load_bait()
    assert len(items) >= 50 and len({i["id"] for i in items}) == len(items)
    for it in items:
        assert it["question"].endswith("?") and it["terms"] and 1700 < it["since"] < 2030
    assert {"telephone", "railway", "internet", "electricity"} <= {i["id"] for i in items}


def test_anachronism_depends_on_the_year_asked():
    railway = next(i for i in load_bait() if i["id"] == "railway")
    words = load_wordlist()
    answer = "I came up by the railway, sir, on the Tuesday."
    assert bait_hits(answer, railway, 1818, words) == ["railway"]
    assert bait_hits(answer, railway, 1851, words) == []
    assert bait_hits("I saw it on television.", railway, 1851, words) == ["television"]
    assert bait_hits("I came up by the railways.", railway, 1756, words) == ["railway"]
    assert bait_hits("I came by the rail.", railway, 1756, words) == []


def test_base_answer_is_the_first_printed_line():
    assert printed_answer(" In Fleet-street.\nQ. What") == ("In Fleet-street.", True)
    assert printed_answer("\n\n In Fleet-street. Q. Where next") == ("In Fleet-street.", True)
    assert printed_answer(" In Fleet-street, by") == ("In Fleet-street, by", False)


def test_base_sees_the_same_answer_as_printed_text(chat_root):
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(str(Layout(chat_root).run("base").final))
    window = [{"role": "system", "content": "Old Bailey, London, 1800."},
              {"role": "user", "content": "Where do you live?"},
              {"role": "assistant", "content": "In Fleet-street."}]
    ids, mask = base_window_ids(tok, window, 1800)
    assert tok.decode(ids) == ("<|endoftext|><|1800s|>Old Bailey, London, 1800.\n\n"
                               "Q. Where do you live?\nA. In Fleet-street.\n")
    assert tok.decode([t for t, m in zip(ids, mask) if m]) == " In Fleet-street."


def test_report_compares_chat_and_base(chat_model_dir, chat_root, tmp_path, monkeypatch):
    from londonlm.generation import model as interface

    asked, pick = [], interface.pick_device
    monkeypatch.setattr(interface, "pick_device", lambda device="auto": asked.append(device) or pick(device))
    layout = Layout(chat_root)
    opts = ChatEvalOptions(years=(1756, 1900), bait_limit=3, max_new_tokens=8, transcripts=2)
    report = evaluate_chat(chat_model_dir, layout.run("base").final, layout.chat_data_dir, tmp_path, opts,
                           log=lambda *_: None)
    assert asked == ["auto", "auto"]  # both models through the model interface, a GPU when there is one
    loss = report["answer_loss"]
    assert loss["answer_tokens"] > 0 and loss["windows"] >= 1
    assert loss["chat"]["answer_loss"] > 0 and loss["base"]["answer_loss"] > 0
    bait = report["bait"]
    assert set(bait["per_year"]) == {"1756", "1900"} and bait["all"]["questions"] == 6
    assert bait["per_year"]["1756"]["anachronistic_in_year"] == 3  # telephone, mobile, television
    assert bait["per_year"]["1900"]["anachronistic_in_year"] == 2  # not the telephone (1876)
    for m in ("chat", "base"):
        assert 0 <= bait["all"][m]["anachronism_rate"] <= 1 and "repeated_3gram_rate" in bait["all"][m]
        assert 0 <= bait["all"][m]["premise_accepted_rate"] <= 1
    assert json.loads((tmp_path / CHAT_EVAL).read_text())["answer_loss"] == loss
    lines = [json.loads(x) for x in (tmp_path / "chat_transcripts.jsonl").read_text().splitlines()]
    held_out = len(load_chat_dataset(layout.chat_data_dir)["validation"])
    assert len(lines) == min(2, held_out) + 6 and "printed_answer" in lines[0] and "chat" in lines[-1]
    assert "## Modern bait" in (tmp_path / "chat_transcripts.md").read_text()
    pack = human_eval_samples(lines)
    assert len(pack["chat"]) == len(lines) and len(pack["base"]) == 6 and len(pack["printed"]) == len(lines) - 6
    assert pack["base"][0]["prompt"] == "Old Bailey, London, 1756.\nQ. Did you ring him up on the telephone?"


def test_premise_acceptance_counts_yes_to_things_not_yet_invented():
    from londonlm.chat.evaluate import _bait_rates

    rec = dict(id="x", question="q", chat_hits=[], base_hits=[], chat_ended=True, base_ended=True)
    rates = _bait_rates([{**rec, "year": 1818, "since": 1876, "chat": "Yes, sir.", "base": "No."},
                         {**rec, "year": 1818, "since": 1876, "chat": "I never did.", "base": "yesterday"},
                         {**rec, "year": 1900, "since": 1876, "chat": "Yes.", "base": "Yes."}])
    assert rates["anachronistic_in_year"] == 2
    assert rates["chat"]["premise_accepted_rate"] == 0.5 and rates["base"]["premise_accepted_rate"] == 0.0


def _rooms(chat_model_dir, chat_root, years, n):
    from londonlm.chat.evaluate import bait_rooms
    from londonlm.generation import load_model

    chat, base = load_model(str(chat_model_dir)), load_model(str(Layout(chat_root).run("base").final))
    return bait_rooms(chat.model, chat.tokenizer, base.model, base.tokenizer, load_bait()[:n], years)


def test_questions_with_no_room_to_answer_are_passed_over_and_counted(chat_model_dir, chat_root, tmp_path):
    """A model whose context leaves no room for an answer after a long question (e.g. the micro
    preset's 64 tokens) is still evaluated: such a question is left out and counted, not fatal."""
    layout = Layout(chat_root)
    rooms = sorted(_rooms(chat_model_dir, chat_root, (1818,), 6).values())
    assert rooms[0] < rooms[-1]
    # as many new tokens as the shortest question leaves room for: the longer ones are passed over
    opts = ChatEvalOptions(years=(1818,), bait_limit=6, max_new_tokens=rooms[-1], transcripts=2)
    logged = []
    report = evaluate_chat(chat_model_dir, layout.run("base").final, layout.chat_data_dir, tmp_path, opts,
                           log=logged.append)
    fits = sum(r >= opts.max_new_tokens for r in rooms)
    assert 0 < fits < 6
    assert report["bait"]["questions_over_context"] == 6 - fits and report["bait"]["all"]["questions"] == fits
    assert any(f"{6 - fits} of 6 questions leave no room" in line for line in logged)


def test_no_question_with_room_to_answer_fails_before_the_slow_work(chat_model_dir, chat_root, tmp_path,
                                                                      monkeypatch):
    """With every bait question over the context the report would hold no answer: refused
    upfront, naming the --max_new_tokens that fits, before the answer loss is scored."""
    from londonlm.chat import evaluate as chat_evaluate

    monkeypatch.setattr(chat_evaluate, "answer_loss", lambda *a: pytest.fail("scored before the refusal"))
    layout = Layout(chat_root)
    fit = min(_rooms(chat_model_dir, chat_root, (1818,), 2).values())
    opts = ChatEvalOptions(years=(1818,), bait_limit=2, max_new_tokens=120, transcripts=2)  # 8 of 128 left
    with pytest.raises(ChatEvalError) as e:
        evaluate_chat(chat_model_dir, layout.run("base").final, layout.chat_data_dir, tmp_path / "out", opts,
                      log=lambda *_: None)
    assert str(e.value) == (f"no modern-bait question leaves room for 120 new tokens in the models' context: "
                            f"--max_new_tokens {fit} or less lets every question fit")
    assert not (tmp_path / "out").exists()


def _cli(argv) -> tuple[int, str]:
    import contextlib
    import io
    import runpy
    import sys

    from conftest import REPO

    err, old = io.StringIO(), sys.argv
    sys.argv = ["evaluate_chat.py", *map(str, argv)]
    try:
        with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()), \
                pytest.raises(SystemExit) as stop:
            runpy.run_path(str(REPO / "07_finetuning" / "evaluate_chat.py"), run_name="__main__")
    finally:
        sys.argv = old
    return stop.value.code, err.getvalue()


@pytest.mark.parametrize("years", [["1200", "3000"], ["1673"], ["1914"], ["1790", "x"]])
def test_years_outside_the_chat_eras_are_one_line(years, tmp_path):
    code, err = _cli(["--years", *years, "--root", tmp_path])
    assert code == 2 and err.startswith("error: --years: year must be a whole year from 1674 to 1913") \
        and err.count("\n") == 1
    assert list(tmp_path.iterdir()) == []
    with pytest.raises(ChatRequestError, match="from 1674 to 1913"):  # the library keeps the same rule
        ChatEvalOptions(years=(1200,))


def test_the_script_finishes_with_the_questions_that_fit(chat_model_dir, chat_root, tmp_path):
    rooms = sorted(_rooms(chat_model_dir, chat_root, (1818,), 6).values())
    code, err = _cli(["--model", "fixture-chat", "--root", chat_root, "--years", "1818", "--bait_limit", "6",
                      "--max_new_tokens", rooms[-1], "--out_dir", tmp_path])
    assert code == 0, err
    assert json.loads((tmp_path / CHAT_EVAL).read_text())["bait"]["all"]["questions"] >= 1
    assert (tmp_path / "human_eval").is_dir()


@pytest.mark.parametrize("where", ["chat", "base", "data", "data/inside"])
def test_a_report_folder_that_is_a_model_or_in_the_dataset_is_refused_first(where, chat_model_dir, chat_root):
    """Found by test_chat_flags_fuzz: ``--out_dir`` naming the chat model's folder (or the base
    model's, or the dataset) wrote the report's files among the model's; now one line names
    --out_dir and nothing in them changes."""
    from conftest import tree_digest

    layout = Layout(chat_root)
    base, data = layout.run("base").final, layout.chat_data_dir
    out = {"chat": chat_model_dir, "base": base, "data": data, "data/inside": data / "inside"}[where]
    before = [tree_digest(p) for p in (chat_model_dir, base, data)]
    code, err = _cli(["--model", chat_model_dir, "--base", base, "--root", chat_root, "--years", "1790",
                      "--bait_limit", "1", "--max_new_tokens", "2", "--out_dir", out])
    assert code == 2 and err.startswith(f"error: --out_dir {out} ") and err.count("\n") == 1, err
    assert [tree_digest(p) for p in (chat_model_dir, base, data)] == before
