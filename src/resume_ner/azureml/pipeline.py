"""The AzureML pipeline job of the training workflow, built with ``azure.ai.ml.dsl.pipeline``.

Every step runs the project image's command line (``python -m resume_ner.cli.main``, i.e. ``resume-ner``, or the
training entrypoint; from ``script_path`` when given) with the pipeline's settings as ``--set`` overrides
(``azureml.jobs.settings_overrides`` of the data, model, training, tracking and final sections):

1. ``load_data``: ``resume-ner data split DATA --output-dir SPLITS``: read, validate and split the data asset.
2. ``hpo``: the sweep of ``azureml.sweep`` over the splits; AzureML picks the best trial by the sweep's
   objective, and a sweep node's outputs are the best trial's (its training output directory in ``model``).
3. ``select_best``: ``resume-ner azureml select-best``: the best trial's searched settings merged into the base
   config (``azureml.select``), written as a config directory with ``best_trial.json``, the best trial as a
   ``BestTrial`` dict that names the trial's and the sweep's MLflow runs (and ``hpo.direction``, the sweep's goal).
4. ``final_train``: ``resume-ner final-train --config-dir FINAL_CONFIG --best-json FINAL_CONFIG/best_trial.json
   --no-register`` on the splits, on ``instance_count`` nodes of ``process_count_per_instance`` processes: the
   final run gets the lineage tags and the test documents' fingerprint; ``model`` is its output directory and
   ``metrics`` receives its JSON results.
5. ``register_lineage``: ``resume-ner register MODEL --output LINEAGE/lineage.json``: the final run's
   checkpoint becomes a new version of ``tracking.registered_model_name`` (champion by the rules of
   ``tracking.lineage.register_model``, or always with ``final.promote``) and its lineage is written.

The pipeline's outputs are the final ``model``, its ``metrics``, the ``final_config`` and the ``lineage``.
"""

from __future__ import annotations

import shlex
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from resume_ner.azureml.jobs import (
    COPY_METRICS,
    DATA_INPUT,
    METRICS_OUTPUT,
    MODEL_OUTPUT,
    OVERRIDE_SECTIONS,
    code_path,
    command_node,
    data_input,
    job_environment,
    job_tags,
    settings_overrides,
)
from resume_ner.azureml.select import BEST_TRIAL_FILE
from resume_ner.azureml.sweep import project_config, sweep_limits, sweep_trial
from resume_ner.config import HpoConfig, ResumeNerConfig
from resume_ner.hpo.search_space import apply_params
from resume_ner.layout import LINEAGE_FILE, PIPELINE_NAME

if TYPE_CHECKING:
    from azure.ai.ml.entities import PipelineJob

CLI = "python -m resume_ner.cli.main"  # `resume-ner`, importable from an uploaded code directory too
SPLITS_OUTPUT = "splits"
BEST_TRIAL_INPUT = "best_trial"
FINAL_CONFIG = "final_config"
LINEAGE_OUTPUT = "lineage"
PIPELINE_SECTIONS = (*OVERRIDE_SECTIONS, "final")  # final.train_on and final.promote reach the last two steps


def _flags(flag: str, values: list[str]) -> str:
    return " ".join(f"{flag} {shlex.quote(value)}" for value in values)


