"""The training loop: ``train_model(config, train_data, val_data, output_dir) -> TrainResult``.

The loss is per-token cross-entropy, or with ``model.head: crf`` the negative log-likelihood of a CRF head
(``resume_ner.training.crf``) trained with the model. AdamW (no decay on biases and LayerNorm; the CRF's
scores at ``training.crf_learning_rate``), linear warmup and decay, gradient accumulation and clipping,
per-epoch validation on whole documents, best-checkpoint keeping, early stopping, periodic resumable
checkpoints and an exact ``resume`` (model, optimizer, scheduler, RNG, data position), callbacks,
MLflow tracking. Deterministic on CPU for a given seed and thread count. Batches are length-grouped
(``training.group_by_length``); training steps run the attention kernel of ``training_attention`` (eager on
a CPU with attention dropout), validation the model's own.

Data-parallel under torchrun (``training.distributed``): every rank takes its share of each epoch's window
order, gradients are averaged by ``DistributedDataParallel`` (effective batch = batch size x world size x
accumulation), rank 0 validates and broadcasts the metrics, and only rank 0 logs to MLflow, writes
checkpoints and prints progress; each rank's RNG state is saved so a resumed job continues exactly.

Output directory layout::

    config.yaml                 resolved configuration (credentials in URLs redacted)
    model/                      best checkpoint (Hugging Face-compatible + resume_ner.json)
    checkpoints/checkpoint-N/   resumable training states (newest ``keep_checkpoints`` kept)
    train_result.json           the TrainResult of the finished run, written last: a finished training
"""

from __future__ import annotations

import json
import logging
import math
import random
import shutil
import sys
import tempfile
import time
from collections.abc import Sequence
from contextlib import nullcontext
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypedDict, cast

from resume_ner.config import ResumeNerConfig, config_from_dict
from resume_ner.config import save as save_config
from resume_ner.data.dataset import load_documents
from resume_ner.data.document import Document
from resume_ner.data.labels import LabelScheme, scheme_for
from resume_ner.data.splits import fingerprint_documents
from resume_ner.data.windows import build_windows
from resume_ner.errors import CheckpointError, ConfigError, ResumeNerError, describe_os_error
from resume_ner.io import recover_dir, write_json_atomic
from resume_ner.layout import CHECKPOINTS_DIRNAME, CONFIG_FILE, METADATA_FILE, MODEL_DIRNAME, RESULT_FILE
from resume_ner.redaction import redact_credentials, redact_settings
from resume_ner.tracking.mlflow import TrackingRun, setup_mlflow, standard_tags
from resume_ner.training.batching import TRAIN_PAD_MULTIPLE, collate_windows, length_grouped
from resume_ner.training.callbacks import EarlyStopping, TrainerCallback, TrainerState
from resume_ner.training.checkpoint import (
    STATE_FILE,
    latest_training_state,
    list_training_states,
    load_training_state,
    prune_training_states,
    read_metadata,
    save_model_checkpoint,
    save_training_state,
    use_safetensors,
)
from resume_ner.training.distillation import (
    collate_soft_targets,
    distillation_loss,
    teacher_word_log_probs,
    window_soft_targets,
)
from resume_ner.training.distributed import (
    all_gather_object,
    all_reduce_sum,
    barrier,
    broadcast_object,
    init_distributed,
    shard_indices,
)
from resume_ner.training.evaluator import evaluate_windowed
from resume_ner.training.model import create_model_and_tokenizer, training_attention
from resume_ner.training.precision import autocast, use_bf16

if TYPE_CHECKING:
    import torch
    from torchcrf import CRF
    from tqdm.auto import tqdm
    from transformers import PreTrainedModel, PreTrainedTokenizerFast

    from resume_ner.data.windows import WindowedDocuments
    from resume_ner.training.distributed import DistributedContext

log = logging.getLogger(__name__)

PROGRESS_LOG_SECONDS = 60.0  # without a progress bar (not a TTY), log progress this often


class _WindowArgs(TypedDict):
    """How documents are cut into windows (``build_windows``'s arguments), as the model's metadata keeps it."""

    max_length: int
    stride: int
    line_markers: bool


@dataclass
class TrainResult:
    """What a finished training produced and measured."""

    output_dir: str
    model_dir: str
    metric: str
    best_metric: float | None
    best_epoch: int | None
    metrics: dict[str, Any]  # validation metrics of the best checkpoint
    history: list[dict[str, Any]]
    global_step: int
    epochs_completed: int
    stop_reason: str | None
    data_fingerprint: str
    config_hash: str
    train_seconds: float
    tokens_per_second: float
    run_id: str | None = None
    tracking_uri: str | None = None  # where ``run_id`` lives (credentials redacted)
    derived: dict[str, Any] = field(default_factory=dict)  # the ``derived.*`` params logged to MLflow

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _metric_value(metrics: dict[str, Any], name: str) -> float:
    return float(metrics[name])


def _improved(value: float, best: float | None, name: str) -> bool:
    if best is None:
        return True
    return value < best if name == "loss" else value > best


def _seed_everything(seed: int) -> None:
    import numpy as np
    import torch

    random.seed(seed)
    np.random.seed(seed % (2**32))
    torch.manual_seed(seed)


