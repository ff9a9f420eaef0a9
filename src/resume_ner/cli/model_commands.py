"""``resume-ner train | evaluate | predict``."""

from __future__ import annotations

import argparse
import itertools
import json
import logging
import os
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager, nullcontext
from pathlib import Path
from typing import Any

from resume_ner.errors import ConfigError, DataValidationError, Problem
from resume_ner.inference import Predictor
from resume_ner.io import check_outputs, open_atomic, write_json_atomic
from resume_ner.layout import METADATA_FILE, MODEL_DIRNAME
from resume_ner.serving.mlflow_model import served_checkpoint
from resume_ner.training.allocator import reuse_freed_memory
from resume_ner.training.decoding import DECODINGS
from resume_ner.training.distributed import context_from_env, launch_torchrun, shutdown_distributed
from resume_ner.training.evaluator import evaluate_model
from resume_ner.training.metrics import format_metrics_table
from resume_ner.training.precision import PRECISIONS
from resume_ner.workflows.relog import relog_command

log = logging.getLogger(__name__)

DECODING_HELP = (
    "word tags from the label probabilities: viterbi (the most probable valid IOB2 sequence) or argmax "
    "(each word's most probable label); default: the one the model was trained with"
)


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
        print(
            "To log its params, per-epoch and test metrics and artifacts to MLflow once the tracking server is "
            f"reachable, run:\n  {relog}",
            file=sys.stderr,
        )
    return 3


def add_launch_options(parser: argparse.ArgumentParser) -> None:
    """``--nproc-per-node``: data-parallel processes on this host, started with torchrun."""
    parser.add_argument(
        "--nproc-per-node",
        type=int,
        default=1,
        metavar="N",
        help="train in N data-parallel processes on this host (torchrun; gloo on CPU, NCCL on GPU)",
    )


def relaunch_under_torchrun(args: argparse.Namespace) -> int | None:
    """The exit status of this command re-run in ``--nproc-per-node`` processes by torchrun, or None when it
    should run here (one process, or already a torchrun worker)."""
    if args.nproc_per_node <= 1 or "WORLD_SIZE" in os.environ:
        return None

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
    """Train on a dataset, evaluate the best checkpoint on its test split. With --resume, a training that has
    already finished in --output-dir is left as it is, which is said in one line (exit status 0)."""
    from resume_ner.training.trainer import describe_finished_training
    from resume_ner.workflows.training import run_training_workflow

    launched = relaunch_under_torchrun(args)
    if launched is not None:
        return launched
    config = load_config_from_args(args)
    try:
        outcome = run_training_workflow(
            config,
            args.data,
            args.output_dir,
            resume=args.resume,
            tracking_uri=args.tracking_uri,
            run_name=args.run_name,
            quiet=args.quiet,
            overwrite=args.overwrite,
        )
    finally:
        shutdown_distributed()
    if not context_from_env().is_main:
        return 0  # rank 0 reports for the job
    result = outcome.train
    if outcome.already_finished:
        print(describe_finished_training(args.output_dir, result, config.training.epochs))
        return 0
    print(
        f"best checkpoint: {result.model_dir} (epoch {result.best_epoch}, validation {result.metric} "
        f"{result.best_metric if result.best_metric is None else round(result.best_metric, 4)})"
    )
    print(
        f"trained {result.global_step} steps in {result.train_seconds:.0f}s ({result.tokens_per_second:.0f} tokens/s)"
    )
    if outcome.test_metrics is not None:
        print("test metrics:")
        print(format_metrics_table(outcome.test_metrics))
    if outcome.run_id:
        print(f"MLflow run: {outcome.run_id}")
    return report_tracking_loss(
        outcome.tracking_lost, Path(args.output_dir), relog_command(args.output_dir, outcome.tracking_uri)
    )


