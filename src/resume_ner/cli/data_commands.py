"""``resume-ner data ...``: validate, stats, split, convert and synth subcommands over annotated resumes."""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from resume_ner import config
from resume_ner.data.dataset import dataset_files, load_dataset, load_documents
from resume_ner.data.readers import FORMATS, read_documents
from resume_ner.data.validation import dataset_stats, validate_documents
from resume_ner.data.writers import OUTPUT_FORMATS, render_documents
from resume_ner.errors import Problem
from resume_ner.io import check_outputs, write_text_atomic

logger = logging.getLogger(__name__)

MAX_SHOWN = 20


def register(subparsers: argparse._SubParsersAction, common_parents: list[argparse.ArgumentParser]) -> None:
    """Add ``data`` and its subcommands; each sets ``func(args) -> exit code``."""
    data = subparsers.add_parser(
        "data",
        help="validate, inspect, split, convert or synthesise annotated resumes",
        description="Work with annotated resume files (Doccano JSONL, span JSON, Dataturks JSON, CoNLL).",
    )
    commands = data.add_subparsers(dest="data_command", metavar="COMMAND", required=True)

    validate = commands.add_parser("validate", parents=common_parents, help="check a file and report every problem")
    _add_input_arguments(validate)
    validate.add_argument(
        "--on-overlap",
        choices=("error", "keep-longest"),
        default=None,
        help="overlapping spans: reject them, or keep the longest (default: data.on_overlap)",
    )
    validate.add_argument("--json", action="store_true", help="print the report as JSON")
    validate.set_defaults(func=_validate)

    stats = commands.add_parser("stats", parents=common_parents, help="counts of documents, tokens and entities")
    _add_input_arguments(stats)
    stats.add_argument("--json", action="store_true", help="print the statistics as JSON")
    stats.set_defaults(func=_stats)

    split = commands.add_parser(
        "split",
        parents=common_parents,
        help="write train/validation/test Doccano JSONL files and print the fingerprint",
    )
    _add_input_arguments(split)
    split.add_argument(
        "--output-dir",
        "--out",
        dest="output_dir",
        type=Path,
        required=True,
        help="directory for train/validation/test.jsonl (never the input's directory)",
    )
    _add_overwrite(split)
    split.add_argument("--seed", type=int, default=None, help="split seed (default: data.split_seed)")
    split.add_argument(
        "--validation-fraction",
        type=float,
        default=None,
        help="share of documents for validation (default: data.validation_fraction)",
    )
    split.add_argument(
        "--test-fraction", type=float, default=None, help="share of documents for test (default: data.test_fraction)"
    )
    split.set_defaults(func=_split)

    convert = commands.add_parser(
        "convert", parents=common_parents, help="validate a file and write it in another format (canonical labels)"
    )
    _add_input_arguments(convert)
    convert.add_argument("--to", choices=OUTPUT_FORMATS, required=True, help="output format")
    convert.add_argument(
        "--output", "--out", dest="output", type=Path, required=True, help="output file (never the input)"
    )
    _add_overwrite(convert)
    convert.set_defaults(func=_convert)

    synth = commands.add_parser("synth", parents=common_parents, help="write synthetic annotated resumes")
    synth.add_argument("--n", type=_resume_count, default=100, help="number of resumes, 1 or more (default: 100)")
    synth.add_argument("--seed", type=int, default=42, help="random seed (default: 42)")
    synth.add_argument(
        "--output-dir",
        "--out",
        dest="output_dir",
        type=Path,
        required=True,
        help="output directory (the resumes go to resumes.jsonl in it)",
    )
    _add_overwrite(synth)
    synth.set_defaults(func=_synth)


def _add_input_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "path",
        type=Path,
        help="annotated resume file, or a dataset directory (train.*, "
        "validation.*, test.*; or one data file), as train reads them",
    )
    parser.add_argument(
        "--format", choices=("auto",) + FORMATS, default=None, help="input format (default: data.format, auto-detected)"
    )


