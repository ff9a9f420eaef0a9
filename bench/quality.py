"""Quality on the full test resumes: this project against the run_ner.py way (``Trainer``) and a spaCy pipeline.

Every system trains on the same split files (``common.write_splits``) and is scored by the same exact
character-span match over every entity of every test resume (``common.score_predictions``):

* ``resume-ner``: ``resume-ner train`` with the shipped config (windowed training over whole documents),
  ``resume-ner predict`` over the test resumes (windowed prediction);
* ``resume-ner-best-sweep``: the same, with the best trial's parameters of a sweep (``--best-json``);
* ``resume-ner-preset-NAME``: the same, with a config preset (``--preset config/presets/NAME``, passed to
  ``train`` as ``--config-dir``: its own epochs, learning rate and backbone);
* ``hf-trainer``: ``bench/hf_baseline.py`` with the same backbone, learning rate, epochs, batch size, warmup,
  weight decay, seed and threads, each resume truncated to ``model.max_length`` for training;
* ``spacy``: ``bench/spacy_baseline.py`` (``spacy init config --pipeline ner --optimize efficiency``,
  ``spacy train`` with its defaults).

    python bench/quality.py [--quick] [--systems resume-ner,hf-trainer,spacy] [--best-json FILE] [--preset DIR]
                            [--merge]

``--merge`` keeps the systems of an earlier result that this run does not train (same split and settings),
so the systems can run as separate processes; each system's record carries its own command.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

import common  # noqa: E402

SYSTEMS = ("resume-ner", "hf-trainer", "spacy")
LABELS = {"resume-ner": "resume-ner (default config)", "resume-ner-best-sweep": "resume-ner (best sweep config)",
          "hf-trainer": "Trainer, run_ner.py way (truncated to max_length)", "spacy": "spaCy 3.8 NER (CNN, efficiency)"}
# Quick runs: fewer training resumes, one epoch, a few hundred spaCy steps (same code paths).
QUICK = {"train_limit": 24, "epochs": 1, "spacy_max_steps": 200}


def _trained(cmd: list[str], log: Path, out: Path, seconds_key: str, reuse: bool) -> common.Measured:
    """Run a training command, or with ``reuse`` keep the finished one in ``out`` (the time it recorded; its
    peak memory is unknown)."""
    result = out / "train_result.json"
    if reuse and result.is_file():
        return common.Measured(0, json.loads(result.read_text(encoding="utf-8"))[seconds_key], None)
    return common.run_measured(cmd, log)


def _predicted(cmd: list[str], log: Path, predictions: Path, reuse: bool) -> None:
    """Run a prediction command, or with ``reuse`` keep the ``predictions`` an earlier run wrote."""
    if not (reuse and predictions.is_file()):
        common.run_measured(cmd, log)


def _resume_ner(name: str, splits: Path, work: Path, sets: list[str], threads: int, reuse: bool,
               config_dir: Path | None = None) -> dict[str, Any]:
    """Train (``reuse``: keep a finished training of an earlier run) and predict with the project's CLI, with
    ``config_dir`` as ``--config-dir`` if given; the system's record."""
    out = work / name
    train_cmd = [*common.python_cmd("-m", "resume_ner.cli.main", "train"), "--data", str(splits), "--output-dir",
                 str(out), "--overwrite", "--no-tracking", "-q", "--set", f"training.num_threads={threads}"]
    if config_dir is not None:
        train_cmd += ["--config-dir", str(config_dir)]
    for setting in sets:
        train_cmd += ["--set", setting]
    trained = _trained(train_cmd, work / f"{name}-train.log", out, "train_seconds", reuse)
    raw = work / f"{name}-predictions-raw.jsonl"
    predict_cmd = [*common.python_cmd("-m", "resume_ner.cli.main", "predict"), "--model", str(out / "model"),
                   "--output", str(raw), "-q", str(splits / "test.jsonl")]
    common.run_measured(predict_cmd, work / f"{name}-predict.log", env={"OMP_NUM_THREADS": str(threads)})
    test_docs = common.read_split(splits, "test")
    lines = common.read_records(raw)
    predictions = work / f"{name}-predictions.jsonl"
    common.write_predictions(predictions, [d.id for d in test_docs],
                             [[(e["start"], e["end"], e["label"]) for e in line["entities"]] for line in lines])
    result = json.loads((out / "train_result.json").read_text(encoding="utf-8"))
    curve = [{"epoch": h["epoch"], "val_f1": h["f1_micro"]} for h in result["history"] if "f1_micro" in h]
    return {"command": " ".join(train_cmd[1:]), "train_wall_s": trained.wall_s, "peak_rss_mb": trained.peak_rss_mb,
            "test": common.score_predictions(test_docs, predictions), "learning_curve": curve}