def cmd_evaluate(args: argparse.Namespace) -> int:
    """Evaluate a checkpoint on a file or on one split of a dataset. The forward passes run as in predict (bf16
    where the hardware has it natively, unless --precision says otherwise), so the figures are those of the
    entities predict finds. Repeat --model to evaluate an ensemble: the models' word probabilities are averaged
    (see predict)."""
    from resume_ner.data.dataset import load_dataset, load_documents

    model_dirs = [checked_model_dir(model) for model in args.model]
    path = Path(args.data)
    if args.output:
        check_outputs([args.output], inputs=[path, *model_dirs], overwrite=args.overwrite)
    config = load_config_from_args(args)
    reuse_freed_memory()
    if path.is_dir():
        documents = getattr(load_dataset(path, config.data), args.split)
    else:
        documents = load_documents(path, config.data)
    started = time.perf_counter()
    with _progress("evaluate", args.quiet) as bar:
        metrics = evaluate_model(
            model_dirs,
            documents,
            batch_size=args.batch_size,
            device=config.training.device,
            decoding=args.decoding,
            precision=args.precision,
            on_windows=bar.update,
        )
    metrics["data"] = str(path)
    if args.output:
        write_json_atomic(Path(args.output), metrics)
    if args.json:
        print(json.dumps(metrics, indent=2))
    else:
        print(f"{len(documents)} documents from {path}, forward passes in {metrics['precision']}")
        print(format_metrics_table(metrics))
    if not args.quiet:
        print(
            f"evaluated {len(documents)} document(s) in {time.perf_counter() - started:.1f}s: span micro-F1 "
            f"{metrics.get('span_f1_micro', float('nan')):.4f}"
            + (f"; metrics written to {args.output}" if args.output else ""),
            file=sys.stderr,
        )
    return 0


def checked_model_dir(model: str) -> Path:
    """``model`` when it is a model directory, the checkpoint inside it when it is this project's MLflow model (a
    registered version, downloaded); a ``ConfigError`` that points at its ``model/`` when it is a training's output
    directory, or says what a model directory holds."""
    path = Path(model)
    if (path / METADATA_FILE).is_file():
        return path
    served = served_checkpoint(path)
    if served is not None:
        return served
    if (path / MODEL_DIRNAME / METADATA_FILE).is_file():
        raise ConfigError(
            f"--model {path} is a training's output directory; its model is {path / MODEL_DIRNAME}: "
            f"pass --model {path / MODEL_DIRNAME}"
        )
    if not path.is_dir():
        raise ConfigError(
            f"--model {path}: no such directory; pass the model directory a training wrote (OUTPUT_DIR/model)"
        )
    raise ConfigError(
        f"--model {path} is not a model directory (no {METADATA_FILE}); pass the model directory a "
        "training wrote (OUTPUT_DIR/model)"
    )


@contextmanager
def _progress(desc: str, quiet: bool) -> Iterator[Any]:
    """A progress bar of predicted windows on a terminal (off with --quiet or when stderr is not a terminal)."""
    from tqdm.auto import tqdm

    bar = tqdm(desc=desc, unit=" windows", disable=quiet or not sys.stderr.isatty(), leave=False)
    try:
        yield bar
    finally:
        bar.close()


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


def _check_inputs(paths: list[str]) -> int:
    """The number of texts in ``paths``; raise ``DataValidationError`` listing every unreadable input, before any
    prediction (texts not kept). An empty text is warned about (it has no entities)."""
    problems, count = [], 0
    for item in _scan_inputs(paths):
        if isinstance(item, Problem):
            problems.append(item)
            continue
        count += 1
        if not item[1].strip():
            log.warning("%s: the text is empty, so it has no entities", item[0])
    if problems:
        raise DataValidationError(problems, "cannot read the input files")
    return count


def cmd_predict(args: argparse.Namespace) -> int:
    """Extract entities from text files or JSONL files, as JSON lines.

    On Linux with glibc the process keeps the memory it frees for its next batches (faster forward passes; its
    memory stays at its peak until it exits); any of glibc's MALLOC_MMAP_THRESHOLD_, MALLOC_TRIM_THRESHOLD_ or
    MALLOC_TOP_PAD_ in the environment keeps your own allocator settings instead.

    Inputs are checked first, then streamed: texts are read, predicted in chunks and written one line each as
    they are done, so memory stays flat over any number of resumes. To stdout, each line is flushed as it is
    done; with --output the lines go to a temporary file renamed at the end, so an interrupted run leaves the
    old file (or none), never half of one. The output is never one of the inputs, and an existing one is
    replaced only with --overwrite.

    Repeat --model to predict with an ensemble (other seeds, other backbones with the same labels): each model
    reads the texts with its own tokenizer, their word probabilities are averaged on the first model's words and
    decoded with the mean of their CRF transition scores; it costs the sum of the models' prediction times.
    """
    model_dirs = [checked_model_dir(model) for model in args.model]
    if args.output:
        check_outputs([args.output], inputs=[*args.files, *model_dirs], overwrite=args.overwrite)
    total = _check_inputs(args.files)
    reuse_freed_memory()
    started, entities_found = time.perf_counter(), 0
    with _progress("predict", args.quiet) as bar:
        predictor = Predictor(
            model_dirs,
            device=args.device,
            batch_size=args.batch_size,
            precision=args.precision,
            decoding=args.decoding,
            on_windows=bar.update,
        )
        sources, texts = itertools.tee(item for item in _scan_inputs(args.files) if isinstance(item, tuple))
        with open_atomic(Path(args.output)) if args.output else nullcontext(sys.stdout) as out:
            for (source, _), entities in zip(sources, predictor.predict_stream(text for _, text in texts), strict=True):
                line = json.dumps({"source": source, "entities": [e.to_dict() for e in entities]}, ensure_ascii=False)
                out.write(line + "\n")
                if not args.output:
                    out.flush()
                entities_found += len(entities)
    if not args.quiet:
        seconds = time.perf_counter() - started
        print(
            f"predicted {entities_found} entities in {total} document(s) in {seconds:.1f}s "
            f"({total / max(seconds, 1e-9):.1f} documents/s) -> {args.output or 'stdout'}",
            file=sys.stderr,
        )
    return 0


