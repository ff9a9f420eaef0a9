"""``resume-ner tracking relog OUTPUT_DIR``: log a finished training to MLflow after a tracking outage."""

from __future__ import annotations

import argparse
from typing import Any


def cmd_relog(args: argparse.Namespace) -> int:
    """Log the params, per-epoch metrics, test metrics, tags and artifacts of a finished training output directory
    to MLflow and end its run FINISHED: the run recorded in its train_result.json when that run exists at the
    tracking URI (only what it lacks is added), else a new run. Running it again adds nothing."""
    from resume_ner.tracking.relog import relog_output_dir

    outcome = relog_output_dir(args.output_dir, tracking_uri=args.tracking_uri, experiment=args.experiment,
                               run_name=args.run_name)
    where = f"MLflow run {outcome.run_id} at {outcome.tracking_uri}"
    if not outcome.changed:
        print(f"{where} already holds this training; nothing to relog")
        return 0
    print(f"{where} ({'created' if outcome.created else 'completed'}): {outcome.params} param(s), "
          f"{outcome.metrics} metric value(s), {outcome.tags} tag(s), artifacts: "
          f"{', '.join(outcome.artifacts) or 'none missing'}; status FINISHED")
    return 0


def register(subparsers: Any, parents: list[argparse.ArgumentParser]) -> None:
    """Add ``tracking relog``. Its settings come from the output directory's config.yaml, so of the common
    options it takes only -q / -v."""
    del parents  # --config-dir / --set would not apply
    tracking = subparsers.add_parser("tracking", help="MLflow tracking maintenance")
    actions = tracking.add_subparsers(dest="tracking_command", metavar="ACTION", required=True)
    relog = actions.add_parser("relog", help="log a finished training output directory to MLflow",
                               description=cmd_relog.__doc__)
    relog.add_argument("output_dir", metavar="OUTPUT_DIR",
                       help="output directory of a finished training (config.yaml, train_result.json, model/)")
    relog.add_argument("--tracking-uri", help="MLflow tracking URI (default: MLFLOW_TRACKING_URI, else the URI "
                                              "recorded in train_result.json, else the config's)")
    relog.add_argument("--experiment", help="experiment of a new run (default: tracking.experiment_name)")
    relog.add_argument("--run-name", help="name of a new run (default: tracking.run_name, else the directory name)")
    relog.add_argument("-q", "--quiet", action="store_true", help="warnings only")
    relog.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    relog.set_defaults(func=cmd_relog)
