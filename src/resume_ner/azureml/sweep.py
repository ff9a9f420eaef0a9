"""AzureML sweep jobs: the project's HPO settings (``hpo`` section) as an AzureML hyperparameter sweep.

Each trial is the training entrypoint of ``azureml.jobs`` with the backbone fixed and one ``--set`` per searched
setting (``--set training.learning_rate=${{search_space.training_learning_rate}}``: AzureML input names cannot
hold dots, so ``training.learning_rate`` is the input ``training_learning_rate``). The trial's settings are
``hpo.trial.trial_config``'s, as for an Optuna trial: ``training.metric`` is ``hpo.metric``, ``hpo.max_epochs``
caps the epochs, ``hpo.max_length`` sets the window, ``hpo.num_threads`` the threads. ``hpo.train_fraction``
has no equivalent (a trial trains on the whole data asset: give a smaller asset) and ``hpo.n_startup_trials``
neither.

Search space (``map_search_space``), each spec of ``hpo.search_space`` ->

* ``choice`` -> ``Choice(values)``; values are numbers, booleans or plain strings (AzureML writes the sampled
  value into the command line unquoted, so ``null`` or text with spaces cannot be passed);
* ``uniform`` -> ``Uniform(min, max)``;
* ``log_uniform`` -> ``LogUniform(ln(min), ln(max))``: AzureML's bounds are natural-log exponents;
* ``int`` with min 0 and step 1 -> ``Randint(max + 1)`` (AzureML's upper bound is exclusive);
* ``int`` otherwise, and ``uniform`` with a step -> ``QUniform(min, max, q=step)``: AzureML rounds a uniform
  draw to the nearest multiple of q, so min and max must be multiples of the step (else the rounding leaves
  the range); the two end values are drawn half as often as the others.

Sampling (``hpo.sampler``): ``tpe`` -> ``bayesian``, which AzureML allows only over choice, uniform and
quniform distributions and without early termination; ``random`` -> ``random`` seeded with ``hpo.seed``;
``grid`` -> ``grid``, over choices only; ``cmaes`` has no AzureML equivalent. The shipped defaults (``tpe``, a
log-uniform learning rate, the median pruner) cannot run as a bayesian sweep, so when ``hpo.sampler`` is the
default and bayesian sampling cannot take the section, ``resolve_sampler`` picks random sampling and says so in one
line (see its docstring for what counts as the user's choice).

Early termination (``hpo.pruner``), evaluated each time a trial logs its primary metric (once per epoch):
``median`` -> ``MedianStoppingPolicy``; ``hyperband`` and ``successive_halving`` -> ``BanditPolicy`` with
slack factor ``BANDIT_SLACK_FACTOR`` (a trial stops when its metric is not within 10% of the best one); both
wait ``hpo.n_warmup_epochs`` evaluations; ``none`` -> no policy. AzureML's policies compare the primary
metric only, so ``hpo.pruning_metric`` (what Optuna's pruners compare) does not apply here.

Objective: ``val_<hpo.metric>`` (``primary_metric``), the validation metric the trainer logs after every
epoch (``best_val_<metric>`` is logged once at the end: early termination needs the per-epoch one), goal
``hpo.direction``. Limits: ``hpo.n_trials`` trials, ``hpo.timeout`` seconds. Every problem is reported at once in
one ``ConfigError``.
"""

from __future__ import annotations

import logging
import math
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from resume_ner.azureml.jobs import (
    DATA_INPUT,
    command_node,
    data_input,
    job_tags,
    settings_overrides,
    training_command,
)
from resume_ner.config import HpoConfig, ResumeNerConfig, config_from_dict
from resume_ner.errors import ConfigError
from resume_ner.hpo.search_space import ParamSpec, SearchSpace, apply_params, parse_search_space
from resume_ner.hpo.trial import trial_config
from resume_ner.layout import TRAIN_ENTRYPOINT

if TYPE_CHECKING:
    from azure.ai.ml.sweep import (
        BanditPolicy,
        Choice,
        LogUniform,
        MedianStoppingPolicy,
        QUniform,
        Randint,
        RandomSamplingAlgorithm,
        SweepJob,
        Uniform,
    )

log = logging.getLogger(__name__)