def create_training_pipeline_job(
    config: HpoConfig | ResumeNerConfig | dict[str, Any],
    *,
    data_asset: str | Path,
    environment: str,
    compute_cluster: str,
    aml_experiment_name: str,
    backbone: str | None = None,
    tags: Mapping[str, str] | None = None,
    instance_count: int = 1,
    process_count_per_instance: int = 1,
    max_concurrent_trials: int | None = None,
    trial_timeout: int | None = None,
    script_path: str | Path | None = None,
) -> PipelineJob:
    """The AzureML ``PipelineJob`` load_data -> hpo -> select_best -> final_train -> register_lineage (see the
    module docstring) of ``backbone`` (default ``model.backbone``); every step runs on ``compute_cluster``."""
    from azure.ai.ml import Input, Output, dsl
    from azure.ai.ml import command as aml_command

    config = project_config(config)
    backbone = backbone or config.model.backbone
    base = apply_params(config, {"model.backbone": backbone})
    overrides = settings_overrides(base, experiment_name=aml_experiment_name, sections=PIPELINE_SECTIONS)
    trial = sweep_trial(base, backbone, aml_experiment_name=aml_experiment_name)
    env, code = job_environment(environment), code_path(script_path)

    load_data_step = aml_command(
        display_name="load_data",
        command=f"{CLI} data split ${{{{inputs.{DATA_INPUT}}}}} --output-dir ${{{{outputs.{SPLITS_OUTPUT}}}}} "
        + _flags("--set", overrides),
        code=code,
        inputs={DATA_INPUT: Input(type="uri_folder")},
        outputs={SPLITS_OUTPUT: Output(type="uri_folder")},
        environment=env,
        is_deterministic=base.pipeline.caching,
    )
    trial_step = command_node(
        command=trial.command,
        inputs={
            DATA_INPUT: Input(type="uri_folder"),
            **{name: Input(type=kind) for name, kind in trial.input_types.items()},
        },
        environment=environment,
        compute_cluster=None,
        script_path=script_path,
        display_name="hpo_trial",
        is_deterministic=False,
    )
    select_step = aml_command(
        display_name="select_best",
        command=f"{CLI} azureml select-best --trial-dir ${{{{inputs.{BEST_TRIAL_INPUT}}}}} "
        f"--output-dir ${{{{outputs.{FINAL_CONFIG}}}}} {_flags('--param', list(trial.paths))} "
        + _flags("--set", [*overrides, f"hpo.direction={base.hpo.direction}"]),  # the best trial's direction
        inputs={BEST_TRIAL_INPUT: Input(type="uri_folder")},
        outputs={FINAL_CONFIG: Output(type="uri_folder")},
        code=code,
        environment=env,
        is_deterministic=False,
    )
    final_config = f"${{{{inputs.{FINAL_CONFIG}}}}}"
    final_step = command_node(
        command=f"{CLI} final-train --config-dir {final_config} --best-json {final_config}/{BEST_TRIAL_FILE} "
        f"--data ${{{{inputs.{DATA_INPUT}}}}} --output-dir ${{{{outputs.{MODEL_OUTPUT}}}}} --no-register && "
        + COPY_METRICS,
        inputs={DATA_INPUT: Input(type="uri_folder"), FINAL_CONFIG: Input(type="uri_folder")},
        environment=environment,
        compute_cluster=None,
        script_path=script_path,
        instance_count=instance_count,
        process_count_per_instance=process_count_per_instance,
        display_name="final_train",
        is_deterministic=False,
    )
    register_step = aml_command(
        display_name="register_lineage",
        command=f"{CLI} register ${{{{inputs.{MODEL_OUTPUT}}}}} --output ${{{{outputs.{LINEAGE_OUTPUT}}}}}/"
        f"{LINEAGE_FILE} {_flags('--set', overrides)}",
        inputs={MODEL_OUTPUT: Input(type="uri_folder")},
        outputs={LINEAGE_OUTPUT: Output(type="uri_folder")},
        code=code,
        environment=env,
        is_deterministic=False,
    )
    limits = sweep_limits(base, max_concurrent_trials=max_concurrent_trials, trial_timeout=trial_timeout)

    @dsl.pipeline(
        None,  # the default, passed: azure-ai-ml's overload of the decorator factory gives func no default
        name=PIPELINE_NAME,
        description="resume-ner: load data, sweep, select the best trial, final training, register with lineage",
        default_compute=compute_cluster,
    )
    def resume_ner_training(data):  # no annotation: dsl reads annotations as input types
        load_data = load_data_step(data=data)
        hpo = trial_step(data=load_data.outputs[SPLITS_OUTPUT], **trial.search_space).sweep(**trial.settings)
        hpo.set_limits(**limits)
        select_best = select_step(best_trial=hpo.outputs[MODEL_OUTPUT])
        final_train = final_step(data=load_data.outputs[SPLITS_OUTPUT], final_config=select_best.outputs[FINAL_CONFIG])
        register_lineage = register_step(model=final_train.outputs[MODEL_OUTPUT])
        return {
            MODEL_OUTPUT: final_train.outputs[MODEL_OUTPUT],
            METRICS_OUTPUT: final_train.outputs[METRICS_OUTPUT],
            FINAL_CONFIG: select_best.outputs[FINAL_CONFIG],
            LINEAGE_OUTPUT: register_lineage.outputs[LINEAGE_OUTPUT],
        }

    job = resume_ner_training(data=data_input(data_asset))
    job.experiment_name = aml_experiment_name
    job.tags = job_tags("pipeline", backbone, tags)
    return job
