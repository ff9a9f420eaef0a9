"""AzureML command jobs of the training entrypoint: the final training, and what every job of the package shares.

Every job runs the project image's entrypoint (the one a PyTorchJob runs)::

    python -m resume_ner.cli.train --data-asset ${{inputs.data}} --output-dir ${{outputs.model}} \\
        --set KEY=VALUE ... && { [ "${RANK:-0}" != 0 ] || cp ${{outputs.model}}/*.json ${{outputs.metrics}}/; }

* Data: the ``data`` input, a ``uri_folder`` (``azureml:NAME:VERSION``, an ``azureml://``/``https://`` URI, or a
  local folder that AzureML uploads on submission): a dataset directory of splits, or a folder with one file.
  ``job.dump`` writes a local input path as an asset name (``azureml:<path>``, azure-ai-ml 1.35), so a job that
  is written to YAML needs a registered asset or a URI.
* Outputs: ``model`` is the training output directory (``config.yaml``, ``model/``, ``checkpoints/``,
  ``train_result.json``, ``test_metrics.json``); ``metrics`` receives rank 0's JSON results from it.
* Settings: no config file is uploaded. ``settings_overrides`` turns every setting of the data, model, training
  and tracking sections that differs from its default into a ``--set`` override (the image must hold the
  package version that built the job, so its defaults are the same ones); ``data.path``,
  ``tracking.tracking_uri`` and ``tracking.parent_run_id`` name local things and are never sent.
* Tracking: AzureML sets ``MLFLOW_TRACKING_URI`` (``azureml://...``) in the job and it wins over
  ``tracking.tracking_uri``, so no ``--tracking-uri`` is passed; ``tracking.experiment_name`` is set to the job's
  experiment. MLflow reads that URI only with ``azureml-mlflow``, which the AzureML image variant holds
  (``make image-azureml``: ``requirements-azureml.lock``); ``default_environment`` names it.
* Processes: with more than one (``instance_count * process_count_per_instance``), AzureML's
  ``PyTorchDistribution`` starts them and sets ``RANK``/``WORLD_SIZE``/``MASTER_ADDR``..., which the trainer
  reads (no torchrun); only rank 0 copies the metrics.
* Code: ``script_path`` uploads a local directory as the job's code, e.g. ``src/`` to run a working copy of the
  package instead of the image's (``python -m`` imports from the job's working directory first).

``azure.ai.ml`` is imported inside the functions that need it.
"""

from __future__ import annotations

import math
import shlex
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import yaml

from resume_ner import __version__
from resume_ner.config import ResumeNerConfig, config_from_dict, resolve_image
from resume_ner.errors import ConfigError
from resume_ner.layout import TRAIN_ENTRYPOINT

if TYPE_CHECKING:
    from azure.ai.ml import Input
    from azure.ai.ml.entities import Command, CommandJob, Environment

DATA_INPUT = "data"
MODEL_OUTPUT = "model"
METRICS_OUTPUT = "metrics"
OVERRIDE_SECTIONS = ("data", "model", "training", "tracking")
LOCAL_SETTINGS = ("data.path", "tracking.tracking_uri", "tracking.parent_run_id")  # never sent to a job
AZUREML_PREFIX = "azureml:"
KIND_TAG = "resume_ner.kind"
BACKBONE_TAG = "resume_ner.backbone"
VERSION_TAG = "resume_ner.version"
# Rank 0 (the only rank that writes results) copies them to the metrics output once training succeeded.
COPY_METRICS = '{ [ "${RANK:-0}" != 0 ] || cp ${{outputs.model}}/*.json ${{outputs.metrics}}/; }'


def _yaml_value(value: Any) -> str:
    """``value`` as the YAML text that ``--set`` parses back to it (floats keep a dot: ``5.0e-05``)."""
    text = yaml.safe_dump(value, default_flow_style=True, width=math.inf).strip()
    return text[: -len("\n...")] if text.endswith("\n...") else text


def settings_overrides(
    config: ResumeNerConfig,
    *,
    experiment_name: str,
    exclude: Sequence[str] = (),
    sections: Sequence[str] = OVERRIDE_SECTIONS,
) -> list[str]:
    """``a.b=value`` for each setting of ``sections`` (default data, model, training, tracking) of ``config`` that
    differs from its default (not ``exclude`` nor the local-only settings), then
    ``tracking.experiment_name=<experiment_name>``."""
    values, defaults = config.to_dict(), ResumeNerConfig().to_dict()
    items = []
    for section in sections:
        for key, value in values[section].items():
            path = f"{section}.{key}"
            skipped = path in LOCAL_SETTINGS or path in exclude or path == "tracking.experiment_name"
            if not skipped and value != defaults[section][key]:
                items.append(f"{path}={_yaml_value(value)}")
    return items + [f"tracking.experiment_name={_yaml_value(experiment_name)}"]


def training_command(
    overrides: Sequence[str],
    *,
    searched: Mapping[str, str] | None = None,
    pinned: Sequence[str] = (),
    entrypoint: str = TRAIN_ENTRYPOINT,
) -> str:
    """The shell command of a training job: the entrypoint on the ``data`` input into the ``model`` output with
    ``--set`` ``overrides``, ``--set path=${{inputs.<name>}}`` for each ``searched`` path -> input name, then
    the ``pinned`` overrides (they win), and rank 0's copy of the JSON results to the ``metrics`` output."""
    parts = [
        "python",
        "-m",
        entrypoint,
        "--data-asset",
        "${{inputs." + DATA_INPUT + "}}",
        "--output-dir",
        "${{outputs." + MODEL_OUTPUT + "}}",
    ]
    for item in overrides:
        parts += ["--set", shlex.quote(item)]
    for path, name in (searched or {}).items():
        parts += ["--set", f"{path}=${{{{inputs.{name}}}}}"]
    for item in pinned:
        parts += ["--set", shlex.quote(item)]
    return " ".join(parts) + " && " + COPY_METRICS


