"""Models that predict as one: each member (a trained model directory: another seed, another backbone) scores
the documents with its own tokenizer and windows, its windows are merged to per-word label log-probabilities
(``merge_window_predictions``), and the members' probabilities are averaged word by word.

Words are matched to the first member's words by character span (``reference``): a word another member split
differently is averaged over the members that have it. A CRF head's learned transition scores are averaged
over the members that have one, and Viterbi decodes the mean probabilities with them. Every member must have
the same labels. A single member is the plain model: its word log-probabilities are returned unchanged.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from resume_ner.data.document import Document
from resume_ner.data.labels import LabelScheme
from resume_ner.data.windows import WindowedDocuments, build_windows, merge_window_predictions
from resume_ner.errors import ConfigError
from resume_ner.training.batching import predict_windows
from resume_ner.training.checkpoint import load_model_checkpoint
from resume_ner.training.precision import Precision, use_bf16

if TYPE_CHECKING:
    import torch
    from torchcrf import CRF


@dataclass
class Member:
    """One loaded model directory: its model, tokenizer, metadata, labels and CRF head (``None`` without one)."""

    directory: Path
    model: Any
    tokenizer: Any
    metadata: dict[str, Any]
    scheme: LabelScheme
    crf: CRF | None

    @property
    def transitions(self) -> dict[str, torch.Tensor] | None:
        """The CRF head's learned start, end and transition scores; ``None`` without a CRF head."""
        from resume_ner.training.crf import crf_scores

        return crf_scores(self.crf) if self.crf is not None else None

    @property
    def onnx(self) -> bool:
        """Whether the directory is an ONNX export (its graph runs on ONNX Runtime, in fp32)."""
        return bool(self.metadata.get("export", {}).get("format") == "onnx")

    def windows(self, documents: Sequence[Document]) -> WindowedDocuments:
        """``documents`` cut into this member's windows (its tokenizer, window length, stride and line markers;
        a model saved before line markers existed has none)."""
        settings = self.metadata["windows"]
        return build_windows(
            documents,
            self.tokenizer,
            self.scheme,
            max_length=int(settings["max_length"]),
            stride=int(settings["stride"]),
            line_markers=bool(settings.get("line_markers", False)),
        )


def load_member(directory: str | Path, device: torch.device) -> Member:
    """Load a model directory (``load_model_checkpoint``) with its CRF head, if it has one."""
    from resume_ner.training.crf import model_crf

    model, tokenizer, metadata = load_model_checkpoint(directory, device=str(device))
    scheme = LabelScheme.from_dict(metadata["label_scheme"])
    return Member(Path(directory), model, tokenizer, metadata, scheme, model_crf(directory, metadata, scheme))


def load_members(directories: Sequence[str | Path], device: torch.device) -> list[Member]:
    """Load every directory; ``ConfigError`` when there is none, or when one's labels differ from the first's."""
    if not directories:
        raise ConfigError("no model directory given: pass at least one")
    members = [load_member(directory, device) for directory in directories]
    first = members[0]
    for member in members[1:]:
        if member.scheme.labels != first.scheme.labels:
            raise ConfigError(
                f"{member.directory} has labels {list(member.scheme.labels)}, {first.directory} "
                f"{list(first.scheme.labels)}: the models of an ensemble must be trained on the same entity types"
            )
    return members


def members_autocast(members: Sequence[Member], precision: Precision, device: torch.device) -> bool:
    """Whether the members' forward passes run under bf16 autocast: ``precision`` resolved for ``device``
    (``use_bf16``); an ONNX export runs in fp32 whatever it says, and ``ConfigError`` when bf16 is forced on one."""
    for member in members:
        if member.onnx and precision == "bf16":
            raise ConfigError(f"{member.directory} is an ONNX export, which runs in fp32: use precision auto or fp32")
    return use_bf16(precision, device)


def member_word_log_probs(
    member: Member,
    windowed: WindowedDocuments,
    *,
    batch_size: int,
    device: torch.device,
    bf16: bool,
    on_windows: Callable[[int], None] | None = None,
) -> list[torch.Tensor]:
    """Per document of ``windowed`` (this member's windows), its words' label log-probabilities ``(words,
    labels)``."""
    log_probs, _ = predict_windows(
        member.model, windowed.windows, member.tokenizer.pad_token_id, batch_size, device, bf16, on_batch=on_windows
    )
    return merge_window_predictions(windowed, log_probs)


def mean_word_log_probs(
    reference: WindowedDocuments, scored: Sequence[tuple[WindowedDocuments, Sequence[torch.Tensor]]]
) -> list[torch.Tensor]:
    """Per document, the log of the mean probability of each of ``reference``'s words over the members of
    ``scored`` (each a member's windows and word log-probabilities) that have a word of the same character span.
    The first member must hold every reference word (it is the reference's own scoring)."""
    import torch

    if len(scored) == 1:
        return list(scored[0][1])
    out = []
    for d, words in enumerate(reference.words):
        total = torch.zeros(len(words.offsets), len(reference.scheme.labels))
        count = torch.zeros(len(words.offsets), 1)
        for windowed, log_probs in scored:
            row_of = {span: row for row, span in enumerate(windowed.words[d].offsets)}
            pairs = [(w, row_of[span]) for w, span in enumerate(words.offsets) if span in row_of]
            if not pairs:
                continue
            at, rows = (torch.tensor(index, dtype=torch.long) for index in zip(*pairs, strict=True))
            total[at] += log_probs[d][rows].float().exp()
            count[at] += 1
        out.append((total / count).log())
    return out


def mean_transitions(members: Sequence[Member]) -> dict[str, torch.Tensor] | None:
    """The mean of the members' learned CRF transition scores (over the members with a CRF head); ``None``
    when none has one."""
    import torch

    learned = [member.transitions for member in members if member.transitions is not None]
    if not learned:
        return None
    return {name: torch.stack([scores[name] for scores in learned]).mean(0) for name in learned[0]}


def ensemble_word_log_probs(
    members: Sequence[Member],
    documents: Sequence[Document],
    reference: WindowedDocuments,
    *,
    batch_size: int,
    device: torch.device,
    bf16: bool,
    on_windows: Callable[[int], None] | None = None,
) -> list[torch.Tensor]:
    """Every member scores ``documents`` (the first through ``reference``, its own windows of them); the mean
    word log-probabilities on ``reference``'s words. ``bf16``: forward passes under bf16 autocast, for every
    member that is not an ONNX export (those run in fp32)."""
    scored = []
    for index, member in enumerate(members):
        windowed = reference if index == 0 else member.windows(documents)
        autocast = bf16 and not member.onnx
        log_probs = member_word_log_probs(
            member, windowed, batch_size=batch_size, device=device, bf16=autocast, on_windows=on_windows
        )
        scored.append((windowed, log_probs))
    return mean_word_log_probs(reference, scored)
