"""``resume-ner azureml ...``: AzureML jobs of the training workflow.

``azureml build`` writes a job YAML (``az ml job create -f`` or ``azureml submit`` reads it) without any Azure
access, or with ``--kind endpoint`` the directory of an online endpoint and its deployment; ``azureml submit``
submits one to the workspace of ``$AZURE_SUBSCRIPTION_ID``, ``$AZURE_RESOURCE_GROUP``
and ``$AZUREML_WORKSPACE_NAME`` (or the flags); ``azureml select-best`` is the pipeline's select_best step.
"""

from __future__ import annotations

import argparse
import io
import logging
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

from resume_ner.cli.lineage_commands import read_best_json
from resume_ner.cli.model_commands import load_config_from_args
from resume_ner.errors import ConfigError
from resume_ner.io import check_outputs, write_text_atomic

if TYPE_CHECKING:
    from azure.ai.ml.entities import CommandJob, Job, PipelineJob, SweepJob

KINDS = ("final", "sweep", "dry-run", "pipeline")  # the jobs
ENDPOINT_KIND = "endpoint"  # an online endpoint and its deployment (azureml.endpoint), not a job
# What --help prints: plain text (the docstrings here are for developers and may carry markup).
DESCRIPTION = """AzureML jobs of the training workflow.

azureml build writes a job YAML (az ml job create -f or azureml submit reads it) without any Azure access,
or with --kind endpoint the directory of an online endpoint and its deployment; azureml submit submits one to
the workspace of $AZURE_SUBSCRIPTION_ID, $AZURE_RESOURCE_GROUP and $AZUREML_WORKSPACE_NAME (or the flags);
azureml select-best is the pipeline's select_best step."""
BUILD_HELP = (
    "Write the YAML of an AzureML job (final training, sweep, sweep dry run or pipeline), or of an online "
    "endpoint and its deployment (no Azure access)."
)
BUILD_DESCRIPTION = BUILD_HELP + (
    " With the shipped hpo defaults (hpo.sampler=tpe, a log-uniform learning rate, the median pruner), which "
    "AzureML's bayesian sampling cannot take, sweeps use random sampling and print a note saying so."
)
SUBMIT_HELP = (
    "Submit a job YAML to the AzureML workspace (with --wait, wait for it and check its results), or create an "
    "online endpoint and its deployment."
)
SELECT_BEST_HELP = (
    "The pipeline's select_best step: the best trial's searched settings in the base config, as "
    "--config-dir, and the best trial (its MLflow run and its sweep's) as best_trial.json for "
    "final-train --best-json."
)


# azure-ai-ml logs "Class ...Schema: This is an experimental class" notices at INFO through its own stderr handler
# (logger azure.ai.ml, not propagated), whatever the level of the azure logger; they concern the SDK, not the job.
SDK_NOTICES_LOGGER = "azure.ai.ml._utils._experimental"


def _load_job(path: Path) -> Job:
    """The AzureML job of the YAML at ``path``; a ``ConfigError`` naming the file and what is wrong with it."""
    from azure.ai.ml import load_job
    from azure.ai.ml.exceptions import MlException
    from marshmallow.exceptions import ValidationError

    try:
        return load_job(path)
    except (MlException, ValidationError) as exc:
        first = next((line.strip() for line in str(exc).splitlines() if line.strip()), type(exc).__name__)
        raise ConfigError(
            f"--job {path}: not an AzureML job ({first}); write one with `resume-ner azureml build --output FILE`"
        ) from None


def _quiet_sdk_notices(args: argparse.Namespace) -> None:
    """Keep azure-ai-ml's experimental-class notices off stderr unless ``--verbose``."""
    if not getattr(args, "verbose", False):
        logging.getLogger(SDK_NOTICES_LOGGER).setLevel(logging.ERROR)


def _tags(items: list[str]) -> dict[str, str]:
    tags = {}
    for item in items:
        key, separator, value = item.partition("=")
        if not separator or not key:
            raise ConfigError(f"--tag {item!r}: expected KEY=VALUE")
        tags[key] = value
    return tags