SAMPLING_ALGORITHMS = {"tpe": "bayesian", "random": "random", "grid": "grid"}
BAYESIAN_SPEC_TYPES = ("choice", "uniform", "quniform")  # what AzureML's bayesian sampling accepts
DEFAULT_SAMPLER = HpoConfig.model_fields["sampler"].default  # "tpe": bayesian on AzureML
DEFAULT_PRUNER = HpoConfig.model_fields["pruner"].default  # "median"
FALLBACK_SAMPLER = "random"  # takes every spec type and every early termination policy
BANDIT_SLACK_FACTOR = 0.1
DRY_RUN_TRIALS = 2
DRY_RUN_EPOCHS = 1
_PLAIN_TEXT = re.compile(r"[A-Za-z0-9_.:/@+-]+")


def primary_metric(metric: str) -> str:
    """The name under which the trainer logs validation ``metric`` after every epoch: ``val_<metric>``."""
    return f"val_{metric}"


def input_name(path: str) -> str:
    """The AzureML input of a searched setting: ``training.learning_rate`` -> ``training_learning_rate``."""
    return path.replace(".", "_")


def _is_multiple(value: float, step: float) -> bool:
    return math.isclose(value / step, round(value / step), abs_tol=1e-9)


def _distribution(
    spec: ParamSpec, sampling: str | None, problems: list[str]
) -> Choice | LogUniform | Uniform | Randint | QUniform | None:
    """The AzureML distribution of one spec, or None after appending why it cannot be expressed."""
    from azure.ai.ml.sweep import Choice, LogUniform, QUniform, Randint, Uniform

    if spec.type == "choice":
        bad = [v for v in spec.values if v is None or (isinstance(v, str) and not _PLAIN_TEXT.fullmatch(v))]
        if bad:
            problems.append(
                f"{spec.path}: choice value(s) {bad} cannot be passed on an AzureML command line "
                "(null, or text other than letters, digits and _.:/@+-)"
            )
            return None
        return Choice(values=list(spec.values))
    low, high = spec.low, spec.high
    assert low is not None and high is not None  # parse_search_space gives every numeric spec its min and max
    if spec.type == "log_uniform":
        if sampling == "bayesian":
            problems.append(
                f"{spec.path}: AzureML's bayesian sampling (hpo.sampler=tpe) takes only "
                f"{', '.join(BAYESIAN_SPEC_TYPES)} distributions, not log_uniform; use "
                "hpo.sampler=random, or a uniform or choice for this setting"
            )
            return None
        return LogUniform(min_value=math.log(low), max_value=math.log(high))
    if spec.type == "uniform" and spec.step is None:
        return Uniform(min_value=low, max_value=high)
    step = spec.step or 1
    if spec.type == "int" and low == 0 and step == 1 and sampling != "bayesian":
        return Randint(upper=int(high) + 1)
    if not (_is_multiple(low, step) and _is_multiple(high, step)):
        problems.append(
            f"{spec.path}: AzureML's QUniform rounds to multiples of the step ({step}), so min "
            f"({spec.low}) and max ({spec.high}) must be multiples of it; change them, or use a choice"
        )
        return None
    # azure-ai-ml annotates q as int, but the service quantizes to any number (e.g. 0.05)
    return QUniform(min_value=low, max_value=high, q=step)  # type: ignore[arg-type]


def _search_space(space: SearchSpace, sampling: str | None, problems: list[str]) -> dict[str, Any]:
    distributions = {input_name(spec.path): _distribution(spec, sampling, problems) for spec in space.params}
    return {name: value for name, value in distributions.items() if value is not None}


def map_search_space(space: SearchSpace, sampler: str = "random") -> dict[str, Any]:
    """``{input name: AzureML distribution}`` of a parsed search space, for ``hpo.sampler=sampler``;
    ``ConfigError`` naming every spec AzureML cannot express."""
    problems: list[str] = []
    mapped = _search_space(space, SAMPLING_ALGORITHMS.get(sampler), problems)
    if problems:
        raise ConfigError("hpo.search_space cannot run as an AzureML sweep:\n  " + "\n  ".join(problems))
    return mapped


