"""``resume-ner train | evaluate | predict``."""

from __future__ import annotations

import argparse
import itertools
import json
import sys
from collections.abc import Iterator
from contextlib import nullcontext
from pathlib import Path
from typing import Any

from resume_ner.errors import DataValidationError, Problem
from resume_ner.training.decoding import DECODINGS
from resume_ner.training.precision import PRECISIONS

DECODING_HELP = ("word tags from the label probabilities: viterbi (the most probable valid IOB2 sequence) or argmax "
                 "(each word's most probable label); default: the one the model was trained with")


def load_config_from_args(args: argparse.Namespace, extra_overrides: list[str] | None = None) -> Any:
    """The config of ``--config-dir`` with ``--set`` overrides (and ``--no-tracking``) applied."""
    from resume_ner.config import load

    overrides = list(args.overrides) + list(extra_overrides or [])
    if getattr(args, "no_tracking", False):
        overrides.append("tracking.enabled=false")
    return load(args.config_dir, overrides)


def report_tracking_loss(lost: list[str], output_dir: Path, relog: str | None = None) -> int:
    """Print the MLflow logging that was lost, grouped by reason (and ``relog``, the command that logs it
    later); the exit status: 3 when something was lost, else 0."""
    from resume_ner.tracking.mlflow import summarize_lost

    if not lost:
        return 0
    print(f"warning: MLflow logging was lost: {summarize_lost(lost)} ({len(lost)} call(s))", file=sys.stderr)
    reasons: dict[str, list[str]] = {}
    for entry in lost:
        what, _, reason = entry.partition(": ")
        reasons.setdefault(reason, []).append(what)
    for reason, calls in list(reasons.items())[:5]:
        shown = ", ".join(calls[:4]) + (f" and {len(calls) - 4} more" if len(calls) > 4 else "")
        print(f"  - {shown}: {reason}", file=sys.stderr)
    if len(reasons) > 5:
        print(f"  - ... and {len(reasons) - 5} other reason(s)", file=sys.stderr)
    print(f"The checkpoint and metrics are saved in {output_dir}.", file=sys.stderr)
    if relog:
        print("To log its params, per-epoch and test metrics and artifacts to MLflow once the tracking server is "
              f"reachable, run:\n  {relog}", file=sys.stderr)
    return 3


def add_launch_options(parser: argparse.ArgumentParser) -> None:
    """``--nproc-per-node``: data-parallel processes on this host, started with torchrun."""
    parser.add_argument("--nproc-per-node", type=int, default=1, metavar="N",
                        help="train in N data-parallel processes on this host (torchrun; gloo on CPU, NCCL on GPU)")


def relaunch_under_torchrun(args: argparse.Namespace) -> int | None:
    """The exit status of this command re-run in ``--nproc-per-node`` processes by torchrun, or None when it
    should run here (one process, or already a torchrun worker)."""
    import os

    if args.nproc_per_node <= 1 or "WORLD_SIZE" in os.environ:
        return None
    from resume_ner.training.distributed import launch_torchrun

    argv, skip = [], False
    for item in args.argv:
        if skip:
            skip = False
        elif item == "--nproc-per-node":
            skip = True
        elif not item.startswith("--nproc-per-node="):
            argv.append(item)
    return launch_torchrun(args.nproc_per_node, argv)


