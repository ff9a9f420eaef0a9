"""Checkpoints: Hugging Face-compatible model directories and resumable training states, written atomically.

A model directory holds ``config.json`` (with ``id2label``), ``model.safetensors``, the tokenizer files and
``resume_ner.json`` (label scheme, window settings, resolved config, data fingerprint, metrics, versions);
``transformers.pipeline("token-classification", model=DIR)`` loads it as is. A training state directory
(``checkpoints/checkpoint-<step>``) adds the optimizer, scheduler and RNG states and ``trainer_state.json``,
which is written last: a directory without it is incomplete and never resumed from.

Weights load from safetensors only: unpickling a ``pytorch_model.bin`` can run arbitrary code, so a model
directory or backbone whose weights are pickle files only is refused, unless the user opts in with
``RESUME_NER_ALLOW_PICKLE=1`` (then such weights load with ``torch.load(weights_only=True)``). An ONNX export
(``resume_ner.training.onnx_export``) is a model directory whose weights are ``model.onnx``.
"""

from __future__ import annotations

import json
import logging
import os
import re
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from importlib import metadata
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any, cast

from resume_ner.errors import CheckpointError, describe_os_error
from resume_ner.io import replace_dir_atomic, write_json_atomic
from resume_ner.layout import CRF_FILE, METADATA_FILE, ONNX_FILE, WEIGHTS_FILE

if TYPE_CHECKING:
    import torch
    from torchcrf import CRF
    from transformers import PreTrainedModel, PreTrainedTokenizerBase

log = logging.getLogger(__name__)

PICKLE_WEIGHTS_FILE = "pytorch_model.bin"
ALLOW_PICKLE_ENV = "RESUME_NER_ALLOW_PICKLE"
STATE_FILE = "trainer_state.json"
OPTIMIZER_FILE = "optimizer.pt"
SCHEDULER_FILE = "scheduler.pt"
RNG_FILE = "rng_state.pt"
CHECKPOINT_PREFIX = "checkpoint-"
REQUIRED_MODEL_FILES = ("config.json", "tokenizer.json", "tokenizer_config.json", METADATA_FILE)  # and weights


CHECKPOINT_PACKAGES = ("resume-ner", "torch", "transformers", "tokenizers", "safetensors")


def package_versions(names: tuple[str, ...] = CHECKPOINT_PACKAGES) -> dict[str, str]:
    """Versions of the installed packages among ``names`` (by default, those a checkpoint depends on)."""
    versions = {}
    for name in names:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
    return versions


def pickle_weights_allowed() -> bool:
    """True when the user opted in to pickle weights (``$RESUME_NER_ALLOW_PICKLE`` is 1, true or yes)."""
    return os.environ.get(ALLOW_PICKLE_ENV, "").strip().lower() in {"1", "true", "yes"}


def use_safetensors() -> bool | None:
    """``use_safetensors`` for ``from_pretrained``: True (safetensors only), or None when pickle weights are
    allowed (safetensors when present, else ``pytorch_model.bin`` through ``torch.load(weights_only=True)``)."""
    return None if pickle_weights_allowed() else True


def _pickle_refusal(directory: Path, pickled: list[str]) -> str:
    return (
        f"{directory} holds pickle weights only ({', '.join(pickled)}), and resume-ner loads safetensors only "
        "(unpickling can run arbitrary code). Convert them with model.save_pretrained(DIR, "
        f"safe_serialization=True), or, for files you trust, set {ALLOW_PICKLE_ENV}=1"
    )


def pickle_only_refusal(directory: Path) -> str | None:
    """Why the model directory ``directory`` cannot load: it has no safetensors weights, only pickle ones, and
    pickle is not allowed; else None."""
    directory = Path(directory)
    if not directory.is_dir() or pickle_weights_allowed() or any(directory.glob("*.safetensors")):
        return None
    pickled = sorted(p.name for p in directory.glob("pytorch_model*.bin"))
    return _pickle_refusal(directory, pickled) if pickled else None


