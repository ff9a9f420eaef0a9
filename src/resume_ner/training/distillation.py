"""Knowledge distillation: a trained teacher model's label probabilities as soft targets of a training.

The teacher (``training.distill_from``, a model directory with the same labels, e.g. one trained on
``packaged:all-mpnet-base-v2``) may have another tokenizer, so its targets are per *word*, the unit both
models label: ``teacher_word_log_probs`` runs the teacher once over the training documents with its own windows
and merges them to each word's label log-probabilities (``resume_ner.training.ensemble.member_word_log_probs``:
the window where the word sits farthest from an edge). ``window_soft_targets`` puts them on the student's
windows, at the first sub-token of each word, matched by the word's character span (a word the teacher split
differently gets no target).
``distillation_loss`` is the temperature-scaled KL divergence of the student's label distribution from the
teacher's at those tokens, times T^2 (Hinton et al., 2015). The teacher's scores are its emission scores (the
logits under its CRF head, if any), as the student's are.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from resume_ner.data.document import Document
from resume_ner.data.labels import LabelScheme
from resume_ner.data.windows import WindowedDocuments
from resume_ner.errors import ConfigError
from resume_ner.training.ensemble import load_member, member_word_log_probs

if TYPE_CHECKING:
    import torch

log = logging.getLogger(__name__)


def teacher_word_log_probs(
    teacher_dir: str | Path,
    documents: Sequence[Document],
    scheme: LabelScheme,
    device: torch.device,
    *,
    batch_size: int = 32,
    bf16: bool = False,
) -> tuple[list[list[tuple[int, int]]], list[torch.Tensor]]:
    """The teacher's words (character spans) of each document and their label log-probabilities, a tensor
    ``(words, labels)`` per document in ``scheme``'s label order; ``ConfigError`` when its labels differ."""
    teacher = load_member(teacher_dir, device)
    if teacher.scheme.labels != scheme.labels:
        raise ConfigError(
            f"training.distill_from: the teacher {teacher_dir} has labels {list(teacher.scheme.labels)}, this "
            f"training {list(scheme.labels)}; a teacher must be trained on the same entity types"
        )
    windows = teacher.windows(documents)
    log_probs = member_word_log_probs(teacher, windows, batch_size=batch_size, device=device, bf16=bf16)
    log.info(
        "distillation: teacher %s scored %d windows of %d documents", teacher_dir, len(windows.windows), len(documents)
    )
    return [words.offsets for words in windows.words], log_probs


def window_soft_targets(
    windowed: WindowedDocuments,
    teacher_offsets: Sequence[Sequence[tuple[int, int]]],
    teacher_log_probs: Sequence[torch.Tensor],
) -> tuple[list[torch.Tensor], float]:
    """Per student window, a float16 tensor ``(tokens, labels)`` of teacher log-probabilities at the first
    sub-token of each word the teacher also has (other rows ``nan``: no target), and the share of the student's
    words that got a target."""
    import torch

    n_labels = len(windowed.scheme.labels)
    word_rows: list[list[int | None]] = []
    matched = total = 0
    for words, offsets in zip(windowed.words, teacher_offsets, strict=True):
        teacher_index = {span: i for i, span in enumerate(offsets)}
        rows = [teacher_index.get(span) for span in words.offsets]
        word_rows.append(rows)
        matched += sum(row is not None for row in rows)
        total += len(rows)
    targets = []
    for window in windowed.windows:
        target = torch.full((len(window), n_labels), float("nan"), dtype=torch.float16)
        doc_rows, doc_probs = word_rows[window.doc_index], teacher_log_probs[window.doc_index]
        for t, wid in enumerate(window.word_ids):
            if wid is not None and window.first_subtoken[t] and (row := doc_rows[wid]) is not None:
                target[t] = doc_probs[row].to(torch.float16)
        targets.append(target)
    return targets, matched / max(total, 1)


def collate_soft_targets(targets: Sequence[torch.Tensor], width: int) -> torch.Tensor:
    """A batch of window targets right-padded to ``width`` tokens with ``nan`` (no target)."""
    import torch

    batch = torch.full((len(targets), width, targets[0].shape[1]), float("nan"), dtype=torch.float16)
    for row, target in enumerate(targets):
        batch[row, : len(target)] = target
    return batch


def distillation_loss(
    student_logits: torch.Tensor, teacher_log_probs: torch.Tensor, temperature: float
) -> torch.Tensor:
    """Mean over the tokens with a target (rows of ``teacher_log_probs`` without ``nan``) of
    ``T^2 * KL(teacher_T || student_T)``, both distributions softened by ``temperature``; 0 without any target."""
    import torch

    mask = ~torch.isnan(teacher_log_probs).any(-1)
    if not mask.any():
        return student_logits.sum() * 0.0
    teacher = torch.log_softmax(teacher_log_probs[mask].float() / temperature, dim=-1)
    student = torch.log_softmax(student_logits[mask].float() / temperature, dim=-1)
    kl = torch.nn.functional.kl_div(student, teacher, log_target=True, reduction="batchmean")
    return kl * temperature**2