def cmd_train(args: argparse.Namespace) -> int:
    """Train on a dataset, evaluate the best checkpoint on its test split."""
    from resume_ner.tracking.relog import relog_command
    from resume_ner.training.distributed import context_from_env, shutdown_distributed
    from resume_ner.training.metrics import format_metrics_table
    from resume_ner.workflows.training import run_training_workflow

    launched = relaunch_under_torchrun(args)
    if launched is not None:
        return launched
    config = load_config_from_args(args)
    try:
        outcome = run_training_workflow(config, args.data, args.output_dir, resume=args.resume,
                                        tracking_uri=args.tracking_uri, run_name=args.run_name, quiet=args.quiet,
                                        overwrite=args.overwrite)
    finally:
        shutdown_distributed()
    if not context_from_env().is_main:
        return 0  # rank 0 reports for the job
    result = outcome.train
    print(f"best checkpoint: {result.model_dir} (epoch {result.best_epoch}, validation {result.metric} "
          f"{result.best_metric if result.best_metric is None else round(result.best_metric, 4)})")
    print(f"trained {result.global_step} steps in {result.train_seconds:.0f}s ({result.tokens_per_second:.0f} tokens/s)")
    if outcome.test_metrics is not None:
        print("test metrics:")
        print(format_metrics_table(outcome.test_metrics))
    if outcome.run_id:
        print(f"MLflow run: {outcome.run_id}")
    return report_tracking_loss(outcome.tracking_lost, Path(args.output_dir),
                                relog_command(args.output_dir, outcome.tracking_uri))


def cmd_evaluate(args: argparse.Namespace) -> int:
    """Evaluate a checkpoint on a file or on one split of a dataset."""
    from resume_ner.data.dataset import load_dataset, load_documents
    from resume_ner.io import write_json_atomic
    from resume_ner.training.allocator import reuse_freed_memory
    from resume_ner.training.evaluator import evaluate_model
    from resume_ner.training.metrics import format_metrics_table

    config = load_config_from_args(args)
    reuse_freed_memory()
    path = Path(args.data)
    if path.is_dir():
        documents = getattr(load_dataset(path, config.data), args.split)
    else:
        documents = load_documents(path, config.data)
    metrics = evaluate_model(args.model, documents, batch_size=args.batch_size, device=config.training.device,
                             decoding=args.decoding)
    metrics["data"] = str(path)
    if args.output:
        write_json_atomic(Path(args.output), metrics)
    if args.json:
        print(json.dumps(metrics, indent=2))
    else:
        print(f"{len(documents)} documents from {path}")
        print(format_metrics_table(metrics))
    return 0


def _scan_inputs(paths: list[str]) -> Iterator[tuple[str, str] | Problem]:
    """(source, text) pairs or the ``Problem`` of an unreadable input, streamed: a .jsonl file gives one text
    per line (its 'text' field, read line by line), other files one text each."""
    for name in paths:
        path = Path(name)
        try:
            if path.suffix != ".jsonl":
                yield name, path.read_bytes().decode("utf-8")
                continue
            with open(path, "rb") as handle:
                for number, raw in enumerate(handle, 1):
                    yield from _jsonl_input(name, number, raw)
        except OSError as exc:
            yield Problem(name, None, None, f"cannot read: {exc.strerror or exc}")
        except UnicodeDecodeError as exc:
            yield Problem(name, None, None, f"not UTF-8 text ({exc.reason} at byte {exc.start})")


def _jsonl_input(name: str, number: int, raw: bytes) -> Iterator[tuple[str, str] | Problem]:
    """The (source, text) of one JSONL line, nothing for a blank line, or its ``Problem``."""
    try:
        line = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        yield Problem(name, number, None, f"not UTF-8 text ({exc.reason} at byte {exc.start} of the line)")
        return
    if not line.strip():
        return
    try:
        record = json.loads(line)
    except json.JSONDecodeError as exc:
        yield Problem(name, number, None, f"invalid JSON: {exc.msg}")
        return
    if not isinstance(record, dict) or not isinstance(record.get("text"), str):
        yield Problem(name, number, None, "expected an object with a string 'text' field")
        return
    yield (f"{name}:{number}" if "id" not in record else str(record["id"])), record["text"]


def _check_inputs(paths: list[str]) -> None:
    """Raise ``DataValidationError`` listing every unreadable input, before any prediction (texts not kept)."""
    problems = [item for item in _scan_inputs(paths) if isinstance(item, Problem)]
    if problems:
        raise DataValidationError(problems, "cannot read the input files")


