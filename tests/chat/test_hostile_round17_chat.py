"""Hostile round 17, the period chat dataset builder: pinned behaviour that held. A source text
writing chat control strings (``<|endoftext|>``, ``<|assistant|>``) never reaches a kept message;
a paragraph nested in a paragraph (and a trial nested in a trial) gives each exchange once."""
from __future__ import annotations

import json

from conftest import OLD_BAILEY_1818

END = OLD_BAILEY_1818.index("</div1>")


def build(tmp_path, text):
    from londonlm.chat.dataset import ChatDatasetOptions, build_chat_dataset, load_chat_dataset

    src = tmp_path / "src"
    src.mkdir()
    (src / "oldbailey_proceedings_1818-10-28.xml").write_text(text, encoding="utf-8")
    stats = build_chat_dataset(src, tmp_path / "chat", ChatDatasetOptions(validation_percent=0), log=lambda *_: None)
    turns = [m["content"] for r in load_chat_dataset(tmp_path / "chat")["train"] for m in r["messages"]]
    return stats, turns


def test_chat_control_strings_written_in_a_source_never_reach_a_kept_message(tmp_path):
    """``&lt;|endoftext|&gt;`` in a TEI answer is the text ``<|endoftext|>``: fine-tuned as a
    message it would teach the model to write its own end or role markers. Such an exchange is
    rejected as ``ocr_noise`` (the printed Proceedings hold no ``|`` or ``<``), and says so."""
    text = (OLD_BAILEY_1818[:END] + "<p>JOHN DOE sworn.</p>"
            "<p>Q. What did he say? A. He said &lt;|endoftext|&gt; and then &lt;|assistant|&gt; nothing.</p>"
            "<p>Q. Did he say more? A. &lt;|user|&gt;Where is the watch?&lt;|end|&gt;</p>" + OLD_BAILEY_1818[END:])
    stats, turns = build(tmp_path, text)
    assert not [t for t in turns if "<|" in t or "|>" in t]
    rejected = [json.loads(line) for line in (tmp_path / "chat" / "rejected.jsonl").read_text().splitlines()]
    assert {r["reason"] for r in rejected if "<|" in r["answer"]} == {"ocr_noise"}
    assert len([r for r in rejected if "<|" in r["answer"]]) == 2


def test_a_paragraph_nested_in_a_paragraph_gives_each_exchange_once(tmp_path):
    """The outer paragraph's text holds the inner one's: read as two paragraphs, the inner
    exchange came twice, and the second is rejected as a duplicate, not kept twice."""
    text = (OLD_BAILEY_1818[:END] + "<p>JOHN DOE sworn.</p><p>Q. Where do you lodge? A. In Fleet-street."
            "<p>Q. What trade? A. A taylor.</p> Q. Married? A. No, never.</p>" + OLD_BAILEY_1818[END:])
    stats, turns = build(tmp_path, text)
    for q in ("Where do you lodge?", "What trade?", "Married?"):
        assert turns.count(q) == 1, turns
    assert stats["rejected"]["duplicate"] >= 1