def _final_config(args: argparse.Namespace, config: Any) -> Any:
    """The config with the best trial's params of ``--best-json`` (a ``BestTrial`` dict, or the params alone)."""
    from resume_ner.workflows.final import build_final_training_config

    config = build_final_training_config({"model": {"backbone": args.backbone}}, config) if args.backbone else config
    if not args.best_json:
        return config
    best = read_best_json(args.best_json)
    params = best["params"] if isinstance(best, dict) and isinstance(best.get("params"), dict) else best
    return build_final_training_config(params, config)


def build_job(args: argparse.Namespace) -> CommandJob | PipelineJob | SweepJob:
    """The AzureML job of ``--kind`` from the config and the flags. For a sweep, dry run or pipeline whose sampler
    ``azureml.sweep.resolve_sampler`` replaces (the shipped default, which AzureML cannot run as configured), its
    note is printed as one line on stderr."""
    from resume_ner.azureml.jobs import default_environment, is_remote_asset

    config = load_config_from_args(args)
    if not (args.data_asset and args.compute):
        raise ConfigError(f"--kind {args.kind} needs --data-asset and --compute")
    if args.best_json and args.kind != "final":
        raise ConfigError(f"--best-json applies to --kind final, not {args.kind}")
    if not is_remote_asset(args.data_asset):
        raise ConfigError(
            f"--data-asset {args.data_asset}: a job YAML cannot carry a local folder (azure-ai-ml writes "
            "it as an asset name); register it first, e.g. `az ml data create --name resumes --version 1 "
            f"--type uri_folder --path {args.data_asset}`, and pass azureml:resumes:1 (or pass a URI)"
        )
    if args.kind != "final":
        from resume_ner.azureml.sweep import resolve_sampler

        config, note = resolve_sampler(config)
        if note:
            print(f"note: {note}", file=sys.stderr)
    common = {
        "data_asset": args.data_asset,
        "environment": args.environment or default_environment(config),
        "compute_cluster": args.compute,
        "aml_experiment_name": args.experiment or config.tracking.experiment_name,
        "tags": _tags(args.tags),
        "script_path": args.code,
    }
    trials = {"max_concurrent_trials": args.max_concurrent_trials, "trial_timeout": args.trial_timeout}
    distribution = {"instance_count": args.instance_count, "process_count_per_instance": args.process_count}
    backbone = args.backbone or config.model.backbone
    if args.kind == "final":
        from resume_ner.azureml.jobs import create_final_training_job

        return create_final_training_job(_final_config(args, config), **common, **distribution)
    if args.kind == "pipeline":
        from resume_ner.azureml.pipeline import create_training_pipeline_job

        return create_training_pipeline_job(config, backbone=backbone, **common, **distribution, **trials)
    from resume_ner.azureml import sweep

    if args.kind == "sweep":
        return sweep.create_hpo_sweep_job_for_backbone(backbone, hpo_config=config, **common, **trials)
    return sweep.create_dry_run_sweep_job_for_backbone(
        backbone, hpo_config=config, **common, trial_timeout=args.trial_timeout
    )


def _settings(flag: str, items: list[str]) -> dict[str, str]:
    """``KEY=VALUE[,KEY=VALUE...]`` items of ``flag`` as a dict."""
    settings = {}
    for item in (part for value in items for part in value.split(",") if part):
        key, separator, value = item.partition("=")
        if not separator or not key:
            raise ConfigError(f"{flag} {item!r}: expected KEY=VALUE")
        settings[key] = value
    return settings


def _probe(flag: str, items: list[str]) -> dict[str, int]:
    settings = _settings(flag, items)
    try:
        return {key: int(value) for key, value in settings.items()}
    except ValueError:
        raise ConfigError(f"{flag}: every value is a whole number: {settings}") from None


