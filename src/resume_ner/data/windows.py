"""Whole documents -> overlapping token windows with IOB2 label ids, and windows -> document word tags.

Labels follow the tokenizer's own pre-tokenized words and character offsets (never whitespace words):
the first sub-token of each word carries the word's IOB2 id, continuation sub-tokens and special tokens
carry ``-100`` (or ``I-X`` with ``label_all_tokens``). A document longer than ``max_length`` becomes several
windows that share ``stride`` tokens, so no token is ever dropped. At prediction time each word takes the
label from the window where its first sub-token sits farthest from a window edge.

With ``line_markers`` the tokenizer reads the text with every layout line break marked: text extracted from
a PDF keeps a resume's lines as newlines or runs of two or more spaces, which a WordPiece or SentencePiece
tokenizer erases. One whitespace character of each such gap becomes ``LINE_MARKER``, so the marked text has the
same length and every character offset still points into the original text; a marker is a word of its own,
tagged like any word (``O``, or ``I-X`` inside an entity that spans a line break), and a predicted entity
never starts or ends on one (its span is trimmed of whitespace in the original text).
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from resume_ner.data.document import Document, Span
from resume_ner.data.labels import OUTSIDE, LabelScheme

if TYPE_CHECKING:
    from transformers import PreTrainedTokenizerBase

IGNORE_INDEX = -100
_TOKENIZE_BATCH = 64
LINE_MARKER = "\N{PILCROW SIGN}"
_LINE_BREAK = re.compile(r"[^\S\n]*\n\s*|\s{2,}")  # a newline with the whitespace around it, or 2+ spaces


@dataclass
class Window:
    """One model input: a slice of a document's tokens with special tokens and labels."""

    doc_index: int
    input_ids: list[int]
    attention_mask: list[int]
    labels: list[int]
    word_ids: list[int | None]  # document-level word index of each token (None: special token)
    first_subtoken: list[bool]  # token is the first sub-token of its word
    is_first: bool  # first window of its document (its left edge is the document start)
    is_last: bool  # last window of its document
    token_type_ids: list[int] | None = None

    def __len__(self) -> int:
        return len(self.input_ids)


@dataclass
class WordTokens:
    """A document's pre-tokenized words: character offsets and gold IOB2 tags."""

    doc_id: str
    text: str
    offsets: list[tuple[int, int]]
    tags: list[str]


@dataclass
class WindowedDocuments:
    """Windows of a list of documents plus each document's words (for merging predictions back)."""

    windows: list[Window]
    words: list[WordTokens]
    scheme: LabelScheme
    max_length: int
    stride: int
    stats: dict[str, Any] = field(default_factory=dict)


def word_tags(offsets: Sequence[tuple[int, int]], spans: Sequence[Span]) -> list[str]:
    """IOB2 tag of each word: a word that overlaps a span gets ``B-``/``I-`` of that span's type."""
    tags = [OUTSIDE] * len(offsets)
    ordered = sorted(spans)
    j = 0
    for i, (ws, we) in enumerate(offsets):
        while j < len(ordered) and ordered[j].end <= ws:
            j += 1
        if j < len(ordered) and ordered[j].start < we:
            span = ordered[j]
            inside = i > 0 and tags[i - 1] != OUTSIDE and offsets[i - 1][1] > span.start
            tags[i] = f"{'I' if inside else 'B'}-{span.label}"
    return tags


def mark_line_breaks(text: str) -> str:
    """``text`` with one whitespace character of every layout line break (a newline, or a run of two or more
    whitespace characters) replaced by ``LINE_MARKER``: the second of a run, the newline itself when alone."""
    chars = list(text)
    for gap in _LINE_BREAK.finditer(text):
        chars[gap.start() + (1 if gap.end() - gap.start() >= 2 else 0)] = LINE_MARKER
    return "".join(chars)


def _tag_id(tag: str, scheme: LabelScheme, continuation: bool) -> int:
    if tag == OUTSIDE:
        return 0
    etype = tag[2:]
    if etype not in scheme.entity_types:
        return 0
    if continuation or tag.startswith("I-"):
        return scheme.inside_id(etype)
    return scheme.begin_id(etype)


