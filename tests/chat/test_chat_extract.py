"""Old Bailey TEI -> examinations: the three house styles, speakers, nested markup, page
splits, missing answers; and the exchange filters with their reasons."""
from __future__ import annotations

from conftest import OLD_BAILEY_1756, OLD_BAILEY_1818

from londonlm.chat.extract import Exchange, extract_conversations, questioner_of
from londonlm.chat.filters import ExchangeRules, clean_turn, rejection_reason


def _convs(xml: str):
    return extract_conversations(xml.encode())


def _qa(conv):
    return [(e.question, e.answer) for e in conv.exchanges]


def test_1810s_style_grouped_per_witness_with_speakers():
    convs, unanswered = _convs(OLD_BAILEY_1818)
    assert [c.witness for c in convs] == ["ROBERT LITTLE", "HANNAH STEPHENS"]
    first = convs[0]
    assert first.trial_id == "t18181028-1" and first.date == "1818-10-28" and first.year == 1818
    assert first.id == "t18181028-1-c0"
    assert _qa(first)[0] == ("How did he run against you",
                             "Not with any great force; it appeared to be done to put me off my guard.")
    roles = [(e.questioner, e.answerer) for e in first.exchanges[:3]]
    assert roles == [("unknown", "witness"), ("court", "witness"), ("prisoner", "witness")]
    cross = convs[1].exchanges[0]
    assert (cross.questioner, cross.questioner_name) == ("counsel", "MR. ANDREWS")
    assert unanswered == []


def test_nested_markup_dropped_and_line_break_inside_a_word_joined():
    convs, _ = _convs(OLD_BAILEY_1818)
    assert ("Where do you live", "In Tothil-street, Westminster.") in _qa(convs[0])
    assert convs[1].exchanges[0].question == "Were you in the room when he was taken into custody?"
    assert convs[1].exchanges[0].answer == "Yes; I was there all the time."


def test_answer_split_across_paragraphs_is_rejoined():
    convs, _ = _convs(OLD_BAILEY_1818)
    assert ("Did you see him take the watch", "I did not see him take it; I saw him run away.") in _qa(convs[1])


def test_1750s_style_question_then_named_answer_and_missing_answer():
    convs, unanswered = _convs(OLD_BAILEY_1756)
    keith = convs[0]
    assert keith.witness == "G. Keith"
    assert _qa(keith) == [("Is this the sword you lost?", "It is No. 19. the same sword.")]
    assert unanswered == [{"trial_id": "t17561020-4", "question": "How long have you known the prisoner at the bar?",
                           "witness": "G. Keith"}]
    holyland = convs[1]
    assert holyland.exchanges[1].questioner == "prisoner"  # "Q. from Prisoner."
    assert holyland.exchanges[1].question == "Did not the constable say he would make it up?"


def test_1780s_style_chains_and_questions_to_the_prisoner():
    convs, _ = _convs(OLD_BAILEY_1756)
    holmes = next(c for c in convs if c.witness == "JONAS HOLMES")
    assert _qa(holmes) == [("Was this pipe fixed to your house?", "It was fixed up with wall hooks."),
                           ("Did you see him cut it?", "Yes."), ("Was he alone?", "He was alone, my lord.")]
    assert holmes.exchanges[0].questioner == "court"
    prisoner = next(c for c in convs if c.witness_role == "prisoner")
    assert prisoner.exchanges[0].answer == "No, my lord." and prisoner.exchanges[0].answerer == "prisoner"


def test_witness_sharing_the_prisoners_surname_is_a_witness():
    xml = OLD_BAILEY_1818.replace("HANNAH STEPHENS. I am", "JAMES LEESON. I am")
    convs, _ = _convs(xml)
    assert convs[1].witness == "JAMES LEESON" and convs[1].witness_role == "witness"
    xml = OLD_BAILEY_1756.replace("G. Keith. It is", "P. Careless. It is")
    assert _convs(xml)[0][0].witness_role == "prisoner"
    xml = OLD_BAILEY_1756.replace("G. Keith. It is", "C. Careless. It is")
    assert _convs(xml)[0][0].witness_role == "witness"