def build_endpoint(args: argparse.Namespace) -> int:
    """Write ``--output`` DIR: ``endpoint.yaml``, ``deployment.yaml`` and (unless ``--mlflow-no-code``) the
    scoring script in ``code/``."""
    from resume_ner.azureml import endpoint
    from resume_ner.azureml.jobs import default_environment, is_remote_asset

    if not (args.endpoint_name and args.model):
        raise ConfigError("--kind endpoint needs --endpoint-name and --model")
    code = None if args.mlflow_no_code else args.output / endpoint.CODE_DIRNAME
    outputs = [args.output / endpoint.ENDPOINT_FILE, args.output / endpoint.DEPLOYMENT_FILE]
    model_input = [] if is_remote_asset(args.model) else [args.model]
    check_outputs(
        outputs + ([code / endpoint.SCORING_SCRIPT] if code else []), inputs=model_input, overwrite=args.overwrite
    )
    environment = args.environment  # no-code: the library refuses one
    if not (args.mlflow_no_code or environment):
        environment = default_environment(load_config_from_args(args))
    tags = _tags(args.tags)
    online_endpoint = endpoint.create_online_endpoint(
        args.endpoint_name, tags=tags, **({"auth_mode": args.auth_mode} if args.auth_mode else {})
    )
    given = {  # the flags given; the library's defaults for the others
        "name": args.deployment_name,
        "instance_type": args.instance_type,
        "request_timeout_ms": args.request_timeout_ms,
        "max_concurrent_requests_per_instance": args.max_concurrent_requests,
    }
    deployment = endpoint.create_online_deployment(
        args.model,
        endpoint_name=args.endpoint_name,
        code_directory=code,
        environment=environment,
        mlflow_no_code=args.mlflow_no_code,
        instance_count=args.instance_count,
        liveness_probe=_probe("--liveness-probe", args.liveness_probe),
        readiness_probe=_probe("--readiness-probe", args.readiness_probe),
        environment_variables=_settings("--env", args.env),
        tags=tags,
        **{key: value for key, value in given.items() if value is not None},
    )
    endpoint.write_endpoint_files(args.output, online_endpoint, deployment)
    way = "no-code MLflow" if args.mlflow_no_code else f"scoring script in {environment}"
    print(f"endpoint {online_endpoint.name}, deployment {deployment.name} ({way}) -> {args.output}")
    return 0


def cmd_build(args: argparse.Namespace) -> int:
    """Write the YAML of an AzureML job (final training, sweep, sweep dry run or pipeline), or of an online
    endpoint and its deployment (no Azure access)."""
    _quiet_sdk_notices(args)
    if args.kind == ENDPOINT_KIND:
        return build_endpoint(args)
    check_outputs([args.output], overwrite=args.overwrite)
    job = build_job(args)
    text = io.StringIO()
    job.dump(text)
    write_text_atomic(args.output, text.getvalue())
    print(f"{args.kind} job ({job.type}) -> {args.output}")
    return 0


def _studio(job: Job) -> str:
    return f"\n  {job.studio_url}" if job.studio_url else ""


def submit_endpoint(args: argparse.Namespace) -> int:
    """Create or update the endpoint and the deployment of ``--endpoint`` DIR, and route its traffic."""
    from resume_ner.azureml.endpoint import load_endpoint_files
    from resume_ner.azureml.submit import deploy_online_endpoint, workspace_client

    online_endpoint, deployment = load_endpoint_files(args.endpoint)  # checked before the workspace is contacted
    ml_client = workspace_client(args.subscription_id, args.resource_group, args.workspace)
    done = deploy_online_endpoint(ml_client, online_endpoint, deployment, route_traffic=not args.no_traffic)
    traffic = ", ".join(f"{name} {share}%" for name, share in (done.traffic or {}).items()) or "none"
    print(f"endpoint {done.name}: deployment {deployment.name} created; traffic: {traffic}")
    if done.scoring_uri:
        print(f"  {done.scoring_uri}")
    return 0