def resolve_sampler(config: ResumeNerConfig) -> tuple[ResumeNerConfig, str | None]:
    """``(config, note)``: ``config`` with ``hpo.sampler=random`` and a one-line note saying what was chosen and
    why, when the shipped default sampler cannot run as an AzureML sweep; else ``(config, None)`` unchanged.

    What counts as the user's choice: a setting that differs from its shipped default (a config cannot tell a
    default from the same value written out). The fallback applies only when ``hpo.sampler`` is the default
    (``DEFAULT_SAMPLER``, bayesian on AzureML), ``hpo.pruner`` is the default or ``none``, and bayesian sampling
    cannot take the section: a ``log_uniform`` spec, or early termination by the default pruner. Random sampling
    (seeded with ``hpo.seed``) takes every spec and keeps the pruner's policy, so it is the closest sweep.
    Whatever the user chose is left to ``sweep_trial``, which refuses what AzureML cannot run: ``grid`` over
    ranges, ``cmaes``, and a non-default pruner with the default sampler (bayesian takes no policy; the user
    picks which to give up). ``tpe`` over a space bayesian sampling takes, with ``hpo.pruner=none``, stays
    bayesian, without a note.
    """
    hpo = config.hpo
    if hpo.sampler != DEFAULT_SAMPLER or hpo.pruner not in (DEFAULT_PRUNER, "none"):
        return config, None
    log_uniform = [
        spec.path for spec in parse_search_space(hpo.search_space, config).params if spec.type == "log_uniform"
    ]
    pruned = hpo.pruner != "none"
    if not log_uniform and not pruned:
        return config, None
    cannot = ", ".join(f"{path} (log_uniform)" for path in log_uniform)
    if pruned:
        cannot += f"{' nor ' if cannot else ''}early termination (hpo.pruner={hpo.pruner})"
    fixes = ([f"give {', '.join(log_uniform)} a uniform or choice"] if log_uniform else []) + (
        ["set hpo.pruner=none"] if pruned else []
    )
    policy = f"with {hpo.pruner} early termination" if pruned else "without early termination"
    note = (
        f"hpo.sampler={hpo.sampler} maps to AzureML bayesian sampling, which cannot take {cannot}; using "
        f"{FALLBACK_SAMPLER} sampling {policy} instead (set hpo.sampler={FALLBACK_SAMPLER} to silence this; "
        f"for bayesian sampling, {' and '.join(fixes)})"
    )
    return apply_params(config, {"hpo.sampler": FALLBACK_SAMPLER}), note


def _sampling_algorithm(
    hpo: HpoConfig, space: SearchSpace, problems: list[str]
) -> RandomSamplingAlgorithm | str | None:
    from azure.ai.ml.sweep import RandomSamplingAlgorithm

    if hpo.sampler == "cmaes":
        problems.append(
            "hpo.sampler=cmaes has no AzureML sweep equivalent (AzureML samples random, grid or "
            "bayesian); use hpo.sampler=tpe (bayesian), random or grid"
        )
        return None
    if hpo.sampler == "grid":
        try:
            space.grid()
        except ConfigError as exc:
            problems.append(str(exc))
    if hpo.sampler == "random":
        return RandomSamplingAlgorithm(seed=hpo.seed)
    return SAMPLING_ALGORITHMS[hpo.sampler]


def _early_termination(hpo: HpoConfig, problems: list[str]) -> MedianStoppingPolicy | BanditPolicy | None:
    from azure.ai.ml.sweep import BanditPolicy, MedianStoppingPolicy

    if hpo.pruner == "none":
        return None
    if hpo.sampler == "tpe":
        problems.append(
            f"hpo.pruner={hpo.pruner}: AzureML's bayesian sampling (hpo.sampler=tpe) takes no early "
            "termination policy; set hpo.pruner=none, or hpo.sampler=random"
        )
        return None
    if hpo.pruner == "median":
        return MedianStoppingPolicy(evaluation_interval=1, delay_evaluation=hpo.n_warmup_epochs)
    return BanditPolicy(slack_factor=BANDIT_SLACK_FACTOR, evaluation_interval=1, delay_evaluation=hpo.n_warmup_epochs)


def _input_type(spec: ParamSpec) -> str:
    """AzureML input type of a searched setting (numbers stay ``number``: QUniform draws floats)."""
    if spec.type != "choice":
        return "number"
    if all(isinstance(v, bool) for v in spec.values):
        return "boolean"
    if all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in spec.values):
        return "number"
    return "string"


