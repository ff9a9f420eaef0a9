"""Training speed: tokens per second of this project's trainer against ``Trainer`` on the same windows.

The systems train one epoch over exactly the windows the project builds from the first ``--docs`` training
resumes (``build_windows``: ``model.max_length`` tokens, ``model.stride`` overlap), with the same batch size,
learning-rate settings, seed and torch threads, each in its own process; runs are interleaved (the order
alternates every repeat) and the median of ``--repeats`` is reported, with each process's peak resident
memory. Tokens are the non-padding tokens of the windows. The project's figure is its ``TrainResult``'s
``tokens_per_second``: the whole epoch including saving the model and the resumable training state at its
end (no validation split is given); the ``Trainer`` baseline's is ``trainer.train()`` and
``trainer.save_model()``, as run_ner.py does (it writes no optimizer state).

``Trainer`` runs at three settings: ``hf-trainer`` (fp32, random batches: the baseline before), ``hf-trainer bf16``
(``TrainingArguments(bf16=True)``) and ``hf-trainer bf16 grouped`` (bf16 and
``train_sampling_strategy="group_by_length"``). The headline ``ratio`` is resume-ner's median tokens/s over the
best of them (``best_peer``), ``ratio_fp32`` the one over ``hf-trainer``. Each system's settings are in the
results (``summary[system]["settings"]``), with the model's shape for the FLOP estimate (``model_shape``).

    python bench/train_speed.py [--quick] [--docs N] [--repeats R] [--batch-size B] [--variant NAME:KEY=VALUE,...]
    python bench/train_speed.py worker --splits DIR --docs N --batch-size B --out FILE.json   # one project run

The project also runs with ``training.precision=fp32`` (the figure before bf16 autocast became the default
where the CPU has it natively) and with ``training.fast_dropout=false`` (PyTorch's own dropout masks, the figure
before ``resume_ner.training.fast_dropout``). ``--variant "NAME:KEY=VALUE,..."`` adds more settings to run, interleaved
with the others, each reported against the project's default (speed only: the F1 check of a variant is a
quality run).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

import common  # noqa: E402

# Trainer settings: hf_baseline.py speed arguments; the first is the fp32 baseline of the secondary ratio.
TRAINER_SYSTEMS = {"hf-trainer": [], "hf-trainer bf16": ["--bf16"],
                   "hf-trainer bf16 grouped": ["--bf16", "--group-by-length"]}
TRAINER_FP32 = "hf-trainer"
SYSTEMS = ("resume-ner", *TRAINER_SYSTEMS)
# Always measured beside the default (training.precision=auto: bf16 autocast where the CPU has it natively;
# training.fast_dropout=true: dropout masks from 64-bit random words), each with what it shows.
BEFORE = {"resume-ner fp32": (["training.precision=fp32"],
                              "before: fp32 forward passes (the default, auto, runs bf16 where it is native)"),
          "resume-ner torch dropout": (["training.fast_dropout=false"],
                                       "before: PyTorch's dropout, one random number per element (the default, "
                                       "fast_dropout, draws 16-bit parts of 64-bit random words)")}


def worker(args: argparse.Namespace) -> int:
    """One project training epoch over the first ``--docs`` training resumes; its figures as JSON."""
    import torch

    from resume_ner.config import ResumeNerConfig
    from resume_ner.hpo.search_space import apply_params
    from resume_ner.training.precision import use_bf16
    from resume_ner.training.trainer import train_model

    overrides = dict(setting.split("=", 1) for setting in args.settings)
    settings = {"training.epochs": 1, "training.batch_size": args.batch_size, "training.num_threads": args.threads,
                "model.max_length": args.max_length, "model.stride": args.stride, "tracking.enabled": False,
                **overrides}
    config = apply_params(ResumeNerConfig(), settings)
    documents = common.read_split(args.splits, "train")[: args.docs]
    with tempfile.TemporaryDirectory(prefix="resume-ner-speed-") as out:
        result = train_model(config, documents, [], out, quiet=True)
    record = {"system": "resume-ner", "tokens": round(result.tokens_per_second * result.train_seconds),
              "train_wall_s": result.train_seconds, "tokens_per_s": result.tokens_per_second,
              "batch_size": args.batch_size, "max_length": args.max_length, "threads": args.threads,
              "bf16": use_bf16(config.training.precision, torch.device("cpu")),
              "settings": {**overrides, "training.precision": config.training.precision}}
    args.out.write_text(json.dumps(record) + "\n", encoding="utf-8")
    return 0


def _variants(specs: list[str]) -> dict[str, list[str]]:
    """``{name: [KEY=VALUE, ...]}`` of ``NAME:KEY=VALUE,KEY=VALUE`` specs."""
    variants = {}
    for spec in specs:
        name, _, settings = spec.partition(":")
        if not name or not settings or any("=" not in s for s in settings.split(",")):
            sys.exit(f"train_speed: --variant {spec!r}: expected NAME:KEY=VALUE[,KEY=VALUE...]")
        variants[name] = settings.split(",")
    return variants


def _run(system: str, splits: Path, work: Path, repeat: int, args: argparse.Namespace, backbone: str,
         settings: list[str]) -> dict[str, Any]:
    out = work / f"{system.replace(' ', '_')}-{repeat}.json"
    shared = ["--splits", str(splits), "--docs", str(args.docs), "--batch-size", str(args.batch_size),
              "--max-length", str(args.max_length), "--stride", str(args.stride), "--threads", str(args.threads),
              "--out", str(out)]
    if system in TRAINER_SYSTEMS:
        cmd = common.python_cmd("bench/hf_baseline.py", "speed", "--backbone", backbone, "--epochs", "1", *shared,
                                *TRAINER_SYSTEMS[system])
    else:
        cmd = common.python_cmd("bench/train_speed.py", "worker", *shared,
                                *[arg for setting in settings for arg in ("--set", setting)])
    measured = common.run_measured(cmd, work / f"{system.replace(' ', '_')}-{repeat}.log")
    figures = json.loads(out.read_text(encoding="utf-8"))
    return {"system": system, "repeat": repeat, "wall_s": figures["train_wall_s"],
            "tokens_per_s": figures["tokens_per_s"], "tokens": figures["tokens"], "peak_rss_mb": measured.peak_rss_mb,
            "bf16": figures["bf16"], "settings": figures["settings"]}


def _summary(runs: list[dict[str, Any]], system: str) -> dict[str, Any]:
    """One system's median tokens/s, largest peak memory, settings and precision over its runs."""
    own = [r for r in runs if r["system"] == system]
    return {"median_tokens_per_s": common.median([r["tokens_per_s"] for r in own]),
            "max_peak_rss_mb": max(r["peak_rss_mb"] for r in own), "settings": own[0]["settings"],
            "bf16": own[0]["bf16"]}


