"""Container / remote-job entrypoint::

    python -m resume_ner.cli.train --config-dir config/ --data-asset DIR --output-dir DIR

The same workflow as ``resume-ner train``; tracking settings come from the config and MLFLOW_* variables.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from resume_ner.cli.main import main as cli_main


def build_parser() -> argparse.ArgumentParser:
    """Arguments of the training entrypoint."""
    parser = argparse.ArgumentParser(
        prog="python -m resume_ner.cli.train", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--config-dir", help="directory of YAML config files (default: built-in defaults)")
    parser.add_argument("--data-asset", required=True, help="annotated file or dataset directory")
    parser.add_argument("--output-dir", required=True)
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE")
    parser.add_argument("--resume", action="store_true")
    parser.add_argument("--no-tracking", action="store_true")
    parser.add_argument("--tracking-uri")
    parser.add_argument("--run-name")
    parser.add_argument("-q", "--quiet", action="store_true")
    parser.add_argument("-v", "--verbose", action="store_true")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Parse arguments and run the training command."""
    args = build_parser().parse_args(argv)
    forwarded = ["train", "--data", args.data_asset, "--output-dir", args.output_dir]
    if args.config_dir:
        forwarded += ["--config-dir", args.config_dir]
    for item in args.overrides:
        forwarded += ["--set", item]
    for flag in ("resume", "no_tracking", "quiet", "verbose"):
        if getattr(args, flag):
            forwarded.append("--" + flag.replace("_", "-"))
    for option in ("tracking_uri", "run_name"):
        if getattr(args, option):
            forwarded += ["--" + option.replace("_", "-"), getattr(args, option)]
    return cli_main(forwarded)


if __name__ == "__main__":
    sys.exit(main())