def project_config(hpo_config: HpoConfig | ResumeNerConfig | dict[str, Any]) -> ResumeNerConfig:
    """The project config of an ``HpoConfig`` (defaults elsewhere), a ``ResumeNerConfig`` or its dict."""
    if isinstance(hpo_config, HpoConfig):
        return ResumeNerConfig(hpo=hpo_config)
    return config_from_dict(hpo_config)


@dataclass(frozen=True)
class SweepTrial:
    """What a sweep of one backbone needs: the trial command, its searched inputs, the ``.sweep()`` settings."""

    command: str
    paths: tuple[str, ...]  # the searched settings, dotted
    search_space: dict[str, Any]  # input name -> AzureML distribution
    input_types: dict[str, str]  # input name -> AzureML input type
    settings: dict[str, Any]  # primary_metric, goal, sampling_algorithm, early_termination_policy


def sweep_trial(
    config: ResumeNerConfig,
    backbone: str,
    *,
    aml_experiment_name: str,
    pinned: tuple[str, ...] = (),
    entrypoint: str = TRAIN_ENTRYPOINT,
) -> SweepTrial:
    """The trial of a sweep of ``backbone`` over ``config.hpo``; ``pinned`` overrides come after the searched
    values, so they win over them. The sampler is ``resolve_sampler``'s (its note is logged as a warning).
    ``ConfigError`` naming every setting AzureML cannot run."""
    config, note = resolve_sampler(apply_params(config, {"model.backbone": backbone}))
    if note:
        log.warning("%s", note)
    hpo = config.hpo
    space = parse_search_space(hpo.search_space, config)
    problems: list[str] = []
    if "model.backbone" in space.paths:
        problems.append(
            "model.backbone is in hpo.search_space, but an AzureML sweep tunes one backbone: remove it "
            "and build one sweep per backbone"
        )
    if hpo.train_fraction < 1.0:
        log.warning(
            "hpo.train_fraction=%s is not applied by AzureML sweep trials (they train on the whole data "
            "asset): register a smaller data asset instead",
            hpo.train_fraction,
        )
    sampling = _sampling_algorithm(hpo, space, problems)
    search_space = _search_space(space, SAMPLING_ALGORITHMS.get(hpo.sampler), problems)
    early_termination = _early_termination(hpo, problems)
    if problems:
        raise ConfigError(f"the hpo section cannot run as an AzureML sweep of {backbone}:\n  " + "\n  ".join(problems))

    overrides = settings_overrides(trial_config(config, {}), experiment_name=aml_experiment_name, exclude=space.paths)
    searched = {spec.path: input_name(spec.path) for spec in space.params}
    return SweepTrial(
        command=training_command(overrides, searched=searched, pinned=pinned, entrypoint=entrypoint),
        paths=tuple(space.paths),
        search_space=search_space,
        input_types={input_name(spec.path): _input_type(spec) for spec in space.params},
        settings={
            "primary_metric": primary_metric(hpo.metric),
            "goal": hpo.direction,
            "sampling_algorithm": sampling,
            "early_termination_policy": early_termination,
        },
    )


def sweep_limits(
    config: ResumeNerConfig,
    *,
    n_trials: int | None = None,
    max_concurrent_trials: int | None = None,
    trial_timeout: int | None = None,
) -> dict[str, Any]:
    """``set_limits`` arguments: ``n_trials`` (default ``hpo.n_trials``) trials, at most ``max_concurrent_trials``
    (default ``pipeline.parallelism``) at once, ``hpo.timeout`` seconds in all, ``trial_timeout`` per trial."""
    total = n_trials or config.hpo.n_trials
    return {
        "max_total_trials": total,
        "max_concurrent_trials": min(max_concurrent_trials or config.pipeline.parallelism, total),
        "timeout": math.ceil(config.hpo.timeout) if config.hpo.timeout else None,
        "trial_timeout": trial_timeout,
    }


