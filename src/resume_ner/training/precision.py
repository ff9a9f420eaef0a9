"""bf16 autocast: where the hardware runs it natively, and the context that turns it on.

Weights and optimizer state always stay fp32; autocast runs the matrix products of the forward pass in bf16.
On a CPU without AVX512-BF16 or AMX, or a GPU without bf16, autocast emulates bf16 and is slower than fp32,
so ``auto`` picks it only where it is native.
"""

from __future__ import annotations

from contextlib import nullcontext
from pathlib import Path
from typing import TYPE_CHECKING, Literal

if TYPE_CHECKING:
    import torch

Precision = Literal["auto", "fp32", "bf16"]
PRECISIONS: tuple[str, ...] = ("auto", "fp32", "bf16")
CPU_BF16_FLAGS = frozenset({"avx512_bf16", "amx_bf16"})
CPUINFO = Path("/proc/cpuinfo")


def cpu_flags(cpuinfo: Path = CPUINFO) -> frozenset[str]:
    """The CPU feature flags of ``/proc/cpuinfo`` (empty where there is none)."""
    try:
        text = cpuinfo.read_text(encoding="utf-8", errors="replace")
    except OSError:
        return frozenset()
    for line in text.splitlines():
        if line.startswith("flags"):
            return frozenset(line.split(":", 1)[1].split())
    return frozenset()


def native_bf16(device: torch.device) -> bool:
    """Whether ``device`` (a ``torch.device``) runs bf16 matrix products natively."""
    import torch

    if device.type == "cuda":
        return bool(torch.cuda.is_bf16_supported())
    return device.type == "cpu" and bool(cpu_flags() & CPU_BF16_FLAGS)


def use_bf16(precision: Precision, device: torch.device) -> bool:
    """``precision`` resolved for ``device``: ``auto`` is bf16 where it is native, else fp32."""
    if precision not in PRECISIONS:
        raise ValueError(f"precision {precision!r}: expected one of {', '.join(PRECISIONS)}")
    return precision == "bf16" or (precision == "auto" and native_bf16(device))


def autocast(device: torch.device, enabled: bool) -> torch.autocast | nullcontext[None]:
    """bf16 autocast on ``device`` when ``enabled``, else a no-op context."""
    import torch

    return torch.autocast(device.type, dtype=torch.bfloat16) if enabled else nullcontext()
