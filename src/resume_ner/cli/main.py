"""``resume-ner``: the command line entry point. Heavy libraries are imported by the handlers only."""

from __future__ import annotations

import argparse
import logging
import os
import sys
from collections.abc import Sequence

from resume_ner import __version__
from resume_ner.cli import (
    azureml_commands,
    backbone_commands,
    data_commands,
    export_command,
    hpo_commands,
    k8s_commands,
    lineage_commands,
    model_commands,
    pipeline_commands,
    register_command,
    serve_commands,
    tracking_commands,
)
from resume_ner.errors import ResumeNerError, describe_os_error
from resume_ner.layout import CONFIG_DIR_ENV

_PROGRESS_LOGGERS = ("resume_ner.training.trainer", "resume_ner.hpo")  # long loops: epochs, trials
_NOISY_LOGGERS = ("transformers", "mlflow", "alembic", "urllib3", "httpx", "filelock", "optuna", "azure")


def common_parent() -> argparse.ArgumentParser:
    """Options every subcommand accepts: config directory, overrides, verbosity."""
    parent = argparse.ArgumentParser(add_help=False)
    group = parent.add_argument_group("configuration")
    group.add_argument(
        "--config-dir",
        default=os.environ.get(CONFIG_DIR_ENV),
        help="directory of YAML config files (default: built-in defaults; env RESUME_NER_CONFIG_DIR)",
    )
    group.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override one setting, e.g. --set training.learning_rate=3e-5 (repeatable)",
    )
    group.add_argument(
        "-q",
        "--quiet",
        action="store_true",
        help="no progress bars, warnings only (default: warnings and training/HPO progress)",
    )
    group.add_argument(
        "-v",
        "--verbose",
        action="store_true",
        help="debug logging: every INFO and DEBUG line, other libraries' INFO lines included",
    )
    return parent


def build_parser() -> argparse.ArgumentParser:
    """The full argument parser of ``resume-ner``."""
    parser = argparse.ArgumentParser(
        prog="resume-ner",
        description="Train, evaluate and use named-entity recognition models for resumes.",
    )
    parser.add_argument("--version", action="version", version=f"resume-ner {__version__}")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    parents = [common_parent()]
    data_commands.register(subparsers, parents)
    model_commands.register(subparsers, parents)
    hpo_commands.register(subparsers, parents)
    lineage_commands.register(subparsers, parents)
    register_command.register(subparsers, parents)
    export_command.register(subparsers, parents)
    pipeline_commands.register(subparsers, parents)
    k8s_commands.register(subparsers, parents)
    azureml_commands.register(subparsers, parents)
    tracking_commands.register(subparsers, parents)
    serve_commands.register(subparsers, parents)
    backbone_commands.register(subparsers, parents)
    return parser


def _configure_logging(args: argparse.Namespace) -> None:
    """Warnings, plus the INFO lines of training and HPO progress (what a job log shows where no progress bar
    runs); ``--quiet``: warnings only; ``--verbose``: debug, the INFO lines of other libraries included."""
    verbose, quiet = getattr(args, "verbose", False), getattr(args, "quiet", False)
    level = logging.DEBUG if verbose else logging.WARNING
    logging.basicConfig(level=level, format="%(asctime)s %(levelname)s %(name)s: %(message)s", datefmt="%H:%M:%S")
    logging.getLogger().setLevel(level)  # also when a handler was already there
    for name in _PROGRESS_LOGGERS:
        logging.getLogger(name).setLevel(logging.DEBUG if verbose else logging.WARNING if quiet else logging.INFO)
    for name in _NOISY_LOGGERS:
        logging.getLogger(name).setLevel(logging.INFO if verbose else logging.ERROR)
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    if not verbose:
        os.environ.setdefault("MLFLOW_LOGGING_LEVEL", "ERROR")  # mlflow sets its loggers' level on import
        os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
        os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")


def main(argv: Sequence[str] | None = None) -> int:
    """Run the CLI; project errors and failed file operations are printed without a traceback and exit with
    status 1 (usage: 2)."""
    parser = build_parser()
    args = parser.parse_args(argv)
    args.argv = list(sys.argv[1:] if argv is None else argv)  # what a torchrun relaunch runs again
    _configure_logging(args)
    try:
        return int(args.func(args) or 0)
    except ResumeNerError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    except OSError as exc:  # the file system refused a write: disk full, read-only, no permission
        if exc.errno is None:
            raise
        print(f"error: {describe_os_error(exc)}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
