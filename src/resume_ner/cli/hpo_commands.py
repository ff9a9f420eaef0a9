"""``resume-ner hpo run | worker | best | report``: hyperparameter search with Optuna (imported by the handlers)."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from resume_ner.cli.model_commands import load_config_from_args


def _print_best(best: Any) -> None:
    print(f"best trial: {best.number} of study {best.study_name!r}: {best.metric} {best.value:.4f} ({best.direction})")
    for path, value in best.params.items():
        print(f"  {path} = {value!r}")
    if best.checkpoint:
        print(f"checkpoint: {best.checkpoint}")
    if best.mlflow_run_id:
        print(f"MLflow run: {best.mlflow_run_id} (parent {best.parent_run_id})")


def cmd_run(args: argparse.Namespace) -> int:
    """Run or continue a study in this process until it has --n-trials finished trials, then report it."""
    from resume_ner.hpo.report import trials_table
    from resume_ner.hpo.select import best_trial_of
    from resume_ner.hpo.study import load_existing_study, resolve_storage
    from resume_ner.hpo.sweep import run_local_hpo_sweep

    config = load_config_from_args(args)
    output_dir = Path(args.output_dir)
    run_local_hpo_sweep(
        config,
        args.study,
        args.n_trials,
        data_path=args.data,
        output_dir=output_dir,
        storage=args.storage,
        timeout=args.timeout,
    )
    study_name = args.study or config.hpo.study_name
    storage = resolve_storage(args.storage or config.hpo.storage, output_dir, study_name, config.hpo, create=False)
    study = load_existing_study(storage, study_name)
    print(trials_table(study))
    _print_best(best_trial_of(study))
    print(f"report: {output_dir / 'hpo' / study_name}")
    return 0


def cmd_worker(args: argparse.Namespace) -> int:
    """Run trials of a study shared with other workers until it has --n-trials finished trials."""
    from resume_ner.hpo.sweep import run_hpo_worker

    summary = run_hpo_worker(
        load_config_from_args(args),
        study_name=args.study,
        storage=args.storage,
        n_trials=args.n_trials,
        data_path=args.data,
        output_dir=args.output_dir,
        timeout=args.timeout,
        worker=args.worker_index,
    )
    states = ", ".join(f"{count} {state}" for state, count in sorted(summary.states.items()))
    print(f"worker ran trial(s) {summary.trials_run or 'none'}; study {summary.study_name!r}: {states}")
    if summary.best_number is not None:
        print(f"best so far: trial {summary.best_number} ({summary.best_value:.4f})")
    return 0


def cmd_best(args: argparse.Namespace) -> int:
    """Print the best completed trial of a study."""
    from resume_ner.hpo.select import select_best

    best = select_best(args.storage, args.study)
    if args.json:
        print(json.dumps(best.to_dict(), indent=2))
    else:
        _print_best(best)
    return 0


def cmd_report(args: argparse.Namespace) -> int:
    """Print the trials of a study, write trials.csv and plots, and log them to its MLflow parent run."""
    from resume_ner.hpo.parent_run import log_study_report, open_parent_run
    from resume_ner.hpo.report import trials_table, write_study_report
    from resume_ner.hpo.study import load_existing_study

    study = load_existing_study(args.storage, args.study)
    print(trials_table(study))
    files = write_study_report(study, Path(args.output_dir))
    with open_parent_run(load_config_from_args(args), study, create=False) as parent:
        log_study_report(parent, study, files)
    for path in files:
        print(f"wrote {path}")
    return 0


def register(
    subparsers: argparse._SubParsersAction[argparse.ArgumentParser], parents: list[argparse.ArgumentParser]
) -> None:
    """Add ``hpo`` and its subcommands; each sets ``func(args) -> exit code``."""
    hpo = subparsers.add_parser(
        "hpo",
        help="hyperparameter search with Optuna (run, worker, best, report)",
        description="Search hyperparameters (hpo.search_space) with Optuna studies.",
    )
    commands = hpo.add_subparsers(dest="hpo_command", metavar="COMMAND", required=True)

    run = commands.add_parser(
        "run", parents=parents, help="run or continue a study in this process", description=cmd_run.__doc__
    )
    run.add_argument("--data", help="annotated file or dataset directory (default: data.path)")
    run.add_argument(
        "--output-dir", required=True, help="trials go to DIR/trials, the default storage and the report to DIR/hpo"
    )
    run.add_argument("--study", help="study name (default: hpo.study_name)")
    run.add_argument("--storage", help="sqlite file, journal file or SQLAlchemy URL (default: DIR/hpo/STUDY.db)")
    run.add_argument("--n-trials", type=int, help="finished trials the study should have (default: hpo.n_trials)")
    run.add_argument("--timeout", type=float, help="seconds after which no new trial starts (default: hpo.timeout)")
    run.add_argument("--no-tracking", action="store_true", help="do not log to MLflow")
    run.set_defaults(func=cmd_run)

    worker = commands.add_parser(
        "worker",
        parents=parents,
        help="run trials of a study shared by several workers",
        description=cmd_worker.__doc__,
    )
    worker.add_argument("--study", required=True, help="study name")
    worker.add_argument(
        "--storage", required=True, help="sqlite file, journal file or SQLAlchemy URL shared by the workers"
    )
    worker.add_argument("--n-trials", type=int, required=True, help="finished trials the study should have")
    worker.add_argument("--data", help="annotated file or dataset directory (default: data.path)")
    worker.add_argument("--output-dir", required=True, help="where the trials' outputs go (DIR/trials)")
    worker.add_argument("--timeout", type=float, help="seconds after which no new trial starts")
    worker.add_argument(
        "--worker-index",
        type=int,
        help="0, 1, ...: seeds this worker's sampler apart from the "
        "others', reproducibly (default: from the process id)",
    )
    worker.add_argument("--no-tracking", action="store_true", help="do not log to MLflow")
    worker.set_defaults(func=cmd_worker)

    best = commands.add_parser(
        "best", parents=parents, help="print the best trial of a study", description=cmd_best.__doc__
    )
    best.add_argument("--study", required=True, help="study name")
    best.add_argument("--storage", required=True, help="the study's sqlite file, journal file or SQLAlchemy URL")
    best.add_argument("--json", action="store_true", help="print the best trial as JSON")
    best.set_defaults(func=cmd_best)

    report = commands.add_parser(
        "report", parents=parents, help="print the trials, write trials.csv and plots", description=cmd_report.__doc__
    )
    report.add_argument("--study", required=True, help="study name")
    report.add_argument("--storage", required=True, help="the study's sqlite file, journal file or SQLAlchemy URL")
    report.add_argument(
        "--output-dir", "--out", dest="output_dir", required=True, help="directory for trials.csv and the PNG plots"
    )
    report.add_argument("--no-tracking", action="store_true", help="do not log the report to MLflow")
    report.set_defaults(func=cmd_report)
