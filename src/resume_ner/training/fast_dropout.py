"""Dropout for CPU training whose keep masks come from 64-bit random words.

PyTorch's CPU dropout draws one random number per element (``bernoulli_``). In a training step of the packaged
MiniLM (batch 16 x 256, bf16 autocast, 2 cores) that is about a third of the step, most of it on the attention
probabilities (batch x heads x 256 x 256 elements a layer). Here one ``random_`` call fills 64 bits, read as four
16-bit draws: an element is kept when its draw is at or above ``round(p * 65536)`` of 65536, so the keep
probability is ``p`` to within 1/131072, and kept values are scaled by the inverse of that exact keep probability
(the expectation is unchanged). The draws come from torch's generator, so ``torch.manual_seed`` and a saved RNG
state reproduce them. The step is 1.3x faster (docs/benchmarks.md).

``enable_fast_dropout`` swaps a model's ``nn.Dropout`` modules for ``FastDropout`` and registers
``FAST_DROPOUT_ATTENTION``, eager attention with this dropout on its probabilities, for models that take
Transformers' attention interface; ``resume_ner.training.model.training_attention`` chooses it for training steps
on a CPU. Neither changes the weights or what a saved checkpoint holds.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

FAST_DROPOUT_ATTENTION = "resume_ner_fast_dropout"
_DRAWS = 65536  # values of one 16-bit draw
_DRAWS_PER_WORD = 4  # 16-bit draws in one 64-bit random word


def keep_mask(shape: torch.Size | tuple[int, ...], p: float, device: torch.device) -> torch.Tensor:
    """A boolean tensor of ``shape``: each element True (kept) with probability ``1 - round(p * 65536) / 65536``."""
    count = 1
    for size in shape:
        count *= size
    words = torch.empty((count + _DRAWS_PER_WORD - 1) // _DRAWS_PER_WORD, dtype=torch.int64, device=device)
    draws = words.random_(-(2**63), None).view(torch.int16)[:count]  # every bit uniform: 16-bit draws in int16
    return draws.view(shape) >= round(p * _DRAWS) - _DRAWS // 2


def apply_dropout(x: torch.Tensor, p: float, training: bool) -> torch.Tensor:
    """``x`` with elements zeroed with probability ``p`` (to 1/65536) and the rest scaled to keep the expectation,
    when ``training``; else ``x``. Backward keeps only the boolean mask."""
    if not training or p == 0.0:
        return x
    dropped = round(p * _DRAWS)
    if dropped >= _DRAWS:
        return x * 0.0
    return torch.where(keep_mask(x.shape, p, x.device), x * (_DRAWS / (_DRAWS - dropped)), 0.0)


class FastDropout(nn.Dropout):
    """``nn.Dropout`` with the masks of ``apply_dropout``."""

    def forward(self, input: torch.Tensor) -> torch.Tensor:  # noqa: A002 - nn.Dropout's own argument name
        return apply_dropout(input, self.p, self.training)


def eager_attention(
    module: nn.Module,
    query: torch.Tensor,
    key: torch.Tensor,
    value: torch.Tensor,
    attention_mask: torch.Tensor | None,
    scaling: float | None = None,
    dropout: float = 0.0,
    **kwargs: Any,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Transformers' eager attention (scaled scores plus the additive mask, softmax, dropout, weighted values), with
    this module's dropout on the attention probabilities."""
    if scaling is None:
        scaling = query.size(-1) ** -0.5
    scores = torch.matmul(query, key.transpose(2, 3)) * scaling
    if attention_mask is not None:
        scores = scores + attention_mask
    probabilities = apply_dropout(nn.functional.softmax(scores, dim=-1), dropout, module.training)
    output = torch.matmul(probabilities, value).transpose(1, 2).contiguous()
    return output, probabilities


def enable_fast_dropout(model: nn.Module) -> int:
    """Swap every ``nn.Dropout`` of ``model`` for a ``FastDropout`` of the same ``p``, and register
    ``FAST_DROPOUT_ATTENTION`` (with eager attention's additive masks); the number of modules swapped."""
    from transformers import AttentionInterface
    from transformers.masking_utils import AttentionMaskInterface, eager_mask

    AttentionInterface.register(FAST_DROPOUT_ATTENTION, eager_attention)
    AttentionMaskInterface.register(FAST_DROPOUT_ATTENTION, eager_mask)
    swapped = 0
    for parent in list(model.modules()):
        for name, child in list(parent.named_children()):
            if type(child) is nn.Dropout:
                replacement = FastDropout(child.p, child.inplace)
                replacement.train(child.training)
                setattr(parent, name, replacement)
                swapped += 1
    return swapped
