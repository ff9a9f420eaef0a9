"""Padding windows into tensors, length-grouped training orders, and running a model over windows in
length-sorted batches."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

from resume_ner.data.windows import IGNORE_INDEX, Window
from resume_ner.training.precision import autocast

if TYPE_CHECKING:
    import torch
    from torchcrf import CRF

MEGABATCH_BATCHES = 50  # batches per megabatch of ``length_grouped`` (as transformers' LengthGroupedSampler)
# Training batches are padded to a multiple of this many tokens: length-grouped batches of short windows
# would otherwise come in every width, and each new shape grows the CPU kernels' caches (resident memory
# rose by 1 GB in 2 epochs on 120 resumes; flat with this).
TRAIN_PAD_MULTIPLE = 32


def length_grouped(order: Sequence[int], lengths: Sequence[int], batch_size: int) -> list[int]:
    """``order`` cut into megabatches of ``MEGABATCH_BATCHES * batch_size`` windows, each sorted by length,
    longest first (stable, so equal lengths keep their random order).

    Consecutive ``batch_size`` windows then have near-equal lengths: most batches of full-length windows need
    no padding and no attention mask, which lets the attention kernels take their fast path, while which
    windows meet in a batch stays random.
    """
    size = MEGABATCH_BATCHES * batch_size
    grouped: list[int] = []
    for start in range(0, len(order), size):
        grouped.extend(sorted(order[start : start + size], key=lambda i: -lengths[i]))
    return grouped


def collate_windows(windows: Sequence[Window], pad_token_id: int, pad_to_multiple_of: int = 1) -> dict[str, Any]:
    """Right-pad a batch of windows to its longest member, rounded up to ``pad_to_multiple_of`` tokens: input
    ids, attention mask, labels (-100)."""
    import torch

    width = -(-max(len(w) for w in windows) // pad_to_multiple_of) * pad_to_multiple_of
    input_ids = torch.full((len(windows), width), pad_token_id, dtype=torch.long)
    attention = torch.zeros((len(windows), width), dtype=torch.long)
    labels = torch.full((len(windows), width), IGNORE_INDEX, dtype=torch.long)
    token_types = torch.zeros((len(windows), width), dtype=torch.long)
    with_types = windows[0].token_type_ids is not None
    for row, window in enumerate(windows):
        n = len(window)
        input_ids[row, :n] = torch.tensor(window.input_ids)
        attention[row, :n] = torch.tensor(window.attention_mask)
        labels[row, :n] = torch.tensor(window.labels)
        if with_types:
            token_types[row, :n] = torch.tensor(window.token_type_ids)
    batch = {"input_ids": input_ids, "attention_mask": attention, "labels": labels}
    if with_types:
        batch["token_type_ids"] = token_types
    return batch


def predict_windows(
    model: torch.nn.Module,
    windows: Sequence[Window],
    pad_token_id: int,
    batch_size: int,
    device: torch.device,
    bf16: bool = False,
    crf: CRF | None = None,
    on_batch: Callable[[int], None] | None = None,
) -> tuple[list[Any], float]:
    """Label log-probabilities of every token of every window (a CPU float tensor ``(tokens, labels)`` each),
    and the mean loss over labelled tokens: cross-entropy, or with ``crf`` (a CRF head) its negative
    log-likelihood; ``bf16``: the forward passes under bf16 autocast (log-probabilities and loss are computed in
    fp32). ``on_batch`` is called with the number of windows of each batch done (a progress bar's update)."""
    import torch

    if crf is not None:
        from resume_ner.training.crf import crf_nll

    order = sorted(range(len(windows)), key=lambda i: len(windows[i]))
    log_probs: list[Any] = [None] * len(windows)
    loss_sum, loss_tokens = 0.0, 0
    was_training = model.training
    model.eval()
    with torch.inference_mode():
        for start in range(0, len(order), batch_size):
            idx = order[start : start + batch_size]
            batch = collate_windows([windows[i] for i in idx], pad_token_id)
            batch = {k: v.to(device) for k, v in batch.items()}
            labels = batch.pop("labels")
            with autocast(device, bf16):
                logits = model(**batch).logits.float()
            if crf is not None:
                nll, tokens = crf_nll(crf, logits, labels)
                loss_sum, loss_tokens = loss_sum + nll.item(), loss_tokens + tokens
            elif (mask := labels != IGNORE_INDEX).any():
                loss_sum += torch.nn.functional.cross_entropy(logits[mask], labels[mask], reduction="sum").item()
                loss_tokens += int(mask.sum().item())
            batch_log_probs = logits.log_softmax(-1).cpu()
            for row, i in enumerate(idx):
                log_probs[i] = batch_log_probs[row, : len(windows[i])]
            if on_batch is not None:
                on_batch(len(idx))
    if was_training:
        model.train()
    return log_probs, loss_sum / max(loss_tokens, 1)
