"""Evaluation on whole documents: windows are predicted, merged back per document, decoded into word tags,
then scored with seqeval (entity level, IOB2 strict, over every word of every document) and exact
character-span matching, with an entity-type confusion matrix of the character spans."""

from __future__ import annotations

import logging
from bisect import bisect_left, bisect_right
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from resume_ner.data.document import Document, Span
from resume_ner.data.windows import WindowedDocuments, merge_window_predictions
from resume_ner.training.batching import predict_windows
from resume_ner.training.decoding import Decoding, decode_tags, model_decoding
from resume_ner.training.distributed import resolve_device
from resume_ner.training.ensemble import ensemble_word_log_probs, load_members, mean_transitions, members_autocast
from resume_ner.training.metrics import compute_metrics, entity_type_confusion, span_metrics, tags_to_spans
from resume_ner.training.precision import Precision

if TYPE_CHECKING:
    import torch
    from torchcrf import CRF

log = logging.getLogger(__name__)


def predicted_spans(
    windowed: WindowedDocuments, merged: Sequence[tuple[list[str], list[float]]]
) -> list[list[tuple[Span, float]]]:
    """Character spans of each document with a score: the mean probability of the span's words (the words a
    span overlaps are found by bisection: words are in text order and do not overlap)."""
    out = []
    for words, (tags, scores) in zip(windowed.words, merged, strict=True):
        starts = [start for start, _ in words.offsets]
        ends = [end for _, end in words.offsets]
        scored = []
        for span in tags_to_spans(tags, words.offsets, words.text):
            inside = scores[bisect_right(ends, span.start) : bisect_left(starts, span.end)]
            scored.append((span, sum(inside) / len(inside) if inside else 0.0))
        out.append(scored)
    return out


def evaluate_windowed(
    model: torch.nn.Module,
    windowed: WindowedDocuments,
    documents: Sequence[Document],
    *,
    pad_token_id: int,
    batch_size: int,
    device: torch.device,
    decoding: Decoding = "viterbi",
    crf: CRF | None = None,
    bf16: bool = False,
    on_windows: Callable[[int], None] | None = None,
) -> dict[str, Any]:
    """Entity metrics (seqeval), document span metrics and loss of ``model`` on windowed ``documents``, with
    word tags read by ``decoding`` (``resume_ner.training.decoding``); ``crf``: the model's CRF head, whose
    transition scores Viterbi uses and whose negative log-likelihood is the loss; ``bf16``: the forward passes
    under bf16 autocast; ``on_windows``: called with the number of windows of each batch predicted.

    ``metrics["confusion"]`` is the ``entity_type_confusion`` of the documents' gold and predicted spans.
    """
    from resume_ner.training.crf import crf_scores

    log_probs, loss = predict_windows(
        model, windowed.windows, pad_token_id, batch_size, device, bf16=bf16, crf=crf, on_batch=on_windows
    )
    transitions = crf_scores(crf) if crf is not None else None
    metrics = score_word_log_probs(
        windowed, documents, merge_window_predictions(windowed, log_probs), decoding, transitions
    )
    metrics["loss"] = loss
    return metrics


def score_word_log_probs(
    windowed: WindowedDocuments,
    documents: Sequence[Document],
    word_log_probs: Sequence[torch.Tensor],
    decoding: Decoding,
    transitions: Mapping[str, torch.Tensor] | None,
) -> dict[str, Any]:
    """Entity metrics (seqeval), document span metrics and the type confusion of ``documents`` from their words'
    label log-probabilities (``windowed``'s words), read into tags by ``decoding`` with CRF ``transitions``."""
    merged = decode_tags(word_log_probs, windowed.scheme, decoding, transitions)
    gold_tags = [w.tags for w in windowed.words]
    pred_tags = [tags for tags, _ in merged]
    metrics = compute_metrics(gold_tags, pred_tags)
    pred_spans = [[span for span, _ in doc] for doc in predicted_spans(windowed, merged)]
    gold_spans = [list(doc.spans) for doc in documents]
    metrics.update(span_metrics(gold_spans, pred_spans))
    metrics["confusion"] = entity_type_confusion(gold_spans, pred_spans)
    metrics["decoding"] = decoding
    metrics["documents"] = len(documents)
    metrics["windows"] = len(windowed.windows)
    return metrics


def evaluate_model(
    model_dir: str | Path | Sequence[str | Path],
    documents: Sequence[Document],
    *,
    batch_size: int = 32,
    device: str = "auto",
    decoding: Decoding | None = None,
    precision: Precision = "auto",
    on_windows: Callable[[int], None] | None = None,
) -> dict[str, Any]:
    """Load a checkpoint and evaluate it on ``documents`` with the window settings it was trained with, its
    decoding (``decoding`` overrides it) and its CRF head, if it has one; ``precision`` as in ``Predictor``
    (the same default, so the figures are those of the entities ``predict`` finds); ``on_windows`` as in
    ``evaluate_windowed``; ``metrics["precision"]`` says how the forward passes ran (``bf16`` or ``fp32``).
    Several checkpoints are evaluated as an ensemble (``resume_ner.training.ensemble``, the first one's words,
    windows and decoding; no loss: ``metrics["loss"]`` is ``None``)."""
    torch_device = resolve_device(device)
    directories = [model_dir] if isinstance(model_dir, (str, Path)) else list(model_dir)
    members = load_members(directories, torch_device)
    autocast = members_autocast(members, precision, torch_device)
    first = members[0]
    windowed = first.windows(documents)
    decoding = decoding or model_decoding(first.metadata)
    if len(members) == 1:
        metrics = evaluate_windowed(
            first.model,
            windowed,
            documents,
            pad_token_id=first.tokenizer.pad_token_id,
            batch_size=batch_size,
            device=torch_device,
            decoding=decoding,
            crf=first.crf,
            bf16=autocast and not first.onnx,
            on_windows=on_windows,
        )
        metrics["model_dir"] = str(first.directory)
    else:
        word_log_probs = ensemble_word_log_probs(
            members,
            documents,
            windowed,
            batch_size=batch_size,
            device=torch_device,
            bf16=autocast,
            on_windows=on_windows,
        )
        metrics = score_word_log_probs(windowed, documents, word_log_probs, decoding, mean_transitions(members))
        metrics["loss"] = None
        metrics["model_dir"] = [str(member.directory) for member in members]
    metrics["precision"] = "bf16" if autocast and not all(member.onnx for member in members) else "fp32"
    return metrics
