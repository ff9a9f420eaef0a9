"""The AzureML pipeline job of the training workflow, built with ``azure.ai.ml.dsl.pipeline``.

Every step runs the project image's command line (``python -m resume_ner.cli.main``, i.e. ``resume-ner``, or the
training entrypoint; from ``script_path`` when given) with the pipeline's settings as ``--set`` overrides
(``azureml.jobs.settings_overrides``):

1. ``load_data``: ``resume-ner data split DATA --out SPLITS``: read, validate and split the data asset.
2. ``hpo``: the sweep of ``azureml.sweep`` over the splits; AzureML picks the best trial by the sweep's
   objective, and a sweep node's outputs are the best trial's (its training output directory in ``model``).
3. ``select_best``: ``resume-ner azureml select-best``: the best trial's searched settings merged into the base
   config (``azureml.select``), written as a config directory.
4. ``final_train``: the training entrypoint with that ``--config-dir`` on the splits, on ``instance_count``
   nodes of ``process_count_per_instance`` processes; its ``model`` and ``metrics`` are the pipeline's outputs.

The Kubeflow pipeline's fifth step, ``register_lineage``, has no AzureML step: registration needs the final
run's lineage tags (study, best trial run, sweep parent run) that an AzureML sweep does not write, and no
command registers an already trained run. Register the final model from its ``model`` output.
"""

from __future__ import annotations

import shlex
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from resume_ner.azureml.jobs import (
    DATA_INPUT,
    METRICS_OUTPUT,
    MODEL_OUTPUT,
    code_path,
    command_node,
    data_input,
    job_environment,
    job_tags,
    settings_overrides,
    training_command,
)
from resume_ner.azureml.sweep import project_config, sweep_limits, sweep_trial
from resume_ner.config import HpoConfig, ResumeNerConfig
from resume_ner.hpo.search_space import apply_params

PIPELINE_NAME = "resume-ner-training"
CLI = "python -m resume_ner.cli.main"  # `resume-ner`, importable from an uploaded code directory too
SPLITS_OUTPUT = "splits"
BEST_TRIAL_INPUT = "best_trial"
FINAL_CONFIG = "final_config"


def _flags(flag: str, values: list[str]) -> str:
    return " ".join(f"{flag} {shlex.quote(value)}" for value in values)


def create_training_pipeline_job(
    config: HpoConfig | ResumeNerConfig | Mapping[str, Any],
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
) -> Any:
    """The AzureML ``PipelineJob`` load_data -> hpo -> select_best -> final_train (see the module docstring) of
    ``backbone`` (default ``model.backbone``); every step runs on ``compute_cluster``."""
    from azure.ai.ml import Input, Output, dsl
    from azure.ai.ml import command as aml_command

    config = project_config(config)
    backbone = backbone or config.model.backbone
    base = apply_params(config, {"model.backbone": backbone})
    overrides = settings_overrides(base, experiment_name=aml_experiment_name)
    trial = sweep_trial(base, backbone, aml_experiment_name=aml_experiment_name)
    env, code = job_environment(environment), code_path(script_path)

    load_data_step = aml_command(
        display_name="load_data",
        command=f"{CLI} data split ${{{{inputs.{DATA_INPUT}}}}} --out ${{{{outputs.{SPLITS_OUTPUT}}}}} "
        + _flags("--set", overrides),
        code=code,
        inputs={DATA_INPUT: Input(type="uri_folder")},
        outputs={SPLITS_OUTPUT: Output(type="uri_folder")},
        environment=env,
        is_deterministic=base.pipeline.caching,
    )
    trial_step = command_node(
        command=trial.command,
        inputs={DATA_INPUT: Input(type="uri_folder"),
                **{name: Input(type=kind) for name, kind in trial.input_types.items()}},
        environment=environment,
        compute_cluster=None,
        script_path=script_path,
        display_name="hpo_trial",
        is_deterministic=False,
    )
    select_step = aml_command(
        display_name="select_best",
        command=f"{CLI} azureml select-best --trial-dir ${{{{inputs.{BEST_TRIAL_INPUT}}}}} "
        f"--out ${{{{outputs.{FINAL_CONFIG}}}}} {_flags('--param', list(trial.paths))} {_flags('--set', overrides)}",
        inputs={BEST_TRIAL_INPUT: Input(type="uri_folder")},
        outputs={FINAL_CONFIG: Output(type="uri_folder")},
        code=code,
        environment=env,
        is_deterministic=False,
    )
    final_step = command_node(
        command=training_command([], config_dir=f"${{{{inputs.{FINAL_CONFIG}}}}}"),
        inputs={DATA_INPUT: Input(type="uri_folder"), FINAL_CONFIG: Input(type="uri_folder")},
        environment=environment,
        compute_cluster=None,
        script_path=script_path,
        instance_count=instance_count,
        process_count_per_instance=process_count_per_instance,
        display_name="final_train",
        is_deterministic=False,
    )
    limits = sweep_limits(base, max_concurrent_trials=max_concurrent_trials, trial_timeout=trial_timeout)

    @dsl.pipeline(name=PIPELINE_NAME, description="resume-ner: load data, sweep, select the best trial, final "
                  "training", default_compute=compute_cluster)
    def resume_ner_training(data):  # type: ignore[no-untyped-def]  # dsl reads annotations as input types
        load_data = load_data_step(data=data)
        hpo = trial_step(data=load_data.outputs[SPLITS_OUTPUT], **trial.search_space).sweep(**trial.settings)
        hpo.set_limits(**limits)
        select_best = select_step(best_trial=hpo.outputs[MODEL_OUTPUT])
        final_train = final_step(data=load_data.outputs[SPLITS_OUTPUT],
                                 final_config=select_best.outputs[FINAL_CONFIG])
        return {MODEL_OUTPUT: final_train.outputs[MODEL_OUTPUT], METRICS_OUTPUT: final_train.outputs[METRICS_OUTPUT],
                FINAL_CONFIG: select_best.outputs[FINAL_CONFIG]}

    job = resume_ner_training(data=data_input(data_asset))
    job.experiment_name = aml_experiment_name
    job.tags = job_tags("pipeline", backbone, tags)
    return job
