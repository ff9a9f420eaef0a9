"""The CRF head (``model.head: crf``): a linear-chain CRF (``pytorch-crf``) over the token classifier's label
scores, trained with the model on the negative log-likelihood of each window's word tags.

The token classifier stays a plain Hugging Face ``*ForTokenClassification`` (``model.safetensors``); the CRF's
start, end and transition scores are saved beside it as ``crf.safetensors`` and join the IOB2 constraints in
the Viterbi decoding of whole documents (``resume_ner.training.decoding``). Inside a window IOB2-invalid moves
are forbidden (``I-X`` after ``O``, ``B-Y`` or ``I-Y``); a window may start inside an entity, so ``I-X`` may
come first there. The CRF reads the tokens that carry labels: the first sub-token of each word (every
sub-token with ``model.label_all_tokens``).
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from torchcrf import CRF

from resume_ner.data.labels import LabelScheme
from resume_ner.data.windows import IGNORE_INDEX
from resume_ner.errors import CheckpointError
from resume_ner.layout import CRF_FILE
from resume_ner.training.decoding import FORBIDDEN, SCORE_NAMES, iob2_forbidden

if TYPE_CHECKING:
    from transformers import PreTrainedModel
    from transformers.modeling_outputs import TokenClassifierOutput


def new_crf(scheme: LabelScheme) -> CRF:
    """A CRF over ``scheme.labels`` whose scores start at 0, with IOB2-invalid transitions at ``FORBIDDEN``
    (their gradient is 0, so training leaves them there)."""
    crf = CRF(len(scheme.labels), batch_first=True)
    _, transition = iob2_forbidden(scheme)
    with torch.no_grad():
        for name in SCORE_NAMES:
            getattr(crf, name).zero_()
        crf.transitions.masked_fill_(transition, FORBIDDEN)
    return crf


def crf_scores(crf: CRF) -> dict[str, torch.Tensor]:
    """A detached CPU copy of ``crf``'s start, end and transition scores (for decoding and saving)."""
    return {name: getattr(crf, name).detach().float().cpu().clone() for name in SCORE_NAMES}


def labelled_first(logits: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The labelled tokens of each window moved to its front, in order: ``(scores, tags, mask)``, cut to the
    longest window's count; windows without a labelled token are left out."""
    order = torch.argsort((labels == IGNORE_INDEX).int(), dim=1, stable=True)
    scores = logits.gather(1, order.unsqueeze(-1).expand(-1, -1, logits.shape[-1]))
    tags = labels.gather(1, order)
    mask = tags != IGNORE_INDEX
    keep = mask[:, 0]
    width = int(mask.sum(1).max()) if bool(keep.any()) else 0
    return scores[keep, :width], tags[keep, :width].clamp(min=0), mask[keep, :width]


def crf_nll(crf: CRF, logits: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, int]:
    """The CRF's negative log-likelihood of the gold tags of a batch of windows, summed over the windows, and
    the number of labelled tokens; computed in fp32 (outside autocast)."""
    with torch.autocast(device_type=logits.device.type, enabled=False):
        scores, tags, mask = labelled_first(logits.float(), labels)
        tokens = int(mask.sum())
        if tokens == 0:
            return scores.sum() * 0.0, 0
        return -crf(scores, tags, mask, reduction="sum"), tokens


class CrfTokenClassifier(torch.nn.Module):
    """A token classifier and its CRF as one module (what DDP wraps): ``forward(**batch)`` returns the
    classifier's output with ``loss`` replaced by the CRF's negative log-likelihood per labelled token."""

    def __init__(self, classifier: PreTrainedModel, crf: CRF) -> None:
        super().__init__()
        self.classifier = classifier
        self.crf = crf

    def forward(self, labels: torch.Tensor, **inputs: Any) -> TokenClassifierOutput:
        output = self.classifier(**inputs)
        nll, tokens = crf_nll(self.crf, output.logits, labels)
        output.loss = nll / max(tokens, 1)
        return output


def save_crf(crf: CRF, directory: Path) -> None:
    """Write ``crf``'s scores to ``directory / CRF_FILE`` (safetensors)."""
    from safetensors.torch import save_file

    save_file(crf_scores(crf), str(Path(directory) / CRF_FILE))


def load_crf_scores(directory: str | Path, scheme: LabelScheme) -> dict[str, torch.Tensor]:
    """The CRF scores saved in a model directory, checked against ``scheme``; ``CheckpointError`` names the
    file and what is wrong."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    path = Path(directory) / CRF_FILE
    try:
        scores = load_file(str(path))
    except FileNotFoundError:
        raise CheckpointError(
            f"checkpoint {directory}: {CRF_FILE} is missing (the model was trained with a CRF head)"
        ) from None
    except (SafetensorError, OSError) as exc:
        raise CheckpointError(f"checkpoint {directory}: {CRF_FILE} is truncated or corrupt ({exc})") from None
    n = len(scheme.labels)
    shapes = {"start_transitions": (n,), "end_transitions": (n,), "transitions": (n, n)}
    for name, shape in shapes.items():
        if name not in scores or tuple(scores[name].shape) != shape:
            found = tuple(scores[name].shape) if name in scores else "missing"
            raise CheckpointError(
                f"checkpoint {directory}: {CRF_FILE} {name} should have shape {shape} for {n} labels, found {found}"
            )
    return scores


def load_crf(directory: str | Path, scheme: LabelScheme) -> CRF:
    """A trainable CRF with the scores saved in ``directory`` (resuming a training)."""
    crf = new_crf(scheme)
    with torch.no_grad():
        for name, value in load_crf_scores(directory, scheme).items():
            getattr(crf, name).copy_(value)
    return crf


def model_crf(directory: str | Path, metadata: Mapping[str, Any], scheme: LabelScheme) -> CRF | None:
    """The CRF head of a model directory whose ``resume_ner.json`` records ``head: crf``, in eval mode; else
    None."""
    return load_crf(directory, scheme).eval() if metadata.get("head") == "crf" else None
