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

The pipeline runs at its own best settings too: ``hf-pipeline`` (fp32, batch size 1: the baseline before),
``hf-pipeline bf16`` (the model loaded in bf16, batch size 8) and, when another of ``--pipeline-batch-sizes`` is
faster in bf16, ``hf-pipeline bf16 batch N`` at that size: each size is first measured over the test set (the
``pipeline_batch_sweep`` of the results, ``--sweep-runs`` processes each). Each set's headline ``ratio`` is
resume-ner's median resumes/s over the best pipeline setting's (``best_peer``), ``ratio_fp32`` the one over
``hf-pipeline``. Every run records its settings and the window tokens it predicts per pass (the model's input,
overlap included: resume-ner's windows, the pipeline's chunks), and the results the model's shape
(``model_shape``), for the FLOP estimate of the report.

    python bench/predict_speed.py [--quick] [--model DIR] [--runs N] [--pipeline-batch-sizes 1,8,16]
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
# The pipeline's settings, (dtype, batch size); the first is the fp32 baseline of the secondary ratio.
PIPELINE_FP32 = "hf-pipeline"
PIPELINES = {PIPELINE_FP32: ("fp32", 1), "hf-pipeline bf16": ("bf16", 8)}
PROJECT_WORKER = ["bench/predict_speed.py", "worker"]


def model_windows(model: Path) -> dict[str, int]:
    """The checkpoint's window settings (``max_length``, ``stride``), which the pipeline is given too: every
    system runs the model over the same windows."""
    windows = json.loads((model / "resume_ner.json").read_text(encoding="utf-8"))["windows"]
    return {"max_length": int(windows["max_length"]), "stride": int(windows["stride"])}


def pipeline_command(dtype: str, batch_size: int, windows: dict[str, int]) -> list[str]:
    """The ``hf_baseline.py predict`` arguments of one pipeline setting, over the model's ``windows``."""
    return ["bench/hf_baseline.py", "predict", "--max-length", str(windows["max_length"]), "--stride",
            str(windows["stride"]), "--dtype", dtype, "--batch-size", str(batch_size)]


def system_commands(best_batch_size: int, windows: dict[str, int]) -> dict[str, list[str]]:
    """Every system's script arguments, in run order: resume-ner, the pipeline settings (bf16 at
    ``best_batch_size`` too when that is not one of them) over the model's ``windows``, the project's variants."""
    pipelines = dict(PIPELINES)
    if ("bf16", best_batch_size) not in pipelines.values():
        pipelines[f"hf-pipeline bf16 batch {best_batch_size}"] = ("bf16", best_batch_size)
    return {"resume-ner": PROJECT_WORKER,
            **{name: pipeline_command(*setting, windows) for name, setting in pipelines.items()},
            **{name: [*PROJECT_WORKER, *worker_args] for name, (worker_args, _) in VARIANTS.items()}}


def worker(args: argparse.Namespace) -> int:
    """Load the model with ``Predictor``, predict the documents ``--repeat`` times; timing JSON."""
    import torch

    from resume_ner.data.document import Document
    from resume_ner.data.windows import build_windows
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
    windowed = build_windows([Document(id=str(i), text=text) for i, text in enumerate(texts)], predictor.tokenizer,
                             predictor.scheme, max_length=predictor.max_length, stride=predictor.stride)
    timing = {"docs": len(texts), "repeat": args.repeat, "load_s": loaded - started, "predict_s": done - loaded,
              "resumes_per_s": len(texts) * args.repeat / (done - loaded), "bf16": predictor.bf16,
              "allocator_tuned": tuned, "settings": {"precision": args.precision, "batch_size": predictor.batch_size},
              "window_tokens": sum(len(window) for window in windowed.windows)}
    args.timing.write_text(json.dumps(timing) + "\n", encoding="utf-8")
    return 0


def _run(system: str, command: list[str], model: Path, docs: Path, repeat: int, work: Path, tag: str,
         threads: int) -> dict[str, Any]:
    """One process of ``system`` (``command``: its script arguments) over ``docs``; its timing and span F1."""
    name = f"{system.replace(' ', '-')}-{tag}"
    timing, predictions = work / f"{name}.json", work / f"{name}-predictions.jsonl"
    shared = ["--model", str(model), "--docs", str(docs), "--out", str(predictions), "--repeat", str(repeat),
              "--timing", str(timing), "--threads", str(threads)]
    measured = common.run_measured(common.python_cmd(*command, *shared), work / f"{name}.log")
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


def model_shape(model: Path) -> dict[str, int]:
    """The checkpoint's encoder and label head, at its windows' length, for the FLOP estimate."""
    config = json.loads((model / "config.json").read_text(encoding="utf-8"))
    return common.model_shape(model / "config.json", len(config["id2label"]), model_windows(model)["max_length"])


