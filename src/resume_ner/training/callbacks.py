"""Training callbacks: hooks the loop calls at fixed points (HPO pruning and early stopping use them)."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any

log = logging.getLogger(__name__)


@dataclass
class TrainerState:
    """Where training stands; saved in every training checkpoint and restored by ``--resume``."""

    epoch: int = 0  # epochs completed
    global_step: int = 0  # optimizer steps done
    step_in_epoch: int = 0  # micro-batches done in the current epoch
    epoch_loss_sum: float = 0.0  # sum of the current epoch's micro-batch losses
    tokens_seen: int = 0
    best_metric: float | None = None
    best_epoch: int | None = None
    epochs_without_improvement: int = 0
    history: list[dict[str, Any]] = field(default_factory=list)
    should_stop: bool = False
    stop_reason: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return {k: getattr(self, k) for k in self.__dataclass_fields__}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> TrainerState:
        return cls(**{k: v for k, v in data.items() if k in cls.__dataclass_fields__})


class TrainerCallback:
    """Base class; override the hooks you need. Raising from a hook stops training with that exception."""

    def on_train_begin(self, state: TrainerState) -> None:
        """Called once, after a resume has restored ``state``."""

    def on_step_end(self, state: TrainerState, logs: dict[str, float]) -> None:
        """Called after each optimizer step with the training loss and learning rate."""

    def on_evaluate(self, state: TrainerState, metrics: dict[str, Any], value: float | None) -> None:
        """Called after each epoch's validation with all metrics and the configured metric's value."""

    def on_train_end(self, state: TrainerState) -> None:
        """Called once when the loop ends normally."""


class EarlyStopping(TrainerCallback):
    """Stop when the validation metric has not improved for ``patience`` epochs."""

    def __init__(self, patience: int) -> None:
        self.patience = patience

    def on_evaluate(self, state: TrainerState, metrics: dict[str, Any], value: float | None) -> None:
        if self.patience > 0 and state.epochs_without_improvement >= self.patience:
            state.should_stop = True
            state.stop_reason = f"early stopping: no improvement for {self.patience} epoch(s)"
            log.info(state.stop_reason)