def build_windows(
    documents: Sequence[Document],
    tokenizer: PreTrainedTokenizerBase,
    scheme: LabelScheme,
    *,
    max_length: int = 256,
    stride: int = 64,
    label_all_tokens: bool = False,
    line_markers: bool = False,
) -> WindowedDocuments:
    """Tokenize whole documents (fast tokenizer offsets) into overlapping labelled windows; ``line_markers``:
    the tokenizer reads ``mark_line_breaks(text)`` (see the module docstring)."""
    if not getattr(tokenizer, "is_fast", False):
        raise TypeError("build_windows needs a fast tokenizer (offset mappings)")
    windows: list[Window] = []
    words: list[WordTokens] = []
    for batch_start in range(0, len(documents), _TOKENIZE_BATCH):
        batch = documents[batch_start : batch_start + _TOKENIZE_BATCH]
        enc = tokenizer(
            [mark_line_breaks(doc.text) if line_markers else doc.text for doc in batch],
            max_length=max_length,
            stride=stride,
            truncation=True,
            return_overflowing_tokens=True,
            return_offsets_mapping=True,
        )
        sample_map = enc["overflow_to_sample_mapping"]
        per_doc: dict[int, list[int]] = {}
        for i, sample in enumerate(sample_map):
            per_doc.setdefault(sample, []).append(i)
        for local, doc in enumerate(batch):
            rows = per_doc.get(local, [])
            word_offsets: dict[int, tuple[int, int]] = {}
            for i in rows:
                for wid, (s, e) in zip(enc.word_ids(i), enc["offset_mapping"][i], strict=True):
                    if wid is None:
                        continue
                    span = word_offsets.get(wid)
                    word_offsets[wid] = (s, e) if span is None else (min(span[0], s), max(span[1], e))
            n_words = max(word_offsets) + 1 if word_offsets else 0
            offsets = [word_offsets.get(w, (0, 0)) for w in range(n_words)]
            tags = word_tags(offsets, doc.spans)
            words.append(WordTokens(doc.id, doc.text, offsets, tags))
            doc_index = batch_start + local
            for k, i in enumerate(rows):
                wids = enc.word_ids(i)
                first = [
                    wid is not None and enc["offset_mapping"][i][t][0] == offsets[wid][0] for t, wid in enumerate(wids)
                ]
                labels = []
                for t, wid in enumerate(wids):
                    if wid is None:
                        labels.append(IGNORE_INDEX)
                    elif first[t]:
                        labels.append(_tag_id(tags[wid], scheme, continuation=False))
                    elif label_all_tokens:
                        labels.append(_tag_id(tags[wid], scheme, continuation=True))
                    else:
                        labels.append(IGNORE_INDEX)
                windows.append(
                    Window(
                        doc_index=doc_index,
                        input_ids=list(enc["input_ids"][i]),
                        attention_mask=list(enc["attention_mask"][i]),
                        labels=labels,
                        word_ids=list(wids),
                        first_subtoken=first,
                        is_first=k == 0,
                        is_last=k == len(rows) - 1,
                        token_type_ids=list(enc["token_type_ids"][i]) if "token_type_ids" in enc else None,
                    )
                )
    stats = {
        "documents": len(documents),
        "windows": len(windows),
        "tokens": sum(len(w) for w in windows),
        "multi_window_documents": sum(1 for w in windows if w.is_first and not w.is_last),
    }
    return WindowedDocuments(windows, words, scheme, max_length, stride, stats)


def merge_window_predictions(windowed: WindowedDocuments, window_log_probs: Sequence[Any]) -> list[Any]:
    """Per document, a float tensor ``(words, labels)``: each word's label log-probabilities, taken from the
    window where the word's first sub-token is farthest from a window edge (a document's own start and end
    are not edges). ``window_log_probs[i]`` is window ``i``'s tensor ``(tokens, labels)``; a word no window
    holds (the tokenizer gave it no token) is ``O`` with certainty."""
    import torch

    n_labels = len(windowed.scheme.labels)
    best: list[dict[int, tuple[float, int, int]]] = [dict() for _ in windowed.words]
    for w_index, window in enumerate(windowed.windows):
        content = [t for t, wid in enumerate(window.word_ids) if wid is not None]
        if not content:
            continue
        lo, hi = content[0], content[-1]
        for t in content:
            if not window.first_subtoken[t]:
                continue
            left = float("inf") if window.is_first else t - lo
            right = float("inf") if window.is_last else hi - t
            distance = min(left, right)
            wid = window.word_ids[t]
            assert wid is not None  # ``content`` holds only the tokens of a word
            current = best[window.doc_index].get(wid)
            if current is None or distance > current[0]:
                best[window.doc_index][wid] = (distance, w_index, t)
    certain_outside = torch.full((1, n_labels), float("-inf"))
    certain_outside[0, windowed.scheme.label2id[OUTSIDE]] = 0.0
    flat = torch.cat([*(probs.float() for probs in window_log_probs), certain_outside])  # one row per token
    window_start = [0]
    for probs in window_log_probs:
        window_start.append(window_start[-1] + len(probs))
    missing = len(flat) - 1
    merged = []
    for doc_words, chosen in zip(windowed.words, best, strict=True):
        rows = [
            window_start[chosen[w][1]] + chosen[w][2] if w in chosen else missing for w in range(len(doc_words.offsets))
        ]
        merged.append(flat[torch.tensor(rows, dtype=torch.long)])
    return merged