def _hf_trainer(splits: Path, work: Path, settings: dict[str, Any], threads: int, reuse: bool) -> dict[str, Any]:
    """The run_ner.py-way baseline with the project's hyperparameters; the system's record."""
    out = work / "hf-trainer"
    train_cmd = common.python_cmd(
        "bench/hf_baseline.py", "train", "--splits", str(splits), "--backbone", settings["backbone_path"],
        "--out", str(out), "--epochs", str(settings["epochs"]), "--learning-rate", str(settings["learning_rate"]),
        "--batch-size", str(settings["batch_size"]), "--warmup-ratio", str(settings["warmup_ratio"]),
        "--weight-decay", str(settings["weight_decay"]), "--max-length", str(settings["max_length"]),
        "--seed", str(settings["seed"]), "--threads", str(threads))
    trained = _trained(train_cmd, work / "hf-trainer-train.log", out, "train_wall_s", reuse)
    predictions = work / "hf-trainer-predictions.jsonl"
    _predicted(common.python_cmd(
        "bench/hf_baseline.py", "predict", "--model", str(out / "model"), "--docs", str(splits / "test.jsonl"),
        "--out", str(predictions), "--stride", str(settings["stride"]), "--max-length", str(settings["max_length"]),
        "--threads", str(threads)), work / "hf-trainer-predict.log", predictions, reuse)
    result = json.loads((out / "train_result.json").read_text(encoding="utf-8"))
    return {"command": " ".join(train_cmd[1:]), "train_wall_s": trained.wall_s, "peak_rss_mb": trained.peak_rss_mb,
            "test": common.score_predictions(common.read_split(splits, "test"), predictions),
            "learning_curve": [{"epoch": h["epoch"], "val_f1": h["val_f1_micro"]} for h in result["history"]]}


