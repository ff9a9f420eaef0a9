"""The MLflow pyfunc model of a registered version: a ``PythonModel`` that extracts entities with the project's
``Predictor`` (whole documents in overlapping windows, the checkpoint's decoding or CRF, span post-processing), so
``mlflow.pyfunc.load_model`` and ``mlflow models serve`` predict what ``resume-ner predict`` predicts.

Input: a DataFrame with a string column ``text`` (one resume per row). Output: a DataFrame with a column
``entities``: per row, a list of ``{"label", "start", "end", "text", "score"}`` (character offsets into the row's
text, end exclusive). A request that cannot be answered (a missing or non-string text, an empty one, one longer
than ``max_text_chars``) raises ``MlflowException`` with ``INVALID_PARAMETER_VALUE``, which the scoring server
answers with HTTP 400 and the message, naming the row.

Settings (``model_config``, given when the model is saved, overridable by ``mlflow.pyfunc.load_model(...,
model_config=...)``): ``device`` (``auto``), ``batch_size`` (32 windows), ``precision`` (``auto``),
``max_text_chars`` (1,000,000), ``max_batch_texts`` (16: the most texts of concurrent requests predicted together),
``reuse_freed_memory`` (true: the serving process keeps freed memory for its next forward passes, as ``resume-ner
predict`` does; ``resume_ner.training.allocator``).
"""

# No ``from __future__ import annotations``: MLflow inspects ``predict``'s type hints when the class is created and
# warns about hints it cannot resolve (postponed ones are strings). A DataFrame hint is not one it builds a signature
# from, so the model keeps the signature given when it is saved (``mlflow_model.serving_signature``).
import threading
from typing import Any

import pandas as pd
from mlflow.exceptions import MlflowException
from mlflow.pyfunc.model import PythonModel, PythonModelContext

from resume_ner.inference import Predictor
from resume_ner.serving.schema import CHECKPOINT_ARTIFACT, DEFAULT_MODEL_CONFIG, ENTITIES_COLUMN, TEXT_COLUMN
from resume_ner.training.allocator import reuse_freed_memory


class _Request:
    """One request's texts waiting to be predicted, then its entities (or the error of its batch)."""

    def __init__(self, texts: list[str]) -> None:
        self.texts = texts
        self.entities: list[list[dict[str, Any]]] | None = None
        self.error: BaseException | None = None


class _Batcher:
    """Predicts the texts of concurrent requests together. The scoring server runs each request in a thread; a
    request queues its texts and waits for the model; whoever gets the model takes every queued request (up to
    ``max_batch_texts`` texts), predicts them in one call and hands each its entities. One request alone is
    predicted at once, with no waiting for others; under load the batches fill up, as ``resume-ner predict``'s do."""

    def __init__(self, predictor: Predictor, max_batch_texts: int) -> None:
        self.predictor = predictor
        self.max_batch_texts = max_batch_texts
        self._queue: list[_Request] = []
        self._queue_lock = threading.Lock()
        self._model_lock = threading.Lock()  # one forward pass at a time: it uses every core

    def predict(self, texts: list[str]) -> list[list[dict[str, Any]]]:
        request = _Request(texts)
        with self._queue_lock:
            self._queue.append(request)
        while request.entities is None and request.error is None:
            with self._model_lock:
                if request.entities is None and request.error is None:
                    self._predict_queued()
        if request.error is not None:
            raise request.error
        assert request.entities is not None
        return request.entities

    def _predict_queued(self) -> None:
        """Predict the queued requests in one call (the caller holds the model)."""
        with self._queue_lock:
            batch: list[_Request] = []
            count = 0
            while self._queue and (not batch or count + len(self._queue[0].texts) <= self.max_batch_texts):
                batch.append(self._queue.pop(0))
                count += len(batch[-1].texts)
        try:
            found = self.predictor.predict([text for request in batch for text in request.texts])
        except Exception as exc:  # every request of the batch gets the error, as if it had run alone
            for request in batch:
                request.error = exc
            return
        start = 0
        for request in batch:
            request.entities = [
                [e.to_dict() for e in entities] for entities in found[start : start + len(request.texts)]
            ]
            start += len(request.texts)


class ResumeNerModel(PythonModel):
    """Entity extraction from resume texts with a trained checkpoint (see the module docstring)."""

    def __init__(self) -> None:
        self.batcher: _Batcher | None = None
        self.max_text_chars = DEFAULT_MODEL_CONFIG["max_text_chars"]

    def load_context(self, context: PythonModelContext) -> None:
        """Load the checkpoint of the ``checkpoint`` artifact with the model's settings."""
        settings = {**DEFAULT_MODEL_CONFIG, **(context.model_config or {})}  # MLflow drops unknown keys, warning
        self.max_text_chars = int(settings["max_text_chars"])
        if settings["reuse_freed_memory"]:
            reuse_freed_memory()  # as `resume-ner predict`: forward passes keep their buffers
        predictor = Predictor(
            context.artifacts[CHECKPOINT_ARTIFACT],
            device=str(settings["device"]),
            batch_size=int(settings["batch_size"]),
            precision=settings["precision"],
        )
        self.batcher = _Batcher(predictor, int(settings["max_batch_texts"]))

    def predict(
        self, context: PythonModelContext, model_input: pd.DataFrame, params: dict[str, Any] | None = None
    ) -> pd.DataFrame:
        """The entities of each row's ``text``, in row order."""
        if self.batcher is None:
            raise MlflowException("the model is not loaded: load it with mlflow.pyfunc.load_model")
        texts = checked_texts(model_input, self.max_text_chars)
        return pd.DataFrame({ENTITIES_COLUMN: self.batcher.predict(texts)})


def checked_texts(model_input: pd.DataFrame | list[str], max_text_chars: int) -> list[str]:
    """The texts of ``model_input`` (a DataFrame with a ``text`` column, or a list of strings); an
    ``INVALID_PARAMETER_VALUE`` ``MlflowException`` naming the first row that is missing, not a string, empty or
    longer than ``max_text_chars``."""
    if isinstance(model_input, pd.DataFrame):
        if TEXT_COLUMN not in model_input.columns:
            raise MlflowException.invalid_parameter_value(
                f"the input has no {TEXT_COLUMN!r} column (columns: {', '.join(map(str, model_input.columns))}); "
                f'send one resume per row, e.g. {{"dataframe_records": [{{"{TEXT_COLUMN}": "Jane Doe ..."}}]}}'
            )
        values: list[object] = list(model_input[TEXT_COLUMN])
    elif isinstance(model_input, list):
        values = list(model_input)
    else:
        raise MlflowException.invalid_parameter_value(
            f"expected a DataFrame with a {TEXT_COLUMN!r} column or a list of strings, got {type(model_input).__name__}"
        )
    if not values:
        raise MlflowException.invalid_parameter_value("the input has no rows: send at least one resume text")
    texts: list[str] = []
    for row, value in enumerate(values):
        if not isinstance(value, str):
            raise MlflowException.invalid_parameter_value(
                f"row {row}: {TEXT_COLUMN} must be a string, got {type(value).__name__} ({str(value)[:40]!r})"
            )
        if not value.strip():
            raise MlflowException.invalid_parameter_value(f"row {row}: {TEXT_COLUMN} is empty")
        if len(value) > max_text_chars:
            raise MlflowException.invalid_parameter_value(
                f"row {row}: {TEXT_COLUMN} has {len(value):,} characters, more than the model's max_text_chars "
                f"({max_text_chars:,}); split the document or raise max_text_chars in model_config"
            )
        texts.append(value)
    return texts