def _weights_file(directory: Path) -> str:
    """The weights file of a checkpoint: ``model.safetensors``; ``model.onnx`` in an ONNX export; or
    ``pytorch_model.bin`` when it is the only one and pickle is allowed (``CheckpointError`` when it is not)."""
    if not (directory / WEIGHTS_FILE).exists() and (directory / ONNX_FILE).exists():
        return ONNX_FILE
    if (directory / WEIGHTS_FILE).exists() or not (directory / PICKLE_WEIGHTS_FILE).exists():
        return WEIGHTS_FILE
    if not pickle_weights_allowed():
        raise CheckpointError(f"checkpoint {_pickle_refusal(directory, [PICKLE_WEIGHTS_FILE])}")
    return PICKLE_WEIGHTS_FILE


def _staging_path(target: Path) -> Path:
    return target.with_name(f".{target.name}.tmp")


def _fresh_dir(staging: Path) -> Path:
    if staging.exists():
        shutil.rmtree(staging)
    staging.mkdir(parents=True)
    return staging


class _RecordingWriter:
    """The file object ``torch.save`` writes into: every write whole, and the ``OSError`` of a failed one kept,
    since torch reports it as a bare ``RuntimeError``."""

    def __init__(self, handle: Any) -> None:
        self.handle = handle
        self.error: OSError | None = None

    def write(self, data: Any) -> int:
        view = memoryview(data).cast("B")
        try:
            while view:
                view = view[self.handle.write(view) :]
        except OSError as exc:
            self.error = exc
            raise
        return len(data)

    def flush(self) -> None:
        self.handle.flush()


def _torch_save(obj: Any, path: Path) -> None:
    """``torch.save(obj, path)``; a failed write (disk full, ...) raises the ``OSError`` it was."""
    import torch

    with open(path, "wb", buffering=0) as handle:
        writer = _RecordingWriter(handle)
        try:
            torch.save(obj, cast(IO[bytes], writer))  # torch.save calls only write and flush on a file object
        except RuntimeError:
            if writer.error is None:
                raise
            raise writer.error from None


def _os_error_of(exc: Exception, path: Path) -> OSError | None:
    """The ``OSError`` behind a library's write error (safetensors says ``... (os error 28)``), or None."""
    if isinstance(exc, OSError):
        return exc
    match = re.search(r"os error (\d+)", str(exc))
    return OSError(int(match.group(1)), os.strerror(int(match.group(1))), str(path)) if match else None


@contextmanager
def _staged(target: Path, what: str) -> Iterator[Path]:
    """A fresh staging directory for ``target``; a failed write (disk full, no permission) removes it and
    raises ``CheckpointError`` saying the earlier checkpoints are untouched."""
    staging = _staging_path(target)
    try:
        yield _fresh_dir(staging)
    except Exception as exc:
        os_error = _os_error_of(exc, staging)
        if os_error is None:
            raise
        shutil.rmtree(staging, ignore_errors=True)
        raise CheckpointError(
            f"cannot write the {what} {target}: {describe_os_error(os_error)}; nothing was "
            "replaced, the earlier checkpoints are intact (free space or fix the permissions, "
            "then continue with --resume)"
        ) from exc


def _write_model_files(
    staging: Path,
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    metadata: dict[str, Any],
    crf: CRF | None,
) -> None:
    unwrapped = getattr(model, "module", model)
    unwrapped.save_pretrained(staging, safe_serialization=True)
    tokenizer.save_pretrained(staging)
    if crf is not None:
        from resume_ner.training.crf import save_crf

        save_crf(crf, staging)
    write_json_atomic(staging / METADATA_FILE, {**metadata, "versions": package_versions()})


def save_model_checkpoint(
    target: Path,
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    metadata: dict[str, Any],
    crf: CRF | None = None,
) -> Path:
    """Write a loadable model directory to ``target`` atomically (staging directory, then rename), with the
    scores of ``crf`` (a CRF head) as ``crf.safetensors``."""
    target = Path(target)
    with _staged(target, "model") as staging:
        _write_model_files(staging, model, tokenizer, metadata, crf)
    return replace_dir_atomic(staging, target)


