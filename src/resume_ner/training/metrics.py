"""Evaluation metrics: seqeval entity scores on word tags, and exact-match scores on document character spans.

Two views of the same predictions:

* ``compute_metrics`` scores IOB2 word-tag sequences with seqeval in strict mode (``mode="strict"``,
  ``scheme=IOB2``): an entity counts only when its type, its first and its last word all match, and a
  sequence that starts with ``I-X`` (no ``B-X``) is not an entity at all.
* ``span_metrics`` scores character spans of whole documents (after windows are merged back), the form a
  user of ``predict`` sees: a predicted span is correct when ``start``, ``end`` and ``label`` all equal a
  gold span of the same document.

``entity_type_confusion`` counts, over the same document spans, which type each gold entity was predicted
as (or missed, or predicted where there was none). ``tags_to_spans`` turns a word-tag sequence into those
character spans.
"""

from __future__ import annotations

import math
import string
from collections import Counter
from collections.abc import Sequence
from typing import Any

from resume_ner.data.document import Span
from resume_ner.data.labels import OUTSIDE

__all__ = ["compute_metrics", "entity_type_confusion", "format_metrics_table", "span_metrics", "tags_to_spans"]

_AVERAGES = ("micro", "macro")
# Trimmed off the end of a predicted entity: the corpus's gold entities almost never end in one of these
# (33 of the 26,293 entities of its training split; 7,592 stop right before one).
TRAILING_PUNCTUATION = ",;:"


def _split_tag(tag: str, where: str) -> tuple[str, str | None]:
    """``("B", "NAME")`` for ``B-NAME``, ``("O", None)`` for ``O``; ValueError for anything else."""
    if tag == OUTSIDE:
        return OUTSIDE, None
    prefix, sep, etype = tag.partition("-")
    if sep and prefix in ("B", "I") and etype:
        return prefix, etype
    raise ValueError(f"{where}: tag {tag!r} is not IOB2 (expected 'O', 'B-TYPE' or 'I-TYPE')")


def _check_tag_sequences(true_tags: Sequence[Sequence[str]], pred_tags: Sequence[Sequence[str]]) -> None:
    if len(true_tags) != len(pred_tags):
        raise ValueError(f"{len(true_tags)} gold sequences but {len(pred_tags)} predicted sequences")
    for i, (gold, pred) in enumerate(zip(true_tags, pred_tags, strict=True)):
        if len(gold) != len(pred):
            raise ValueError(f"sequence {i}: {len(gold)} gold tags but {len(pred)} predicted tags")
        for tag in gold:
            _split_tag(tag, f"sequence {i} (gold)")
        for tag in pred:
            _split_tag(tag, f"sequence {i} (predicted)")


def _f1(precision: float, recall: float) -> float:
    return 2 * precision * recall / (precision + recall) if precision + recall > 0 else 0.0


def _ratio(num: float, den: float) -> float:
    return num / den if den > 0 else 0.0


def _float(value: Any) -> float:
    value = float(value)
    return value if math.isfinite(value) else 0.0


def compute_metrics(true_tags: list[list[str]], pred_tags: list[list[str]]) -> dict[str, Any]:
    """Entity-level precision, recall and F1 of IOB2 tag sequences (seqeval, strict mode, IOB2).

    Returns ``precision_micro, recall_micro, f1_micro, precision_macro, recall_macro, f1_macro`` and
    ``per_type: {TYPE: {precision, recall, f1, support}}`` (``support``: gold entities of the type).
    Micro averages pool every entity; macro averages are seqeval's: the unweighted mean over every type
    found in the gold *or* the predicted tags. Undefined ratios (no predictions, no gold entities) are 0.

    Raises ValueError when the two lists differ in length (overall or per sequence) or a tag is not
    ``O``, ``B-TYPE`` or ``I-TYPE``.
    """
    _check_tag_sequences(true_tags, pred_tags)
    result: dict[str, Any] = {f"{m}_{avg}": 0.0 for avg in _AVERAGES for m in ("precision", "recall", "f1")}
    result["per_type"] = {}
    true_lists = [list(seq) for seq in true_tags]
    pred_lists = [list(seq) for seq in pred_tags]
    if not true_lists:
        return result

    from seqeval.metrics.v1 import precision_recall_fscore_support, unique_labels
    from seqeval.scheme import IOB2

    types = unique_labels(true_lists, pred_lists, IOB2)
    if not types:  # no entity anywhere: every score is 0 by the zero_division convention
        return result
    common = {"zero_division": 0, "scheme": IOB2}
    for avg in _AVERAGES:
        p, r, f, _ = precision_recall_fscore_support(true_lists, pred_lists, average=avg, **common)
        result[f"precision_{avg}"] = _float(p)
        result[f"recall_{avg}"] = _float(r)
        result[f"f1_{avg}"] = _float(f)
    ps, rs, fs, ss = precision_recall_fscore_support(true_lists, pred_lists, average=None, **common)
    for etype, p, r, f, s in zip(types, ps, rs, fs, ss, strict=True):
        result["per_type"][etype] = {"precision": _float(p), "recall": _float(r), "f1": _float(f), "support": int(s)}
    return result


