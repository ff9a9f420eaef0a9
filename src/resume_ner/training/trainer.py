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
from typing import Any, TypedDict

from resume_ner.config import ResumeNerConfig, config_from_dict
from resume_ner.config import save as save_config
from resume_ner.data.document import Document
from resume_ner.data.labels import scheme_for
from resume_ner.errors import CheckpointError, ConfigError, ResumeNerError, describe_os_error
from resume_ner.io import recover_dir, write_json_atomic
from resume_ner.layout import CHECKPOINTS_DIRNAME, CONFIG_FILE, METADATA_FILE, MODEL_DIRNAME, RESULT_FILE
from resume_ner.redaction import redact_credentials, redact_settings
from resume_ner.training.callbacks import EarlyStopping, TrainerCallback, TrainerState

log = logging.getLogger(__name__)

PROGRESS_LOG_SECONDS = 60.0  # without a progress bar (not a TTY), log progress this often


class _WindowArgs(TypedDict):
    """How documents are cut into windows (``build_windows``'s arguments), as the model's metadata keeps it."""

    max_length: int
    stride: int


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


def _optimizer(model: Any, crf: Any, config: ResumeNerConfig) -> Any:
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


def _progress(total: int, initial: int, desc: str, quiet: bool) -> Any:
    from tqdm.auto import tqdm

    return tqdm(total=total, initial=initial, desc=desc, disable=quiet or not sys.stderr.isatty(), leave=False)


def _as_documents(data: Sequence[Document] | str | Path, config: ResumeNerConfig) -> list[Document]:
    if isinstance(data, (str, Path)):
        from resume_ner.data.dataset import load_documents

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
    from resume_ner.training.distributed import broadcast_object, init_distributed

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
    from resume_ner.training.checkpoint import STATE_FILE, latest_training_state, list_training_states

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


