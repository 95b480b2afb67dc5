"""Chat evaluation, against the base model it was fine-tuned from.

- Held-out answer loss: the validation conversations, scored on the answer text only. The
  chat model reads them in its template; the base model reads the same window as printed
  text (``Old Bailey, London, 1818.`` / ``Q. question`` / ``A. answer``, after its era token).
  The two tokenizations of an answer differ only at its first token, so both losses are the
  total NLL of the answer text divided by the same count (the chat encoding's answer tokens);
  bits per byte is given too.
- Modern bait (``londonlm/chat/data/modern_bait.jsonl``, 60 questions): each names a thing with the
  year it reached London (``since``). An answer is anachronistic for a year when it uses one of
  the question's terms and the year is before ``since``, or uses a word of the project's
  anachronism list (``londonlm/evaluation/data/anachronisms.txt``). Rates per year asked, chat and base.
- Answer length, repetition (repeated 3-grams), distinct 2-grams, and the share of answers
  the model ended itself; transcripts for the human evaluation pack.
"""
from __future__ import annotations

import json
import math
import re
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Sequence

from ..core import CHAT_EVAL, CHAT_INFO, LondonLMError, RunLayout, weights_sha256, write_json_atomic, write_text_atomic
from ..evaluation import BROUGHT_SAMPLES, distinct_n, load_wordlist, repeated_ngram_rate, words_of
from ..generation import context_length_of, encode_text, load_model
from ..tokens import EOT, era_token_for
from .dataset import load_chat_dataset, system_line
from .extract import PLACE
from .respond import ChatRequestError, ChatSettings, check_year, generate_reply
from .template import ChatIds, encode_chat, message_windows

BAIT_FILE = Path(__file__).resolve().parent / "data" / "modern_bait.jsonl"


@dataclass(frozen=True)
class ChatEvalOptions:
    years: tuple[int, ...] = (1756, 1818, 1851)   # the eras asked for (the dataset's three styles)
    max_new_tokens: int = 40
    temperature: float = 0.7
    top_p: float = 0.9
    seed: int = 1234
    bait_limit: int = 0                           # 0 = every bait question
    transcripts: int = 10                         # held-out conversations for the human pack
    max_conversations: int = 0                    # 0 = the whole validation split

    def __post_init__(self):
        if not self.years:
            raise ChatRequestError("no year to ask the bait questions at")
        twice = next((y for i, y in enumerate(self.years) if y in self.years[:i]), None)
        if twice is not None:  # its questions would be asked and counted twice, in "all" too
            raise ChatRequestError(f"year {twice} is given twice: give each year once")
        for year in self.years:
            check_year(year)  # the eras the server and the REPL take: the model was tuned on no other


class ChatEvalError(LondonLMError, ValueError):
    """A chat evaluation that cannot measure anything as asked (the message says what to change)."""


def check_recorded_base(chat_dir: Path, base_dir: Path) -> None:
    """ChatEvalError when ``base_dir``, the base the chat model's chat_info.json names, no longer
    holds the weights its chat run was tuned from (the run's run_info.json records their hash):
    the base run trained on or retrained since. The report would have called another model "the
    base model it was fine-tuned from", its figures and the human pack's base answers that
    model's. No record (a model from elsewhere): nothing to check."""
    record = RunLayout(Path(chat_dir).parent).read_run_info()
    inputs = record.get("inputs") if isinstance(record.get("inputs"), dict) else {}
    tuned_from = inputs.get("base_weights")
    if isinstance(tuned_from, str) and tuned_from and weights_sha256(base_dir) != tuned_from:
        raise ChatEvalError(
            f"the base model at {base_dir}, named by {Path(chat_dir) / CHAT_INFO}, no longer holds the "
            f"weights the chat model was fine-tuned from (they changed since: "
            f"{RunLayout(Path(chat_dir).parent).run_info} records others); pass --base with the model it "
            f"was tuned from, or --base {base_dir} to compare with that model as it is now")


def load_bait(path: str | Path | None = None) -> list[dict]:
    items = [json.loads(line) for line in Path(path or BAIT_FILE).read_text(encoding="utf-8").splitlines()
             if line.strip()]
    for it in items:
        if not {"id", "question", "terms", "since"} <= set(it):
            raise ValueError(f"bait item {it} lacks id/question/terms/since")
    return items