def span_metrics(gold: list[list[Span]], pred: list[list[Span]]) -> dict[str, Any]:
    """Exact-match scores of character spans, document by document.

    ``gold[i]`` and ``pred[i]`` are the spans of document ``i``; a predicted span is correct when a gold
    span of the same document has the same ``start``, ``end`` and ``label`` (each gold span matches at most
    one prediction). Counts are summed over documents, then:

    * ``span_{precision,recall,f1}_micro``: from the pooled counts of every type;
    * ``span_{precision,recall,f1}_macro``: unweighted mean of the per-type scores over the types that
      have gold spans (a type only ever predicted lowers micro precision but is not a macro class);
    * ``span_per_type: {TYPE: {precision, recall, f1, support, predicted, correct}}`` for every type seen
      in gold or predictions (``support``: gold spans).
    """
    if len(gold) != len(pred):
        raise ValueError(f"{len(gold)} gold documents but {len(pred)} predicted documents")
    support: Counter[str] = Counter()
    predicted: Counter[str] = Counter()
    correct: Counter[str] = Counter()
    for doc_gold, doc_pred in zip(gold, pred, strict=True):
        gold_counts = Counter((s.start, s.end, s.label) for s in doc_gold)
        pred_counts = Counter((s.start, s.end, s.label) for s in doc_pred)
        for (_, _, label), n in gold_counts.items():
            support[label] += n
        for key, n in pred_counts.items():
            predicted[key[2]] += n
            correct[key[2]] += min(n, gold_counts.get(key, 0))

    per_type: dict[str, dict[str, float | int]] = {}
    for label in sorted(set(support) | set(predicted)):
        p = _ratio(correct[label], predicted[label])
        r = _ratio(correct[label], support[label])
        per_type[label] = {
            "precision": p,
            "recall": r,
            "f1": _f1(p, r),
            "support": support[label],
            "predicted": predicted[label],
            "correct": correct[label],
        }

    n_correct, n_pred, n_gold = sum(correct.values()), sum(predicted.values()), sum(support.values())
    p_micro, r_micro = _ratio(n_correct, n_pred), _ratio(n_correct, n_gold)
    macro_types = [label for label in per_type if support[label] > 0]

    def _mean(metric: str) -> float:
        return _ratio(sum(per_type[t][metric] for t in macro_types), len(macro_types))

    return {
        "span_precision_micro": p_micro,
        "span_recall_micro": r_micro,
        "span_f1_micro": _f1(p_micro, r_micro),
        "span_precision_macro": _mean("precision"),
        "span_recall_macro": _mean("recall"),
        "span_f1_macro": _mean("f1"),
        "span_per_type": per_type,
    }


def _overlap(a: Span, b: Span) -> int:
    return max(0, min(a.end, b.end) - max(a.start, b.start))


def entity_type_confusion(gold: list[list[Span]], pred: list[list[Span]]) -> dict[str, Any]:
    """Confusion matrix of entity types over documents' character spans.

    Returns ``{"labels": [TYPE, ..., "O"], "matrix": [[int, ...], ...]}``: ``labels`` are the sorted types
    seen in ``gold`` or ``pred``, then ``"O"`` (no entity); ``matrix[i][j]`` counts gold entities of type
    ``labels[i]`` (row: actual) predicted as ``labels[j]`` (column: predicted), the orientation of the KFP
    UI's ``ClassificationMetrics.log_confusion_matrix(categories=labels, matrix=matrix)``. Column ``"O"``
    counts gold spans no prediction was matched to (missed), row ``"O"`` predictions matched to no gold span
    (spurious); cell ``("O", "O")`` is always 0.

    Matching is one-to-one within each document, by character overlap: every (gold, predicted) pair that
    shares at least one character is a candidate; candidates are taken greedily by decreasing overlap (ties:
    the earlier gold span, then the earlier predicted span, by ``start`` then ``end``), skipping a pair whose
    gold or predicted span is already matched. So a gold span is matched to the unused prediction that
    overlaps it most, and a prediction covering two gold spans counts once, for the one it overlaps most.
    Boundaries need not agree: this measures type confusion, not exact spans (see ``span_metrics``).
    """
    if len(gold) != len(pred):
        raise ValueError(f"{len(gold)} gold documents but {len(pred)} predicted documents")
    types = sorted({s.label for doc in gold for s in doc} | {s.label for doc in pred for s in doc})
    labels = [*types, OUTSIDE]
    index = {label: i for i, label in enumerate(labels)}
    matrix = [[0] * len(labels) for _ in labels]
    for doc_gold, doc_pred in zip(gold, pred, strict=True):
        candidates = sorted(
            (-_overlap(g, p), g.start, g.end, gi, p.start, p.end, pj)
            for gi, g in enumerate(doc_gold)
            for pj, p in enumerate(doc_pred)
            if _overlap(g, p) > 0
        )
        gold_match: dict[int, int] = {}
        used: set[int] = set()
        for *_, gi, _, _, pj in candidates:
            if gi not in gold_match and pj not in used:
                gold_match[gi] = pj
                used.add(pj)
        for gi, g in enumerate(doc_gold):
            column = doc_pred[gold_match[gi]].label if gi in gold_match else OUTSIDE
            matrix[index[g.label]][index[column]] += 1
        for pj, p in enumerate(doc_pred):
            if pj not in used:
                matrix[index[OUTSIDE]][index[p.label]] += 1
    return {"labels": labels, "matrix": matrix}