def _spacy(splits: Path, work: Path, threads: int, max_steps: int | None, reuse: bool) -> dict[str, Any]:
    """The spaCy baseline with spaCy's default training settings (fewer steps when quick)."""
    out = work / "spacy"
    train_cmd = common.python_cmd("bench/spacy_baseline.py", "train", "--splits", str(splits), "--out", str(out),
                                  "--threads", str(threads))
    if max_steps:
        train_cmd += ["--max-steps", str(max_steps), "--eval-frequency", str(max(max_steps // 5, 20))]
    trained = _trained(train_cmd, work / "spacy-train.log", out, "train_wall_s", reuse)
    predictions = work / "spacy-predictions.jsonl"
    _predicted(common.python_cmd("bench/spacy_baseline.py", "predict", "--model", str(out / "model-best"),
                                 "--docs", str(splits / "test.jsonl"), "--out", str(predictions)),
               work / "spacy-predict.log", predictions, reuse)
    result = json.loads((out / "train_result.json").read_text(encoding="utf-8"))
    return {"command": " ".join(train_cmd[1:]), "train_wall_s": trained.wall_s, "peak_rss_mb": trained.peak_rss_mb,
            "test": common.score_predictions(common.read_split(splits, "test"), predictions),
            "learning_curve": [{"epoch": h["epoch"], "val_f1": h["val_f1"]} for h in result["history"]],
            "dropped_spans": result.get("dropped_spans")}


def _merged(settings: dict[str, Any], systems: list[dict[str, Any]], quick: bool) -> list[dict[str, Any]]:
    """``systems`` after the earlier result's systems that were not run again (its settings must match)."""
    earlier_path = common.RESULTS_DIR / f"quality{'-quick' if quick else ''}.json"
    if not earlier_path.is_file():
        return systems
    earlier = json.loads(earlier_path.read_text(encoding="utf-8"))
    differing = sorted(k for k in settings if k != "threads" and earlier["settings"].get(k) != settings[k])
    if differing:
        sys.exit(f"quality: --merge: {earlier_path} was made with other settings ({', '.join(differing)})")
    names = {s["name"] for s in systems}
    return [s for s in earlier["systems"] if s["name"] not in names] + systems


def best_sweep_settings(best_json: Path) -> list[str]:
    """``KEY=VALUE`` overrides of a ``BestTrial`` JSON's parameters (``resume-ner hpo best --json``)."""
    best = json.loads(best_json.read_text(encoding="utf-8"))
    return [f"{key}={value}" for key, value in sorted(best["params"].items())]


def main(argv: list[str] | None = None) -> int:
    """Run the quality benchmark and write ``bench/results/quality[-quick].json``."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="small budgets, same code paths")
    parser.add_argument("--systems", default=",".join(SYSTEMS), help="comma-separated subset of " + ", ".join(SYSTEMS))
    parser.add_argument("--best-json", type=Path, help="also train resume-ner with this BestTrial's parameters")
    parser.add_argument("--preset", type=Path, action="append", default=[],
                        help="also train resume-ner with this config preset directory (repeatable)")
    parser.add_argument("--work", type=Path, default=Path("runs/bench/quality"), help="scratch directory")
    parser.add_argument("--merge", action="store_true", help="keep the other systems of the earlier result")
    parser.add_argument("--reuse", action="store_true",
                        help="keep the finished trainings and predictions of an earlier run in --work")
    parser.add_argument("--threads", type=int, help="threads of every system (default: all cores)")
    args = parser.parse_args(argv)

    from resume_ner.config import ResumeNerConfig
    from resume_ner.training.model import resolve_backbone

    config, threads = ResumeNerConfig(), args.threads or os.cpu_count() or 1
    work = args.work.resolve() / ("quick" if args.quick else "full")
    splits = work / "splits"
    counts = common.write_splits(common.data_dir(), splits, QUICK["train_limit"] if args.quick else None)
    epochs = QUICK["epochs"] if args.quick else config.training.epochs
    settings = {"backbone": config.model.backbone, "backbone_path": resolve_backbone(config.model.backbone),
                "epochs": epochs, "learning_rate": config.training.learning_rate,
                "batch_size": config.training.batch_size, "warmup_ratio": config.training.warmup_ratio,
                "weight_decay": config.training.weight_decay, "seed": config.training.random_seed,
                "max_length": config.model.max_length, "stride": config.model.stride, "threads": threads,
                "train_docs": counts["train"], "validation_docs": counts["validation"], "test_docs": counts["test"]}
    epoch_sets = [f"training.epochs={epochs}"]
    systems: list[dict[str, Any]] = []
    for name in [s.strip() for s in args.systems.split(",") if s.strip()]:
        print(f"quality: {name} ...", flush=True)
        if name == "resume-ner":
            record = _resume_ner(name, splits, work, epoch_sets, threads, args.reuse)
        elif name == "hf-trainer":
            record = _hf_trainer(splits, work, settings, threads, args.reuse)
        elif name == "spacy":
            record = _spacy(splits, work, threads, QUICK["spacy_max_steps"] if args.quick else None, args.reuse)
        else:
            parser.error(f"unknown system {name!r}; choose from {', '.join(SYSTEMS)}")
        systems.append({"name": name, "label": LABELS[name], **record})
        print(f"quality: {name}: span micro-F1 {record['test']['span_f1_micro']:.3f}", flush=True)
        _write(settings, systems, args)  # after every system: a later failure keeps what is done
    if args.best_json:
        sets = [*best_sweep_settings(args.best_json), *epoch_sets]
        record = _resume_ner("resume-ner-best-sweep", splits, work, sets, threads, args.reuse)
        systems.append({"name": "resume-ner-best-sweep", "label": LABELS["resume-ner-best-sweep"],
                        "params": sets, **record})
    for preset in args.preset:
        name = f"resume-ner-preset-{preset.name}"
        print(f"quality: {name} ...", flush=True)
        sets = epoch_sets if args.quick else []  # a full run keeps the preset's own epochs
        record = _resume_ner(name, splits, work, sets, threads, args.reuse, preset)
        systems.append({"name": name, "label": f"resume-ner (preset {preset.name})", "preset": str(preset), **record})
        print(f"quality: {name}: span micro-F1 {record['test']['span_f1_micro']:.3f}", flush=True)
        _write(settings, systems, args)
    print(f"quality: wrote {_write(settings, systems, args)}")
    return 0


def _write(settings: dict[str, Any], systems: list[dict[str, Any]], args: argparse.Namespace) -> Path:
    """Write the result of the systems run so far (with ``--merge``, after the earlier result's others)."""
    settings = {k: v for k, v in settings.items() if k != "backbone_path"}
    if args.merge:
        systems = _merged(settings, systems, args.quick)
    return common.write_result("quality", {"settings": settings, "systems": systems}, args.quick)


if __name__ == "__main__":
    raise SystemExit(main())
