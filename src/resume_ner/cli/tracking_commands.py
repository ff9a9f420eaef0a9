"""``resume-ner tracking relog OUTPUT_DIR``: log a finished training to MLflow after a tracking outage."""

from __future__ import annotations

import argparse

from resume_ner.cli.model_commands import load_config_from_args
from resume_ner.errors import ConfigError
from resume_ner.workflows.relog import relog_output_dir

_DESTINATION = ("tracking_uri", "experiment_name", "run_name")  # where a relog logs: what it takes of the config


def _destination(args: argparse.Namespace) -> tuple[str | None, str | None, str | None]:
    """Tracking URI, experiment and run name of a relog: the options, else what ``--config-dir`` / ``--set`` give
    of ``tracking.{tracking_uri,experiment_name,run_name}`` (a URI: ``--set``, else ``$MLFLOW_TRACKING_URI``, else the
    files), else None
    (relog's defaults, from the output directory). ``ConfigError`` for a ``--set`` of another setting: what is
    logged is the training that the output directory's config.yaml records."""
    from resume_ner.config import parse_override

    tracking = load_config_from_args(args).tracking
    settable = [["tracking", name] for name in _DESTINATION]
    foreign = [item for item in args.overrides if parse_override(item)[0] not in settable]
    if foreign:
        raise ConfigError(
            "\n  ".join(
                [
                    "tracking relog logs the training that OUTPUT_DIR/config.yaml records, so only "
                    f"{', '.join('tracking.' + name for name in _DESTINATION)} can be set:"
                ]
                + [f"--set {item}: not a tracking destination setting" for item in foreign]
            )
        )
    given = {name: getattr(tracking, name) for name in _DESTINATION if name in tracking.model_fields_set}
    uri = args.tracking_uri or given.get("tracking_uri")
    return uri, args.experiment or given.get("experiment_name"), args.run_name or given.get("run_name")


def cmd_relog(args: argparse.Namespace) -> int:
    """Log the params, per-epoch metrics, test metrics, tags and artifacts of a finished training output directory
    to MLflow and end its run FINISHED: the run recorded in its train_result.json when that run exists at the
    tracking URI (only what it lacks is added), else a new run. Running it again adds nothing. What is logged
    comes from OUTPUT_DIR (config.yaml, train_result.json, model/); --config-dir and --set give only where it is
    logged: tracking.tracking_uri, tracking.experiment_name and tracking.run_name (as defaults of --tracking-uri,
    --experiment and --run-name)."""
    tracking_uri, experiment, run_name = _destination(args)
    outcome = relog_output_dir(args.output_dir, tracking_uri=tracking_uri, experiment=experiment, run_name=run_name)
    where = f"MLflow run {outcome.run_id} at {outcome.tracking_uri}"
    if not outcome.changed:
        print(f"{where} already holds this training; nothing to relog")
        return 0
    print(
        f"{where} ({'created' if outcome.created else 'completed'}): {outcome.params} param(s), "
        f"{outcome.metrics} metric value(s), {outcome.tags} tag(s), artifacts: "
        f"{', '.join(outcome.artifacts) or 'none missing'}; status FINISHED"
    )
    return 0


def register(
    subparsers: argparse._SubParsersAction[argparse.ArgumentParser], parents: list[argparse.ArgumentParser]
) -> None:
    """Add ``tracking relog``."""
    tracking = subparsers.add_parser(
        "tracking",
        help="MLflow tracking maintenance",
        description="MLflow tracking maintenance: relog logs a finished training to MLflow after a tracking outage "
        "(when train, hpo or final-train exited with status 3, MLflow logging was lost).",
    )
    actions = tracking.add_subparsers(dest="tracking_command", metavar="ACTION", required=True)
    relog = actions.add_parser(
        "relog",
        parents=parents,
        help="log a finished training output directory to MLflow",
        description=cmd_relog.__doc__,
    )
    relog.add_argument(
        "output_dir",
        metavar="OUTPUT_DIR",
        help="output directory of a finished training (config.yaml, train_result.json, model/)",
    )
    relog.add_argument(
        "--tracking-uri",
        help="MLflow tracking URI (default: MLFLOW_TRACKING_URI, else "
        "tracking.tracking_uri of --config-dir/--set, else the URI recorded "
        "in train_result.json, else that of OUTPUT_DIR/config.yaml)",
    )
    relog.add_argument(
        "--experiment",
        help="experiment of a new run (default: tracking.experiment_name of "
        "--config-dir/--set, else of OUTPUT_DIR/config.yaml)",
    )
    relog.add_argument(
        "--run-name",
        help="name of a new run (default: tracking.run_name of --config-dir/--set, "
        "else of OUTPUT_DIR/config.yaml, else the directory name)",
    )
    relog.set_defaults(func=cmd_relog)