def cmd_predict(args: argparse.Namespace) -> int:
    """Extract entities from text files or JSONL files, as JSON lines.

    On Linux with glibc the process keeps the memory it frees for its next batches (faster forward passes; its
    memory stays at its peak until it exits); any of glibc's MALLOC_MMAP_THRESHOLD_, MALLOC_TRIM_THRESHOLD_ or
    MALLOC_TOP_PAD_ in the environment keeps your own allocator settings instead.

    Inputs are checked first, then streamed: texts are read, predicted in chunks and written one line each as
    they are done (flushed), so memory stays flat over any number of resumes and an interrupted run leaves
    the complete lines of the resumes before it.
    """
    from resume_ner.inference import Predictor
    from resume_ner.training.allocator import reuse_freed_memory

    _check_inputs(args.files)
    reuse_freed_memory()
    predictor = Predictor(args.model, device=args.device, batch_size=args.batch_size, precision=args.precision,
                          decoding=args.decoding)
    sources, texts = itertools.tee(item for item in _scan_inputs(args.files) if isinstance(item, tuple))
    with open(args.output, "w", encoding="utf-8") if args.output else nullcontext(sys.stdout) as out:
        for (source, _), entities in zip(sources, predictor.predict_stream(text for _, text in texts)):
            line = json.dumps({"source": source, "entities": [e.to_dict() for e in entities]}, ensure_ascii=False)
            out.write(line + "\n")
            out.flush()
    return 0


def add_tracking_options(parser: argparse.ArgumentParser) -> None:
    """``--no-tracking``, ``--tracking-uri`` and ``--run-name``."""
    parser.add_argument("--no-tracking", action="store_true", help="do not log to MLflow")
    parser.add_argument("--tracking-uri", help="MLflow tracking URI (wins over MLFLOW_TRACKING_URI and config)")
    parser.add_argument("--run-name", help="MLflow run name")


def register(subparsers: Any, parents: list[argparse.ArgumentParser]) -> None:
    """Add ``train``, ``evaluate`` and ``predict``."""
    train = subparsers.add_parser("train", parents=parents, help="train a model on annotated resumes",
                                  description=cmd_train.__doc__)
    train.add_argument("--data", help="annotated file (split by seed) or directory with train/validation/test files")
    train.add_argument("--output-dir", required=True, help="where the model, checkpoints and metrics go")
    train.add_argument("--resume", action="store_true", help="continue from the newest complete checkpoint")
    train.add_argument("--overwrite", action="store_true", help="replace an earlier training in --output-dir")
    add_tracking_options(train)
    add_launch_options(train)
    train.set_defaults(func=cmd_train)

    evaluate = subparsers.add_parser("evaluate", parents=parents, help="evaluate a checkpoint on annotated resumes",
                                     description=cmd_evaluate.__doc__)
    evaluate.add_argument("--model", required=True, help="model directory (e.g. RUN/model)")
    evaluate.add_argument("--data", required=True, help="annotated file, or dataset directory (see --split)")
    evaluate.add_argument("--split", default="test", choices=["train", "validation", "test"],
                          help="split to evaluate when --data is a dataset directory")
    evaluate.add_argument("--batch-size", type=int, default=32)
    evaluate.add_argument("--decoding", choices=DECODINGS, help=DECODING_HELP)
    evaluate.add_argument("--output", help="also write the metrics JSON here")
    evaluate.add_argument("--json", action="store_true", help="print JSON instead of a table")
    evaluate.set_defaults(func=cmd_evaluate)

    predict = subparsers.add_parser("predict", parents=parents, help="extract entities from resumes (JSON lines)",
                                    description=cmd_predict.__doc__)
    predict.add_argument("--model", required=True, help="model directory")
    predict.add_argument("files", nargs="+", metavar="FILE", help="plain text files, or .jsonl files with 'text'")
    predict.add_argument("--output", help="write JSON lines here instead of stdout")
    predict.add_argument("--batch-size", type=int, default=32)
    predict.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    predict.add_argument("--precision", default="auto", choices=PRECISIONS,
                         help="forward passes in bf16 (auto: where the hardware has native bf16) or fp32")
    predict.add_argument("--decoding", choices=DECODINGS, help=DECODING_HELP)
    predict.set_defaults(func=cmd_predict)
