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
``max_text_chars`` (1,000,000).
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


class ResumeNerModel(PythonModel):
    """Entity extraction from resume texts with a trained checkpoint (see the module docstring)."""

    def __init__(self) -> None:
        self.predictor: Predictor | None = None
        self.max_text_chars = DEFAULT_MODEL_CONFIG["max_text_chars"]
        self._lock = threading.Lock()  # the scoring server runs requests in threads: one forward pass at a time

    def load_context(self, context: PythonModelContext) -> None:
        """Load the checkpoint of the ``checkpoint`` artifact with the model's settings."""
        settings = {**DEFAULT_MODEL_CONFIG, **(context.model_config or {})}  # MLflow drops unknown keys, warning
        self.max_text_chars = int(settings["max_text_chars"])
        self.predictor = Predictor(
            context.artifacts[CHECKPOINT_ARTIFACT],
            device=str(settings["device"]),
            batch_size=int(settings["batch_size"]),
            precision=settings["precision"],
        )

    def predict(
        self, context: PythonModelContext, model_input: pd.DataFrame, params: dict[str, Any] | None = None
    ) -> pd.DataFrame:
        """The entities of each row's ``text``, in row order."""
        if self.predictor is None:
            raise MlflowException("the model is not loaded: load it with mlflow.pyfunc.load_model")
        texts = checked_texts(model_input, self.max_text_chars)
        with self._lock:
            found = self.predictor.predict(texts)
        return pd.DataFrame({ENTITIES_COLUMN: [[entity.to_dict() for entity in entities] for entities in found]})


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
