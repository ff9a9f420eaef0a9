"""``resume-ner pipeline ...``: compile the Kubeflow pipeline, run it locally, upload, submit and schedule it.

``pipeline run --local`` without ``--data`` is what ``make run`` runs: synthetic resumes and a small budget
(``DEMO_SETTINGS``, under your own ``--set``), then the summary and entities extracted from a new resume.
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

from resume_ner.cli.model_commands import load_config_from_args
from resume_ner.errors import ConfigError
from resume_ner.inference import Predictor
from resume_ner.layout import PIPELINE_NAME

if TYPE_CHECKING:
    import kfp

DEFAULT_PACKAGE = Path("pipelines") / "resume_ner_training.yaml"
SHOWN_ENTITIES = 15

# Budget of the embedded default (packaged MiniLM, 2 CPU cores, under 10 minutes); --set overrides win.
# Trials of 2 short epochs only learn with the upper half of the default learning-rate range.
DEMO_SETTINGS = [
    "hpo.search_space={training.learning_rate: {type: log_uniform, min: 2.0e-4, max: 6.0e-4}, "
    "training.warmup_ratio: {type: uniform, min: 0.0, max: 0.2}, model.dropout: {type: uniform, min: 0.0, max: 0.2}}",
    "hpo.n_trials=4",
    "hpo.train_fraction=0.4",
    "hpo.max_epochs=2",
    "hpo.max_length=128",
    "hpo.n_startup_trials=1",
    "hpo.n_warmup_epochs=1",
    "training.epochs=3",
]


def cmd_compile(args: argparse.Namespace) -> int:
    """Write components/<name>.yaml and pipelines/resume_ner_training.yaml."""
    from resume_ner.config import resolve_image
    from resume_ner.kfp.pipelines import compile_all

    config = load_config_from_args(args)
    for path in compile_all(args.out_root, config, cluster=args.cluster, force=args.force):
        print(path)
    print(f"image: {resolve_image(config)}")
    return 0


def cmd_run(args: argparse.Namespace) -> int:
    """Run the pipeline on this machine with kfp.local and print where everything is."""
    from resume_ner.config import load
    from resume_ner.kfp.local_run import run_local

    if not args.local:
        raise ConfigError("pipeline run needs --local (to run on a Kubeflow server use `resume-ner pipeline submit`)")
    output_dir = Path(args.output_dir)
    overrides = list(args.overrides)
    data = Path(args.data).resolve() if args.data else None  # the tasks may run in other working directories
    if data is None:
        from resume_ner.data.synth import write_synthetic_resumes

        data = write_synthetic_resumes(output_dir / "data", args.n, args.seed)
        overrides = DEMO_SETTINGS + overrides
        print(f"embedded default: {args.n} synthetic resumes -> {data}")
    config = load(args.config_dir, overrides)
    summary = run_local(
        config,
        data_uri=data,
        output_dir=output_dir,
        parallelism=args.parallelism,
        containers=args.containers,
        verbose=getattr(args, "verbose", False),
    )
    _print_summary(summary, show_entities=args.data is None, seed=args.seed)
    return 0


def _print_summary(summary: Any, *, show_entities: bool, seed: int) -> None:
    lineage, best = summary.lineage, summary.best_config
    metrics = lineage["final_run_metrics"]
    states: dict[str, int] = {}
    for trial in lineage["trials"]:
        states[trial["state"]] = states.get(trial["state"], 0) + 1
    minutes, seconds = divmod(int(summary.wall_seconds), 60)
    print(
        f"\npipeline resume-ner-training SUCCEEDED in {minutes}m{seconds:02d}s "
        f"(pipeline run {lineage.get('pipeline_run_id')})"
    )
    print(
        f"  sweep       study {best['study_name']!r}: {len(lineage['trials'])} trial(s) "
        f"({', '.join(f'{n} {s}' for s, n in sorted(states.items()))}) in {summary.optuna_storage}"
    )
    params = ", ".join(f"{k}={v:.3g}" if isinstance(v, float) else f"{k}={v}" for k, v in best["params"].items())
    print(f"  best trial  #{best['number']}: validation {best['metric']} {best['value']:.4f} ({params})")
    print(
        f"  test        f1_micro {metrics.get('test_f1_micro', float('nan')):.4f}, "
        f"f1_macro {metrics.get('test_f1_macro', float('nan')):.4f} "
        f"({int(metrics.get('test_documents', 0))} whole documents)"
    )
    print(
        f"  registered  {summary.model_uri} (aliases: {', '.join(lineage['aliases']) or 'none'}) "
        f"at {summary.tracking_uri}"
    )
    print(f"  model       {summary.model_dir}")
    print(f"  artifacts   {summary.run_dir}")
    print(f"  full log    {summary.log_path}")
    print(f"\nlineage (`resume-ner lineage show {summary.model_uri}`):")
    from resume_ner.tracking.lineage import Lineage

    print(Lineage(**lineage).render())
    if show_entities:
        from resume_ner.data.synth import generate_resumes

        entities = Predictor(summary.model_dir).predict([generate_resumes(1, seed + 10_000)[0].text])[0]
        print(f"\nentities extracted from a new synthetic resume ({len(entities)}; `resume-ner predict` gives all):")
        for entity in entities[:SHOWN_ENTITIES]:
            print(f"  {entity.label:<18} {entity.start:>5}-{entity.end:<5} {entity.score:.2f}  {entity.text!r}")


def _client(args: argparse.Namespace) -> kfp.Client:
    from resume_ner.kfp.remote import connect

    return connect(args.host, kube_context=args.kube_context, namespace=args.namespace, ssl_ca_cert=args.ssl_ca_cert)


def cmd_upload(args: argparse.Namespace) -> int:
    """Upload the compiled pipeline (a new version when the pipeline exists)."""
    from resume_ner.kfp.remote import read_pipeline_parameters, upload_pipeline

    read_pipeline_parameters(args.package)  # every argument is checked before the server is contacted
    result = upload_pipeline(
        _client(args), args.package, pipeline_name=args.name, version_name=args.version, description=args.description
    )
    what = "created pipeline" if result.created_pipeline else "new version of pipeline"
    print(
        f"{what} {result.pipeline_name!r} ({result.pipeline_id}): version {result.version_name!r} ({result.version_id})"
    )
    return 0


def cmd_submit(args: argparse.Namespace) -> int:
    """Create a run of the compiled pipeline; with --wait, wait for it to finish."""
    from resume_ner.kfp.remote import check_wait, parse_run_parameters, submit_run

    params = parse_run_parameters(args.package, args.params)  # every argument first, then the server
    if args.wait:
        check_wait(args.timeout)
    result = submit_run(
        _client(args),
        args.package,
        experiment=args.experiment,
        params=params,
        run_name=args.run_name,
        namespace=args.namespace,
        service_account=args.service_account,
        wait=args.wait,
        timeout_s=args.timeout,
    )
    print(
        f"run {result.run_name!r} ({result.run_id}) in experiment {args.experiment!r}: {result.state}"
        + (f"\n  {result.url}" if result.url else "")
    )
    return 0


def cmd_schedule(args: argparse.Namespace) -> int:
    """Create a recurring run of the compiled pipeline."""
    from resume_ner.kfp.remote import check_schedule, parse_run_parameters, schedule_run

    params = parse_run_parameters(args.package, args.params)  # every argument first, then the server
    check_schedule(args.cron, args.max_concurrency)
    result = schedule_run(
        _client(args),
        args.package,
        experiment=args.experiment,
        cron=args.cron,
        job_name=args.job_name,
        params=params,
        max_concurrency=args.max_concurrency,
        catchup=not args.no_catchup,
        namespace=args.namespace,
        service_account=args.service_account,
    )
    print(
        f"recurring run {result.job_name!r} ({result.recurring_run_id}): cron {result.cron!r}, "
        f"max concurrency {result.max_concurrency}, catchup {'on' if result.catchup else 'off'}"
    )
    return 0


def _remote_parent() -> argparse.ArgumentParser:
    parent = argparse.ArgumentParser(add_help=False)
    group = parent.add_argument_group("KFP server (token: $KFP_TOKEN)")
    group.add_argument(
        "--host",
        default=os.environ.get("KFP_HOST"),
        help="KFP API address, e.g. http://localhost:8080 (env KFP_HOST; omit with --kube-context)",
    )
    group.add_argument("--kube-context", help="reach the server through this kubeconfig context instead")
    group.add_argument("--namespace", help="Kubeflow profile namespace (multi-user deployments)")
    group.add_argument("--ssl-ca-cert", help="CA bundle of the server's TLS certificate")
    group.add_argument(
        "--package", type=Path, default=DEFAULT_PACKAGE, help=f"compiled pipeline (default: {DEFAULT_PACKAGE})"
    )
    return parent


def register(
    subparsers: argparse._SubParsersAction[argparse.ArgumentParser], parents: list[argparse.ArgumentParser]
) -> None:
    """Add ``pipeline compile|run|upload|submit|schedule``."""
    pipeline = subparsers.add_parser(
        "pipeline",
        help="the Kubeflow pipeline: compile, run locally, upload, submit, schedule",
        description="The resume-ner-training Kubeflow pipeline.",
    )
    commands = pipeline.add_subparsers(dest="pipeline_command", metavar="COMMAND", required=True)
    remote = parents + [_remote_parent()]

    compile_ = commands.add_parser(
        "compile", parents=parents, help=cmd_compile.__doc__, description=cmd_compile.__doc__
    )
    compile_.add_argument(
        "--out-root", type=Path, default=Path("."), help="directory holding components/ and pipelines/ (default: .)"
    )
    compile_.add_argument(
        "--cluster",
        action="store_true",
        help="compile for a KFP cluster: refuse an image without a registry, a CPU image with GPU "
        "tasks, volume data without a volume, an MLflow store that is not a server",
    )
    compile_.add_argument("--force", action="store_true", help="with --cluster: accept a CPU image with GPU tasks")
    compile_.set_defaults(func=cmd_compile)

    run = commands.add_parser("run", parents=parents, help=cmd_run.__doc__, description=cmd_run.__doc__)
    run.add_argument("--local", action="store_true", help="run with kfp.local on this machine (required)")
    run.add_argument(
        "--containers",
        action="store_true",
        help="run each task in a container of the pipeline's image (a Docker engine; make image), as a "
        "KFP launcher would, instead of as a subprocess of this Python",
    )
    run.add_argument("--data", help="file or directory of annotated resumes (default: synthetic resumes)")
    run.add_argument(
        "--output-dir", default="runs/pipeline", help="pipeline root, study, work dirs (default: runs/pipeline)"
    )
    run.add_argument("--parallelism", type=int, default=None, help="HPO workers (default: pipeline.parallelism)")
    run.add_argument("--n", type=int, default=120, help="synthetic resumes without --data (default: 120)")
    run.add_argument("--seed", type=int, default=0, help="seed of the synthetic resumes (default: 0)")
    run.set_defaults(func=cmd_run)

    upload = commands.add_parser("upload", parents=remote, help=cmd_upload.__doc__, description=cmd_upload.__doc__)
    upload.add_argument("--name", default=PIPELINE_NAME, help="pipeline name on the server")
    upload.add_argument("--version", help="version name (default: <name>-<UTC timestamp>)")
    upload.add_argument("--description", help="pipeline description")
    upload.set_defaults(func=cmd_upload)

    for name, func in (("submit", cmd_submit), ("schedule", cmd_schedule)):
        command = commands.add_parser(name, parents=remote, help=func.__doc__, description=func.__doc__)
        command.add_argument("--experiment", required=True, help="KFP experiment (created when missing)")
        command.add_argument(
            "--param",
            dest="params",
            action="append",
            default=[],
            metavar="NAME=VALUE",
            help="pipeline parameter, e.g. --param data_uri=/mnt/resume-ner/data (repeatable)",
        )
        command.add_argument("--service-account", help="Kubernetes service account of the run's pods")
        command.set_defaults(func=func)
        if name == "submit":
            command.add_argument("--run-name", help="run name (default: <pipeline>-<UTC timestamp>)")
            command.add_argument("--wait", action="store_true", help="wait for the run; non-zero exit if it fails")
            command.add_argument("--timeout", type=float, default=6 * 3600, help="seconds --wait waits (default 6h)")
        else:
            command.add_argument(
                "--cron", required=True, help="6-field cron 'sec min hour day month weekday', e.g. '0 0 2 * * 1'"
            )
            command.add_argument("--job-name", default="resume-ner-training-schedule", help="recurring run name")
            command.add_argument("--max-concurrency", type=int, default=1, help="runs at once (1-10, default 1)")
            command.add_argument("--no-catchup", action="store_true", help="skip the runs missed while paused")