def add_precision_option(parser: argparse.ArgumentParser) -> None:
    """``--precision`` of the forward passes, the same default for ``evaluate`` and ``predict``."""
    parser.add_argument(
        "--precision",
        default="auto",
        choices=PRECISIONS,
        help="forward passes in bf16 (auto: where the hardware has native bf16) or fp32",
    )


def add_tracking_options(parser: argparse.ArgumentParser) -> None:
    """``--no-tracking``, ``--tracking-uri`` and ``--run-name``."""
    parser.add_argument("--no-tracking", action="store_true", help="do not log to MLflow")
    parser.add_argument("--tracking-uri", help="MLflow tracking URI (wins over MLFLOW_TRACKING_URI and config)")
    parser.add_argument("--run-name", help="MLflow run name")


def register(
    subparsers: argparse._SubParsersAction[argparse.ArgumentParser], parents: list[argparse.ArgumentParser]
) -> None:
    """Add ``train``, ``evaluate`` and ``predict``."""
    train = subparsers.add_parser(
        "train", parents=parents, help="train a model on annotated resumes", description=cmd_train.__doc__
    )
    train.add_argument("--data", help="annotated file (split by seed) or directory with train/validation/test files")
    train.add_argument("--output-dir", required=True, help="where the model, checkpoints and metrics go")
    train.add_argument("--resume", action="store_true", help="continue from the newest complete checkpoint")
    train.add_argument("--overwrite", action="store_true", help="replace an earlier training in --output-dir")
    add_tracking_options(train)
    add_launch_options(train)
    train.set_defaults(func=cmd_train)

    evaluate = subparsers.add_parser(
        "evaluate", parents=parents, help="evaluate a checkpoint on annotated resumes", description=cmd_evaluate.__doc__
    )
    evaluate.add_argument(
        "--model",
        required=True,
        action="append",
        help="model directory (e.g. RUN/model), or a downloaded registered version; repeat for an ensemble",
    )
    evaluate.add_argument("--data", required=True, help="annotated file, or dataset directory (see --split)")
    evaluate.add_argument(
        "--split",
        default="test",
        choices=["train", "validation", "test"],
        help="split to evaluate when --data is a dataset directory",
    )
    evaluate.add_argument("--batch-size", type=int, default=32)
    add_precision_option(evaluate)
    evaluate.add_argument("--decoding", choices=DECODINGS, help=DECODING_HELP)
    evaluate.add_argument("--output", help="also write the metrics JSON here")
    evaluate.add_argument("--overwrite", action="store_true", help="replace an existing --output file")
    evaluate.add_argument("--json", action="store_true", help="print JSON instead of a table")
    evaluate.set_defaults(func=cmd_evaluate)

    predict = subparsers.add_parser(
        "predict", parents=parents, help="extract entities from resumes (JSON lines)", description=cmd_predict.__doc__
    )
    predict.add_argument(
        "--model",
        required=True,
        action="append",
        help="model directory (e.g. RUN/model), or a downloaded registered version (its MLmodel); repeat for an "
        "ensemble",
    )
    predict.add_argument("files", nargs="+", metavar="FILE", help="plain text files, or .jsonl files with 'text'")
    predict.add_argument("--output", help="write JSON lines here instead of stdout (never one of the inputs)")
    predict.add_argument("--overwrite", action="store_true", help="replace an existing --output file")
    predict.add_argument("--batch-size", type=int, default=32)
    predict.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    add_precision_option(predict)
    predict.add_argument("--decoding", choices=DECODINGS, help=DECODING_HELP)
    predict.set_defaults(func=cmd_predict)
