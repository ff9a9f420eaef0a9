"""The machine's matrix-multiply throughput (GFLOP/s) in fp32 and bf16 at MiniLM's shapes, with torch.

The peaks that the report's model-FLOPs utilisation (MFU) divides by: the matrix multiplies of one
all-MiniLM-L6-v2 layer (hidden 384, intermediate 1536) over a batch of ``--tokens`` tokens (16 windows of 256
by default, the training batch): the attention projections (tokens x 384) @ (384 x 384), the feed-forward
up-projection (tokens x 384) @ (384 x 1536) and down-projection (tokens x 1536) @ (1536 x 384). Each shape runs
in three modes: ``fp32`` (fp32 tensors), ``bf16 autocast`` (fp32 tensors under ``torch.autocast("cpu",
dtype=torch.bfloat16)``, as the training and prediction forward passes run) and ``bf16 tensors`` (bf16 tensors
directly). Each is warmed up, then timed ``--repeats`` times; the median time gives its GFLOP/s
(``2 * m * k * n`` FLOPs a multiply). The fp32 peak is the best fp32 figure, the bf16 peak the best of both bf16
modes. torch runs on ``--threads`` threads, as the speed benchmarks do.

    python bench/gemm_peak.py [--quick] [--threads N] [--tokens T] [--repeats R]
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

import common  # noqa: E402

HIDDEN, INTERMEDIATE = 384, 1536  # all-MiniLM-L6-v2
MODES = ("fp32", "bf16 autocast", "bf16 tensors")


def matmul_flops(m: int, k: int, n: int) -> int:
    """FLOPs of an (m x k) @ (k x n) multiply: a multiply and an add per term."""
    return 2 * m * k * n


def shapes(tokens: int) -> list[tuple[int, int, int]]:
    """The (m, k, n) of MiniLM's matrix multiplies over ``tokens`` tokens."""
    return [(tokens, HIDDEN, HIDDEN), (tokens, HIDDEN, INTERMEDIATE), (tokens, INTERMEDIATE, HIDDEN)]


def multiply(mode: str, m: int, k: int, n: int) -> Callable[[], Any]:
    """A call that runs one (m x k) @ (k x n) multiply in ``mode``, on random operands made once."""
    import torch

    dtype = torch.bfloat16 if mode == "bf16 tensors" else torch.float32
    left, right = torch.randn(m, k, dtype=dtype), torch.randn(k, n, dtype=dtype)
    if mode == "bf16 autocast":
        def run() -> Any:
            with torch.autocast("cpu", dtype=torch.bfloat16):
                return left @ right

        return run
    return lambda: left @ right


def median_seconds(call: Callable[[], Any], warmup: int, repeats: int) -> float:
    """The median wall seconds of ``repeats`` calls after ``warmup`` untimed ones."""
    for _ in range(warmup):
        call()
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        call()
        times.append(time.perf_counter() - started)
    return common.median(times)


def measure(mode: str, m: int, k: int, n: int, warmup: int, repeats: int) -> dict[str, Any]:
    """One shape in one mode: its median time and GFLOP/s."""
    seconds = median_seconds(multiply(mode, m, k, n), warmup, repeats)
    return {"mode": mode, "shape": [m, k, n], "median_s": seconds, "gflops": matmul_flops(m, k, n) / seconds / 1e9}


def peaks(measurements: list[dict[str, Any]]) -> dict[str, float]:
    """The best GFLOP/s in fp32 and in bf16 (either bf16 mode)."""
    return {"fp32": max(r["gflops"] for r in measurements if r["mode"] == "fp32"),
            "bf16": max(r["gflops"] for r in measurements if r["mode"].startswith("bf16"))}


def main(argv: list[str] | None = None) -> int:
    """Measure every shape in every mode; write ``bench/results/gemm_peak[-quick].json``."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="fewer repeats, same shapes")
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 1, help="torch threads")
    parser.add_argument("--tokens", type=int, default=16 * 256, help="rows of each multiply (batch x window)")
    parser.add_argument("--repeats", type=int, help="timed calls per shape and mode (default 20, quick 5)")
    parser.add_argument("--warmup", type=int, default=3, help="untimed calls first")
    args = parser.parse_args(argv)
    args.repeats = args.repeats or (5 if args.quick else 20)
    import torch

    torch.set_num_threads(args.threads)
    measurements = []
    for m, k, n in shapes(args.tokens):
        for mode in MODES:
            result = measure(mode, m, k, n, args.warmup, args.repeats)
            print(f"gemm_peak: ({m}x{k})@({k}x{n}) {mode}: {result['gflops']:.1f} GFLOP/s", flush=True)
            measurements.append(result)
    settings = {"threads": args.threads, "tokens": args.tokens, "hidden": HIDDEN, "intermediate": INTERMEDIATE,
                "warmup": args.warmup, "repeats": args.repeats}
    peak = peaks(measurements)
    path = common.write_result("gemm_peak", {"settings": settings, "measurements": measurements,
                                              "peak_gflops": peak}, args.quick)
    print(f"gemm_peak: peak fp32 {peak['fp32']:.1f}, bf16 {peak['bf16']:.1f} GFLOP/s; wrote {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
