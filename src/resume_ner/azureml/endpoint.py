"""An AzureML managed online endpoint and its deployment of a registered model version (an MLflow pyfunc model,
``resume_ner.serving.mlflow_model``).

AzureML deploys an MLflow model in one of two ways:

* with the project's AzureML environment and a scoring script (the default): the deployment runs the project image
  (``jobs.default_environment``, which holds ``resume-ner``) and ``azureml/score.py``, copied into a code
  directory of its own (the package directory would shadow the standard library: ``azureml/select.py``).
  ``score.init`` loads the model with ``mlflow.pyfunc.load_model`` from ``$AZUREML_MODEL_DIR``; ``score.run``
  answers what ``mlflow models serve`` answers, with 400s for bad requests. It needs nothing outside the image
  and the workspace, which is why it is the default. The image must also hold AzureML's inference server
  (``azureml-inference-server-http``), which starts the script; the project's AzureML image does not yet
  (docs/azureml.md, "Online endpoint").
* no-code (``mlflow_no_code=True``): no environment and no script; AzureML builds an environment from the model's
  ``requirements.txt``/``conda.yaml`` and serves it with its own MLflow scoring script. The model must be
  registered in the workspace as ``mlflow_model`` (a local path is uploaded as one), and its first requirement,
  ``resume-ner==<version>``, must install from an index the workspace reaches, which a private package is not
  unless the team publishes it.

Every deployment sets ``HF_HUB_OFFLINE=1``: the checkpoint is in the model, nothing is downloaded. ``azure.ai.ml``
is imported inside the functions that need it.
"""

from __future__ import annotations

import json
import re
import shutil
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

import yaml

from resume_ner.azureml.jobs import AZUREML_PREFIX, default_environment, job_environment
from resume_ner.config import ResumeNerConfig
from resume_ner.errors import ConfigError
from resume_ner.io import write_text_atomic
from resume_ner.serving.mlflow_model import served_checkpoint

if TYPE_CHECKING:
    from azure.ai.ml.entities import ManagedOnlineDeployment, ManagedOnlineEndpoint, Model, ProbeSettings

SCORING_SCRIPT = "score.py"
CODE_DIRNAME = "code"
ENDPOINT_FILE = "endpoint.yaml"
DEPLOYMENT_FILE = "deployment.yaml"
AUTH_MODES = ("key", "aml_token")
DEFAULT_DEPLOYMENT = "blue"
DEFAULT_INSTANCE_TYPE = "Standard_DS3_v2"
DEFAULT_REQUEST_TIMEOUT_MS = 30_000  # a long resume is several windows; AzureML's own default is 5 s
DEFAULT_ENVIRONMENT_VARIABLES = {"HF_HUB_OFFLINE": "1"}
PROBE_FIELDS = ("initial_delay", "period", "timeout", "success_threshold", "failure_threshold")
# Seconds; the liveness probe waits for init() to load the model (AzureML restarts a container that fails it).
DEFAULT_LIVENESS_PROBE = {
    "initial_delay": 30,
    "period": 10,
    "timeout": 5,
    "success_threshold": 1,
    "failure_threshold": 30,
}
DEFAULT_READINESS_PROBE = {
    "initial_delay": 10,
    "period": 10,
    "timeout": 5,
    "success_threshold": 1,
    "failure_threshold": 30,
}
# AzureML's rule for endpoint and deployment names: 3 to 32 letters, digits and dashes, starting with a letter.
NAME_PATTERN = re.compile(r"[A-Za-z][A-Za-z0-9-]{1,30}[A-Za-z0-9]")


def _check_name(what: str, name: str) -> None:
    if not NAME_PATTERN.fullmatch(name):
        raise ConfigError(
            f"{what} {name!r}: AzureML takes 3 to 32 letters, digits and dashes, starting with a letter "
            "and not ending with a dash"
        )


