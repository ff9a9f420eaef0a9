"""The scoring script of an AzureML online deployment (``azureml.endpoint``): AzureML's inference server
(``azureml-inference-server-http``) imports this file, calls ``init()`` once, then ``run(raw_data)`` with each
request's body as a string.

``init`` loads the MLflow pyfunc model of a registered version from ``$AZUREML_MODEL_DIR`` (the folder holding
``MLmodel``: that directory itself, or its one subdirectory that holds one). ``run`` reads MLflow's scoring
protocol (``dataframe_records``, ``dataframe_split``, ``instances`` or ``inputs``, with the ``text`` column) and
answers what ``mlflow models serve`` answers: ``{"predictions": [{"entities": [...]}, ...]}``, one row per text.
A request the model cannot answer (malformed JSON, no ``text`` column, an empty text...) gets HTTP 400 with
MLflow's error JSON, ``{"error_code": ..., "message": ...}``: the server sends a returned ``flask.Response`` as it
is and wraps anything else as a 200 JSON answer.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import pandas as pd
from flask import Response
from mlflow.exceptions import MlflowException
from mlflow.protos.databricks_pb2 import BAD_REQUEST
from mlflow.pyfunc import PyFuncModel, load_model
from mlflow.pyfunc.scoring_server import infer_and_parse_data

MODEL_DIR_ENV = "AZUREML_MODEL_DIR"
MLMODEL_FILE = "MLmodel"

model: PyFuncModel | None = None


def mlflow_model_dir(root: str | Path) -> Path:
    """The MLflow model under ``root``: ``root`` itself when it holds ``MLmodel``, else its one subdirectory that
    does (AzureML mounts a registered folder under its own name)."""
    root = Path(root)
    if (root / MLMODEL_FILE).is_file():
        return root
    found = sorted(child for child in root.iterdir() if (child / MLMODEL_FILE).is_file()) if root.is_dir() else []
    if len(found) != 1:
        raise RuntimeError(
            f"{MODEL_DIR_ENV}={root}: expected one MLflow model ({MLMODEL_FILE}) in it or in one of its "
            f"subdirectories, found {len(found)}; deploy a model saved by resume_ner.serving.mlflow_model"
        )
    return found[0]


def init() -> None:
    """Load the deployment's model (once, when the server starts)."""
    global model
    root = os.environ.get(MODEL_DIR_ENV)
    if not root:
        raise RuntimeError(f"${MODEL_DIR_ENV} is not set: AzureML sets it to the deployment's model folder")
    model = load_model(str(mlflow_model_dir(root)))


def _error(exc: MlflowException) -> Response:
    return Response(exc.serialize_as_json(), status=exc.get_http_status_code(), mimetype="application/json")


def run(raw_data: str) -> dict[str, Any] | Response:
    """The entities of each text of the request, or a 4xx error response naming what is wrong with it."""
    if model is None:
        raise RuntimeError("init() has not loaded the model")
    try:
        try:
            request = json.loads(raw_data)
        except ValueError as exc:
            raise MlflowException(f"the request is not valid JSON: {exc}", error_code=BAD_REQUEST) from None
        if not isinstance(request, dict):
            raise MlflowException(
                'the request must be a JSON object, e.g. {"dataframe_records": [{"text": "Jane Doe ..."}]}',
                error_code=BAD_REQUEST,
            )
        frame = infer_and_parse_data(request, model.metadata.get_input_schema())
        predictions = model.predict(frame)
    except MlflowException as exc:
        return _error(exc)
    return {"predictions": pd.DataFrame(predictions).to_dict(orient="records")}
