"""CPU dropout from 64-bit random words: the keep probability, the scaling, seeding, gradients, and a model whose
training attention uses it computing what eager attention computes."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from resume_ner.config import ModelConfig
from resume_ner.data.labels import LabelScheme
from resume_ner.training.fast_dropout import (
    FAST_DROPOUT_ATTENTION,
    FastDropout,
    apply_dropout,
    enable_fast_dropout,
    keep_mask,
)
from resume_ner.training.model import create_model_and_tokenizer, training_attention

SCHEME = LabelScheme.from_types(["NAME", "SKILL"])


@pytest.mark.parametrize("p", [0.1, 0.5, 0.9])
def test_elements_are_kept_with_probability_one_minus_p(p: float) -> None:
    torch.manual_seed(0)
    kept = keep_mask((1000, 1001), p, torch.device("cpu"))  # an odd count: the last 64-bit word is cut
    assert kept.shape == (1000, 1001) and kept.dtype == torch.bool
    assert float(kept.float().mean()) == pytest.approx(1 - p, abs=0.003)  # 1e6 draws: sd below 0.0005


def test_kept_values_are_scaled_so_the_expectation_is_unchanged() -> None:
    torch.manual_seed(0)
    x = torch.ones(2000, 1000)
    out = apply_dropout(x, 0.1, training=True)
    kept = out != 0
    assert torch.equal(out[kept], torch.full_like(out[kept], 65536 / (65536 - round(0.1 * 65536))))
    assert float(out.mean()) == pytest.approx(1.0, abs=0.003)


def test_no_dropout_outside_training_at_zero_and_everything_dropped_at_one() -> None:
    x = torch.randn(4, 8)
    assert apply_dropout(x, 0.1, training=False) is x
    assert apply_dropout(x, 0.0, training=True) is x
    assert torch.equal(apply_dropout(x, 1.0, training=True), torch.zeros_like(x))


def test_masks_follow_torch_seeding() -> None:
    x = torch.ones(64, 64)
    torch.manual_seed(1)
    first = apply_dropout(x, 0.3, training=True)
    torch.manual_seed(1)
    assert torch.equal(apply_dropout(x, 0.3, training=True), first)
    torch.manual_seed(2)
    assert not torch.equal(apply_dropout(x, 0.3, training=True), first)


def test_the_gradient_is_the_scaled_mask() -> None:
    torch.manual_seed(0)
    x = torch.randn(32, 48, requires_grad=True)
    out = apply_dropout(x, 0.25, training=True)
    out.sum().backward()
    assert x.grad is not None
    scale = 65536 / (65536 - round(0.25 * 65536))
    assert torch.equal(x.grad, (out != 0).float() * scale)


def test_a_fast_dropout_module_is_an_nn_dropout_with_the_same_p() -> None:
    module = FastDropout(0.2)
    assert isinstance(module, nn.Dropout) and module.p == 0.2
    module.eval()
    x = torch.randn(3, 5)
    assert torch.equal(module(x), x)


def test_a_model_with_fast_dropout_computes_eager_attention_with_padding_masks(tiny_backbone) -> None:
    model, _ = create_model_and_tokenizer(ModelConfig(backbone=str(tiny_backbone), dropout=0.1), SCHEME)
    dropouts = sum(type(m) is nn.Dropout for m in model.modules())
    assert enable_fast_dropout(model) == dropouts > 0
    assert not any(type(m) is nn.Dropout for m in model.modules())
    assert training_attention(model, torch.device("cpu"), fast_dropout=True) == FAST_DROPOUT_ATTENTION
    ids = torch.randint(1000, 2000, (3, 12))
    mask = torch.ones_like(ids)
    mask[1, 7:] = 0  # padded rows: the additive mask must reach the registered attention
    mask[2, 3:] = 0
    model.eval()
    model.set_attn_implementation("eager")
    eager = model(input_ids=ids, attention_mask=mask).logits
    model.set_attn_implementation(FAST_DROPOUT_ATTENTION)
    fast = model(input_ids=ids, attention_mask=mask).logits
    torch.testing.assert_close(fast, eager)
    model.train()
    torch.manual_seed(0)
    first = model(input_ids=ids, attention_mask=mask).logits
    torch.manual_seed(0)
    assert torch.equal(model(input_ids=ids, attention_mask=mask).logits, first)  # seeded, and dropout is on
    assert not torch.allclose(first, eager)
    first.sum().backward()
    assert all(p.grad is not None for p in model.parameters() if p.requires_grad and p.ndim == 2)
