"""``resume-ner final-train`` and ``resume-ner lineage show``."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from resume_ner.cli.model_commands import (
    add_launch_options,
    load_config_from_args,
    relaunch_under_torchrun,
    report_tracking_loss,
)
from resume_ner.errors import ConfigError
from resume_ner.training.distributed import context_from_env, shutdown_distributed
from resume_ner.training.metrics import format_metrics_table


def read_best_json(path: str) -> dict[str, Any]:
    """The best trial JSON of ``--best-json`` (``BestTrial.to_dict()``); ``ConfigError`` naming the file."""
    try:
        return json.loads(Path(path).read_text(encoding="utf-8"))
    except OSError as exc:
        raise ConfigError(f"--best-json {path}: cannot read: {exc.strerror or exc}") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ConfigError(
            f"--best-json {path}: not JSON ({exc}); expected the best trial as BestTrial.to_dict() writes it"
        ) from None


def cmd_final_train(args: argparse.Namespace) -> int:
    """Train the best trial's settings, test the model, and register it with its lineage."""
    from resume_ner.workflows.final import run_final_training_workflow

    launched = relaunch_under_torchrun(args)
    if launched is not None:
        return launched
    config = load_config_from_args(args)
    try:
        outcome = run_final_training_workflow(
            config,
            args.output_dir,
            data_path=args.data,
            best=read_best_json(args.best_json) if args.best_json else None,
            study_name=args.study,
            storage=args.storage,
            tracking_uri=args.tracking_uri,
            run_name=args.run_name,
            register=not args.no_register,
            promote=True if args.promote else None,
            quiet=args.quiet,
            overwrite=args.overwrite,
        )
    finally:
        shutdown_distributed()
    if not context_from_env().is_main:
        return 0  # rank 0 reports for the job
    best, result = outcome.best_trial, outcome.train_result
    print(
        f"best trial: study {best['study_name']!r} #{best['number']} "
        f"({', '.join(f'{k}={v}' for k, v in best['params'].items()) or 'no searched params'})"
    )
    print(
        f"final model: {result.model_dir} (epoch {result.best_epoch}, {result.global_step} steps, "
        f"{result.train_seconds:.0f}s)"
    )
    if outcome.test_metrics is not None:
        print("test metrics:")
        print(format_metrics_table(outcome.test_metrics))
    if outcome.run_id:
        print(f"MLflow run: {outcome.run_id}")
    if outcome.lineage is not None:
        lineage = outcome.lineage
        print(
            f"registered: {outcome.model_uri} (aliases: {', '.join(lineage.aliases)}); "
            f"champion {'moved' if outcome.promoted else 'unchanged'}: {outcome.promotion_reason}"
        )
        print(f"lineage ({outcome.lineage_path}):")
        print(lineage.render())
    elif not args.no_register:
        print("not registered: MLflow logging was lost (see below)")
    return report_tracking_loss(outcome.tracking_lost, Path(args.output_dir))


def cmd_lineage_show(args: argparse.Namespace) -> int:
    """Show where a registered model version comes from: final run, sweep, best trial, data."""
    from resume_ner.tracking.lineage import extract_lineage_from_best_model
    from resume_ner.tracking.mlflow import resolve_tracking_uri

    config = load_config_from_args(args)
    lineage = extract_lineage_from_best_model(
        args.model, tracking_uri=resolve_tracking_uri(args.tracking_uri, config.tracking)
    )
    print(json.dumps(lineage.to_dict(), indent=2) if args.json else lineage.render())
    return 0


def register(
    subparsers: argparse._SubParsersAction[argparse.ArgumentParser], parents: list[argparse.ArgumentParser]
) -> None:
    """Add ``final-train`` and ``lineage show``."""
    final = subparsers.add_parser(
        "final-train",
        parents=parents,
        help="train, test and register the best HPO trial",
        description=cmd_final_train.__doc__,
    )
    final.add_argument("--data", help="annotated file (split by seed) or directory with train/validation/test files")
    final.add_argument("--output-dir", required=True, help="where the model, metrics and lineage.json go")
    source = final.add_mutually_exclusive_group()
    source.add_argument("--study", help="Optuna study to take the best trial from (default: hpo.study_name)")
    source.add_argument("--best-json", metavar="FILE", help="the best trial as JSON (BestTrial.to_dict())")
    final.add_argument(
        "--storage", help="Optuna storage of --study: sqlite path, journal file or URL (default: hpo.storage)"
    )
    final.add_argument("--promote", action="store_true", help="make the new version champion even if it is not better")
    final.add_argument("--no-register", action="store_true", help="train and test only; do not register the model")
    final.add_argument("--overwrite", action="store_true", help="replace an earlier training in --output-dir")
    final.add_argument("--tracking-uri", help="MLflow tracking URI (wins over MLFLOW_TRACKING_URI and config)")
    final.add_argument("--run-name", help="MLflow run name")
    add_launch_options(final)
    final.set_defaults(func=cmd_final_train)

    lineage = subparsers.add_parser(
        "lineage",
        help="lineage of registered models",
        description="Lineage of registered models: show where a model version comes from (its final training run, "
        "the HPO study and best trial it was chosen from, and the fingerprint of its data).",
    )
    actions = lineage.add_subparsers(dest="lineage_command", metavar="ACTION", required=True)
    show = actions.add_parser(
        "show",
        parents=parents,
        help="where a registered model version comes from",
        description=cmd_lineage_show.__doc__,
    )
    show.add_argument(
        "model", metavar="MODEL", help="NAME (champion, else latest), NAME@ALIAS, NAME/VERSION or models:/NAME@ALIAS"
    )
    show.add_argument("--tracking-uri", help="MLflow tracking URI (wins over MLFLOW_TRACKING_URI and config)")
    show.add_argument("--json", action="store_true", help="print the lineage as JSON")
    show.set_defaults(func=cmd_lineage_show)