def bait_hits(text: str, item: dict, year: int, wordlist: frozenset[str]) -> list[str]:
    """The anachronisms in an answer: the question's terms when ``year`` < ``since``, and
    any word of the anachronism list."""
    low = " ".join(words_of(text))
    hits = []
    if year < item["since"]:
        for term in item["terms"]:
            t = " ".join(words_of(term))
            if re.search(rf"(?<![\w]){re.escape(t)}(?:s|es)?(?![\w])", low):
                hits.append(term)
    hits += [w for w in words_of(text) if w in wordlist]
    return hits


# --------------------------------------------------------------------------- answer loss

def base_window_ids(tokenizer, window: Sequence[dict], year: int | None) -> tuple[list[int], list[bool]]:
    """A chat window as the base model's printed text, with the answer positions marked."""
    vocab = tokenizer.get_vocab()
    ids = [opener] if (opener := _document_opener(tokenizer)) is not None else []
    era = era_token_for(tokenizer, year) if year else None
    if era in vocab:
        ids.append(vocab[era])
    mask = [False] * len(ids)

    def add(text: str, answer: bool = False) -> None:
        t = encode_text(tokenizer, text)
        ids.extend(t)
        mask.extend([answer] * len(t))

    for m in window:
        if m["role"] == "system":
            add(m["content"] + "\n\n")
        elif m["role"] == "user":
            add(f"Q. {m['content']}\nA.")
        else:
            add(" " + m["content"], answer=True)
            add("\n")
    return ids, mask


def _document_opener(tokenizer) -> int | None:
    """The id a document starts with: ``<|endoftext|>`` for a londonlm tokenizer; a base of
    another family (``--base`` may name any causal model) opens with its own bos, if it has one."""
    opener = tokenizer.get_vocab().get(EOT)
    return opener if opener is not None else tokenizer.bos_token_id


def _answer_nll(model, ids: list[int], mask: list[bool]) -> float:
    import torch

    with torch.inference_mode():
        logits = model(torch.tensor([ids], device=model.device)).logits[0, :-1].float()
    nll = torch.nn.functional.cross_entropy(logits, torch.tensor(ids[1:], device=logits.device), reduction="none")
    return float(nll[torch.tensor(mask[1:], device=logits.device)].sum())


def answer_loss(chat_model, chat_tok, base_model, base_tok, rows) -> dict:
    """Held-out answer loss of both models on the same answers (see module docstring)."""
    ids = ChatIds.of(chat_tok)
    # the context as the model interface reads it: a base of another architecture names it otherwise
    max_len = min(context_length_of(chat_model), context_length_of(base_model))
    chat_nats = base_nats = 0.0
    tokens = nbytes = skipped = windows_used = 0  # skipped: exchanges too long for the context
    for row in rows:
        def measure(msgs):  # a window must fit both models' forms of it
            return max(len(encode_chat(chat_tok, msgs, ids=ids)), len(base_window_ids(base_tok, msgs, year)[0]))

        year = row.get("year")
        pieces, dropped = message_windows(chat_tok, row["messages"], max_len, ids=ids, measure=measure)
        skipped += dropped
        for window in pieces:
            enc = encode_chat(chat_tok, window, ids=ids)
            b_ids, b_mask = base_window_ids(base_tok, window, year)
            chat_nats += _answer_nll(chat_model, enc.input_ids, enc.answer_mask)
            base_nats += _answer_nll(base_model, b_ids, b_mask)
            tokens += sum(enc.answer_mask)
            nbytes += sum(len(m["content"].encode()) for m in window if m["role"] == "assistant")
            windows_used += 1
    if not tokens:
        return {"windows": 0, "exchanges_over_context": skipped}
    out = {"windows": windows_used, "exchanges_over_context": skipped, "answer_tokens": tokens,
           "answer_bytes": nbytes}
    for name, nats in (("chat", chat_nats), ("base", base_nats)):
        out[name] = {"answer_loss": nats / tokens, "answer_perplexity": math.exp(nats / tokens),
                     "answer_bits_per_byte": nats / math.log(2) / nbytes}
    return out


# --------------------------------------------------------------------------- modern bait