def create_online_endpoint(
    name: str, *, auth_mode: str = "key", description: str | None = None, tags: Mapping[str, str] | None = None
) -> ManagedOnlineEndpoint:
    """A managed online endpoint ``name`` whose callers sign in with a key (``auth_mode="key"``) or an AzureML
    token (``"aml_token"``). Its traffic is set when a deployment is submitted (``submit.deploy_online_endpoint``)."""
    from azure.ai.ml.entities import ManagedOnlineEndpoint

    _check_name("endpoint name", name)
    if auth_mode not in AUTH_MODES:
        raise ConfigError(f"auth_mode {auth_mode!r}: expected one of {', '.join(AUTH_MODES)}")
    return ManagedOnlineEndpoint(name=name, auth_mode=auth_mode, description=description, tags=dict(tags or {}))


def deployment_model(model: str | Path) -> str | Model:
    """``azureml:NAME:VERSION`` (a registered model) as is; a local path must be an MLflow model of this project
    (saved by ``serving.mlflow_model``), uploaded as an ``mlflow_model`` on submission."""
    text = str(model)
    if text.startswith(AZUREML_PREFIX):
        return text
    path = Path(text).expanduser()
    if served_checkpoint(path) is None:
        raise ConfigError(
            f"model {text!r}: not an MLflow model of resume-ner (no MLmodel with a checkpoint artifact); pass "
            "azureml:NAME:VERSION, or a folder saved by resume_ner.serving.mlflow_model (a registered "
            "version's mlflow_model artifacts)"
        )
    from azure.ai.ml.entities import Model

    return Model(path=str(path.resolve()), type="mlflow_model")


def _probe(what: str, settings: Mapping[str, int] | None, defaults: Mapping[str, int]) -> ProbeSettings:
    from azure.ai.ml.entities import ProbeSettings

    values = {**defaults, **(settings or {})}
    unknown = sorted(set(values) - set(PROBE_FIELDS))
    if unknown:
        raise ConfigError(f"{what}: unknown setting(s) {', '.join(unknown)}; expected {', '.join(PROBE_FIELDS)}")
    if any(not isinstance(value, int) or value < 0 for value in values.values()):
        raise ConfigError(f"{what}: every setting is a whole number of seconds or tries, 0 or more: {values}")
    return ProbeSettings(**values)