def tags_to_spans(tags: list[str], offsets: list[tuple[int, int]], text: str) -> list[Span]:
    """Character spans of a per-word IOB2 tag sequence; ``offsets[i]`` is word ``i``'s ``(start, end)`` in ``text``.

    Decoding follows the Hugging Face token-classification pipeline's ``aggregation_strategy="simple"``
    (``TokenClassificationPipeline.group_entities``): ``B-X`` always starts a new entity; ``I-X`` continues
    the current entity when that entity is of type ``X``, and otherwise (after ``O``, at the start, or after
    an entity of another type) starts a new entity of type ``X`` instead of being dropped; ``O`` ends the
    current entity. This is more lenient than the seqeval strict metric of ``compute_metrics``, which does
    not count an entity that begins with ``I-X``: the spans a user gets keep such predictions, the strict
    metric scores them as misses.

    An entity runs from its first word's start to its last word's end, then is trimmed of whitespace at
    both edges and of ``TRAILING_PUNCTUATION`` at its end; an entity without a letter or digit (``-``,
    ``(``) is dropped. Spans are returned in text order.
    """
    if len(tags) != len(offsets):
        raise ValueError(f"{len(tags)} tags but {len(offsets)} word offsets")
    spans: list[Span] = []
    current: list[Any] | None = None  # [start, end, type]

    def _close() -> None:
        if current is None:
            return
        start, end, etype = current
        segment = text[start:end]
        start += len(segment) - len(segment.lstrip())
        end -= len(segment) - len(segment.rstrip(string.whitespace + TRAILING_PUNCTUATION))
        if any(char.isalnum() for char in text[start:end]):
            spans.append(Span(start, end, etype))

    for i, (tag, (start, end)) in enumerate(zip(tags, offsets, strict=True)):
        prefix, etype = _split_tag(tag, f"word {i}")
        if prefix == OUTSIDE:
            _close()
            current = None
        elif prefix == "I" and current is not None and current[2] == etype:
            current[1] = max(current[1], end)
        else:
            _close()
            current = [start, end, etype]
    _close()
    return spans


def format_metrics_table(metrics: dict[str, Any]) -> str:
    """A fixed-width table: one row per entity type, then ``micro`` and ``macro`` rows.

    Columns: token-level (seqeval) precision, recall, F1 and support, and span F1 when ``metrics`` holds
    ``span_metrics`` results too (e.g. ``{**compute_metrics(...), **span_metrics(...)}``). A value a row
    does not have is shown as ``-``.
    """
    per_type: dict[str, dict[str, Any]] = metrics.get("per_type") or {}
    span_per_type: dict[str, dict[str, Any]] = metrics.get("span_per_type") or {}
    has_span = bool(span_per_type) or any(k.startswith("span_f1_") for k in metrics)
    types = sorted(set(per_type) | set(span_per_type))
    name_width = max([len("type"), len("macro"), *(len(t) for t in types)])

    header = f"{'type':<{name_width}}  {'precision':>9}  {'recall':>9}  {'f1':>9}  {'support':>8}"
    if has_span:
        header += f"  {'span_f1':>9}"

    def _num(value: Any) -> str:
        return f"{value:>9.4f}" if isinstance(value, (int, float)) else f"{'-':>9}"

    def _row(name: str, p: Any, r: Any, f: Any, support: Any, span_f1: Any) -> str:
        sup = f"{support:>8d}" if isinstance(support, int) else f"{'-':>8}"
        line = f"{name:<{name_width}}  {_num(p)}  {_num(r)}  {_num(f)}  {sup}"
        if has_span:
            line += f"  {_num(span_f1)}"
        return line

    lines = [header, "-" * len(header)]
    for etype in types:
        tok = per_type.get(etype, {})
        span = span_per_type.get(etype, {})
        support = tok.get("support", span.get("support"))
        lines.append(_row(etype, tok.get("precision"), tok.get("recall"), tok.get("f1"), support, span.get("f1")))
    lines.append("-" * len(header))
    total_support = sum(int(v.get("support", 0)) for v in per_type.values()) if per_type else None
    for avg in _AVERAGES:
        lines.append(
            _row(
                avg,
                metrics.get(f"precision_{avg}"),
                metrics.get(f"recall_{avg}"),
                metrics.get(f"f1_{avg}"),
                total_support,
                metrics.get(f"span_f1_{avg}"),
            )
        )
    return "\n".join(lines)