def base_answer(model, tokenizer, year: int, question: str, settings: ChatSettings,
                place: str = PLACE) -> tuple[str, bool]:
    """The base model's answer to a printed-style question; (text, ended by itself)."""
    import torch

    window = [{"role": "system", "content": system_line(year, place)}, {"role": "user", "content": question}]
    ids, _ = base_window_ids(tokenizer, window, year)
    if settings.seed is not None:
        torch.manual_seed(settings.seed)
    with torch.inference_mode():
        out = model.generate(torch.tensor([ids], device=model.device),
                             attention_mask=torch.ones(1, len(ids), dtype=torch.long, device=model.device),
                             do_sample=True, temperature=settings.temperature, top_p=settings.top_p,
                             max_new_tokens=settings.max_new_tokens, pad_token_id=tokenizer.pad_token_id,
                             eos_token_id=tokenizer.get_vocab().get(EOT, tokenizer.eos_token_id))
    return printed_answer(tokenizer.decode(out[0, len(ids):], skip_special_tokens=True))


def printed_answer(text: str) -> tuple[str, bool]:
    """The answer in a printed-style continuation: from its first words to the end of that
    line or the next "Q." (the next question); (text, whether it ended there)."""
    parts = re.split(r"\n| Q\. ", text.lstrip(), maxsplit=1)
    return parts[0].strip(), len(parts) > 1


def _text_figures(answers: list[str], ended: list[bool]) -> dict:
    toks = [words_of(a) for a in answers]
    rep = [r for r in (repeated_ngram_rate(t, 3) for t in toks) if r is not None]
    dist = [d for d in (distinct_n(t, 2) for t in toks) if d is not None]
    return {"answers": len(answers), "words_mean": sum(map(len, toks)) / len(toks) if toks else 0,
            "repeated_3gram_rate": sum(rep) / len(rep) if rep else 0.0,
            "distinct_2": sum(dist) / len(dist) if dist else 0.0,
            "ended_share": sum(ended) / len(ended) if ended else 0.0}


def _bait_messages(year: int, question: str, place: str) -> list[dict]:
    return [{"role": "system", "content": system_line(year, place)}, {"role": "user", "content": question}]


def bait_rooms(chat_model, chat_tok, base_model, base_tok, items: list[dict], years: Sequence[int],
               place: str = PLACE) -> dict[tuple[int, str], int]:
    """``{(year, id): n}``: the most new tokens an answer to each bait question can have in both
    models' contexts (the chat model reads it in its template, the base model as print)."""
    ids = ChatIds.of(chat_tok)
    rooms = {}
    for year in years:
        for item in items:
            messages = _bait_messages(year, item["question"], place)
            chat_len = len(encode_chat(chat_tok, messages, add_generation_prompt=True, ids=ids))
            base_len = len(base_window_ids(base_tok, messages, year)[0])
            rooms[year, item["id"]] = min(context_length_of(chat_model) - chat_len,
                                          context_length_of(base_model) - base_len)
    return rooms


def check_bait_fits(rooms: dict[tuple[int, str], int], max_new_tokens: int) -> int:
    """The number of bait questions that leave no room for ``max_new_tokens`` (they are passed
    over and counted); ChatEvalError, before any slow work, when that is every one of them: a
    report with no bait answer would say nothing about anachronisms, the point of the stage."""
    over = sum(room < max_new_tokens for room in rooms.values())
    if rooms and over == len(rooms):
        fits_all, fits_some = min(rooms.values()), max(rooms.values())
        fix = (f"--max_new_tokens {fits_all} or less lets every question fit" if fits_all >= 1 else
               f"--max_new_tokens {fits_some} or less lets some fit" if fits_some >= 1 else
               "no answer fits at all: this model's context is too short for the bait questions")
        raise ChatEvalError(f"no modern-bait question leaves room for {max_new_tokens} new tokens in the "
                            f"models' context: {fix}")
    return over


