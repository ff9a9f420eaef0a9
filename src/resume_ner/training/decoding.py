"""Word tags from per-word label log-probabilities: the most probable valid IOB2 sequence, or each word's argmax.

``viterbi`` runs the Viterbi search of ``pytorch-crf``'s ``CRF`` under transition scores that allow exactly
the IOB2 sequences (``I-X`` only after ``B-X`` or ``I-X``, never first): a word whose own argmax would break
an entity in two (``B-X O I-X``) is read as part of it when that makes the whole sequence more probable.
The allowed moves score 0, or, for a model trained with a CRF head (``resume_ner.training.crf``), the
transition scores it learned. ``argmax`` takes each word's most probable label, as the Hugging Face
token-classification pipeline does. On the corpus's test resumes Viterbi raised span micro-F1 from 0.594 to
0.611 with the same model (docs/benchmarks.md).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any, Literal

from resume_ner.data.labels import OUTSIDE, LabelScheme

if TYPE_CHECKING:
    from torchcrf import CRF

Decoding = Literal["viterbi", "argmax"]
DECODINGS: tuple[str, ...] = ("viterbi", "argmax")
FORBIDDEN = -1e4  # the transition score of a move IOB2 does not allow (a log-probability no path survives)
DECODE_GROUP = 32  # documents per batched Viterbi search (sorted by length, so little padding)
SCORE_NAMES = ("start_transitions", "end_transitions", "transitions")  # a CRF's scores (learned by a CRF head)


def model_decoding(metadata: dict[str, Any]) -> Decoding:
    """The decoding a checkpoint's ``resume_ner.json`` records (``viterbi`` where it records none)."""
    return metadata.get("decoding", "viterbi")


def iob2_forbidden(scheme: LabelScheme) -> tuple[Any, Any]:
    """Boolean masks of the moves IOB2 does not allow over ``scheme.labels``: ``(first, transition)``, where
    ``first[j]`` forbids label ``j`` at the start (``I-X``) and ``transition[i, j]`` label ``j`` after ``i``
    (``I-X`` after ``O``, ``B-Y`` or ``I-Y``)."""
    import torch

    n = len(scheme.labels)
    first, transition = torch.zeros(n, dtype=torch.bool), torch.zeros(n, n, dtype=torch.bool)
    for j, label in enumerate(scheme.labels):
        if label.startswith("I-"):
            first[j] = True
            for i, previous in enumerate(scheme.labels):
                transition[i, j] = previous == OUTSIDE or previous[2:] != label[2:]
    return first, transition


def iob2_transitions(scheme: LabelScheme, learned: Mapping[str, Any] | None = None) -> CRF:
    """A ``torchcrf.CRF`` over ``scheme.labels`` for decoding: start, end and transition scores are
    ``learned`` (a CRF head's ``start_transitions``, ``end_transitions``, ``transitions``) or 0, and
    ``FORBIDDEN`` for the moves IOB2 does not allow."""
    import torch
    from torchcrf import CRF

    crf = CRF(len(scheme.labels), batch_first=True)
    first, transition = iob2_forbidden(scheme)
    with torch.no_grad():
        for name in SCORE_NAMES:
            getattr(crf, name).copy_(learned[name] if learned is not None else 0.0)
        crf.start_transitions.masked_fill_(first, FORBIDDEN)
        crf.transitions.masked_fill_(transition, FORBIDDEN)
    return crf.eval()


def decode_tags(
    word_log_probs: Sequence[Any],
    scheme: LabelScheme,
    decoding: Decoding = "viterbi",
    transitions: Mapping[str, Any] | None = None,
) -> list[tuple[list[str], list[float]]]:
    """Per document, the tag of every word and the probability of that tag.

    ``word_log_probs[d]`` is a float tensor ``(words of document d, len(scheme.labels))`` of log-probabilities;
    ``transitions``: the learned scores of a CRF head, for ``viterbi`` (``resume_ner.training.crf``).
    """
    import torch

    if decoding not in DECODINGS:
        raise ValueError(f"unknown decoding {decoding!r}: use one of {', '.join(DECODINGS)}")
    if decoding == "argmax":
        chosen = [rows.argmax(-1).tolist() for rows in word_log_probs]
    else:
        chosen = [[] for _ in word_log_probs]  # an empty document keeps its empty path
        crf = iob2_transitions(scheme, transitions)
        order = sorted((d for d, rows in enumerate(word_log_probs) if len(rows)), key=lambda d: len(word_log_probs[d]))
        with torch.no_grad():
            for start in range(0, len(order), DECODE_GROUP):
                group = order[start : start + DECODE_GROUP]
                rows = [word_log_probs[d].float() for d in group]
                emissions = torch.nn.utils.rnn.pad_sequence(rows, batch_first=True)
                mask = torch.zeros(emissions.shape[:2], dtype=torch.bool)
                for r, row in enumerate(rows):
                    mask[r, : len(row)] = True
                for d, path in zip(group, crf.decode(emissions, mask), strict=True):
                    chosen[d] = path
    decoded = []
    for ids, rows in zip(chosen, word_log_probs, strict=True):
        index = torch.tensor(ids, dtype=torch.long).unsqueeze(-1)
        probs = rows.float().gather(-1, index).squeeze(-1).exp().tolist() if ids else []
        decoded.append(([scheme.labels[i] for i in ids], probs))
    return decoded