def write_scoring_code(directory: str | Path) -> Path:
    """Copy the scoring script into ``directory`` (created if missing), the deployment's code; ``directory``."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(Path(__file__).with_name(SCORING_SCRIPT), directory / SCORING_SCRIPT)
    return directory.resolve()


def create_online_deployment(
    model: str | Path,
    *,
    endpoint_name: str,
    name: str = DEFAULT_DEPLOYMENT,
    code_directory: str | Path | None = None,
    environment: str | None = None,
    mlflow_no_code: bool = False,
    instance_type: str = DEFAULT_INSTANCE_TYPE,
    instance_count: int = 1,
    request_timeout_ms: int = DEFAULT_REQUEST_TIMEOUT_MS,
    max_concurrent_requests_per_instance: int = 1,
    liveness_probe: Mapping[str, int] | None = None,
    readiness_probe: Mapping[str, int] | None = None,
    environment_variables: Mapping[str, str] | None = None,
    tags: Mapping[str, str] | None = None,
) -> ManagedOnlineDeployment:
    """The deployment ``name`` of ``model`` (``azureml:NAME:VERSION`` or a local MLflow model folder) behind
    ``endpoint_name`` (see the module docstring for the two ways).

    Default: the scoring script is copied into ``code_directory`` and runs in ``environment`` (``azureml:NAME:VERSION``
    or an image; default ``jobs.default_environment``). ``mlflow_no_code``: neither is given. Probes: the
    ``PROBE_FIELDS`` over ``DEFAULT_LIVENESS_PROBE`` / ``DEFAULT_READINESS_PROBE``; ``environment_variables`` are
    added to ``HF_HUB_OFFLINE=1``.
    """
    from azure.ai.ml.entities import CodeConfiguration, ManagedOnlineDeployment, OnlineRequestSettings

    _check_name("deployment name", name)
    _check_name("endpoint name", endpoint_name)
    if instance_count < 1 or max_concurrent_requests_per_instance < 1 or request_timeout_ms < 1:
        raise ConfigError(
            f"instance_count ({instance_count}), max_concurrent_requests_per_instance "
            f"({max_concurrent_requests_per_instance}) and request_timeout_ms ({request_timeout_ms}) must be at least 1"
        )
    if mlflow_no_code and (environment or code_directory):
        raise ConfigError(
            "a no-code MLflow deployment takes no environment nor code: AzureML builds them from the model"
        )
    if not mlflow_no_code and code_directory is None:
        raise ConfigError("code_directory: the directory to copy the scoring script into (the deployment's code)")
    serving: dict[str, Any] = {}
    if code_directory is not None:
        serving = {
            "code_configuration": CodeConfiguration(
                code=str(write_scoring_code(code_directory)), scoring_script=SCORING_SCRIPT
            ),
            "environment": job_environment(environment or default_environment(ResumeNerConfig())),
        }
    return ManagedOnlineDeployment(
        name=name,
        endpoint_name=endpoint_name,
        model=deployment_model(model),
        instance_type=instance_type,
        instance_count=instance_count,
        request_settings=OnlineRequestSettings(
            request_timeout_ms=request_timeout_ms,
            max_concurrent_requests_per_instance=max_concurrent_requests_per_instance,
        ),
        liveness_probe=_probe("liveness probe", liveness_probe, DEFAULT_LIVENESS_PROBE),
        readiness_probe=_probe("readiness probe", readiness_probe, DEFAULT_READINESS_PROBE),
        environment_variables={**DEFAULT_ENVIRONMENT_VARIABLES, **dict(environment_variables or {})},
        tags=dict(tags or {}),
        **serving,
    )


def write_endpoint_files(
    directory: str | Path, endpoint: ManagedOnlineEndpoint, deployment: ManagedOnlineDeployment
) -> tuple[Path, Path]:
    """Write ``endpoint.yaml`` and ``deployment.yaml`` (``az ml online-endpoint create -f``, ``az ml
    online-deployment create -f``, ``load_online_endpoint``/``load_online_deployment`` read them) into
    ``directory``; their paths."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    written = []
    for file_name, entity in ((ENDPOINT_FILE, endpoint), (DEPLOYMENT_FILE, deployment)):
        plain = json.loads(json.dumps(entity._to_dict()))  # the SDK's YAML form, as plain dicts
        written.append(write_text_atomic(directory / file_name, yaml.safe_dump(plain, sort_keys=False)))
    return written[0], written[1]


def load_endpoint_files(directory: str | Path) -> tuple[ManagedOnlineEndpoint, ManagedOnlineDeployment]:
    """The endpoint and deployment that ``write_endpoint_files`` wrote into ``directory``; a ``ConfigError``
    naming the file and what is wrong with it."""
    from azure.ai.ml import load_online_deployment, load_online_endpoint
    from azure.ai.ml.entities import ManagedOnlineDeployment, ManagedOnlineEndpoint
    from azure.ai.ml.exceptions import MlException
    from marshmallow.exceptions import ValidationError

    def load(file_name: str, loader: Any, kind: type, what: str) -> Any:
        path = Path(directory) / file_name
        try:
            entity = loader(path)
        except (OSError, MlException, ValidationError) as exc:
            first = next((line.strip() for line in str(exc).splitlines() if line.strip()), type(exc).__name__)
            raise ConfigError(
                f"{path}: not an AzureML managed online {what} ({first}); write one with "
                "`resume-ner azureml build --kind endpoint --output DIR`"
            ) from None
        if not isinstance(entity, kind):
            raise ConfigError(f"{path}: a {type(entity).__name__}, not a managed online {what}")
        return entity

    return (
        load(ENDPOINT_FILE, load_online_endpoint, ManagedOnlineEndpoint, "endpoint"),
        load(DEPLOYMENT_FILE, load_online_deployment, ManagedOnlineDeployment, "deployment"),
    )