def bait_eval(chat_model, chat_tok, base_model, base_tok, items: list[dict], options: ChatEvalOptions,
              place: str = PLACE, rooms: dict[tuple[int, str], int] | None = None) -> dict:
    """Every bait question at every year, answered by both models; rates and transcripts. A
    question that leaves no room to answer in either model (``rooms``) is passed over and counted."""
    wordlist = load_wordlist()
    if rooms is None:
        rooms = bait_rooms(chat_model, chat_tok, base_model, base_tok, items, options.years, place)
    records, over_context = [], 0
    for y_i, year in enumerate(options.years):
        for i, item in enumerate(items):
            s = ChatSettings(max_new_tokens=options.max_new_tokens, temperature=options.temperature,
                             top_p=options.top_p, seed=options.seed + 1000 * y_i + i)
            if rooms[year, item["id"]] < s.max_new_tokens:
                over_context += 1
                continue
            reply = generate_reply(chat_model, chat_tok, _bait_messages(year, item["question"], place), s)
            base_text, base_ended = base_answer(base_model, base_tok, year, item["question"], s, place)
            records.append({"id": item["id"], "year": year, "question": item["question"],
                            "since": item["since"], "chat": reply.text, "chat_ended": reply.finish_reason == "stop",
                            "chat_hits": bait_hits(reply.text, item, year, wordlist),
                            "base": base_text, "base_ended": base_ended,
                            "base_hits": bait_hits(base_text, item, year, wordlist)})
    return {"per_year": {str(y): _bait_rates([r for r in records if r["year"] == y]) for y in options.years},
            "all": _bait_rates(records), "questions_over_context": over_context, "records": records}


def _bait_rates(records: list[dict]) -> dict:
    """Per model: share of answers with an anachronism, anachronistic words per word, and the
    share of answers to questions about things not yet in existence that begin "Yes"
    (accepting the premise: a tiny model seldom names the modern thing, but may agree to it)."""
    impossible = [r for r in records if r["since"] > r["year"]]
    out = {"questions": len(records), "anachronistic_in_year": len(impossible)}
    for m in ("chat", "base"):
        words = sum(len(words_of(r[m])) for r in records)
        yes = sum(bool(re.match(r"\W*yes\b", r[m], re.I)) for r in impossible)
        out[m] = {"anachronism_rate": sum(bool(r[f"{m}_hits"]) for r in records) / len(records) if records else 0,
                  "anachronistic_word_rate": sum(len(r[f"{m}_hits"]) for r in records) / words if words else 0,
                  "premise_accepted_rate": yes / len(impossible) if impossible else 0.0,
                  **_text_figures([r[m] for r in records], [r[f"{m}_ended"] for r in records])}
    return out


# --------------------------------------------------------------------------- the stage

def held_out_transcripts(chat_model, chat_tok, rows, n: int, options: ChatEvalOptions) -> list[dict]:
    """For the human pack: held-out questions, the printed answer and the chat model's (a
    question too long to be answered within the context is passed over)."""
    out = []
    for i, row in enumerate(rows[:n]):
        msgs = row["messages"]
        s = ChatSettings(max_new_tokens=options.max_new_tokens, temperature=options.temperature,
                         top_p=options.top_p, seed=options.seed + i)
        try:
            reply = generate_reply(chat_model, chat_tok, [{"role": m["role"], "content": m["content"]}
                                                           for m in msgs[:2]], s)
        except ChatRequestError:  # a question too long for the context leaves no room to answer
            continue
        out.append({"id": row["id"], "year": row["year"], "source_file": row["source_file"],
                    "system": msgs[0]["content"], "question": msgs[1]["content"],
                    "printed_answer": msgs[2]["content"], "model_answer": reply.text})
    return out


def human_eval_samples(records: list[dict]) -> dict[str, list[dict]]:
    """Chat transcripts in the human evaluation pack's form, ``{model: [{"prompt", "text"}]}``
    (for ``londonlm.evaluation.human_eval.export_blind``): the chat model's answers, the base
    model's to the bait questions, and the printed answers to the held-out ones as a baseline."""
    out: dict[str, list[dict]] = {"chat": [], "base": [], "printed": []}
    for r in records:
        if "printed_answer" in r:
            prompt = f"{r['system']}\nQ. {r['question']}"
            out["chat"].append({"prompt": prompt, "text": r["model_answer"]})
            out["printed"].append({"prompt": prompt, "text": r["printed_answer"]})
        else:
            prompt = f"{system_line(r['year'])}\nQ. {r['question']}"
            out["chat"].append({"prompt": prompt, "text": r["chat"]})
            out["base"].append({"prompt": prompt, "text": r["base"]})
    return out


# How the chat evaluation's transcripts are labelled in the human evaluation pack; ``{model}``
# becomes the chat model's name there.
PACK_LABELS = {"chat": "{model} (chat answers)", "base": "base model (modern-bait answers)",
               "printed": "printed answers (Old Bailey Proceedings)"}