def _add_overwrite(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--overwrite", action="store_true", help="replace output files that already exist")


def _resume_count(text: str) -> int:
    """``--n``: a whole number of resumes, 1 or more (an empty file would not validate)."""
    if not text.strip().isdigit() or int(text) < 1:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number of resumes: give 1 or more, e.g. --n 100")
    return int(text)


def _data_config(args: argparse.Namespace, **flags: Any) -> config.DataConfig:
    """``data`` section of the loaded config, with each given flag applied as a ``data.<name>`` override."""
    overrides = list(args.overrides or [])
    overrides += [f"data.{name}={value}" for name, value in flags.items() if value is not None]
    return config.load(args.config_dir, overrides).data


def _validate(args: argparse.Namespace) -> int:
    data_config = _data_config(args, format=args.format, on_overlap=args.on_overlap)
    reports = [_validation_report(path, data_config) for path in dataset_files(args.path).values()]
    failed = any(report["problems"] for report in reports)
    if args.json:
        single = reports[0] if len(reports) == 1 and reports[0]["path"] == str(args.path) else None
        print(
            json.dumps(
                single or {"path": str(args.path), "valid": not failed, "files": reports}, indent=2, ensure_ascii=False
            )
        )
        return 1 if failed else 0
    for report in reports:
        _print_validation(report, data_config)
    if len(reports) > 1:
        problems = sum(len(report["problems"]) for report in reports)
        print(f"{args.path}: {len(reports)} files, " + (f"FAILED: {problems} problem(s)" if failed else "OK"))
    return 1 if failed else 0


def _validation_report(path: Path, data_config: config.DataConfig) -> dict[str, Any]:
    """Everything ``data validate`` says of one file, as a JSON-able dict."""
    result = read_documents(path, data_config.format)
    report = validate_documents(
        result.documents,
        label_map=data_config.label_map,
        on_overlap=data_config.on_overlap,
        on_duplicate=data_config.on_duplicate,
    )
    problems = result.problems + report.problems
    return {
        "path": str(path),
        "format": result.format,
        "valid": not problems,
        **dataset_stats(report.documents),
        "trimmed_spans": report.trimmed_spans,
        "resolved_overlaps": report.resolved_overlaps,
        "problems": [dataclasses.asdict(p) for p in problems],
        "warnings": [dataclasses.asdict(p) for p in report.warnings],
    }


def _print_validation(report: dict[str, Any], data_config: config.DataConfig) -> None:
    print(f"{report['path']} ({report['format']})")
    _print_stats(report)
    print(f"spans trimmed of leading/trailing whitespace: {report['trimmed_spans']}")
    if data_config.on_overlap == "keep-longest":
        print(f"overlapping spans dropped (keep-longest): {report['resolved_overlaps']}")
    problems, warnings = ([Problem(**p) for p in report[key]] for key in ("problems", "warnings"))
    if warnings:
        _print_problems("warnings", warnings)
    if problems:
        _print_problems("problems", problems)
    print(f"FAILED: {len(problems)} problem(s)" if problems else f"OK ({len(warnings)} warning(s))")


def _stats(args: argparse.Namespace) -> int:
    data_config = _data_config(args, format=args.format)
    if args.path.is_dir():
        dataset = load_dataset(args.path, data_config)
        documents = dataset.train + dataset.validation + dataset.test
    else:
        documents = load_documents(args.path, data_config)
    stats = dataset_stats(documents)
    if args.json:
        print(json.dumps(stats, indent=2, ensure_ascii=False))
    else:
        _print_stats(stats)
    return 0


def _split(args: argparse.Namespace) -> int:
    data_config = _data_config(
        args,
        format=args.format,
        split_seed=args.seed,
        validation_fraction=args.validation_fraction,
        test_fraction=args.test_fraction,
    )
    outputs = {name: args.output_dir / f"{name}.jsonl" for name in ("train", "validation", "test")}
    check_outputs(outputs.values(), inputs=[args.path], overwrite=args.overwrite)
    dataset = load_dataset(args.path, data_config)
    for name, documents in (("train", dataset.train), ("validation", dataset.validation), ("test", dataset.test)):
        path = write_text_atomic(outputs[name], render_documents(documents, "doccano"))
        print(f"{name}: {len(documents)} document(s) -> {path}")
    print(f"fingerprint: {dataset.fingerprint}")
    return 0


def _convert(args: argparse.Namespace) -> int:
    check_outputs([args.output], inputs=[args.path], overwrite=args.overwrite)
    documents = load_documents(args.path, _data_config(args, format=args.format))
    write_text_atomic(args.output, render_documents(documents, args.to))
    print(f"wrote {len(documents)} document(s) to {args.output} ({args.to})")
    return 0


def _synth(args: argparse.Namespace) -> int:
    from resume_ner.data.synth import SYNTH_FILE, write_synthetic_resumes

    check_outputs([args.output_dir / SYNTH_FILE], overwrite=args.overwrite)
    path = write_synthetic_resumes(args.output_dir, args.n, args.seed)
    print(f"wrote {args.n} synthetic resume(s) to {path}")
    return 0


def _print_stats(stats: dict[str, Any]) -> None:
    chars = stats["chars_per_document"]
    print(f"documents: {stats['documents']}")
    print(
        f"characters: {stats['characters']} (per document: mean {chars['mean']}, median {chars['median']}, "
        f"max {chars['max']})"
    )
    print(f"tokens: {stats['tokens']} ({stats['token_unit']})")
    print(f"entities: {stats['entities']} in {stats['entity_types']} type(s)")
    width = max((len(label) for label in stats["entities_per_type"]), default=0)
    for label, count in stats["entities_per_type"].items():
        print(f"  {label:<{width}}  {count}")


def _print_problems(title: str, problems: Sequence[Problem]) -> None:
    print(f"{title}: {len(problems)}")
    for problem in problems[:MAX_SHOWN]:
        print(f"  - {problem}")
    if len(problems) > MAX_SHOWN:
        print(f"  ... and {len(problems) - MAX_SHOWN} more")