def train_model(
    config: ResumeNerConfig | dict[str, Any],
    train_data: Sequence[Document] | str | Path,
    val_data: Sequence[Document] | str | Path,
    output_dir: str | Path,
    *,
    resume: bool = False,
    callbacks: Sequence[TrainerCallback] = (),
    tracking: Any = None,
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
    import torch

    from resume_ner.data.splits import fingerprint_documents
    from resume_ner.data.windows import build_windows
    from resume_ner.training.batching import TRAIN_PAD_MULTIPLE, collate_windows, length_grouped
    from resume_ner.training.checkpoint import (
        load_training_state,
        prune_training_states,
        save_model_checkpoint,
        save_training_state,
        use_safetensors,
    )
    from resume_ner.training.crf import CrfTokenClassifier, load_crf, new_crf
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

    config = config_from_dict(config)
    tcfg, mcfg = config.training, config.model
    ddp, device = init_distributed(tcfg.device)
    main = ddp.is_main
    quiet = quiet or not main
    output_dir = Path(output_dir)
    checkpoints_dir = output_dir / CHECKPOINTS_DIRNAME
    train_docs = _as_documents(train_data, config)
    val_docs = _as_documents(val_data, config)
    fingerprint = data_fingerprint or fingerprint_documents(train_docs + val_docs)
    start = check_training_start(
        config, train_docs, val_docs, output_dir, fingerprint, resume=resume, overwrite=overwrite
    )
    if start.finished is not None:
        log.info(describe_finished_training(output_dir, start.finished, tcfg.epochs))
        return start.finished
    if main and start.replaces_earlier:
        log.warning("overwriting the earlier training in %s", output_dir)
        shutil.rmtree(checkpoints_dir, ignore_errors=True)
        (output_dir / RESULT_FILE).unlink(missing_ok=True)  # else a --resume would take this training as finished

    if tcfg.num_threads:
        torch.set_num_threads(tcfg.num_threads)
    _seed_everything(tcfg.random_seed)  # the same initial weights on every rank

    scheme = scheme_for(config.data.label_map, (s.label for d in train_docs + val_docs for s in d.spans))
    model, tokenizer = create_model_and_tokenizer(mcfg, scheme)
    crf = new_crf(scheme) if mcfg.head == "crf" else None  # replaced by the checkpoint's on resume

    state = TrainerState()
    resume_from = start.resume_from
    restored: dict[str, Any] | None = None
    if resume_from is not None:
        from transformers import AutoModelForTokenClassification

        restored = load_training_state(resume_from)
        state = TrainerState.from_dict(restored["trainer_state"]["state"])
        model = AutoModelForTokenClassification.from_pretrained(
            resume_from, use_safetensors=use_safetensors(), weights_only=True, trust_remote_code=False
        )
        if mcfg.head == "crf":
            crf = load_crf(resume_from, scheme)
        log.info("resuming from %s (epoch %d, step %d)", resume_from, state.epoch, state.global_step)
    model.to(device)
    trained = model if crf is None else CrfTokenClassifier(model, crf.to(device))  # what the loss comes from
    bf16 = use_bf16(tcfg.precision, device)
    eval_attention, train_attention = model.config._attn_implementation, training_attention(model, device)
    if ddp.enabled:
        _seed_everything(tcfg.random_seed + ddp.rank)  # dropout differs between ranks
    settings = redact_settings(config.to_dict())  # what is written beside the model: no credentials
    if main:
        save_config(config_from_dict(settings, origin="resolved config"), output_dir / CONFIG_FILE)
    forward_model = trained  # under DDP a wrapper that averages gradients; ``model`` (and ``crf``) are saved
    ddp_model: torch.nn.parallel.DistributedDataParallel | None = None  # that wrapper, None without DDP
    if ddp.enabled:
        from torch.nn.parallel import DistributedDataParallel

        forward_model = ddp_model = DistributedDataParallel(
            trained, device_ids=[device.index] if device.type == "cuda" else None
        )

    window_args = _WindowArgs(max_length=mcfg.max_length, stride=mcfg.stride)
    train_windows = build_windows(train_docs, tokenizer, scheme, label_all_tokens=mcfg.label_all_tokens, **window_args)
    val_windows = build_windows(val_docs, tokenizer, scheme, **window_args) if val_docs else None
    n_windows = len(train_windows.windows)
    window_lengths = [len(window) for window in train_windows.windows]
    pad_multiple = TRAIN_PAD_MULTIPLE if mcfg.max_length % TRAIN_PAD_MULTIPLE == 0 else 1  # never past max_length
    micro_per_epoch = math.ceil(math.ceil(n_windows / ddp.world_size) / tcfg.batch_size)
    steps_per_epoch = math.ceil(micro_per_epoch / tcfg.gradient_accumulation_steps)
    total_steps = steps_per_epoch * tcfg.epochs
    effective_batch = tcfg.batch_size * ddp.world_size * tcfg.gradient_accumulation_steps
    if main:
        log.info(
            "training on %d documents -> %d windows (%d multi-window documents); %d optimizer steps; "
            "effective batch %d (%d per device x %d process(es) x %d accumulation); %s forward passes, %s "
            "attention",
            len(train_docs),
            n_windows,
            train_windows.stats["multi_window_documents"],
            total_steps,
            effective_batch,
            tcfg.batch_size,
            ddp.world_size,
            tcfg.gradient_accumulation_steps,
            "bf16 autocast" if bf16 else "fp32",
            train_attention,
        )

    from transformers import get_linear_schedule_with_warmup

    optimizer = _optimizer(model, crf, config)
    scheduler = get_linear_schedule_with_warmup(optimizer, int(tcfg.warmup_ratio * total_steps), total_steps)
    if restored is not None:
        optimizer.load_state_dict(restored["optimizer"])
        scheduler.load_state_dict(restored["scheduler"])
        _restore_rng(restored["rng"], ddp.rank)

    all_callbacks: list[TrainerCallback] = [EarlyStopping(tcfg.early_stopping_patience), *callbacks]
    metadata = {
        "label_scheme": scheme.to_dict(),
        "windows": {**window_args, "label_all_tokens": mcfg.label_all_tokens},
        "decoding": mcfg.decoding,
        "head": mcfg.head,
        "backbone": mcfg.backbone,
        "config": settings,
        "config_hash": config.config_hash(),
        "data_fingerprint": fingerprint,
    }
    own_tracking = tracking is None
    if not main:
        from resume_ner.tracking.mlflow import TrackingRun

        tracking, own_tracking = TrackingRun.disabled(), False  # rank 0 logs for the job
    if own_tracking:
        from resume_ner.tracking.mlflow import setup_mlflow, standard_tags

        tags = standard_tags(data_fingerprint=fingerprint, config_hash=config.config_hash())
        if resume_from is not None:
            tags["resume_ner.resumed_from"] = str(resume_from)
        tracking = setup_mlflow(config.tracking, output_dir=output_dir, tags=tags)
    elif resume_from is not None:
        tracking.set_tags({"resume_ner.resumed_from": str(resume_from)})
    tracking.log_params({**config.to_dict(), "data": {**config.to_dict()["data"], "fingerprint": fingerprint}})
    derived = {
        "train_documents": len(train_docs),
        "train_windows": n_windows,
        "val_documents": len(val_docs),
        "total_steps": total_steps,
        "effective_batch_size": effective_batch,
        "world_size": ddp.world_size,
        "precision": "bf16" if bf16 else "fp32",
        "train_attention": train_attention,
    }
    tracking.log_params({"derived": derived})

    def checkpoint_state() -> None:
        rng = _rng_state()
        if ddp.enabled:
            rng = {**rng, "per_rank": all_gather_object(rng, ddp)}
        if main:
            trainer_state = {
                "state": state.to_dict(),
                "config_hash": config.config_hash(),
                "data_fingerprint": fingerprint,
            }
            target = checkpoints_dir / f"checkpoint-{state.global_step:08d}"
            save_training_state(
                target,
                model,
                tokenizer,
                {**metadata, "trainer": state.to_dict()},
                optimizer,
                scheduler,
                rng,
                trainer_state,
                crf=crf,
            )
            prune_training_states(checkpoints_dir, tcfg.keep_checkpoints)
        barrier(ddp)

    started = time.perf_counter()
    tokens_at_start = state.tokens_seen
    last_progress_log = started
    status = "FAILED"
    try:
        for callback in all_callbacks:
            callback.on_train_begin(state)
        model.train()
        while state.epoch < tcfg.epochs and not state.should_stop:
            model.set_attn_implementation(train_attention)
            order = _epoch_order(n_windows, tcfg.random_seed, state.epoch)
            if tcfg.group_by_length:  # consecutive batches of every rank together: one group
                order = length_grouped(order, window_lengths, tcfg.batch_size * ddp.world_size)
            order = shard_indices(order, ddp)
            progress = _progress(micro_per_epoch, state.step_in_epoch, f"epoch {state.epoch + 1}/{tcfg.epochs}", quiet)
            optimizer.zero_grad(set_to_none=True)
            for micro in range(state.step_in_epoch, micro_per_epoch):
                idx = order[micro * tcfg.batch_size : (micro + 1) * tcfg.batch_size]
                batch = collate_windows([train_windows.windows[i] for i in idx], tokenizer.pad_token_id, pad_multiple)
                state.tokens_seen += int(batch["attention_mask"].sum())
                batch = {k: v.to(device) for k, v in batch.items()}
                boundary = (micro + 1) % tcfg.gradient_accumulation_steps == 0 or micro + 1 == micro_per_epoch
                with nullcontext() if boundary or ddp_model is None else ddp_model.no_sync():  # sync on steps only
                    with autocast(device, bf16):
                        loss = forward_model(**batch).loss
                    (loss / tcfg.gradient_accumulation_steps).backward()
                state.epoch_loss_sum += float(loss.detach())
                state.step_in_epoch = micro + 1
                progress.update(1)
                if not boundary:
                    continue
                if tcfg.max_grad_norm > 0:
                    torch.nn.utils.clip_grad_norm_(trained.parameters(), tcfg.max_grad_norm)
                optimizer.step()
                scheduler.step()
                optimizer.zero_grad(set_to_none=True)
                state.global_step += 1
                elapsed = max(time.perf_counter() - started, 1e-9)
                logs = {
                    "train_loss": state.epoch_loss_sum / state.step_in_epoch,
                    "learning_rate": scheduler.get_last_lr()[0],
                    "tokens_per_second": (state.tokens_seen - tokens_at_start) / elapsed,
                }
                progress.set_postfix(loss=f"{logs['train_loss']:.4f}", tok_s=f"{logs['tokens_per_second']:.0f}")
                if main and progress.disable and time.perf_counter() - last_progress_log >= PROGRESS_LOG_SECONDS:
                    last_progress_log = time.perf_counter()
                    log.info(
                        "epoch %d/%d, batch %d/%d, step %d/%d: loss %.4f, %.0f tokens/s",
                        state.epoch + 1,
                        tcfg.epochs,
                        state.step_in_epoch,
                        micro_per_epoch,
                        state.global_step,
                        total_steps,
                        logs["train_loss"],
                        logs["tokens_per_second"],
                    )
                if state.global_step % tcfg.log_every_steps == 0:
                    tracking.log_metrics(logs, step=state.global_step)
                    log.debug("step %d: %s", state.global_step, logs)
                for callback in all_callbacks:
                    callback.on_step_end(state, logs)
                if (
                    tcfg.save_every_steps
                    and state.global_step % tcfg.save_every_steps == 0
                    and state.step_in_epoch < micro_per_epoch
                ):
                    checkpoint_state()
            progress.close()
            loss_sum, loss_count = all_reduce_sum([state.epoch_loss_sum, max(state.step_in_epoch, 1)], ddp)
            epoch_loss = loss_sum / loss_count
            state.epoch += 1
            state.step_in_epoch = 0
            state.epoch_loss_sum = 0.0
            metrics: dict[str, Any] = {}
            value: float | None = None
            model.set_attn_implementation(eval_attention)
            if val_windows is not None:
                if main:  # rank 0 validates the whole split; the others wait for its metrics
                    metrics = evaluate_windowed(
                        model,
                        val_windows,
                        val_docs,
                        pad_token_id=tokenizer.pad_token_id,
                        batch_size=tcfg.eval_batch_size,
                        device=device,
                        decoding=mcfg.decoding,
                        crf=crf,
                    )
                metrics = broadcast_object(metrics, ddp)
                value = _metric_value(metrics, tcfg.metric)
            entry = {
                "epoch": state.epoch,
                "step": state.global_step,
                "train_loss": epoch_loss,
                **{k: v for k, v in metrics.items() if isinstance(v, (int, float))},
            }
            state.history.append(entry)
            tracking.log_metrics(
                {
                    "epoch": state.epoch,
                    "train_loss_epoch": epoch_loss,
                    **{f"val_{k}": v for k, v in metrics.items() if isinstance(v, (int, float))},
                    "val": {"per_type": metrics.get("per_type", {})},
                },
                step=state.global_step,
            )
            if value is None or _improved(value, state.best_metric, tcfg.metric):
                state.best_metric, state.best_epoch = value, state.epoch
                state.epochs_without_improvement = 0
                if main:
                    save_model_checkpoint(
                        output_dir / MODEL_DIRNAME,
                        model,
                        tokenizer,
                        {**metadata, "metrics": metrics, "epoch": state.epoch, "global_step": state.global_step},
                        crf=crf,
                    )
            else:
                state.epochs_without_improvement += 1
            if main:
                log.info(
                    "epoch %d: train loss %.4f, val %s %s (best %s at epoch %s)",
                    state.epoch,
                    epoch_loss,
                    tcfg.metric,
                    f"{value:.4f}" if value is not None else "n/a",
                    f"{state.best_metric:.4f}" if state.best_metric is not None else "n/a",
                    state.best_epoch,
                )
            for callback in all_callbacks:
                callback.on_evaluate(state, metrics, value)
            checkpoint_state()
        if state.epoch >= tcfg.epochs and state.stop_reason is None:
            state.stop_reason = "completed all epochs"
        for callback in all_callbacks:
            callback.on_train_end(state)
        status = "FINISHED"
    except KeyboardInterrupt:
        status = "KILLED"
        raise
    finally:
        if own_tracking and status != "FINISHED":
            tracking.end(status)

    from resume_ner.training.checkpoint import read_metadata

    barrier(ddp)  # rank 0 has written the best model
    best_metrics = read_metadata(output_dir / MODEL_DIRNAME).get("metrics", {})
    elapsed = time.perf_counter() - started
    tokens = all_reduce_sum([state.tokens_seen - tokens_at_start], ddp)[0]
    result = TrainResult(
        output_dir=str(output_dir),
        model_dir=str(output_dir / MODEL_DIRNAME),
        metric=tcfg.metric,
        best_metric=state.best_metric,
        best_epoch=state.best_epoch,
        metrics=best_metrics,
        history=state.history,
        global_step=state.global_step,
        epochs_completed=state.epoch,
        stop_reason=state.stop_reason,
        data_fingerprint=fingerprint,
        config_hash=config.config_hash(),
        train_seconds=elapsed,
        tokens_per_second=tokens / max(elapsed, 1e-9),
        run_id=getattr(tracking, "run_id", None),
        tracking_uri=redact_credentials(tracking.tracking_uri) if getattr(tracking, "tracking_uri", None) else None,
        derived=derived,
    )
    if not main:
        return result
    write_json_atomic(output_dir / RESULT_FILE, result.to_dict())
    tracking.log_metrics({f"best_val_{k}": v for k, v in best_metrics.items() if isinstance(v, (int, float))})
    tracking.log_artifact(output_dir / RESULT_FILE)
    tracking.log_artifact(output_dir / CONFIG_FILE)
    if config.tracking.log_checkpoint:
        tracking.log_artifacts(output_dir / MODEL_DIRNAME, artifact_path=MODEL_DIRNAME)
    if own_tracking:
        tracking.end("FINISHED")
    return result
