"""Prediction speed: resumes per second of ``resume-ner``'s ``Predictor`` against ``pipeline(...)``, same model.

One model serves both: a checkpoint trained by the project (``--model``, else a short training made here),
which the ``pipeline("token-classification", aggregation_strategy="simple", stride=...)`` baseline loads as
the Hugging Face model it is. Each system runs in its own process over the test resumes (``--repeat 1``) and
over them ten times (``--repeat 10``, a steadier figure); loading is timed apart from predicting, the median
of ``--runs`` processes is reported with each process's peak resident memory, and runs are interleaved.
``resume-ner`` runs as ``resume-ner predict`` does (``precision="auto"``: bf16 autocast where the CPU has it
natively; the allocator thresholds of ``reuse_freed_memory``); the variants ``resume-ner fp32`` (forced to fp32)
and ``resume-ner glibc defaults`` (without ``reuse_freed_memory``) are reported as "before" figures with their
span F1 change, and ``resume-ner onnx`` (the model exported by ``resume-ner export --format onnx``, run on ONNX
Runtime in fp32) as an alternative the default does not take.
Every run's predictions are scored against the test resumes (``span_f1_micro``).

    python bench/predict_speed.py [--quick] [--model DIR] [--runs N]
    python bench/predict_speed.py worker --model DIR --docs FILE --repeat R --timing FILE.json   # one project run
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

import common  # noqa: E402

# the project's variants: worker arguments, and the name of the variant in the report
ONNX_VARIANT = "resume-ner onnx"
VARIANTS = {"resume-ner fp32": (["--precision", "fp32"], "fp32 forward passes (before: precision=fp32)"),
            "resume-ner glibc defaults": (["--glibc-defaults"],
                                          "glibc's own allocator thresholds (before: no reuse_freed_memory)"),
            ONNX_VARIANT: (["--precision", "fp32"],
                           "the ONNX export on ONNX Runtime, fp32 (resume-ner export --format onnx; not the default)")}
SYSTEMS = ("resume-ner", "hf-pipeline", *VARIANTS)


def worker(args: argparse.Namespace) -> int:
    """Load the model with ``Predictor``, predict the documents ``--repeat`` times; timing JSON."""
    import torch

    from resume_ner.inference import Predictor
    from resume_ner.training.allocator import reuse_freed_memory

    torch.set_num_threads(args.threads)
    tuned = False if args.glibc_defaults else reuse_freed_memory()  # as ``resume-ner predict``
    records = common.read_records(args.docs)
    texts = [record["text"] for record in records]
    started = time.perf_counter()
    predictor = Predictor(args.model, device="cpu", precision=args.precision)
    loaded = time.perf_counter()
    for _ in range(args.repeat):
        entities = predictor.predict(texts)
    done = time.perf_counter()
    common.write_predictions(args.out, [str(record["id"]) for record in records],
                             [[(e.start, e.end, e.label) for e in doc] for doc in entities])
    timing = {"docs": len(texts), "repeat": args.repeat, "load_s": loaded - started, "predict_s": done - loaded,
              "resumes_per_s": len(texts) * args.repeat / (done - loaded), "bf16": predictor.bf16,
              "allocator_tuned": tuned}
    args.timing.write_text(json.dumps(timing) + "\n", encoding="utf-8")
    return 0


def _run(system: str, model: Path, docs: Path, repeat: int, work: Path, tag: str, threads: int) -> dict[str, Any]:
    name = f"{system.replace(' ', '-')}-{tag}"
    timing, predictions = work / f"{name}.json", work / f"{name}-predictions.jsonl"
    shared = ["--model", str(model), "--docs", str(docs), "--out", str(predictions), "--repeat", str(repeat),
              "--timing", str(timing), "--threads", str(threads)]
    if system == "hf-pipeline":
        cmd = common.python_cmd("bench/hf_baseline.py", "predict", *shared)
    else:
        cmd = common.python_cmd("bench/predict_speed.py", "worker", *shared, *VARIANTS.get(system, ([], ""))[0])
    measured = common.run_measured(cmd, work / f"{name}.log")
    f1 = common.score_predictions(common.read_split(docs.parent, "test"), predictions)["span_f1_micro"]
    return {**json.loads(timing.read_text(encoding="utf-8")), "peak_rss_mb": measured.peak_rss_mb,
            "span_f1_micro": f1}


def onnx_export(model: Path, work: Path) -> Path:
    """``model`` exported to ONNX in ``work/model-onnx`` (``resume-ner export``), once per model."""
    out = work / "model-onnx"
    metadata = out / "resume_ner.json"
    if not metadata.is_file() or json.loads(metadata.read_text(encoding="utf-8"))["export"]["source"] != str(model):
        common.run_measured([*common.python_cmd("-m", "resume_ner.cli.main", "export"), "--format", "onnx",
                             "--model", str(model), "--out", str(out), "--overwrite"], work / "model-onnx.log")
    return out


def benchmark(args: argparse.Namespace) -> int:
    """Both systems over the test set once and ten times; write ``bench/results/predict_speed[-quick].json``."""
    work, docs, model = common.speed_inputs(args.work, args.quick, args.model, args.threads)
    models = {system: model for system in SYSTEMS} | {ONNX_VARIANT: onnx_export(model, work)}
    sets = []
    for name, repeat in (("test set", 1), (f"test set x{args.big_repeat}", args.big_repeat)):
        runs: dict[str, list[dict[str, Any]]] = {system: [] for system in SYSTEMS}
        for index in range(args.runs):
            for system in SYSTEMS if index % 2 == 0 else SYSTEMS[::-1]:
                run = _run(system, models[system], docs, repeat, work, f"r{repeat}-{index}", args.threads)
                print(f"predict_speed: {name}: {system} #{index}: {run['resumes_per_s']:.2f} resumes/s, "
                      f"peak {run['peak_rss_mb']:.0f} MiB", flush=True)
                runs[system].append(run)
        results = {system: {"median_resumes_per_s": common.median([r["resumes_per_s"] for r in system_runs]),
                            "runs_resumes_per_s": [r["resumes_per_s"] for r in system_runs],
                            "load_s": common.median([r["load_s"] for r in system_runs]),
                            "peak_rss_mb": max(r["peak_rss_mb"] for r in system_runs),
                            "span_f1_micro": system_runs[0]["span_f1_micro"],
                            "bf16": system_runs[0].get("bf16"),
                            "allocator_tuned": system_runs[0].get("allocator_tuned")}
                   for system, system_runs in runs.items()}
        variant_results = {system: results.pop(system) for system in VARIANTS}
        ratio = results["resume-ner"]["median_resumes_per_s"] / results["hf-pipeline"]["median_resumes_per_s"]
        sets.append({"name": name, "docs": runs["resume-ner"][0]["docs"], "repeat": repeat, "results": results,
                     "ratio": ratio, "variants": variant_results})
    last = sets[-1]
    default = last["results"]["resume-ner"]
    variants = [{"name": label, "settings": [" ".join(worker_args)],
                 "median_resumes_per_s": last["variants"][system]["median_resumes_per_s"],
                 "ratio_to_default": last["variants"][system]["median_resumes_per_s"] / default["median_resumes_per_s"],
                 "f1_delta": last["variants"][system]["span_f1_micro"] - default["span_f1_micro"],
                 "kept": False,
                 "note": f"the default ran bf16: {default['bf16']}; allocator thresholds set: "
                         f"{default['allocator_tuned']}"}
                for system, (worker_args, label) in VARIANTS.items()]
    settings = {"model": str(model), "threads": args.threads, "runs": args.runs}
    path = common.write_result("predict_speed", {"settings": settings, "sets": sets, "variants": variants},
                               args.quick)
    ratios = ", ".join(f"{s['ratio']:.2f}x" for s in sets)
    print(f"predict_speed: ratios {ratios}; wrote {path}")
    return 0


def main(argv: list[str] | None = None) -> int:
    """``worker`` (one project run) or the benchmark."""
    argv = sys.argv[1:] if argv is None else argv
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--model", type=Path, help="checkpoint directory (default: a short training made here)")
    if argv[:1] == ["worker"]:
        parser.add_argument("command")
        parser.add_argument("--docs", type=Path, required=True)
        parser.add_argument("--out", type=Path, required=True, help="predictions JSONL")
        parser.add_argument("--repeat", type=int, default=1)
        parser.add_argument("--timing", type=Path, required=True)
        parser.add_argument("--precision", default="auto", choices=["auto", "fp32", "bf16"])
        parser.add_argument("--glibc-defaults", action="store_true", help="leave the allocator thresholds alone")
        return worker(parser.parse_args(argv))
    parser.add_argument("--quick", action="store_true", help="small budgets, same code paths")
    parser.add_argument("--runs", type=int, help="processes per system and set (default 5, quick 1)")
    parser.add_argument("--big-repeat", type=int, help="passes of the larger set (default 10, quick 2)")
    parser.add_argument("--work", type=Path, default=Path("runs/bench/predict_speed"), help="scratch directory")
    args = parser.parse_args(argv)
    args.runs = args.runs or (1 if args.quick else 5)
    args.big_repeat = args.big_repeat or (2 if args.quick else 10)
    return benchmark(args)


if __name__ == "__main__":
    raise SystemExit(main())
