"""Save and log a training's checkpoint as an MLflow pyfunc model (``serving.pyfunc``), the form a registered
version takes: ``mlflow.pyfunc.load_model``, ``mlflow models serve``, a KServe predictor of the project image
(``k8s.serving``) and an AzureML online deployment (``azureml.endpoint``) load it.

The saved model holds ``MLmodel`` (flavor ``python_function``, models from code: ``model_code.py``), the
checkpoint under ``artifacts/`` (safetensors weights, tokenizer, ``crf.safetensors`` of a CRF head), a
signature (input: a string column ``text``; output: ``entities``), an input example, and requirements pinned to
this environment's versions: ``resume-ner`` and what it needs to predict. A serving environment installs
``resume-ner`` from the project image or the team's package index (``docs/serving.md``).
"""

from __future__ import annotations

import tempfile
from importlib import metadata
from pathlib import Path
from typing import TYPE_CHECKING

from resume_ner import __version__
from resume_ner.layout import METADATA_FILE, MLFLOW_MODEL_DIRNAME, MODEL_DIRNAME
from resume_ner.serving.schema import (
    CHECKPOINT_ARTIFACT,
    DEFAULT_MODEL_CONFIG,
    ENTITIES_COLUMN,
    ENTITY_FIELDS,
    TEXT_COLUMN,
)

if TYPE_CHECKING:
    from mlflow.models.signature import ModelSignature

PACKAGE = "resume-ner"
INPUT_EXAMPLE = "Jane Doe\nSenior Data Engineer at Contoso, Seattle\nSkills: Python, SQL, Spark"


def serving_signature() -> ModelSignature:
    """Input: one string column ``text``; output: ``entities``, per row a list of entity objects."""
    from mlflow.models.signature import ModelSignature
    from mlflow.types.schema import Array, ColSpec, Object, Property, Schema

    entity = Object([Property(name, kind) for name, kind in ENTITY_FIELDS])
    return ModelSignature(
        inputs=Schema([ColSpec("string", TEXT_COLUMN)]),
        outputs=Schema([ColSpec(Array(entity), ENTITIES_COLUMN)]),
    )


def pinned_requirements() -> list[str]:
    """``resume-ner==<version>`` and its own requirements (no extras), pinned to the installed versions."""
    pinned = [f"{PACKAGE}=={__version__}"]
    for requirement in metadata.requires(PACKAGE) or []:
        if "extra ==" in requirement:
            continue
        name = requirement.split(";")[0].strip()
        for separator in "<>=!~[ ":
            name = name.split(separator)[0]
        pinned.append(f"{name}=={metadata.version(name).split('+')[0]}")  # no local label (+cpu): any build
    return pinned


def save_serving_model(checkpoint_dir: str | Path, path: str | Path) -> Path:
    """Save the checkpoint directory ``checkpoint_dir`` as an MLflow pyfunc model at ``path`` (which must not
    exist); MLflow checks the input example through the model on the way."""
    import mlflow.pyfunc
    import pandas as pd

    checkpoint_dir = Path(checkpoint_dir)
    if not (checkpoint_dir / METADATA_FILE).is_file():
        raise FileNotFoundError(f"{checkpoint_dir} is not a model directory (no {METADATA_FILE})")
    mlflow.pyfunc.save_model(
        path=str(path),
        python_model=str(Path(__file__).with_name("model_code.py")),
        artifacts={CHECKPOINT_ARTIFACT: str(checkpoint_dir)},
        signature=serving_signature(),
        input_example=pd.DataFrame({TEXT_COLUMN: [INPUT_EXAMPLE]}),
        pip_requirements=pinned_requirements(),
        model_config=dict(DEFAULT_MODEL_CONFIG),
        metadata={"resume_ner_version": __version__},
    )
    return Path(path)


def served_checkpoint(mlflow_model_dir: str | Path) -> Path | None:
    """The checkpoint directory inside a saved (or downloaded) pyfunc model of this project; None when
    ``mlflow_model_dir`` is not one."""
    import yaml

    mlmodel = Path(mlflow_model_dir) / "MLmodel"
    if not mlmodel.is_file():
        return None
    flavor = (yaml.safe_load(mlmodel.read_text(encoding="utf-8")) or {}).get("flavors", {}).get("python_function", {})
    relative = (flavor.get("artifacts") or {}).get(CHECKPOINT_ARTIFACT, {}).get("path")
    if not relative or not (Path(mlflow_model_dir) / relative / METADATA_FILE).is_file():
        return None
    return Path(mlflow_model_dir) / relative


def log_serving_model(run_id: str, tracking_uri: str, checkpoint_dir: str | Path | None = None) -> str:
    """Log run ``run_id``'s checkpoint as an MLflow pyfunc model under the artifact path ``mlflow_model``; its
    ``runs:/`` URI. The checkpoint is ``checkpoint_dir``, else the run's ``model`` artifacts (downloaded). A model
    logged before (``mlflow_model/MLmodel`` present) is kept as it is. ``TrackingError`` when MLflow cannot be
    reached or written."""
    from mlflow import MlflowClient

    from resume_ner.tracking.mlflow import call_with_retry

    client = MlflowClient(tracking_uri=tracking_uri)
    uri = f"runs:/{run_id}/{MLFLOW_MODEL_DIRNAME}"
    logged = call_with_retry(
        f"list the artifacts of run {run_id}",
        lambda: client.list_artifacts(run_id, MLFLOW_MODEL_DIRNAME),
        tracking_uri=tracking_uri,
    )
    if any(Path(item.path).name == "MLmodel" for item in logged):
        return uri
    with tempfile.TemporaryDirectory(prefix="resume-ner-serving-") as scratch:
        if checkpoint_dir is None:
            checkpoint_dir = call_with_retry(
                f"download the {MODEL_DIRNAME} artifacts of run {run_id}",
                lambda: client.download_artifacts(run_id, MODEL_DIRNAME, scratch),
                tracking_uri=tracking_uri,
                transfer=True,
            )
        saved = save_serving_model(checkpoint_dir, Path(scratch) / MLFLOW_MODEL_DIRNAME)
        call_with_retry(
            f"log the MLflow model of run {run_id}",
            lambda: client.log_artifacts(run_id, str(saved), MLFLOW_MODEL_DIRNAME),
            tracking_uri=tracking_uri,
            transfer=True,
        )
    return uri
