"""``resume-ner serve``: a registered model (or any MLflow model of this project) behind MLflow's scoring server;
``resume-ner load-test``: a bounded load test of a served model's ``/invocations``."""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

from resume_ner.cli.model_commands import load_config_from_args
from resume_ner.errors import ConfigError
from resume_ner.serving.load import run_load
from resume_ner.serving.local_server import SERVER_WORKERS, serve_command, serve_environment


def cmd_serve(args: argparse.Namespace) -> int:
    """Serve MODEL with `mlflow models serve --env-manager local` in the foreground (this environment has
    resume-ner installed) until interrupted: GET /ping, POST /invocations with
    {"dataframe_records": [{"text": "..."}]}. The same as running that mlflow command with this environment's bin/
    first on PATH; a models:/ or runs:/ URI resolves on --tracking-uri, else MLFLOW_TRACKING_URI, else
    tracking.tracking_uri, else ./mlruns/mlflow.db (where `make run` registers)."""
    from resume_ner.tracking.mlflow import resolve_tracking_uri

    environment = serve_environment()
    if args.model.startswith(("models:/", "runs:/")):  # resolved on a tracking server: the project's rule says which
        environment["MLFLOW_TRACKING_URI"] = resolve_tracking_uri(
            args.tracking_uri, load_config_from_args(args).tracking
        )
    command = serve_command(args.model, host=args.host, port=args.port, workers=args.workers)
    print(f"serving {args.model} on http://{args.host}:{args.port} (/ping, /invocations); Ctrl-C stops it", flush=True)
    try:
        return subprocess.run(command, env=environment).returncode
    except KeyboardInterrupt:
        return 130


def cmd_load_test(args: argparse.Namespace) -> int:
    """Send --requests requests from --concurrency clients to URL/invocations, each with --texts-per-request
    texts of --data (a text file: one resume per blank-line-separated block, or a JSONL file of {"text": ...}),
    then print latency percentiles and throughput; exit status 1 when any request failed."""
    path = Path(args.data)
    if not path.is_file():
        raise ConfigError(f"--data {path}: no such file")
    raw = path.read_text(encoding="utf-8")
    if path.suffix == ".jsonl":
        texts = [json.loads(line)["text"] for line in raw.splitlines() if line.strip()]
    else:
        texts = [block.strip() for block in raw.split("\n\n") if block.strip()]
    if not texts:
        raise ConfigError(f"--data {path}: no texts")
    report = run_load(
        args.url.rstrip("/"),
        texts,
        concurrency=args.concurrency,
        requests=args.requests,
        texts_per_request=args.texts_per_request,
    )
    print(json.dumps(report.to_dict(), indent=2) if args.json else report.summary())
    for sample in report.error_samples:
        print(f"error: {sample}", file=sys.stderr)
    return 1 if report.errors else 0


def register(
    subparsers: argparse._SubParsersAction[argparse.ArgumentParser], parents: list[argparse.ArgumentParser]
) -> None:
    """Add ``serve`` and ``load-test``."""
    serve = subparsers.add_parser(
        "serve", parents=parents, help="serve a registered model over HTTP (mlflow models serve)",
        description=cmd_serve.__doc__,
    )  # fmt: skip
    serve.add_argument(
        "--model",
        default="models:/resume-ner@champion",
        help="MLflow model URI or directory (default: models:/resume-ner@champion)",
    )
    serve.add_argument("--host", default="127.0.0.1", help="address to listen on (default: 127.0.0.1)")
    serve.add_argument("--port", type=int, default=5001, help="port (default: 5001)")
    serve.add_argument(
        "--workers",
        type=int,
        default=SERVER_WORKERS,
        help=f"server processes, each with its own model (default: {SERVER_WORKERS})",
    )
    serve.add_argument("--tracking-uri", help="MLflow tracking URI of a models:/ URI (wins over MLFLOW_TRACKING_URI)")
    serve.set_defaults(func=cmd_serve)

    load = subparsers.add_parser(
        "load-test", parents=parents, help="bounded load test of a served model", description=cmd_load_test.__doc__
    )
    load.add_argument("--url", default="http://127.0.0.1:5001", help="the server (default: http://127.0.0.1:5001)")
    load.add_argument("--data", required=True, help="texts to send: .txt (blank-line separated) or .jsonl")
    load.add_argument("--concurrency", type=int, default=8, help="clients sending at once (default: 8)")
    load.add_argument("--requests", type=int, default=400, help="requests in all (default: 400)")
    load.add_argument("--texts-per-request", type=int, default=1, help="texts in each request (default: 1)")
    load.add_argument("--json", action="store_true", help="print the report as JSON")
    load.set_defaults(func=cmd_load_test)
