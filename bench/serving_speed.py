"""Serving throughput: the registered model behind ``mlflow models serve`` (``resume-ner serve``) against the
``predict`` CLI's batch throughput, on the test resumes, same checkpoint.

The checkpoint (``--model``, else a short training made here) is saved as the project's MLflow pyfunc model and
served on 127.0.0.1 (``LocalModelServer``: ``mlflow models serve --env-manager local``, ``SERVER_WORKERS`` workers as
``resume-ner serve`` runs it). Clients send
one resume per request (``run_load``): at concurrency 1 (every test resume ``--passes`` times) and at
concurrency 8 (as many requests), after a warm-up; the figures are resumes/s, p50/p95 latency and the server's
resident memory before and after. The served entities are checked to equal the ``Predictor``'s. The baseline
is ``bench/predict_speed.py worker`` (``Predictor`` as ``resume-ner predict`` runs it, all test resumes in one
call, loading not counted), the median of ``--runs`` processes. Variants: one worker (the default before), and two
workers with one torch thread each.

    python bench/serving_speed.py [--quick] [--model DIR] [--runs N]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

import common  # noqa: E402

from resume_ner.serving.local_server import SERVER_WORKERS  # noqa: E402

CONCURRENCY = (1, 8)


def _cli_baseline(model: Path, docs: Path, work: Path, runs: int, threads: int) -> dict[str, Any]:
    """The ``predict`` CLI's batch throughput: ``predict_speed.py worker`` over the test resumes, median of runs."""
    timings = []
    for index in range(runs):
        timing = work / f"cli-{index}.json"
        cmd = common.python_cmd("bench/predict_speed.py", "worker", "--model", str(model), "--docs", str(docs),
                                "--out", str(work / f"cli-{index}-predictions.jsonl"), "--repeat", "2",
                                "--timing", str(timing), "--threads", str(threads))
        measured = common.run_measured(cmd, work / f"cli-{index}.log")
        timings.append({**json.loads(timing.read_text(encoding="utf-8")), "peak_rss_mb": measured.peak_rss_mb})
        print(f"serving_speed: predict CLI #{index}: {timings[-1]['resumes_per_s']:.2f} resumes/s", flush=True)
    return {"median_resumes_per_s": common.median([t["resumes_per_s"] for t in timings]),
            "runs_resumes_per_s": [t["resumes_per_s"] for t in timings],
            "peak_rss_mb": max(t["peak_rss_mb"] for t in timings)}


def _same_entities(url: str, model: Path, texts: list[str]) -> bool:
    """Whether the server answers, one resume per request, what the ``Predictor`` finds."""
    from resume_ner.inference import Predictor
    from resume_ner.serving.load import invocations_body, post_invocations

    expected = [[entity.to_dict() for entity in found] for found in Predictor(model, device="cpu").predict(texts)]
    for text, entities in zip(texts, expected, strict=True):
        status, answer = post_invocations(url, invocations_body([text]), timeout_s=300)
        if status != 200 or json.loads(answer)["predictions"][0]["entities"] != entities:
            return False
    return True


def _serve(saved: Path, model: Path, texts: list[str], work: Path, *, workers: int, passes: int,
           environment: dict[str, str]) -> dict[str, Any]:
    """One server: parity, then the load at each concurrency; its figures."""
    from resume_ner.serving.load import run_load
    from resume_ner.serving.local_server import LocalModelServer

    name = f"workers-{workers}" + ("-1-thread" if environment.get("OMP_NUM_THREADS") == "1" else "")
    with LocalModelServer(str(saved), work / f"{name}.log", workers=workers, environment=environment) as server:
        same = _same_entities(server.url, model, texts)
        run_load(server.url, texts, concurrency=8, requests=16)  # warm-up
        before = server.rss_mib()
        loads = {}
        for concurrency in CONCURRENCY:
            report = run_load(server.url, texts, concurrency=concurrency, requests=len(texts) * passes)
            print(f"serving_speed: {name}: {report.summary()}", flush=True)
            if report.errors:
                sys.exit(f"serving_speed: {report.errors} request(s) failed: {report.error_samples}")
            loads[str(concurrency)] = report.to_dict()
        after = server.rss_mib()
    return {"workers": workers, "same_entities": same, "rss_before_mib": before, "rss_after_mib": after,
            "loads": loads}


def benchmark(args: argparse.Namespace) -> int:
    """Serve the checkpoint, load it at concurrency 1 and 8, compare with the CLI; write the result file."""
    from resume_ner.serving.mlflow_model import save_serving_model

    work, docs, model = common.speed_inputs(args.work, args.quick, args.model, args.threads)
    texts = [record["text"] for record in common.read_records(docs)]
    saved = work / "mlflow_model"
    if saved.exists():  # saved afresh: an earlier run may have saved another checkpoint
        shutil.rmtree(saved)
    save_serving_model(model, saved)
    cli = _cli_baseline(model, docs, work, args.runs, args.threads)
    environment = {k: v for k, v in os.environ.items() if not k.startswith("MLFLOW_")}
    default = _serve(saved, model, texts, work, workers=SERVER_WORKERS, passes=args.passes, environment=environment)
    c8 = default["loads"]["8"]["texts_per_s"]
    variants = []
    for label, workers, extra in (("1 server worker (before)", 1, {}),
                                  ("2 server workers, 1 torch thread each", 2, {"OMP_NUM_THREADS": "1"})):
        variant = _serve(saved, model, texts, work, workers=workers, passes=args.passes,
                         environment={**environment, **extra})
        variants.append({"name": label, "settings": [f"--workers {workers}", *(f"{k}={v}" for k, v in extra.items())],
                         "median_resumes_per_s": variant["loads"]["8"]["texts_per_s"],
                         "ratio_to_default": variant["loads"]["8"]["texts_per_s"] / c8,
                         "f1_delta": 0.0 if variant["same_entities"] else None, "kept": False,
                         "note": f"p95 at concurrency 1: {variant['loads']['1']['p95_ms']:.0f} ms"})
    settings = {"model": str(model), "threads": args.threads, "runs": args.runs, "passes": args.passes,
                "docs": len(texts)}
    payload = {"settings": settings, "cli": cli, "served": default, "ratio": c8 / cli["median_resumes_per_s"],
               "variants": variants}
    path = common.write_result("serving_speed", payload, args.quick)
    print(f"serving_speed: concurrency 8 / CLI batch = {payload['ratio']:.2f}x; p95 at concurrency 1 "
          f"{default['loads']['1']['p95_ms']:.0f} ms; wrote {path}")
    return 0


def main(argv: list[str] | None = None) -> int:
    """The benchmark."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--model", type=Path, help="checkpoint directory (default: a short training made here)")
    parser.add_argument("--quick", action="store_true", help="small budgets, same code paths")
    parser.add_argument("--runs", type=int, help="predict CLI processes (default 3, quick 1)")
    parser.add_argument("--passes", type=int, help="requests per load: passes over the test resumes (default 4, "
                                                   "quick 1)")
    parser.add_argument("--work", type=Path, default=Path("runs/bench/serving_speed"), help="scratch directory")
    args = parser.parse_args(argv)
    args.runs = args.runs or (1 if args.quick else 3)
    args.passes = args.passes or (1 if args.quick else 4)
    return benchmark(args)


if __name__ == "__main__":
    raise SystemExit(main())