def cmd_submit(args: argparse.Namespace) -> int:
    """Submit a job YAML to the AzureML workspace (with --wait, wait for it and check its results), or create an
    online endpoint and its deployment."""
    from resume_ner.azureml.jobs import BACKBONE_TAG, KIND_TAG
    from resume_ner.azureml.submit import (
        submit_and_wait_for_job,
        validate_final_training_job,
        validate_sweep_job,
        workspace_client,
    )

    _quiet_sdk_notices(args)
    if args.endpoint is not None:
        return submit_endpoint(args)
    if args.no_traffic:
        raise ConfigError("--no-traffic applies to --endpoint, not --job")
    job = _load_job(args.job)  # every argument is checked before the workspace is contacted
    if args.wait and not (args.timeout >= 0 and args.poll_interval >= 0):
        raise ConfigError(
            f"--timeout {args.timeout:g} and --poll-interval {args.poll_interval:g}: both must be "
            "numbers of seconds, 0 or more"
        )
    ml_client = workspace_client(args.subscription_id, args.resource_group, args.workspace)
    if not args.wait:
        submitted = ml_client.jobs.create_or_update(job)
        print(f"submitted {submitted.name}: {submitted.status}" + _studio(submitted))
        return 0
    done = submit_and_wait_for_job(
        ml_client, job, timeout=args.timeout, poll_interval=args.poll_interval, on_timeout=args.on_timeout
    )
    print(f"{done.name}: {done.status}" + _studio(done))
    tags = done.tags or {}  # the kind tag of `azureml build` tells the job's class
    if tags.get(KIND_TAG) == "final":
        summary = validate_final_training_job(cast("CommandJob", done), ml_client)
        print(f"  validation {summary['metric']} {summary['best_metric']}, test f1_micro {summary['test_f1_micro']}")
    elif tags.get(KIND_TAG) in ("hpo", "dry-run"):
        summary = validate_sweep_job(cast("SweepJob", done), tags[BACKBONE_TAG], ml_client)
        print(
            f"  best trial {summary['best_trial']}: {summary['primary_metric']} {summary['score']} "
            f"(trials: {', '.join(f'{n} {s}' for s, n in sorted(summary['trials'].items()))})"
        )
    return 0


def cmd_select_best(args: argparse.Namespace) -> int:
    """The pipeline's select_best step: the best trial's searched settings in the base config, as --config-dir,
    and the best trial (its MLflow run and its sweep's) as best_trial.json for final-train --best-json."""
    from resume_ner.azureml.select import select_best_trial_config

    best = select_best_trial_config(args.trial_dir, args.params, load_config_from_args(args), args.output_dir)
    print(
        f"best trial #{best['number']} of sweep {best['study_name']} (run {best['mlflow_run_id']}): "
        f"{', '.join(f'{k}={v}' for k, v in best['params'].items())} -> {args.output_dir}"
    )
    return 0


def _endpoint_arguments(build: argparse.ArgumentParser) -> None:
    """The flags of ``--kind endpoint``; the defaults are ``azureml.endpoint``'s (not imported here: start-up)."""
    group = build.add_argument_group("endpoint (--kind endpoint)")
    group.add_argument("--endpoint-name", help="the online endpoint (required; unique in the Azure region)")
    group.add_argument("--model", help="azureml:NAME:VERSION, or a local MLflow model folder (required)")
    group.add_argument("--deployment-name", help="default: blue")
    group.add_argument("--auth-mode", help="key (default) or aml_token")
    group.add_argument("--instance-type", help="default: Standard_DS3_v2")
    group.add_argument("--request-timeout-ms", type=int, help="default: 30000")
    group.add_argument("--max-concurrent-requests", type=int, help="per instance (default: 1)")
    for probe, delay in (("liveness", 30), ("readiness", 10)):
        group.add_argument(
            f"--{probe}-probe",
            action="append",
            default=[],
            metavar="KEY=VALUE[,...]",
            help=f"seconds and tries (default: initial_delay={delay}, period=10, timeout=5, success_threshold=1, "
            "failure_threshold=30)",
        )
    group.add_argument(
        "--env", action="append", default=[], metavar="KEY=VALUE", help="environment variable (HF_HUB_OFFLINE=1 is set)"
    )
    group.add_argument(
        "--mlflow-no-code",
        action="store_true",
        help="AzureML's no-code MLflow deployment (no --environment, no scoring script): needs resume-ner "
        "installable from an index the workspace reaches",
    )


