"""Run every benchmark in order, then regenerate ``docs/benchmarks.md`` (``make bench`` / ``make bench-quick``).

Order: the matrix-multiply peaks first (short; the report's utilisation figures divide by them), the HPO sweeps
(the pruned sweep's best trial feeds the quality run's "best sweep config"), then quality, training speed,
prediction speed and serving speed (on the model the quality run trained with the default config) and pipeline
overhead. Each runs as its own process and writes ``bench/results/<name>[-quick].json``.

    python bench/run.py [--quick] [--only quality,train_speed,...]
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import time
from pathlib import Path

BENCH = Path(__file__).resolve().parent
BENCHMARKS = ("gemm_peak", "hpo_pruning", "quality", "train_speed", "predict_speed", "pipeline_overhead",
              "serving_speed")


def _args(name: str, quick: bool) -> list[str]:
    """The command-line arguments of one benchmark, wired to the outputs of the ones before it."""
    mode = "quick" if quick else "full"
    args = ["--quick"] if quick else []
    if name == "quality":
        best = Path("runs/bench/hpo_pruning") / mode / "best_trial.json"
        if best.is_file():
            args += ["--best-json", str(best)]
    if name in ("predict_speed", "serving_speed"):
        model = Path("runs/bench/quality") / mode / "resume-ner" / "model"
        if (model / "config.json").is_file():
            args += ["--model", str(model)]
    return args


def main(argv: list[str] | None = None) -> int:
    """Run the selected benchmarks and the report; stop at the first failure."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="small budgets, same code paths")
    parser.add_argument("--only", help="comma-separated subset of " + ", ".join(BENCHMARKS))
    args = parser.parse_args(argv)
    selected = [n.strip() for n in args.only.split(",")] if args.only else list(BENCHMARKS)
    unknown = sorted(set(selected) - set(BENCHMARKS))
    if unknown:
        parser.error(f"unknown benchmark(s) {', '.join(unknown)}; choose from {', '.join(BENCHMARKS)}")
    started = time.perf_counter()
    for name in [n for n in BENCHMARKS if n in selected]:
        cmd = [sys.executable, str(BENCH / f"{name}.py"), *_args(name, args.quick)]
        print(f"\n== {name}: {' '.join(cmd[1:])}", flush=True)
        began = time.perf_counter()
        if subprocess.run(cmd, check=False).returncode != 0:
            print(f"bench: {name} failed", file=sys.stderr)
            return 1
        print(f"== {name}: {time.perf_counter() - began:.0f} s", flush=True)
    report = [sys.executable, str(BENCH / "report.py"), *(["--quick"] if args.quick else [])]
    if subprocess.run(report, check=False).returncode != 0:
        return 1
    print(f"\nbench: done in {(time.perf_counter() - started) / 60:.1f} min")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
