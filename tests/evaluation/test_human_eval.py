"""Human evaluation: blind export (CSV + self-contained HTML + separate key), import of filled
ratings, aggregation with confidence intervals."""
from __future__ import annotations

import csv
import json
import re

import pytest

from londonlm.chat.evaluate import write_pack_samples
from londonlm.evaluation.human_eval import (CRITERIA, SCALE, RatingsError, aggregate, export_blind,
                                            import_ratings, mean_ci, render_form)

SAMPLES = {
    "model-A": [{"prompt": f"p{i}", "text": f"alpha text {i}"} for i in range(6)],
    "model-B": [{"prompt": f"p{i}", "text": f"beta text {i}"} for i in range(6)],
}


def test_export_is_blind_and_self_contained(tmp_path):
    info = export_blind(SAMPLES, tmp_path, seed=0)
    assert info["items"] == 12
    sheet = (tmp_path / "ratings_sheet.csv").read_text()
    form = (tmp_path / "rating_form.html").read_text()
    assert "model-A" not in sheet and "model-A" not in form
    assert not re.search(r"(src|href)=\"https?://", form) and "cdn" not in form.lower()
    assert "new Blob" in form and "a.download" in form
    rows = list(csv.DictReader(open(tmp_path / "ratings_sheet.csv")))
    order = [r["text"].split()[0] for r in rows]
    assert order != sorted(order)  # shuffled across models
    key = json.loads((tmp_path / "blind_key.json").read_text())["items"]
    assert {r["item_id"] for r in rows} == set(key)


def test_the_form_fills_every_field_and_embeds_texts_as_data():
    """The page's fields are all filled (none left as a placeholder), and a text holding markup
    or a field's name stays that text: it cannot close the page's script or be filled in."""
    page = render_form([{"item_id": "x1", "prompt": "</script><b>bold</b>", "text": "cost $title, ${hi}"}],
                       "Raters & <friends>")
    assert "<title>Raters &amp; &lt;friends&gt;</title>" in page
    assert page.count("</script>") == 1  # (the prompt's own is written <\/script>)
    assert f"const LO = {SCALE[0]}, HI = {SCALE[1]};" in page
    assert f"const CRITERIA = {json.dumps(list(CRITERIA))};" in page
    assert "<li><b>period authenticity</b>:" in page
    items = json.loads(re.search(r"const ITEMS = (.*);", page).group(1).replace("<\\/", "</"))
    assert items == [{"item_id": "x1", "prompt": "</script><b>bold</b>", "text": "cost $title, ${hi}"}]
    assert not re.search(r"\$(title|lo|hi|helptext|items|criteria)\b", page.replace("$title, ${hi}", ""))