def write_pack_samples(records: list[dict], out_dir: Path) -> None:
    """The transcripts as the items this model brings to a human evaluation pack
    (``londonlm.evaluation``'s ``BROUGHT_SAMPLES`` beside ``chat_eval.json``)."""
    rows = [{"label": PACK_LABELS[kind], **row}
            for kind, items in human_eval_samples(records).items() for row in items]
    write_text_atomic(out_dir / BROUGHT_SAMPLES, "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows))


def transcripts_markdown(transcripts: list[dict], bait_records: list[dict]) -> str:
    lines = ["# Chat transcripts", "", "## Held-out questions (printed answer vs model)", ""]
    for t in transcripts:
        lines += [f"**{t['system']}** ({t['id']})", "", f"> Q. {t['question']}", ">",
                  f"> A. (printed) {t['printed_answer']}", ">", f"> A. (model) {t['model_answer']}", ""]
    lines += ["## Modern bait", ""]
    for r in bait_records:
        lines += [f"**{r['year']}**: {r['question']}", "", f"- chat: {r['chat']}", f"- base: {r['base']}", ""]
    return "\n".join(lines)


def evaluate_chat(chat_dir: Path, base_dir: Path, data_dir: Path, out_dir: Path,
                  options: ChatEvalOptions = ChatEvalOptions(), log=print) -> dict:
    """Answer loss, bait anachronisms and transcripts; writes ``chat_eval.json``,
    ``chat_transcripts.jsonl`` and ``chat_transcripts.md`` under ``out_dir``. Both models load
    through the model interface, on a GPU when there is one (scores in fp32 either way)."""
    from .respond import read_chat_info

    if Path(base_dir).resolve() == Path(chat_dir).resolve():  # a report of the model against itself
        raise ChatEvalError(f"the base model {base_dir} is the chat model itself: compare it with the model it "
                            f"was tuned from (leave --base unset) or another base model")
    place = read_chat_info(chat_dir).get("place") or PLACE
    rows = list(load_chat_dataset(data_dir)["validation"])
    if options.max_conversations:
        rows = rows[:options.max_conversations]
    chat, base = load_model(str(chat_dir)), load_model(str(base_dir))
    chat_model, chat_tok, base_model, base_tok = chat.model, chat.tokenizer, base.model, base.tokenizer
    items = load_bait()
    items = items[:options.bait_limit] if options.bait_limit else items
    rooms = bait_rooms(chat_model, chat_tok, base_model, base_tok, items, options.years, place)
    over = check_bait_fits(rooms, options.max_new_tokens)  # before the answer loss, the slow part
    if over:
        log(f"modern bait: {over} of {len(rooms)} questions leave no room for {options.max_new_tokens} new "
            f"tokens in the context; passed over (fewer with a lower --max_new_tokens)")
    loss = answer_loss(chat_model, chat_tok, base_model, base_tok, rows)
    if loss.get("answer_tokens"):
        log(f"held-out answer loss: chat {loss['chat']['answer_loss']:.4f}, base {loss['base']['answer_loss']:.4f} "
            f"({loss['answer_tokens']:,} answer tokens in {loss['windows']} windows)")
    bait = bait_eval(chat_model, chat_tok, base_model, base_tok, items, options, place, rooms)
    for year, r in bait["per_year"].items():
        log(f"modern bait {year}: anachronistic answers chat {r['chat']['anachronism_rate']:.1%}, "
            f"base {r['base']['anachronism_rate']:.1%} ({r['questions']} questions)")
    transcripts = held_out_transcripts(chat_model, chat_tok, rows, options.transcripts, options)
    report = {"chat_model": str(chat_dir), "base_model": str(base_dir), "dataset": str(data_dir),
              "options": asdict(options), "answer_loss": loss,
              "bait": {k: v for k, v in bait.items() if k != "records"}}
    write_text_atomic(out_dir / "chat_transcripts.jsonl",
                      "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in transcripts + bait["records"]))
    write_text_atomic(out_dir / "chat_transcripts.md", transcripts_markdown(transcripts, bait["records"]))
    write_pack_samples(transcripts + bait["records"], out_dir)
    write_json_atomic(out_dir / CHAT_EVAL, report)
    return report
