"""``resume-ner export --format onnx --model DIR --output-dir DIR``: a model as an ONNX graph, ready to predict."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from resume_ner.cli.model_commands import checked_model_dir
from resume_ner.io import check_outputs
from resume_ner.layout import ONNX_FILE


def cmd_export(args: argparse.Namespace) -> int:
    """Export a model to ONNX. OUTPUT_DIR/model.onnx holds the encoder and token-classification head (dynamic
    batch and sequence axes; inputs input_ids, attention_mask and, where the backbone takes them, token_type_ids;
    output logits), beside the CRF scores, tokenizer, config.json and resume_ner.json. ONNX Runtime's logits are
    checked against PyTorch's before anything is written. OUTPUT_DIR is itself a model directory: `resume-ner
    predict --model OUTPUT_DIR` runs it on ONNX Runtime with the same windows and decoding."""
    from resume_ner.training.onnx_export import export_onnx

    model_dir = checked_model_dir(args.model)
    check_outputs([args.output_dir], inputs=[model_dir], overwrite=args.overwrite)
    result = export_onnx(model_dir, Path(args.output_dir))
    if args.json:
        print(json.dumps(result.to_dict(), indent=2))
    elif not args.quiet:
        print(
            f"exported {model_dir} to {Path(args.output_dir) / ONNX_FILE} in {result.seconds:.1f}s: "
            f"opset {result.opset}, inputs {', '.join(result.inputs)}; ONNX Runtime's logits within "
            f"{result.max_abs_logit_diff:.1e} of PyTorch's",
            file=sys.stderr,
        )
    return 0


def register(
    subparsers: argparse._SubParsersAction[argparse.ArgumentParser], parents: list[argparse.ArgumentParser]
) -> None:
    """Add ``export``."""
    export = subparsers.add_parser(
        "export", parents=parents, help="export a model to ONNX", description=cmd_export.__doc__
    )
    export.add_argument("--format", required=True, choices=["onnx"], help="the export format")
    export.add_argument(
        "--model", required=True, help="model directory (e.g. RUN/model), or a downloaded registered version"
    )
    export.add_argument(
        "--output-dir", "--out", dest="output_dir", required=True, help="the directory to write (a model directory)"
    )
    export.add_argument("--overwrite", action="store_true", help="replace an existing --output-dir")
    export.add_argument("--json", action="store_true", help="print what was exported as JSON")
    export.set_defaults(func=cmd_export)