def save_training_state(
    target: Path,
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    metadata: dict[str, Any],
    optimizer: torch.optim.Optimizer,
    scheduler: torch.optim.lr_scheduler.LRScheduler,
    rng_state: dict[str, Any],
    trainer_state: dict[str, Any],
    crf: CRF | None = None,
) -> Path:
    """Write a resumable checkpoint (model files + optimizer, scheduler, RNG, trainer state) atomically."""
    target = Path(target)
    with _staged(target, "training state") as staging:
        _write_model_files(staging, model, tokenizer, metadata, crf)
        _torch_save(optimizer.state_dict(), staging / OPTIMIZER_FILE)
        _torch_save(scheduler.state_dict(), staging / SCHEDULER_FILE)
        _torch_save(rng_state, staging / RNG_FILE)
        write_json_atomic(staging / STATE_FILE, trainer_state)  # last: marks the checkpoint complete
    return replace_dir_atomic(staging, target)


def _step_of(path: Path) -> int:
    match = re.fullmatch(rf"{CHECKPOINT_PREFIX}(\d+)", path.name)
    return int(match.group(1)) if match else -1


def list_training_states(checkpoints_dir: Path) -> list[Path]:
    """Complete training-state directories under ``checkpoints_dir``, oldest first."""
    checkpoints_dir = Path(checkpoints_dir)
    if not checkpoints_dir.is_dir():
        return []
    found = [p for p in checkpoints_dir.iterdir() if p.is_dir() and _step_of(p) >= 0 and (p / STATE_FILE).is_file()]
    return sorted(found, key=_step_of)


def prune_training_states(checkpoints_dir: Path, keep: int) -> None:
    """Delete all but the newest ``keep`` complete training states, and leftover staging directories."""
    checkpoints_dir = Path(checkpoints_dir)
    for leftover in checkpoints_dir.glob(f".{CHECKPOINT_PREFIX}*"):
        shutil.rmtree(leftover, ignore_errors=True)
    for old in list_training_states(checkpoints_dir)[:-keep]:
        shutil.rmtree(old, ignore_errors=True)


def latest_training_state(checkpoints_dir: Path) -> Path | None:
    """The newest training state that validates; broken ones are skipped with a warning."""
    for candidate in reversed(list_training_states(checkpoints_dir)):
        try:
            validate_checkpoint(candidate, training_state=True)
        except CheckpointError as exc:
            log.warning("skipping unusable checkpoint: %s", exc)
            continue
        return candidate
    return None


def load_training_state(directory: Path) -> dict[str, Any]:
    """Optimizer, scheduler and RNG states (loaded with ``weights_only=True``) and the trainer state."""
    import torch

    directory = Path(directory)
    validate_checkpoint(directory, training_state=True)
    try:
        return {
            "optimizer": torch.load(directory / OPTIMIZER_FILE, map_location="cpu", weights_only=True),
            "scheduler": torch.load(directory / SCHEDULER_FILE, map_location="cpu", weights_only=True),
            "rng": torch.load(directory / RNG_FILE, map_location="cpu", weights_only=True),
            "trainer_state": json.loads((directory / STATE_FILE).read_text(encoding="utf-8")),
        }
    except (OSError, RuntimeError, EOFError, ValueError) as exc:
        raise CheckpointError(f"checkpoint {directory}: cannot read its training state: {exc}") from exc


def read_metadata(directory: Path) -> dict[str, Any]:
    """The ``resume_ner.json`` of a model directory."""
    path = Path(directory) / METADATA_FILE
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise CheckpointError(
            f"checkpoint {directory}: {METADATA_FILE} is missing (not a resume-ner model directory)"
        ) from None
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise CheckpointError(f"checkpoint {directory}: {METADATA_FILE} is truncated or not JSON ({exc})") from None