def _rng_state() -> dict[str, Any]:
    """This process's torch RNG states (CPU and, when present, CUDA)."""
    import torch

    state: dict[str, torch.Tensor | list[torch.Tensor]] = {"torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def _restore_rng(state: dict[str, Any], rank: int = 0) -> None:
    """Restore a ``_rng_state``; under DDP the state of ``rank`` when the checkpoint holds one per rank."""
    import torch

    per_rank = state.get("per_rank")
    if per_rank and rank < len(per_rank):
        state = per_rank[rank]
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def _optimizer(model: torch.nn.Module, crf: CRF | None, config: ResumeNerConfig) -> torch.optim.Optimizer:
    """AdamW over the model (no decay on biases and LayerNorm) and the scores of a CRF head (their own learning
    rate, no decay)."""
    import torch

    decay: list[torch.nn.Parameter] = []
    no_decay: list[torch.nn.Parameter] = []
    for name, param in model.named_parameters():
        if not param.requires_grad:
            continue
        (no_decay if param.ndim < 2 or "LayerNorm" in name or name.endswith(".bias") else decay).append(param)
    groups = [
        {"params": decay, "weight_decay": config.training.weight_decay},
        {"params": no_decay, "weight_decay": 0.0},
    ]
    if crf is not None:
        groups.append({"params": list(crf.parameters()), "weight_decay": 0.0, "lr": config.training.crf_learning_rate})
    return torch.optim.AdamW(groups, lr=config.training.learning_rate)


def _epoch_order(n: int, seed: int, epoch: int) -> list[int]:
    import torch

    generator = torch.Generator().manual_seed(seed * 1_000_003 + epoch)
    return torch.randperm(n, generator=generator).tolist()


def _progress(total: int, initial: int, desc: str, quiet: bool) -> tqdm:
    from tqdm.auto import tqdm

    return tqdm(total=total, initial=initial, desc=desc, disable=quiet or not sys.stderr.isatty(), leave=False)


def _as_documents(data: Sequence[Document] | str | Path, config: ResumeNerConfig) -> list[Document]:
    if isinstance(data, (str, Path)):
        return load_documents(Path(data), config.data)
    return list(data)


@dataclass(frozen=True)
class TrainingStart:
    """Where a training into an output directory starts, as ``check_training_start`` found it."""

    finished: TrainResult | None = None  # resume=True and the training there had finished: its saved result
    resume_from: Path | None = None  # the training state to continue from
    replaces_earlier: bool = False  # overwrite=True and the directory holds an earlier training


def check_training_start(
    config: ResumeNerConfig,
    train_docs: Sequence[Document],
    val_docs: Sequence[Document],
    output_dir: str | Path,
    data_fingerprint: str,
    *,
    resume: bool = False,
    overwrite: bool = False,
) -> TrainingStart:
    """Everything ``train_model`` checks before it trains: how it starts, or the error that refuses it.

    ``train_model`` calls it first, so the checks hold for every caller (HPO trials, Python code); a caller that
    opens an MLflow run for the training (``workflows.training``) calls it before opening the run, so a refused
    training leaves no empty FAILED run. It creates ``output_dir`` and puts back a best model a crash left
    aside, and changes nothing else (``train_model`` removes what ``overwrite`` replaces).

    With ``resume``, a ``train_result.json`` in ``output_dir`` means its training has finished (``train_model``
    writes it last and removes it when overwriting): ``finished`` is that result. Otherwise ``resume_from`` is
    the newest complete checkpoint (None: training starts from scratch).

    Raises ``ConfigError`` for an empty training set, ``model.num_labels`` unlike the data's label scheme, or
    an ``output_dir`` that holds a training when neither ``resume`` nor ``overwrite`` is given;
    ``CheckpointError`` for an ``output_dir`` that cannot be created or written, or, with ``resume``, a training
    there of another configuration or dataset, a missing best model or an unreadable ``train_result.json``.
    Under torchrun rank 0 checks and every rank gets its answer (or raises its error).
    """
    ddp, _ = init_distributed(config.training.device)
    found: TrainingStart | ResumeNerError | None = None
    if ddp.is_main:
        try:
            found = _check_start(config, train_docs, val_docs, Path(output_dir), data_fingerprint, resume, overwrite)
        except ResumeNerError as exc:
            found = exc
    answer: TrainingStart | ResumeNerError = broadcast_object(found, ddp)  # every rank stops, or none
    if isinstance(answer, ResumeNerError):
        raise answer
    return answer


def _check_start(
    config: ResumeNerConfig,
    train_docs: Sequence[Document],
    val_docs: Sequence[Document],
    output_dir: Path,
    fingerprint: str,
    resume: bool,
    overwrite: bool,
) -> TrainingStart:
    if not train_docs:
        raise ConfigError("train_model: the training set is empty")
    scheme = scheme_for(config.data.label_map, (s.label for d in [*train_docs, *val_docs] for s in d.spans))
    if config.model.num_labels is not None and config.model.num_labels != len(scheme.labels):
        raise ConfigError(
            f"model.num_labels={config.model.num_labels} but the label scheme has {len(scheme.labels)} labels "
            f"({', '.join(scheme.labels)}); remove model.num_labels or fix data.label_map"
        )
    result_file = output_dir / RESULT_FILE
    if resume and result_file.is_file():
        finished = _read_result(result_file)
        _check_same_training(result_file, finished.to_dict(), config, fingerprint)
        return TrainingStart(finished=finished)
    fix = "make it writable or choose another --output-dir"
    try:
        output_dir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise CheckpointError(
            f"cannot create the output directory {output_dir}: {describe_os_error(exc)}; {fix}"
        ) from exc
    try:
        tempfile.TemporaryFile(dir=output_dir).close()
    except OSError as exc:
        raise CheckpointError(
            f"cannot write in the output directory {output_dir} ({exc.strerror or exc}); {fix}"
        ) from exc
    recover_dir(output_dir / MODEL_DIRNAME)  # a crash mid-replace of the best model leaves it aside
    checkpoints_dir = output_dir / CHECKPOINTS_DIRNAME
    earlier = any(path.exists() for path in (output_dir / MODEL_DIRNAME, result_file)) or bool(
        list_training_states(checkpoints_dir)
    )
    if not resume:
        if earlier and not overwrite:
            raise ConfigError(
                f"{output_dir} already holds a trained model or checkpoints: continue it with --resume, "
                "replace it with --overwrite, or choose another --output-dir"
            )
        return TrainingStart(replaces_earlier=earlier)
    resume_from = latest_training_state(checkpoints_dir)
    if resume_from is None:
        log.info("no complete checkpoint in %s: starting from scratch", checkpoints_dir)
        return TrainingStart()
    previous = json.loads((resume_from / STATE_FILE).read_text(encoding="utf-8"))  # JSON: it was validated
    _check_same_training(resume_from, previous, config, fingerprint)
    best_epoch = previous.get("state", {}).get("best_epoch")
    best_model = output_dir / MODEL_DIRNAME / METADATA_FILE
    if best_epoch is not None and not best_model.is_file():  # fail now, not after the remaining epochs
        raise CheckpointError(
            f"cannot resume from {resume_from}: the best model so far (epoch {best_epoch}) belongs in "
            f"{best_model.parent} and {best_model.name} is missing there; restore that directory, or train "
            "into a new output directory"
        )
    return TrainingStart(resume_from=resume_from)


def _read_result(path: Path) -> TrainResult:
    try:
        return TrainResult(**json.loads(path.read_text(encoding="utf-8")))
    except (OSError, UnicodeDecodeError, ValueError, TypeError) as exc:
        raise CheckpointError(
            f"{path} cannot be read as a training result ({exc}); train again from scratch with "
            "--overwrite instead of --resume, or into another --output-dir"
        ) from exc


def _check_same_training(where: Path, saved: dict[str, Any], config: ResumeNerConfig, fingerprint: str) -> None:
    """``CheckpointError`` unless ``saved`` (a trainer state or result) was trained with ``config`` on the data
    of ``fingerprint``."""
    if saved.get("config_hash") != config.config_hash():
        differs = "configuration"
    elif saved.get("data_fingerprint") != fingerprint:
        differs = "dataset"
    else:
        return
    raise CheckpointError(
        f"cannot resume from {where}: it was written with a different {differs}; use a new "
        "output directory or the original settings"
    )


def describe_finished_training(output_dir: str | Path, result: TrainResult, epochs: int) -> str:
    """The line saying that the training in ``output_dir`` (``result``, of ``epochs`` epochs) had finished, when
    asked to resume it."""
    stopped = f", {result.stop_reason}" if result.stop_reason else ""
    best = (
        f"{result.best_metric:.4f} at epoch {result.best_epoch}"
        if result.best_metric is not None
        else "n/a (no validation split)"
    )
    return (
        f"{output_dir}: training already finished (epoch {result.epochs_completed} of {epochs}{stopped}; best "
        f"validation {result.metric} {best}); nothing to resume. To train again from scratch, pass --overwrite "
        "instead of --resume"
    )


@dataclass(eq=False)
class _TrainingLoop:
    """What ``train_model``'s steps share: the run's inputs, then (set by the set-up steps) the model, windows,
    optimizer, scheduler, callbacks and tracking, and the state the loop updates."""

    config: ResumeNerConfig
    ddp: DistributedContext
    device: torch.device
    output_dir: Path
    fingerprint: str
    train_docs: list[Document]
    val_docs: list[Document]
    quiet: bool
    # _set_up_model
    scheme: LabelScheme = field(init=False)
    model: PreTrainedModel = field(init=False)  # what is saved, with ``crf``
    tokenizer: PreTrainedTokenizerFast = field(init=False)
    crf: CRF | None = field(init=False)  # the CRF head, None without one
    state: TrainerState = field(init=False)
    trained: torch.nn.Module = field(init=False)  # what the loss comes from: the model, with its CRF head if any
    forward_model: torch.nn.Module = field(init=False)  # ``trained``, under DDP wrapped to average gradients
    ddp_model: torch.nn.parallel.DistributedDataParallel | None = field(init=False)  # that wrapper, None without DDP
    bf16: bool = field(init=False)
    eval_attention: str = field(init=False)
    train_attention: str = field(init=False)
    settings: dict[str, Any] = field(init=False)  # the resolved configuration, credentials redacted
    # _set_up_windows
    window_args: _WindowArgs = field(init=False)
    train_windows: WindowedDocuments = field(init=False)
    val_windows: WindowedDocuments | None = field(init=False)
    soft_targets: list[torch.Tensor] | None = field(init=False)  # the teacher's, per window (training.distill_from)
    n_windows: int = field(init=False)
    window_lengths: list[int] = field(init=False)
    pad_multiple: int = field(init=False)
    micro_per_epoch: int = field(init=False)
    total_steps: int = field(init=False)
    effective_batch: int = field(init=False)
    # _set_up_optimizer
    optimizer: torch.optim.Optimizer = field(init=False)
    scheduler: torch.optim.lr_scheduler.LRScheduler = field(init=False)
    # train_model
    callbacks: list[TrainerCallback] = field(init=False)
    metadata: dict[str, Any] = field(init=False)  # written beside every checkpoint
    # _start_tracking
    tracking: TrackingRun = field(init=False)
    own_tracking: bool = field(init=False)  # started here, so ended here
    derived: dict[str, Any] = field(init=False)
    # _train
    started: float = field(init=False)
    tokens_at_start: int = field(init=False)
    last_progress_log: float = field(init=False)

    @property
    def checkpoints_dir(self) -> Path:
        """Where the resumable training states go."""
        return self.output_dir / CHECKPOINTS_DIRNAME


def train_model(
    config: ResumeNerConfig | dict[str, Any],
    train_data: Sequence[Document] | str | Path,
    val_data: Sequence[Document] | str | Path,
    output_dir: str | Path,
    *,
    resume: bool = False,
    callbacks: Sequence[TrainerCallback] = (),
    tracking: TrackingRun | None = None,
    data_fingerprint: str | None = None,
    quiet: bool = False,
    overwrite: bool = False,
) -> TrainResult:
    """Fine-tune a token-classification model on whole documents and keep the best checkpoint.

    ``config`` is a ``ResumeNerConfig`` or a nested dict of its sections. ``tracking`` is an open
    ``TrackingRun`` to log into (HPO passes its nested run); when None and tracking is enabled, a run is
    started here, after the checks, and ended when training ends. With ``resume=True`` training continues from
    the newest complete checkpoint in ``output_dir/checkpoints`` (a fresh start when there is none); a training
    that had finished there is returned as it was saved, with nothing trained, written or logged. Without it,
    an ``output_dir`` that already holds a training is refused unless ``overwrite=True``, which removes its
    checkpoints and result (its best model is replaced after the first epoch). ``check_training_start`` makes
    the checks, before anything is trained.
    """
    config = config_from_dict(config)
    ddp, device = init_distributed(config.training.device)
    output_dir = Path(output_dir)
    train_docs, val_docs, fingerprint = _load_data(config, train_data, val_data, data_fingerprint)
    start = check_training_start(
        config, train_docs, val_docs, output_dir, fingerprint, resume=resume, overwrite=overwrite
    )
    if start.finished is not None:
        log.info(describe_finished_training(output_dir, start.finished, config.training.epochs))
        return start.finished
    if ddp.is_main and start.replaces_earlier:
        _remove_earlier_training(output_dir)

    loop = _TrainingLoop(config, ddp, device, output_dir, fingerprint, train_docs, val_docs, quiet or not ddp.is_main)
    restored = _set_up_model(loop, start.resume_from)
    _set_up_windows(loop)
    _set_up_optimizer(loop, restored)
    loop.callbacks = [EarlyStopping(config.training.early_stopping_patience), *callbacks]
    loop.metadata = _checkpoint_metadata(loop)
    _start_tracking(loop, tracking, start.resume_from)
    _train(loop)
    return _finish(loop)


def _load_data(
    config: ResumeNerConfig,
    train_data: Sequence[Document] | str | Path,
    val_data: Sequence[Document] | str | Path,
    data_fingerprint: str | None,
) -> tuple[list[Document], list[Document], str]:
    """The training and validation documents and their fingerprint (``data_fingerprint`` when given)."""
    train_docs = _as_documents(train_data, config)
    val_docs = _as_documents(val_data, config)
    fingerprint = data_fingerprint or fingerprint_documents(train_docs + val_docs)
    return train_docs, val_docs, fingerprint


def _remove_earlier_training(output_dir: Path) -> None:
    """Remove the checkpoints and result of the training that ``overwrite`` replaces."""
    log.warning("overwriting the earlier training in %s", output_dir)
    shutil.rmtree(output_dir / CHECKPOINTS_DIRNAME, ignore_errors=True)
    (output_dir / RESULT_FILE).unlink(missing_ok=True)  # else a --resume would take this training as finished


def _set_up_model(loop: _TrainingLoop, resume_from: Path | None) -> dict[str, Any] | None:
    """Seed, create (or resume) the model, put it on the device, write config.yaml and wrap the model for DDP.

    Returns the training state restored from ``resume_from`` (None for a fresh start)."""
    import torch

    from resume_ner.training.crf import CrfTokenClassifier

    config, ddp, device = loop.config, loop.ddp, loop.device
    tcfg = config.training
    if tcfg.num_threads:
        torch.set_num_threads(tcfg.num_threads)
    _seed_everything(tcfg.random_seed)  # the same initial weights on every rank

    restored = _create_or_resume_model(loop, resume_from)
    model, crf = loop.model, loop.crf
    model.to(device)  # type: ignore[arg-type]  # transformers' @wraps(nn.Module.to) shows mypy an unbound `to`
    loop.trained = model if crf is None else CrfTokenClassifier(model, crf.to(device))  # what the loss comes from
    loop.bf16 = use_bf16(tcfg.precision, device)
    fast_dropout = tcfg.fast_dropout and device.type == "cpu"
    if fast_dropout:
        from resume_ner.training.fast_dropout import enable_fast_dropout

        enable_fast_dropout(model)
    loop.eval_attention = model.config._attn_implementation
    loop.train_attention = training_attention(model, device, fast_dropout)
    if ddp.enabled:
        _seed_everything(tcfg.random_seed + ddp.rank)  # dropout differs between ranks
    loop.settings = settings = redact_settings(config.to_dict())  # what is written beside the model: no credentials
    if ddp.is_main:
        save_config(config_from_dict(settings, origin="resolved config"), loop.output_dir / CONFIG_FILE)
    loop.forward_model, loop.ddp_model = _wrap_for_ddp(loop.trained, ddp, device)
    return restored


def _create_or_resume_model(loop: _TrainingLoop, resume_from: Path | None) -> dict[str, Any] | None:
    """The label scheme, a new model, tokenizer, CRF head and trainer state, or those of ``resume_from``.

    Returns the training state restored from ``resume_from`` (None for a fresh start)."""
    from resume_ner.training.crf import load_crf, new_crf

    config, mcfg = loop.config, loop.config.model
    docs = loop.train_docs + loop.val_docs
    loop.scheme = scheme = scheme_for(config.data.label_map, (s.label for d in docs for s in d.spans))
    loop.model, loop.tokenizer = create_model_and_tokenizer(mcfg, scheme)
    loop.crf = new_crf(scheme) if mcfg.head == "crf" else None  # replaced by the checkpoint's on resume

    loop.state = TrainerState()
    restored: dict[str, Any] | None = None
    if resume_from is not None:
        from transformers import AutoModelForTokenClassification

        restored = load_training_state(resume_from)
        loop.state = state = TrainerState.from_dict(restored["trainer_state"]["state"])
        loop.model = AutoModelForTokenClassification.from_pretrained(
            resume_from, use_safetensors=use_safetensors(), weights_only=True, trust_remote_code=False
        )
        if mcfg.head == "crf":
            loop.crf = load_crf(resume_from, scheme)
        log.info("resuming from %s (epoch %d, step %d)", resume_from, state.epoch, state.global_step)
    return restored


def _wrap_for_ddp(
    trained: torch.nn.Module, ddp: DistributedContext, device: torch.device
) -> tuple[torch.nn.Module, torch.nn.parallel.DistributedDataParallel | None]:
    """What the forward passes go through (under DDP a wrapper that averages gradients), and that wrapper (None
    without DDP); ``model`` (and ``crf``) are what is saved."""
    forward_model = trained
    ddp_model: torch.nn.parallel.DistributedDataParallel | None = None
    if ddp.enabled:
        from torch.nn.parallel import DistributedDataParallel

        forward_model = ddp_model = DistributedDataParallel(
            trained, device_ids=[device.index] if device.type == "cuda" else None
        )
    return forward_model, ddp_model


def _set_up_windows(loop: _TrainingLoop) -> None:
    """Cut the documents into windows, size the epochs and steps, and log the plan (rank 0)."""
    tcfg, mcfg, ddp, tokenizer, scheme = loop.config.training, loop.config.model, loop.ddp, loop.tokenizer, loop.scheme
    loop.window_args = window_args = _WindowArgs(
        max_length=mcfg.max_length, stride=mcfg.stride, line_markers=mcfg.line_markers
    )
    loop.train_windows = train_windows = build_windows(
        loop.train_docs, tokenizer, scheme, label_all_tokens=mcfg.label_all_tokens, **window_args
    )
    loop.val_windows = build_windows(loop.val_docs, tokenizer, scheme, **window_args) if loop.val_docs else None
    loop.soft_targets = _soft_targets(loop) if tcfg.distill_from else None
    loop.n_windows = n_windows = len(train_windows.windows)
    loop.window_lengths = [len(window) for window in train_windows.windows]
    loop.pad_multiple = TRAIN_PAD_MULTIPLE if mcfg.max_length % TRAIN_PAD_MULTIPLE == 0 else 1  # never past max_length
    loop.micro_per_epoch = micro_per_epoch = math.ceil(math.ceil(n_windows / ddp.world_size) / tcfg.batch_size)
    steps_per_epoch = math.ceil(micro_per_epoch / tcfg.gradient_accumulation_steps)
    loop.total_steps = total_steps = steps_per_epoch * tcfg.epochs
    loop.effective_batch = effective_batch = tcfg.batch_size * ddp.world_size * tcfg.gradient_accumulation_steps
    if ddp.is_main:
        log.info(
            "training on %d documents -> %d windows (%d multi-window documents); %d optimizer steps; "
            "effective batch %d (%d per device x %d process(es) x %d accumulation); %s forward passes, %s "
            "attention",
            len(loop.train_docs),
            n_windows,
            train_windows.stats["multi_window_documents"],
            total_steps,
            effective_batch,
            tcfg.batch_size,
            ddp.world_size,
            tcfg.gradient_accumulation_steps,
            "bf16 autocast" if loop.bf16 else "fp32",
            loop.train_attention,
        )


def _soft_targets(loop: _TrainingLoop) -> list[torch.Tensor]:
    """The teacher's label log-probabilities on the training windows (``training.distill_from``)."""
    tcfg = loop.config.training
    assert tcfg.distill_from is not None  # called only with a teacher
    offsets, log_probs = teacher_word_log_probs(
        tcfg.distill_from, loop.train_docs, loop.scheme, loop.device, batch_size=tcfg.eval_batch_size, bf16=loop.bf16
    )
    targets, matched = window_soft_targets(loop.train_windows, offsets, log_probs)
    if loop.ddp.is_main:
        log.info(
            "distillation from %s: %.1f%% of the training words have a teacher target", tcfg.distill_from, 100 * matched
        )
    return targets


def _set_up_optimizer(loop: _TrainingLoop, restored: dict[str, Any] | None) -> None:
    """AdamW and its linear warmup and decay; on resume their states and the RNG's as they were saved."""
    from transformers import get_linear_schedule_with_warmup

    tcfg = loop.config.training
    loop.optimizer = optimizer = _optimizer(loop.model, loop.crf, loop.config)
    loop.scheduler = scheduler = get_linear_schedule_with_warmup(
        optimizer, int(tcfg.warmup_ratio * loop.total_steps), loop.total_steps
    )
    if restored is not None:
        optimizer.load_state_dict(restored["optimizer"])
        scheduler.load_state_dict(restored["scheduler"])
        _restore_rng(restored["rng"], loop.ddp.rank)


def _checkpoint_metadata(loop: _TrainingLoop) -> dict[str, Any]:
    """What is written beside every checkpoint (``resume_ner.json``): how to cut, decode and label, and what was
    trained on."""
    config, mcfg = loop.config, loop.config.model
    return {
        "label_scheme": loop.scheme.to_dict(),
        "windows": {**loop.window_args, "label_all_tokens": mcfg.label_all_tokens},
        "decoding": mcfg.decoding,
        "head": mcfg.head,
        "backbone": mcfg.backbone,
        "config": loop.settings,
        "config_hash": config.config_hash(),
        "data_fingerprint": loop.fingerprint,
    }


def _start_tracking(loop: _TrainingLoop, tracking: Any, resume_from: Path | None) -> None:
    """Use the caller's tracking run or start one (rank 0; the other ranks log nowhere), and log the parameters."""
    config, fingerprint = loop.config, loop.fingerprint
    own_tracking = tracking is None
    if not loop.ddp.is_main:
        tracking, own_tracking = TrackingRun.disabled(), False  # rank 0 logs for the job
    if own_tracking:
        tags = standard_tags(data_fingerprint=fingerprint, config_hash=config.config_hash())
        if resume_from is not None:
            tags["resume_ner.resumed_from"] = str(resume_from)
        tracking = setup_mlflow(config.tracking, output_dir=loop.output_dir, tags=tags)
    elif resume_from is not None:
        tracking.set_tags({"resume_ner.resumed_from": str(resume_from)})
    loop.tracking, loop.own_tracking = tracking, own_tracking
    tracking.log_params({**config.to_dict(), "data": {**config.to_dict()["data"], "fingerprint": fingerprint}})
    loop.derived = derived = {
        "train_documents": len(loop.train_docs),
        "train_windows": loop.n_windows,
        "val_documents": len(loop.val_docs),
        "total_steps": loop.total_steps,
        "effective_batch_size": loop.effective_batch,
        "world_size": loop.ddp.world_size,
        "precision": "bf16" if loop.bf16 else "fp32",
        "train_attention": loop.train_attention,
    }
    tracking.log_params({"derived": derived})


def _train(loop: _TrainingLoop) -> None:
    """Train and validate epoch by epoch until the last one or an early stop, with the callbacks' begin and end;
    a tracking run started here ends FAILED (or KILLED) when training does not finish."""
    state, tcfg = loop.state, loop.config.training
    loop.started = time.perf_counter()
    loop.tokens_at_start = state.tokens_seen
    loop.last_progress_log = loop.started
    status = "FAILED"
    try:
        for callback in loop.callbacks:
            callback.on_train_begin(state)
        loop.model.train()
        while state.epoch < tcfg.epochs and not state.should_stop:
            epoch_loss = _train_epoch(loop)
            _validate_and_checkpoint(loop, epoch_loss)
        if state.epoch >= tcfg.epochs and state.stop_reason is None:
            state.stop_reason = "completed all epochs"
        for callback in loop.callbacks:
            callback.on_train_end(state)
        status = "FINISHED"
    except KeyboardInterrupt:
        status = "KILLED"
        raise
    finally:
        if loop.own_tracking and status != "FINISHED":
            loop.tracking.end(status)


def _train_epoch(loop: _TrainingLoop) -> float:
    """Train the current epoch from ``state.step_in_epoch`` on (a resumed one continues where it stopped), saving
    a training state every ``save_every_steps``; returns the epoch's mean training loss over all ranks."""
    state, tcfg, ddp = loop.state, loop.config.training, loop.ddp
    loop.model.set_attn_implementation(loop.train_attention)
    order = _epoch_order(loop.n_windows, tcfg.random_seed, state.epoch)
    if tcfg.group_by_length:  # consecutive batches of every rank together: one group
        order = length_grouped(order, loop.window_lengths, tcfg.batch_size * ddp.world_size)
    order = shard_indices(order, ddp)
    progress = _progress(
        loop.micro_per_epoch, state.step_in_epoch, f"epoch {state.epoch + 1}/{tcfg.epochs}", loop.quiet
    )
    loop.optimizer.zero_grad(set_to_none=True)
    for micro in range(state.step_in_epoch, loop.micro_per_epoch):
        boundary = _forward_backward(loop, order, micro)
        progress.update(1)
        if not boundary:
            continue
        logs = _optimizer_step(loop)
        _log_step(loop, logs, progress)
        for callback in loop.callbacks:
            callback.on_step_end(state, logs)
        if (
            tcfg.save_every_steps
            and state.global_step % tcfg.save_every_steps == 0
            and state.step_in_epoch < loop.micro_per_epoch
        ):
            _save_training_state(loop)
    progress.close()
    loss_sum, loss_count = all_reduce_sum([state.epoch_loss_sum, max(state.step_in_epoch, 1)], ddp)
    epoch_loss = loss_sum / loss_count
    state.epoch += 1
    state.step_in_epoch = 0
    state.epoch_loss_sum = 0.0
    return epoch_loss


def _forward_backward(loop: _TrainingLoop, order: list[int], micro: int) -> bool:
    """Forward and backward pass of micro-batch ``micro`` of the epoch's window ``order``; whether an optimizer
    step follows it (under DDP gradients are only averaged then)."""
    state, tcfg, ddp_model = loop.state, loop.config.training, loop.ddp_model
    idx = order[micro * tcfg.batch_size : (micro + 1) * tcfg.batch_size]
    batch = collate_windows(
        [loop.train_windows.windows[i] for i in idx], loop.tokenizer.pad_token_id, loop.pad_multiple
    )
    state.tokens_seen += int(batch["attention_mask"].sum())
    batch = {k: v.to(loop.device) for k, v in batch.items()}
    boundary = (micro + 1) % tcfg.gradient_accumulation_steps == 0 or micro + 1 == loop.micro_per_epoch
    with nullcontext() if boundary or ddp_model is None else ddp_model.no_sync():  # sync on steps only
        with autocast(loop.device, loop.bf16):
            output = loop.forward_model(**batch)
        loss = output.loss
        if loop.soft_targets is not None:
            loss = _with_distillation(loop, loss, output.logits, idx)
        (loss / tcfg.gradient_accumulation_steps).backward()
    state.epoch_loss_sum += float(loss.detach())
    state.step_in_epoch = micro + 1
    return boundary


def _with_distillation(
    loop: _TrainingLoop, gold_loss: torch.Tensor, logits: torch.Tensor, idx: list[int]
) -> torch.Tensor:
    """``(1 - w) * gold_loss + w * distillation_loss`` of the batch of windows ``idx``."""
    tcfg = loop.config.training
    assert loop.soft_targets is not None  # called only with a teacher
    targets = collate_soft_targets([loop.soft_targets[i] for i in idx], logits.shape[1]).to(loop.device)
    soft = distillation_loss(logits, targets, tcfg.distill_temperature)
    return (1 - tcfg.distill_weight) * gold_loss + tcfg.distill_weight * soft


def _optimizer_step(loop: _TrainingLoop) -> dict[str, Any]:
    """Clip the accumulated gradients, step the optimizer and the scheduler; returns the step's logs."""
    import torch

    state, tcfg = loop.state, loop.config.training
    if tcfg.max_grad_norm > 0:
        torch.nn.utils.clip_grad_norm_(loop.trained.parameters(), tcfg.max_grad_norm)
    loop.optimizer.step()
    loop.scheduler.step()
    loop.optimizer.zero_grad(set_to_none=True)
    state.global_step += 1
    elapsed = max(time.perf_counter() - loop.started, 1e-9)
    return {
        "train_loss": state.epoch_loss_sum / state.step_in_epoch,
        "learning_rate": loop.scheduler.get_last_lr()[0],
        "tokens_per_second": (state.tokens_seen - loop.tokens_at_start) / elapsed,
    }


def _log_step(loop: _TrainingLoop, logs: dict[str, Any], progress: tqdm) -> None:
    """Show a step's ``logs`` on the progress bar (without one, in the log every ``PROGRESS_LOG_SECONDS``), and
    log them to tracking every ``log_every_steps``."""
    state, tcfg = loop.state, loop.config.training
    progress.set_postfix(loss=f"{logs['train_loss']:.4f}", tok_s=f"{logs['tokens_per_second']:.0f}")
    if loop.ddp.is_main and progress.disable and time.perf_counter() - loop.last_progress_log >= PROGRESS_LOG_SECONDS:
        loop.last_progress_log = time.perf_counter()
        log.info(
            "epoch %d/%d, batch %d/%d, step %d/%d: loss %.4f, %.0f tokens/s",
            state.epoch + 1,
            tcfg.epochs,
            state.step_in_epoch,
            loop.micro_per_epoch,
            state.global_step,
            loop.total_steps,
            logs["train_loss"],
            logs["tokens_per_second"],
        )
    if state.global_step % tcfg.log_every_steps == 0:
        loop.tracking.log_metrics(logs, step=state.global_step)
        log.debug("step %d: %s", state.global_step, logs)


def _validate_and_checkpoint(loop: _TrainingLoop, epoch_loss: float) -> None:
    """After an epoch: validate, record and log the epoch, keep the model if it is the best so far, run the
    callbacks' ``on_evaluate`` (early stopping among them) and save the training state."""
    state, tcfg = loop.state, loop.config.training
    metrics, value = _validate(loop)
    _record_epoch(loop, epoch_loss, metrics)
    _keep_if_best(loop, metrics, value)
    if loop.ddp.is_main:
        log.info(
            "epoch %d: train loss %.4f, val %s %s (best %s at epoch %s)",
            state.epoch,
            epoch_loss,
            tcfg.metric,
            f"{value:.4f}" if value is not None else "n/a",
            f"{state.best_metric:.4f}" if state.best_metric is not None else "n/a",
            state.best_epoch,
        )
    for callback in loop.callbacks:
        callback.on_evaluate(state, metrics, value)
    _save_training_state(loop)


def _validate(loop: _TrainingLoop) -> tuple[dict[str, Any], float | None]:
    """The validation metrics (rank 0 evaluates the whole split and broadcasts them) and the value of
    ``training.metric``; ``{}`` and None without a validation split."""
    tcfg = loop.config.training
    metrics: dict[str, Any] = {}
    value: float | None = None
    loop.model.set_attn_implementation(loop.eval_attention)
    if loop.val_windows is not None:
        if loop.ddp.is_main:  # rank 0 validates the whole split; the others wait for its metrics
            metrics = evaluate_windowed(
                loop.model,
                loop.val_windows,
                loop.val_docs,
                pad_token_id=loop.tokenizer.pad_token_id,
                batch_size=tcfg.eval_batch_size,
                device=loop.device,
                decoding=loop.config.model.decoding,
                crf=loop.crf,
            )
        metrics = broadcast_object(metrics, loop.ddp)
        value = _metric_value(metrics, tcfg.metric)
    return metrics, value


def _record_epoch(loop: _TrainingLoop, epoch_loss: float, metrics: dict[str, Any]) -> None:
    """Add the epoch to the history and log its metrics to tracking."""
    state = loop.state
    entry = {
        "epoch": state.epoch,
        "step": state.global_step,
        "train_loss": epoch_loss,
        **{k: v for k, v in metrics.items() if isinstance(v, (int, float))},
    }
    state.history.append(entry)
    loop.tracking.log_metrics(
        {
            "epoch": state.epoch,
            "train_loss_epoch": epoch_loss,
            **{f"val_{k}": v for k, v in metrics.items() if isinstance(v, (int, float))},
            "val": {"per_type": metrics.get("per_type", {})},
        },
        step=state.global_step,
    )


def _keep_if_best(loop: _TrainingLoop, metrics: dict[str, Any], value: float | None) -> None:
    """Track the best metric; when it improved (or without validation), rank 0 saves the model to ``model/``."""
    state = loop.state
    if value is None or _improved(value, state.best_metric, loop.config.training.metric):
        state.best_metric, state.best_epoch = value, state.epoch
        state.epochs_without_improvement = 0
        if loop.ddp.is_main:
            save_model_checkpoint(
                loop.output_dir / MODEL_DIRNAME,
                loop.model,
                loop.tokenizer,
                {**loop.metadata, "metrics": metrics, "epoch": state.epoch, "global_step": state.global_step},
                crf=loop.crf,
            )
    else:
        state.epochs_without_improvement += 1


def _save_training_state(loop: _TrainingLoop) -> None:
    """Save a resumable training state (rank 0, with every rank's RNG state) and prune the old ones."""
    ddp, state, config = loop.ddp, loop.state, loop.config
    rng = _rng_state()
    if ddp.enabled:
        rng = {**rng, "per_rank": all_gather_object(rng, ddp)}
    if ddp.is_main:
        trainer_state = {
            "state": state.to_dict(),
            "config_hash": config.config_hash(),
            "data_fingerprint": loop.fingerprint,
        }
        target = loop.checkpoints_dir / f"checkpoint-{state.global_step:08d}"
        save_training_state(
            target,
            loop.model,
            loop.tokenizer,
            {**loop.metadata, "trainer": state.to_dict()},
            loop.optimizer,
            loop.scheduler,
            rng,
            trainer_state,
            crf=loop.crf,
        )
        prune_training_states(loop.checkpoints_dir, config.training.keep_checkpoints)
    barrier(ddp)


def _finish(loop: _TrainingLoop) -> TrainResult:
    """The ``TrainResult`` (on every rank); rank 0 also writes and logs it (``_publish_result``)."""
    ddp, state, output_dir, tracking = loop.ddp, loop.state, loop.output_dir, loop.tracking
    barrier(ddp)  # rank 0 has written the best model
    best_metrics = read_metadata(output_dir / MODEL_DIRNAME).get("metrics", {})
    elapsed = time.perf_counter() - loop.started
    tokens = all_reduce_sum([state.tokens_seen - loop.tokens_at_start], ddp)[0]
    result = TrainResult(
        output_dir=str(output_dir),
        model_dir=str(output_dir / MODEL_DIRNAME),
        metric=loop.config.training.metric,
        best_metric=state.best_metric,
        best_epoch=state.best_epoch,
        metrics=best_metrics,
        history=state.history,
        global_step=state.global_step,
        epochs_completed=state.epoch,
        stop_reason=state.stop_reason,
        data_fingerprint=loop.fingerprint,
        config_hash=loop.config.config_hash(),
        train_seconds=elapsed,
        tokens_per_second=tokens / max(elapsed, 1e-9),
        run_id=getattr(tracking, "run_id", None),
        tracking_uri=redact_credentials(cast(str, tracking.tracking_uri))
        if getattr(tracking, "tracking_uri", None)
        else None,
        derived=loop.derived,
    )
    if not ddp.is_main:
        return result
    _publish_result(loop, result, best_metrics)
    return result


def _publish_result(loop: _TrainingLoop, result: TrainResult, best_metrics: dict[str, Any]) -> None:
    """Write train_result.json (last: it marks a finished training), log it, the configuration and the best
    metrics (and model) to tracking, and end a tracking run started here."""
    output_dir, tracking = loop.output_dir, loop.tracking
    write_json_atomic(output_dir / RESULT_FILE, result.to_dict())
    tracking.log_metrics({f"best_val_{k}": v for k, v in best_metrics.items() if isinstance(v, (int, float))})
    tracking.log_artifact(output_dir / RESULT_FILE)
    tracking.log_artifact(output_dir / CONFIG_FILE)
    if loop.config.tracking.log_checkpoint:
        tracking.log_artifacts(output_dir / MODEL_DIRNAME, artifact_path=MODEL_DIRNAME)
    if loop.own_tracking:
        tracking.end("FINISHED")