def is_remote_asset(value: str | Path) -> bool:
    """True for an AzureML reference (``azureml:...``) or a URI (``https://``, ``abfss://``...), not a local path."""
    return str(value).startswith(AZUREML_PREFIX) or "://" in str(value)


def asset_path(value: str | Path, what: str) -> str:
    """An AzureML reference (``azureml:...``) or URI as given; a local path made absolute (it must exist)."""
    text = str(value)
    if is_remote_asset(text):
        return text
    path = Path(text).expanduser()
    if not path.exists():
        raise ConfigError(
            f"{what} {text!r}: no such local path; pass azureml:NAME:VERSION, an azureml://, "
            "https:// or abfss:// URI, or an existing local folder (uploaded on submission)"
        )
    return str(path.resolve())


AZUREML_IMAGE_SUFFIX = "-azureml"


def default_environment(config: ResumeNerConfig) -> str:
    """The AzureML image variant (``make image-azureml``): the project image (``$RESUME_NER_IMAGE``, else
    ``pipeline.image``) tagged with ``-azureml``."""
    return resolve_image(config) + AZUREML_IMAGE_SUFFIX


def job_environment(environment: str) -> str | Environment:
    """``azureml:NAME:VERSION`` (a registered environment) as is; anything else is a Docker image reference."""
    if environment.startswith(AZUREML_PREFIX):
        return environment
    from azure.ai.ml.entities import Environment

    return Environment(image=environment)


def code_path(script_path: str | Path | None) -> str | None:
    """The absolute path of a local code directory to upload as a job's ``code`` (None: the image's code)."""
    if script_path is None:
        return None
    code = asset_path(script_path, "script_path")
    if not Path(code).is_dir():
        raise ConfigError(
            f"script_path {script_path}: not a directory; pass the code directory to upload "
            "(e.g. src/), the job runs `python -m <module>` in it"
        )
    return code


def job_tags(kind: str, backbone: str, tags: Mapping[str, str] | None) -> dict[str, str]:
    """The package's tags of a job (kind, backbone, version), then the caller's ``tags``."""
    return {KIND_TAG: kind, BACKBONE_TAG: backbone, VERSION_TAG: __version__, **dict(tags or {})}


def command_node(
    *,
    command: str,
    inputs: Mapping[str, Any],
    environment: str,
    compute_cluster: str | None,
    script_path: str | Path | None = None,
    instance_count: int = 1,
    process_count_per_instance: int = 1,
    **attributes: Any,
) -> Command:
    """An ``azure.ai.ml`` command (node) with the ``model`` and ``metrics`` outputs, on ``instance_count`` nodes
    of ``process_count_per_instance`` processes (a ``PyTorchDistribution`` when more than one in all)."""
    from azure.ai.ml import Output, PyTorchDistribution
    from azure.ai.ml import command as aml_command

    if instance_count < 1 or process_count_per_instance < 1:
        raise ConfigError(
            f"instance_count ({instance_count}) and process_count_per_instance "
            f"({process_count_per_instance}) must be at least 1"
        )
    distributed = instance_count * process_count_per_instance > 1
    return aml_command(
        command=command,
        code=code_path(script_path),
        inputs=dict(inputs),
        outputs={MODEL_OUTPUT: Output(type="uri_folder"), METRICS_OUTPUT: Output(type="uri_folder")},
        environment=job_environment(environment),
        compute=compute_cluster,
        instance_count=instance_count if instance_count > 1 else None,
        distribution=PyTorchDistribution(process_count_per_instance=process_count_per_instance)
        if distributed
        else None,
        **attributes,
    )


def data_input(data_asset: str | Path) -> Input:
    """The ``data`` input of a job: a ``uri_folder`` at ``data_asset``."""
    from azure.ai.ml import Input

    return Input(type="uri_folder", path=asset_path(data_asset, "data asset"))


def create_final_training_job(
    final_config: ResumeNerConfig | dict[str, Any],
    *,
    data_asset: str | Path,
    environment: str,
    compute_cluster: str,
    aml_experiment_name: str,
    tags: Mapping[str, str] | None = None,
    instance_count: int = 1,
    process_count_per_instance: int = 1,
    script_path: str | Path | None = None,
    entrypoint: str = TRAIN_ENTRYPOINT,
) -> CommandJob:
    """The AzureML ``CommandJob`` that trains ``final_config`` (e.g. ``build_final_training_config(best, base)``).

    ``environment`` is ``azureml:NAME:VERSION`` or the project's Docker image. Submit it with
    ``submit_and_wait_for_job``, or write it with ``job.dump(path)`` for ``az ml job create -f``.
    """
    config = config_from_dict(final_config, origin="final training config")
    node = command_node(
        command=training_command(
            settings_overrides(config, experiment_name=aml_experiment_name), entrypoint=entrypoint
        ),
        inputs={DATA_INPUT: data_input(data_asset)},
        environment=environment,
        compute_cluster=compute_cluster,
        script_path=script_path,
        instance_count=instance_count,
        process_count_per_instance=process_count_per_instance,
        experiment_name=aml_experiment_name,
        display_name="resume-ner-final-train",
        tags=job_tags("final", config.model.backbone, tags),
    )
    return node._to_job()  # the CommandJob that ml_client.jobs.create_or_update submits for a command node