def benchmark(args: argparse.Namespace) -> int:
    """Interleaved runs of every system; write ``bench/results/train_speed[-quick].json``."""
    from resume_ner.config import ResumeNerConfig
    from resume_ner.data.labels import scheme_for
    from resume_ner.training.model import resolve_backbone

    work = args.work.resolve() / ("quick" if args.quick else "full")
    splits = work / "splits"
    common.write_splits(common.data_dir(), splits)
    backbone = resolve_backbone(ResumeNerConfig().model.backbone)
    variants = {**{name: sets for name, (sets, _) in BEFORE.items()}, **_variants(args.variant)}
    runs = []
    for repeat in range(args.repeats):
        order = [*SYSTEMS, *variants]
        for system in order if repeat % 2 == 0 else order[::-1]:
            run = _run(system, splits, work, repeat, args, backbone, variants.get(system, []))
            print(f"train_speed: {system} #{repeat}: {run['tokens_per_s']:.0f} tok/s, "
                  f"peak {run['peak_rss_mb']:.0f} MiB", flush=True)
            runs.append(run)
    summary = {system: _summary(runs, system) for system in [*SYSTEMS, *variants]}
    tokens = {r["tokens"] for r in runs}
    settings = {"docs": args.docs, "tokens": sorted(tokens), "batch_size": args.batch_size,
                "max_length": args.max_length, "stride": args.stride, "threads": args.threads,
                "repeats": args.repeats}
    default = summary["resume-ner"]["median_tokens_per_s"]
    ratios = common.peer_ratios(default, {name: summary[name]["median_tokens_per_s"] for name in TRAINER_SYSTEMS},
                                TRAINER_FP32)
    labels = len(scheme_for(ResumeNerConfig().data.label_map).labels)
    shape = common.model_shape(Path(backbone) / "config.json", labels, args.max_length)
    measured_variants = [{"name": name, "settings": sets, "median_tokens_per_s": summary[name]["median_tokens_per_s"],
                          "ratio_to_default": summary[name]["median_tokens_per_s"] / default, "f1_delta": None,
                          **({"kept": False, "note": BEFORE[name][1]} if name in BEFORE
                             else {"kept": None, "note": "speed only"})} for name, sets in variants.items()]
    path = common.write_result("train_speed", {"settings": settings, "runs": runs, "summary": summary, **ratios,
                                                "model_shape": shape, "variants": measured_variants}, args.quick)
    print(f"train_speed: ratio {ratios['ratio']:.2f}x against {ratios['best_peer']} "
          f"({ratios['ratio_fp32']:.2f}x against {TRAINER_FP32}); wrote {path}")
    return 0


def main(argv: list[str] | None = None) -> int:
    """``worker`` (one project run) or the benchmark."""
    argv = sys.argv[1:] if argv is None else argv
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--docs", type=int, help="training resumes (default 60, quick 8)")
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--max-length", type=int, default=256)
    parser.add_argument("--stride", type=int, default=64)
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    if argv[:1] == ["worker"]:
        parser.add_argument("command")
        parser.add_argument("--splits", type=Path, required=True)
        parser.add_argument("--out", type=Path, required=True)
        parser.add_argument("--set", dest="settings", action="append", default=[], metavar="KEY=VALUE")
        return worker(parser.parse_args(argv))
    parser.add_argument("--quick", action="store_true", help="small budgets, same code paths")
    parser.add_argument("--repeats", type=int, help="runs of each system, median reported (default 3, quick 1)")
    parser.add_argument("--variant", action="append", default=[], metavar="NAME:KEY=VALUE,...",
                        help="also run the project with these settings (repeatable)")
    parser.add_argument("--work", type=Path, default=Path("runs/bench/train_speed"), help="scratch directory")
    args = parser.parse_args(argv)
    args.docs = args.docs or (8 if args.quick else 60)
    args.repeats = args.repeats or (1 if args.quick else 3)
    return benchmark(args)


if __name__ == "__main__":
    raise SystemExit(main())
