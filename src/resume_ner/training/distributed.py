"""Devices and data-parallel training: ``torch.distributed`` from the torchrun / PyTorchJob environment.

``torchrun`` (and the Kubeflow Training Operator, through ``torchrun`` and its ``PET_*`` variables) start one
process per device with ``RANK``, ``LOCAL_RANK``, ``WORLD_SIZE``, ``MASTER_ADDR`` and ``MASTER_PORT`` set.
``init_distributed`` joins the process group (NCCL on GPU, gloo on CPU) once per process and returns a
``DistributedContext``; without those variables it is a 1-process context and nothing is initialised.
``launch_torchrun`` re-runs a command line under ``torchrun`` on this host (``--nproc-per-node``).
"""

from __future__ import annotations

import logging
import os
import subprocess
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import timedelta
from typing import TYPE_CHECKING, Any

from resume_ner.errors import ConfigError

if TYPE_CHECKING:
    import torch

log = logging.getLogger(__name__)

PROCESS_GROUP_TIMEOUT = timedelta(minutes=30)  # evaluation on rank 0 may take a while; others wait on it


@dataclass(frozen=True)
class DistributedContext:
    """This process's place in a data-parallel job (rank 0 of 1 without torchrun)."""

    rank: int = 0
    local_rank: int = 0
    world_size: int = 1

    @property
    def enabled(self) -> bool:
        """True when more than one process trains."""
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        """Rank 0: the one process that logs, writes checkpoints and prints progress."""
        return self.rank == 0


def _int_env(name: str, default: int) -> int:
    raw = os.environ.get(name)
    if raw is None or raw == "":
        return default
    try:
        return int(raw)
    except ValueError:
        raise ConfigError(f"${name}={raw!r} is not an integer (set by torchrun / the PyTorchJob)") from None


def context_from_env() -> DistributedContext:
    """The ``RANK``/``LOCAL_RANK``/``WORLD_SIZE`` of this process (torchrun sets them), else rank 0 of 1."""
    world = _int_env("WORLD_SIZE", 1)
    rank = _int_env("RANK", 0)
    if world < 1 or not 0 <= rank < world:
        raise ConfigError(f"invalid distributed environment: RANK={rank}, WORLD_SIZE={world}")
    return DistributedContext(rank=rank, local_rank=_int_env("LOCAL_RANK", rank), world_size=world)


def resolve_device(device: str = "auto", local_rank: int = 0) -> torch.device:
    """``torch.device`` for 'auto' (CUDA when available), 'cpu' or 'cuda'; under DDP the GPU of ``local_rank``."""
    import torch

    if device == "cuda" and not torch.cuda.is_available():
        raise ConfigError("training.device=cuda but no CUDA device is available; use 'auto' or 'cpu'")
    if device == "cpu" or (device == "auto" and not torch.cuda.is_available()):
        return torch.device("cpu")
    return torch.device("cuda", local_rank % max(torch.cuda.device_count(), 1))


def init_distributed(device: str = "auto") -> tuple[DistributedContext, torch.device]:
    """This process's ``DistributedContext`` and ``torch.device``, joining the process group when
    ``WORLD_SIZE`` > 1 (NCCL for CUDA, gloo for CPU; idempotent)."""
    import torch
    import torch.distributed as dist

    context = context_from_env()
    torch_device = resolve_device(device, context.local_rank)
    if context.enabled and not dist.is_initialized():
        backend = "nccl" if torch_device.type == "cuda" else "gloo"
        if torch_device.type == "cuda":
            torch.cuda.set_device(torch_device)
        for name in ("MASTER_ADDR", "MASTER_PORT"):
            if not os.environ.get(name):
                raise ConfigError(
                    f"WORLD_SIZE={context.world_size} but ${name} is not set: start the processes "
                    "with torchrun (or `resume-ner train --nproc-per-node N`)"
                )
        dist.init_process_group(
            backend, rank=context.rank, world_size=context.world_size, timeout=PROCESS_GROUP_TIMEOUT
        )
        log.info(
            "rank %d of %d joined the %s process group (device %s)",
            context.rank,
            context.world_size,
            backend,
            torch_device,
        )
    return context, torch_device


def shard_indices(order: Sequence[int], context: DistributedContext) -> list[int]:
    """This rank's share of ``order``: every ``world_size``-th item from ``rank``, after wrapping the list to a
    multiple of ``world_size`` so every rank runs the same number of batches (as ``DistributedSampler``)."""
    if not context.enabled:
        return list(order)
    padded = list(order)
    while len(padded) % context.world_size:
        padded.append(padded[len(padded) % len(order)])
    return padded[context.rank :: context.world_size]


def all_reduce_sum(values: Sequence[float], context: DistributedContext) -> list[float]:
    """``values`` summed element-wise over all ranks (as is with one process)."""
    if not context.enabled:
        return list(values)
    import torch
    import torch.distributed as dist

    tensor = torch.tensor(list(values), dtype=torch.float64, device="cuda" if dist.get_backend() == "nccl" else "cpu")
    dist.all_reduce(tensor)
    return tensor.cpu().tolist()


def broadcast_object(obj: Any, context: DistributedContext) -> Any:
    """Rank 0's ``obj`` on every rank (a picklable value)."""
    if not context.enabled:
        return obj
    import torch.distributed as dist

    holder = [obj if context.is_main else None]
    dist.broadcast_object_list(holder, src=0)
    return holder[0]


def all_gather_object(obj: Any, context: DistributedContext) -> list[Any]:
    """Every rank's ``obj``, in rank order."""
    if not context.enabled:
        return [obj]
    import torch.distributed as dist

    gathered: list[Any] = [None] * context.world_size
    dist.all_gather_object(gathered, obj)
    return gathered


def barrier(context: DistributedContext) -> None:
    """Wait for every rank (no-op with one process)."""
    if context.enabled:
        import torch.distributed as dist

        dist.barrier()


def shutdown_distributed() -> None:
    """Leave the process group, if this process joined one."""
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def launch_torchrun(nproc_per_node: int, argv: Sequence[str]) -> int:
    """Run ``python -m resume_ner.cli.main ARGV`` in ``nproc_per_node`` processes on this host with torchrun
    (a free rendezvous port, one host); the exit status of the job."""
    if nproc_per_node < 1:
        raise ConfigError(f"--nproc-per-node must be at least 1, got {nproc_per_node}")
    command = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        f"--nproc-per-node={nproc_per_node}",
        "-m",
        "resume_ner.cli.main",
        *argv,
    ]
    log.info("launching %d processes: %s", nproc_per_node, " ".join(command))
    return subprocess.run(command, check=False).returncode