def _sweep_job(
    backbone: str,
    data_asset: str | Path,
    environment: str,
    compute_cluster: str,
    hpo_config: HpoConfig | ResumeNerConfig | dict[str, Any],
    aml_experiment_name: str,
    tags: Mapping[str, str] | None,
    *,
    kind: str,
    n_trials: int | None,
    pinned: tuple[str, ...],
    max_concurrent_trials: int | None,
    trial_timeout: int | None,
    script_path: str | Path | None,
    entrypoint: str,
) -> SweepJob:
    from azure.ai.ml import Input

    config = project_config(hpo_config)
    trial = sweep_trial(config, backbone, aml_experiment_name=aml_experiment_name, pinned=pinned, entrypoint=entrypoint)
    node = command_node(
        command=trial.command,
        inputs={
            DATA_INPUT: data_input(data_asset),
            **{name: Input(type=kind) for name, kind in trial.input_types.items()},
        },
        environment=environment,
        compute_cluster=compute_cluster,
        script_path=script_path,
    )
    sweep = node(**trial.search_space).sweep(compute=compute_cluster, **trial.settings)
    sweep.set_limits(
        **sweep_limits(
            config, n_trials=n_trials, max_concurrent_trials=max_concurrent_trials, trial_timeout=trial_timeout
        )
    )
    sweep.experiment_name = aml_experiment_name
    sweep.display_name = f"resume-ner-{kind}-{re.sub(r'[^A-Za-z0-9-]+', '-', Path(backbone).name).strip('-')}"
    sweep.tags = job_tags(kind, backbone, tags)
    return sweep._to_job()  # the SweepJob that ml_client.jobs.create_or_update submits for a sweep node


def create_hpo_sweep_job_for_backbone(
    backbone: str,
    *,
    data_asset: str | Path,
    environment: str,
    compute_cluster: str,
    hpo_config: HpoConfig | ResumeNerConfig | dict[str, Any],
    aml_experiment_name: str,
    tags: Mapping[str, str] | None = None,
    max_concurrent_trials: int | None = None,
    trial_timeout: int | None = None,
    script_path: str | Path | None = None,
    entrypoint: str = TRAIN_ENTRYPOINT,
) -> SweepJob:
    """The AzureML ``SweepJob`` of the project's HPO settings for ``backbone`` (see the module docstring).

    ``hpo_config`` is an ``HpoConfig`` (the other sections keep their defaults) or the whole project config.
    ``max_concurrent_trials`` defaults to ``pipeline.parallelism``; ``trial_timeout`` (seconds) to none.
    """
    return _sweep_job(
        backbone,
        data_asset,
        environment,
        compute_cluster,
        hpo_config,
        aml_experiment_name,
        tags,
        kind="hpo",
        n_trials=None,
        pinned=(),
        max_concurrent_trials=max_concurrent_trials,
        trial_timeout=trial_timeout,
        script_path=script_path,
        entrypoint=entrypoint,
    )


def create_dry_run_sweep_job_for_backbone(
    backbone: str,
    *,
    data_asset: str | Path,
    environment: str,
    compute_cluster: str,
    hpo_config: HpoConfig | ResumeNerConfig | dict[str, Any],
    aml_experiment_name: str,
    tags: Mapping[str, str] | None = None,
    trial_timeout: int | None = None,
    script_path: str | Path | None = None,
    entrypoint: str = TRAIN_ENTRYPOINT,
) -> SweepJob:
    """The sweep of ``create_hpo_sweep_job_for_backbone`` on a budget that checks the plumbing (image, data
    mount, entrypoint, the metric the sweep reads, the policy): ``DRY_RUN_TRIALS`` trials at once of
    ``DRY_RUN_EPOCHS`` epoch. The trainer has no data-subset setting, so a trial reads the whole data asset:
    point ``data_asset`` at a small one (e.g. ``resume-ner data synth --n 60``) for a cheap dry run."""
    return _sweep_job(
        backbone,
        data_asset,
        environment,
        compute_cluster,
        hpo_config,
        aml_experiment_name,
        tags,
        kind="dry-run",
        n_trials=DRY_RUN_TRIALS,
        pinned=(f"training.epochs={DRY_RUN_EPOCHS}",),
        max_concurrent_trials=DRY_RUN_TRIALS,
        trial_timeout=trial_timeout,
        script_path=script_path,
        entrypoint=entrypoint,
    )