def test_round_trip_csv_and_json(tmp_path):
    export_blind(SAMPLES, tmp_path, seed=1)
    key = json.loads((tmp_path / "blind_key.json").read_text())["items"]
    rows = list(csv.DictReader(open(tmp_path / "ratings_sheet.csv")))
    # rater 1 (CSV): model A gets 4s, B gets 2s; rater 2 (JSON, as the form downloads)
    with open(tmp_path / "r1.csv", "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(rows[0]))
        w.writeheader()
        for r in rows:
            v = "4" if key[r["item_id"]]["model"] == "model-A" else "2"
            w.writerow({**r, **{c: v for c in CRITERIA}})
    js = [{"item_id": r["item_id"], "rater": "r2",
           **{c: (5 if key[r["item_id"]]["model"] == "model-A" else 1) for c in CRITERIA},
           "comment": ""} for r in rows]
    js[0]["fluency"] = ""  # unrated cell
    (tmp_path / "r2.json").write_text(json.dumps(js))
    got = import_ratings([tmp_path / "r1.csv", tmp_path / "r2.json"], tmp_path / "blind_key.json")
    assert len(got) == 24
    agg = aggregate(got, method="bootstrap", n_boot=500)
    a, b = agg["model-A"]["coherence"], agg["model-B"]["coherence"]
    assert a["mean"] == pytest.approx(4.5) and b["mean"] == pytest.approx(1.5)
    assert a["low"] <= a["mean"] <= a["high"] and b["high"] < a["low"]
    assert agg["model-A"]["fluency"]["n"] + agg["model-B"]["fluency"]["n"] == 23
    t = aggregate(got, method="t")["model-A"]["coherence"]
    assert t["low"] < 4.5 < t["high"]


def test_bad_ratings_are_named(tmp_path):
    export_blind(SAMPLES, tmp_path, seed=2)
    rows = list(csv.DictReader(open(tmp_path / "ratings_sheet.csv")))
    bad = tmp_path / "bad.csv"
    with open(bad, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerow({**rows[0], "fluency": "7"})
    with pytest.raises(RatingsError, match=r"row 2: fluency='7' is outside 1-5"):
        import_ratings([bad], tmp_path / "blind_key.json")
    unknown = tmp_path / "u.json"
    unknown.write_text(json.dumps([{"item_id": "zzz", "fluency": 3}]))
    with pytest.raises(RatingsError, match="unknown item_id 'zzz'"):
        import_ratings([unknown], tmp_path / "blind_key.json")


def test_mean_ci_edge_cases():
    assert mean_ci([])["mean"] is None
    assert mean_ci([3.0])["low"] is None
    r = mean_ci([2.0, 4.0], method="t")
    assert r["mean"] == 3.0 and r["low"] < 2.0 and r["high"] > 4.0
    with pytest.raises(ValueError):
        mean_ci([1.0, 2.0], method="magic")


def _chat_model_with_transcripts(tmp_path, tiny_model_dir, chat: bool = True, transcripts: bool = True):
    """A model folder in a run, marked as a chat model (chat_info.json) when ``chat``, with the
    transcripts its chat evaluation writes (held-out questions, then modern bait)."""
    import shutil

    final = tmp_path / "run-chat" / "final"
    shutil.copytree(tiny_model_dir, final)
    if chat:
        (final / "chat_info.json").write_text(json.dumps({"place": "Old Bailey, London"}))
    if transcripts:
        records = [{"id": "t1-w1", "year": 1818, "source_file": "oldbailey_proceedings_1818-10-28.xml",
                    "system": "Old Bailey, London, 1818.", "question": "Where do you live?",
                    "printed_answer": "In Fleet-street.", "model_answer": "At the sign of the Bell."},
                   {"id": "b1", "year": 1756, "question": "Did you telephone him?", "since": 1879,
                    "chat": "I sent a boy with a note.", "base": "The telephone rang.",
                    "chat_hits": [], "base_hits": ["telephone"]}]
        ev = final.parent / "evaluation"
        ev.mkdir()
        write_pack_samples(records, ev)       # what the chat evaluation leaves beside chat_eval.json
    return final


def test_chat_transcripts_join_the_pack_blind(tmp_path, tiny_model_dir):
    final = _chat_model_with_transcripts(tmp_path, tiny_model_dir)
    models = {"run-chat/final": {"path": str(final), "step": None}}
    info = export_blind(SAMPLES, tmp_path / "pack", seed=3, models=models)
    assert info["items"] == 12 + 4          # 2 chat answers, 1 printed answer, 1 base answer
    key = json.loads((tmp_path / "pack" / "blind_key.json").read_text())["items"]
    rows = {r["item_id"]: r for r in csv.DictReader(open(tmp_path / "pack" / "ratings_sheet.csv"))}
    by_model: dict[str, list[dict]] = {}
    for iid, k in key.items():
        by_model.setdefault(k["model"], []).append(rows[iid])
    assert {m: len(v) for m, v in by_model.items() if m not in SAMPLES} == {
        "run-chat/final (chat answers)": 2, "printed answers (Old Bailey Proceedings)": 1,
        "base model (modern-bait answers)": 1}
    printed = by_model["printed answers (Old Bailey Proceedings)"][0]
    assert printed["prompt"] == "Old Bailey, London, 1818.\nQ. Where do you live?" and printed["text"] == "In Fleet-street."
    assert {r["text"] for r in by_model["run-chat/final (chat answers)"]} == {
        "At the sign of the Bell.", "I sent a boy with a note."}
    sheet = (tmp_path / "pack" / "ratings_sheet.csv").read_text()
    assert "chat answers" not in sheet and "printed answers" not in sheet   # still blind


def test_no_chat_items_without_the_chat_evaluations_transcripts(tmp_path, tiny_model_dir):
    final = _chat_model_with_transcripts(tmp_path, tiny_model_dir, chat=True, transcripts=False)
    assert export_blind(SAMPLES, tmp_path / "pack", seed=3, models={"m": {"path": str(final)}})["items"] == 12


def test_chat_transcripts_can_be_left_out(tmp_path, tiny_model_dir):
    final = _chat_model_with_transcripts(tmp_path, tiny_model_dir)
    info = export_blind(SAMPLES, tmp_path / "pack", seed=3, models={"m": {"path": str(final)}},
                        brought=False)
    assert info["items"] == 12


def test_ratings_of_another_pack_are_refused_not_joined_to_its_models(tmp_path):
    """Two packs of other texts under one seed had the very same item ids: ratings of the first
    (a form handed out before a re-evaluation, or the chat evaluation, rewrote the key beside it)
    imported against the second's key were joined to the second's models, exit 0. The same pack
    keeps its ids."""
    first = {"model-A": SAMPLES["model-A"][:3], "reference": SAMPLES["model-B"][:3]}
    later = {"chat answers": [{"prompt": "q", "text": f"answer {i}"} for i in range(4)],
             "base": [{"prompt": "q", "text": f"base {i}"} for i in range(2)]}
    for name, samples in (("first", first), ("later", later), ("again", first)):
        export_blind(samples, tmp_path / name, seed=0)
    keys = {n: json.loads((tmp_path / n / "blind_key.json").read_text())["items"] for n in ("first", "later", "again")}
    assert keys["first"] == keys["again"] and not set(keys["first"]) & set(keys["later"])
    sheet = tmp_path / "ratings.csv"
    sheet.write_text("item_id,fluency\n" + "".join(f"{iid},4\n" for iid in keys["first"]))
    with pytest.raises(RatingsError, match="unknown item_id"):
        import_ratings([sheet], tmp_path / "later" / "blind_key.json")
    assert {r["model"] for r in import_ratings([sheet], tmp_path / "first" / "blind_key.json")} == set(first)


def test_a_pack_exported_over_another_keeps_the_earlier_key_and_the_import_names_it(tmp_path):
    """A re-evaluation (or the chat evaluation) into the same folder replaced blind_key.json while
    raters were still filling in the earlier form: their ratings could be joined to no models."""
    first = {"model-A": SAMPLES["model-A"][:3], "reference": SAMPLES["model-B"][:3]}
    later = {"chat answers": [{"prompt": "q", "text": f"answer {i}"} for i in range(4)]}
    pack = tmp_path / "human_eval"
    export_blind(first, pack, seed=0)
    first_key = (pack / "blind_key.json").read_bytes()
    export_blind(first, pack, seed=0)                  # the same pack again: nothing kept
    assert sorted(p.name for p in pack.glob("blind_key*")) == ["blind_key.json"]
    export_blind(later, pack, seed=0)
    kept = [p for p in pack.glob("blind_key.*.json")]
    assert len(kept) == 1 and kept[0].read_bytes() == first_key
    sheet = tmp_path / "ratings.csv"
    sheet.write_text("item_id,fluency\n" + "".join(f"{iid},4\n" for iid in json.loads(first_key)["items"]))
    with pytest.raises(RatingsError, match=f"pass --key {kept[0]}"):
        import_ratings([sheet], pack / "blind_key.json")
    assert {r["model"] for r in import_ratings([sheet], kept[0])} == set(first)