def test_malformed_xml_is_recovered():
    convs, _ = _convs(OLD_BAILEY_1818.replace("</div1></div0></body></text></TEI.2>", ""))
    assert convs and convs[0].exchanges


def test_questioner_labels():
    assert questioner_of("COURT to BENJAMIN WILSON.") == ("court", "COURT", "BENJAMIN WILSON")
    assert questioner_of("Cross-examined by MR. PAYNE.")[:2] == ("counsel", "MR. PAYNE")
    assert questioner_of("Jury.")[0] == "jury"
    assert questioner_of("To the Prosecutor.") == ("unknown", "", "the Prosecutor")


def _ex(q: str, a: str) -> Exchange:
    return Exchange(q, a, "unknown", "", "witness", "X")


def test_each_filter_names_its_reason():
    rules = ExchangeRules(max_question_chars=60, max_answer_chars=80)
    assert rejection_reason(_ex("Where do you live", "In Fleet-street.")) is None
    assert rejection_reason(_ex("", "Yes.")) == "missing_question"
    assert rejection_reason(_ex("Where", " - ")) == "missing_answer"
    assert rejection_reason(_ex("Was it found", "(The watch produced.)")) == "stage_direction"
    assert rejection_reason(_ex("Upon his cross-examination was asked, whether", "No.")) == "reported_speech"
    assert rejection_reason(_ex("What is your business", "|{~ ### 1l1l ~}| ^^")) == "ocr_noise"
    assert rejection_reason(_ex("What is it", "a . , ; : ' . , ; : " * 3)) == "ocr_noise"
    assert rejection_reason(_ex("Has he paid you any money?", "Yes, 3l. 5s.; leaving due 11l. 3s. 3d.")) is None
    assert rejection_reason(_ex("Why " * 20, "No."), rules) == "question_too_long"
    assert rejection_reason(_ex("Why", "Not so, " * 15), rules) == "answer_too_long"
    assert rejection_reason(_ex("Did you?", "No.")) is None


def test_clean_turn_strips_separators_only():
    assert clean_turn("  - Not with  any force ;-") == "Not with any force;"
    assert clean_turn("He said, \"Stop thief!\"") == "He said, \"Stop thief!\""


def _cut_1818(after: str) -> str:
    """OLD_BAILEY_1818 as a download cut short just after ``after``: no closing tags."""
    return OLD_BAILEY_1818[:OLD_BAILEY_1818.index(after) + len(after)]


def test_an_answer_where_a_truncated_file_stops_is_marked_cut_short_and_rejected():
    """Recovery mode closes the open paragraph where the bytes run out: the half answer "I did
    not" was kept as an exchange like any other."""
    convs, _ = _convs(_cut_1818("Q. Did you see him take the watch - A. I did not"))
    exchanges = [e for c in convs for e in c.exchanges]
    assert exchanges[-1].answer.endswith("I did not") and exchanges[-1].cut_short
    assert not any(e.cut_short for e in exchanges[:-1])
    assert rejection_reason(exchanges[-1]) == "cut_short"
    assert rejection_reason(exchanges[-2]) is None


def test_a_file_cut_elsewhere_or_whole_marks_nothing():
    whole, _ = _convs(OLD_BAILEY_1818)
    between, _ = _convs(_cut_1818("Westminster.</p>\n<p>GUILTY."))      # in a verdict paragraph
    after_a_paragraph, _ = _convs(_cut_1818("Westminster.</p>\n"))    # between paragraphs
    for convs in (whole, between, after_a_paragraph):
        assert not any(e.cut_short for c in convs for e in c.exchanges)
    # a file that needed recovery for another reason (an entity it never declared) and ends whole
    damaged, _ = _convs(OLD_BAILEY_1818.replace("Covent Garden", "Covent &garden;"))
    assert damaged and not any(e.cut_short for c in damaged for e in c.exchanges)