def pipeline_batch_sweep(args: argparse.Namespace, model: Path, docs: Path, work: Path) -> dict[str, Any]:
    """The bf16 pipeline over the test set at each of ``--pipeline-batch-sizes`` (``--sweep-runs`` interleaved
    processes each): median resumes/s per batch size, and the fastest size."""
    sizes = args.pipeline_batch_sizes
    measured: dict[int, list[float]] = {size: [] for size in sizes}
    windows = model_windows(model)
    for index in range(args.sweep_runs):
        for size in sizes if index % 2 == 0 else sizes[::-1]:
            run = _run(f"hf-pipeline bf16 batch {size}", pipeline_command("bf16", size, windows), model, docs, 1, work,
                       f"sweep-{index}", args.threads)
            print(f"predict_speed: batch sweep: bf16 batch {size} #{index}: {run['resumes_per_s']:.2f} resumes/s",
                  flush=True)
            measured[size].append(run["resumes_per_s"])
    medians = {str(size): common.median(values) for size, values in measured.items()}
    best, _ = common.best_setting(medians)
    return {"dtype": "bf16", "set": "test set", "runs": args.sweep_runs, "median_resumes_per_s": medians,
            "best_batch_size": int(best)}


def _summary(system_runs: list[dict[str, Any]]) -> dict[str, Any]:
    """One system's figures over its processes: median throughput and load time, peak memory, its settings."""
    first = system_runs[0]
    return {"median_resumes_per_s": common.median([r["resumes_per_s"] for r in system_runs]),
            "runs_resumes_per_s": [r["resumes_per_s"] for r in system_runs],
            "load_s": common.median([r["load_s"] for r in system_runs]),
            "peak_rss_mb": max(r["peak_rss_mb"] for r in system_runs), "span_f1_micro": first["span_f1_micro"],
            "bf16": first.get("bf16"), "allocator_tuned": first.get("allocator_tuned"),
            "settings": first["settings"], "window_tokens": first["window_tokens"]}


def measure_set(name: str, repeat: int, commands: dict[str, list[str]], models: dict[str, Path], docs: Path,
                work: Path, args: argparse.Namespace) -> dict[str, Any]:
    """``--runs`` interleaved processes of every system, each predicting ``docs`` ``repeat`` times; the set's
    results, the variants' apart, and resume-ner's ratios to the pipeline settings."""
    runs: dict[str, list[dict[str, Any]]] = {system: [] for system in commands}
    order = list(commands)
    for index in range(args.runs):
        for system in order if index % 2 == 0 else order[::-1]:
            run = _run(system, commands[system], models[system], docs, repeat, work, f"r{repeat}-{index}",
                       args.threads)
            print(f"predict_speed: {name}: {system} #{index}: {run['resumes_per_s']:.2f} resumes/s, "
                  f"peak {run['peak_rss_mb']:.0f} MiB", flush=True)
            runs[system].append(run)
    results = {system: _summary(system_runs) for system, system_runs in runs.items()}
    variant_results = {system: results.pop(system) for system in VARIANTS}
    peers = {system: r["median_resumes_per_s"] for system, r in results.items() if system != "resume-ner"}
    ratios = common.peer_ratios(results["resume-ner"]["median_resumes_per_s"], peers, PIPELINE_FP32)
    return {"name": name, "docs": runs["resume-ner"][0]["docs"], "repeat": repeat, "results": results, **ratios,
            "variants": variant_results}


def benchmark(args: argparse.Namespace) -> int:
    """Every system over the test set once and ten times; write ``bench/results/predict_speed[-quick].json``."""
    work, docs, model = common.speed_inputs(args.work, args.quick, args.model, args.threads)
    onnx_model = onnx_export(model, work)
    sweep = pipeline_batch_sweep(args, model, docs, work)
    commands = system_commands(sweep["best_batch_size"], model_windows(model))
    models = {system: onnx_model if system == ONNX_VARIANT else model for system in commands}
    sets = [measure_set(name, repeat, commands, models, docs, work, args)
            for name, repeat in (("test set", 1), (f"test set x{args.big_repeat}", args.big_repeat))]
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
    settings = {"model": str(model), "threads": args.threads, "runs": args.runs,
                "pipeline_batch_sizes": args.pipeline_batch_sizes}
    path = common.write_result("predict_speed", {"settings": settings, "sets": sets, "variants": variants,
                                                  "pipeline_batch_sweep": sweep, "model_shape": model_shape(model)},
                               args.quick)
    ratios = ", ".join(f"{s['ratio']:.2f}x against {s['best_peer']} ({s['ratio_fp32']:.2f}x against {PIPELINE_FP32})"
                       for s in sets)
    print(f"predict_speed: ratios {ratios}; wrote {path}")
    return 0


def batch_sizes(value: str) -> list[int]:
    """An ``argparse`` type: comma-separated positive batch sizes."""
    try:
        sizes = [int(size) for size in value.split(",")]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers, got {value!r}") from None
    if not sizes or min(sizes) < 1:
        raise argparse.ArgumentTypeError(f"batch sizes must be at least 1, got {value!r}")
    return sizes


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
    parser.add_argument("--pipeline-batch-sizes", type=batch_sizes, default=[1, 8, 16],
                        help="the bf16 pipeline's batch sizes to try (default 1,8,16)")
    parser.add_argument("--sweep-runs", type=int, help="processes per batch size tried (default 3, quick 1)")
    parser.add_argument("--work", type=Path, default=Path("runs/bench/predict_speed"), help="scratch directory")
    args = parser.parse_args(argv)
    args.runs = args.runs or (1 if args.quick else 5)
    args.big_repeat = args.big_repeat or (2 if args.quick else 10)
    args.sweep_runs = args.sweep_runs or (1 if args.quick else 3)
    return benchmark(args)


if __name__ == "__main__":
    raise SystemExit(main())
