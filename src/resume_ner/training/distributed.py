"""Device selection and (later) torch.distributed setup from the torchrun / PyTorchJob environment."""

from __future__ import annotations

from typing import Any


def resolve_device(device: str = "auto") -> Any:
    """``torch.device`` for 'auto' (CUDA when available), 'cpu' or 'cuda'."""
    import torch

    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device == "cuda" and not torch.cuda.is_available():
        from resume_ner.errors import ConfigError

        raise ConfigError("training.device=cuda but no CUDA device is available; use 'auto' or 'cpu'")
    return torch.device(device)