def validate_checkpoint(directory: str | Path, *, training_state: bool = False) -> dict[str, Any]:
    """Check a model (or training-state) directory file by file and reload its weights and tokenizer.

    Returns its metadata; raises ``CheckpointError`` naming the first missing, truncated or inconsistent file.
    """
    directory = Path(directory)
    if not directory.is_dir():
        raise CheckpointError(f"checkpoint {directory} does not exist or is not a directory")
    weights = _weights_file(directory)
    required = [weights, *REQUIRED_MODEL_FILES]
    if training_state:
        required += [OPTIMIZER_FILE, SCHEDULER_FILE, RNG_FILE, STATE_FILE]
    for name in required:
        path = directory / name
        if not path.is_file():
            raise CheckpointError(f"checkpoint {directory}: {name} is missing")
        if path.stat().st_size == 0:
            raise CheckpointError(f"checkpoint {directory}: {name} is empty (truncated write?)")
    metadata = read_metadata(directory)
    crf_file = directory / CRF_FILE
    if metadata.get("head") == "crf" and (not crf_file.is_file() or crf_file.stat().st_size == 0):
        raise CheckpointError(
            f"checkpoint {directory}: {CRF_FILE} is missing or empty (the model was trained with a CRF head)"
        )
    for name in ("config.json", "tokenizer.json", "tokenizer_config.json") + ((STATE_FILE,) if training_state else ()):
        try:
            json.loads((directory / name).read_text(encoding="utf-8"))
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise CheckpointError(f"checkpoint {directory}: {name} is truncated or not JSON ({exc})") from None
    hf_config = json.loads((directory / "config.json").read_text(encoding="utf-8"))
    labels = metadata.get("label_scheme", {}).get("labels")
    id2label = hf_config.get("id2label", {})
    if labels is None or [id2label.get(str(i)) for i in range(len(labels))] != labels:
        raise CheckpointError(
            f"checkpoint {directory}: config.json id2label does not match the labels in {METADATA_FILE}"
        )
    try:
        _read_weights(directory / weights)
    except Exception as exc:  # safetensors and torch raise their own error types for truncated files
        raise CheckpointError(f"checkpoint {directory}: {weights} is truncated or corrupt ({exc})") from None
    try:
        from tokenizers import Tokenizer

        Tokenizer.from_file(str(directory / "tokenizer.json"))
    except Exception as exc:
        raise CheckpointError(f"checkpoint {directory}: tokenizer.json cannot be loaded ({exc})") from None
    return metadata


def _read_weights(path: Path) -> None:
    """Read every tensor of a weights file (pickle ones with ``weights_only=True``; an ONNX graph is checked
    whole)."""
    if path.name == ONNX_FILE:
        import onnx

        onnx.checker.check_model(str(path))
        return
    if path.name == PICKLE_WEIGHTS_FILE:
        import torch

        torch.load(path, map_location="cpu", weights_only=True)
        return
    from safetensors import safe_open

    with safe_open(str(path), framework="pt") as handle:
        for key in handle.keys():
            handle.get_tensor(key)


def load_model_checkpoint(directory: str | Path, device: str = "cpu") -> tuple[Any, Any, dict[str, Any]]:
    """Validate and load a model directory: (model in eval mode, fast tokenizer, metadata). Pickle weights only
    with ``$RESUME_NER_ALLOW_PICKLE=1`` (else ``CheckpointError``). An ONNX export's model is its graph on ONNX
    Runtime (``resume_ner.training.onnx_model``), with the same call and output."""
    import torch
    from transformers import AutoModelForTokenClassification, AutoTokenizer

    directory = Path(directory)
    metadata = validate_checkpoint(directory)
    tokenizer = AutoTokenizer.from_pretrained(directory, trust_remote_code=False)
    if _weights_file(directory) == ONNX_FILE:
        from resume_ner.training.onnx_model import OnnxTokenClassifier

        return OnnxTokenClassifier(directory / ONNX_FILE, torch.device(device)), tokenizer, metadata
    model = AutoModelForTokenClassification.from_pretrained(
        directory, use_safetensors=use_safetensors(), weights_only=True, trust_remote_code=False
    )
    model.to(device).eval()
    return model, tokenizer, metadata
