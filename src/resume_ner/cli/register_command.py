"""``resume-ner register OUTPUT_DIR``: register the model of a finished final training, with its lineage."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from resume_ner.cli.model_commands import load_config_from_args
from resume_ner.errors import ConfigError
from resume_ner.layout import LINEAGE_FILE, RESULT_FILE


def final_run_id(output_dir: Path) -> str:
    """The MLflow run id of the final training in ``output_dir`` (its ``train_result.json``); ``ConfigError``
    when the file or the run id is missing."""
    path = output_dir / RESULT_FILE
    try:
        result = json.loads(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise ConfigError(
            f"{path}: cannot read ({exc.strerror or exc}); pass the output directory of a finished "
            "final training (`resume-ner final-train --output-dir DIR`)"
        ) from None
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{path}: not JSON ({exc}); expected the TrainResult the trainer writes") from None
    run_id = result.get("run_id") if isinstance(result, dict) else None
    if not run_id:
        raise ConfigError(
            f"{path} has no run_id: tracking was off or lost in the final training, so it has no "
            "MLflow run to register; train again with tracking enabled"
        )
    return str(run_id)


def cmd_register(args: argparse.Namespace) -> int:
    """Register the model of a finished final training and write its lineage. The final training
    (resume-ner final-train --no-register, or the AzureML pipeline's final_train step) left its MLflow run id in
    OUTPUT_DIR/train_result.json; the checkpoint logged to that run becomes a new version of
    tracking.registered_model_name, and the lineage JSON is written to --output."""
    from resume_ner.workflows.steps import register_step

    output_dir = Path(args.output_dir)
    run_id = final_run_id(output_dir)
    config = load_config_from_args(args)
    lineage_path = Path(args.output) if args.output else output_dir / LINEAGE_FILE
    registered, lineage = register_step(
        config,
        run_id=run_id,
        lineage_path=lineage_path,
        promote=True if args.promote else None,
        tracking_uri=args.tracking_uri,
    )
    print(
        f"registered: {registered.model_uri} (aliases: {', '.join(registered.aliases)}); "
        f"champion {'moved' if registered.promoted else 'unchanged'}: {registered.reason}"
    )
    print(f"lineage ({lineage_path}):")
    print(lineage.render())
    return 0


def register(
    subparsers: argparse._SubParsersAction[argparse.ArgumentParser], parents: list[argparse.ArgumentParser]
) -> None:
    """Add ``register``."""
    command = subparsers.add_parser(
        "register", parents=parents, help="register the model of a final training", description=cmd_register.__doc__
    )
    command.add_argument(
        "output_dir", metavar="OUTPUT_DIR", help="output directory of the final training (holds train_result.json)"
    )
    command.add_argument(
        "--promote",
        action="store_true",
        help="make the new version champion even if it is not better (default: final.promote)",
    )
    command.add_argument(
        "--output",
        "--lineage-out",
        dest="output",
        metavar="FILE",
        help="lineage JSON to write (default: OUTPUT_DIR/lineage.json; --lineage-out: former name)",
    )
    command.add_argument("--tracking-uri", help="MLflow tracking URI (wins over MLFLOW_TRACKING_URI and config)")
    command.set_defaults(func=cmd_register)