def register(
    subparsers: argparse._SubParsersAction[argparse.ArgumentParser], parents: list[argparse.ArgumentParser]
) -> None:
    """Add ``azureml build|submit|select-best``."""
    azureml = subparsers.add_parser(
        "azureml",
        help="AzureML jobs: build a job YAML, submit it, pipeline steps",
        description=DESCRIPTION,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    commands = azureml.add_subparsers(dest="azureml_command", metavar="COMMAND", required=True)

    build = commands.add_parser("build", parents=parents, help=BUILD_HELP, description=BUILD_DESCRIPTION)
    build.add_argument("--kind", choices=(*KINDS, ENDPOINT_KIND), required=True, help="the job (or endpoint) to build")
    build.add_argument(
        "--output",
        "--out",
        dest="output",
        metavar="FILE",
        type=Path,
        required=True,
        help="job YAML file to write; endpoint: the directory to write (--out is an alias)",
    )
    build.add_argument("--overwrite", action="store_true", help="replace an existing --output file")
    build.add_argument(
        "--data-asset",
        help="jobs (required): the data folder: azureml:NAME:VERSION, or an azureml://, https:// or abfss:// URI",
    )
    build.add_argument("--compute", help="jobs (required): AzureML compute cluster of the job")
    build.add_argument(
        "--environment",
        help="azureml:NAME:VERSION, or a Docker image (default: the AzureML image "
        "variant, $RESUME_NER_IMAGE or pipeline.image + '-azureml')",
    )
    build.add_argument("--experiment", help="AzureML experiment (default: tracking.experiment_name)")
    build.add_argument("--backbone", help="backbone of the job (default: model.backbone)")
    build.add_argument("--best-json", metavar="FILE", help="final: the best trial (BestTrial JSON) or its params")
    build.add_argument(
        "--instance-count",
        type=int,
        default=1,
        help="final, pipeline: nodes of the final training; endpoint: instances",
    )
    build.add_argument("--process-count", type=int, default=1, help="final, pipeline: processes per node (GPUs)")
    build.add_argument(
        "--max-concurrent-trials", type=int, help="sweep, pipeline: trials at once (default: pipeline.parallelism)"
    )
    build.add_argument("--trial-timeout", type=int, help="sweeps: seconds a trial may run")
    build.add_argument("--code", metavar="DIR", help="upload DIR as the job's code (e.g. src/ to run a working copy)")
    build.add_argument("--tag", dest="tags", action="append", default=[], metavar="KEY=VALUE", help="job tag")
    _endpoint_arguments(build)
    build.set_defaults(func=cmd_build)

    submit = commands.add_parser("submit", parents=parents, help=SUBMIT_HELP, description=SUBMIT_HELP)
    what = submit.add_mutually_exclusive_group(required=True)
    what.add_argument("--job", metavar="FILE", type=Path, help="job YAML (written by azureml build)")
    what.add_argument(
        "--endpoint", metavar="DIR", type=Path, help="endpoint directory (written by azureml build --kind endpoint)"
    )
    submit.add_argument(
        "--no-traffic",
        action="store_true",
        help="endpoint: leave the endpoint's traffic as it is (default: all of it to the new deployment)",
    )
    submit.add_argument("--wait", action="store_true", help="wait for the job; non-zero exit if it fails")
    submit.add_argument("--timeout", type=float, default=6 * 3600, help="seconds --wait waits (default 6h)")
    submit.add_argument("--poll-interval", type=float, default=30.0, help="seconds between status reads")
    submit.add_argument(
        "--on-timeout",
        choices=("cancel", "leave"),
        default="cancel",
        help="after --timeout: cancel the job (default) or leave it running",
    )
    submit.add_argument("--subscription-id", help="Azure subscription (default: $AZURE_SUBSCRIPTION_ID)")
    submit.add_argument("--resource-group", help="resource group (default: $AZURE_RESOURCE_GROUP)")
    submit.add_argument("--workspace", help="AzureML workspace (default: $AZUREML_WORKSPACE_NAME)")
    submit.set_defaults(func=cmd_submit)

    select = commands.add_parser("select-best", parents=parents, help=SELECT_BEST_HELP, description=SELECT_BEST_HELP)
    select.add_argument("--trial-dir", type=Path, required=True, help="training output directory of the best trial")
    select.add_argument(
        "--param",
        dest="params",
        action="append",
        required=True,
        metavar="PATH",
        help="a searched setting, e.g. training.learning_rate (repeatable)",
    )
    select.add_argument(
        "--output-dir",
        "--out",
        dest="output_dir",
        metavar="DIR",
        type=Path,
        required=True,
        help="config directory to write, for --config-dir (--out is an alias)",
    )
    select.set_defaults(func=cmd_select_best)
