"""The AzureML online endpoint of a registered version: the endpoint and deployment YAML that ``azure.ai.ml`` reads
back into equal entities and turns into REST objects; the scoring script on a real saved MLflow model, as AzureML's
inference server calls it; ``azureml build --kind endpoint`` and ``azureml submit --endpoint`` against a FAKE
MLClient. Nothing contacts Azure."""

from __future__ import annotations

import importlib.util
import json
import re
from pathlib import Path
from types import ModuleType

import pytest
from azure.ai.ml import load_online_deployment, load_online_endpoint
from azure.ai.ml._utils._endpoint_utils import validate_scoring_script

from support.fake_ml_client import FakeMLClient
from resume_ner.azureml import endpoint, submit
from resume_ner.cli.main import main
from resume_ner.errors import ConfigError
from resume_ner.inference import Predictor
from resume_ner.serving.mlflow_model import save_serving_model

LOCATION = "westeurope"  # what the REST objects need; no workspace is asked


@pytest.fixture(scope="module")
def models_root(entity_model_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A folder as AzureML mounts a registered model: ``$AZUREML_MODEL_DIR/mlflow_model/MLmodel``."""
    root = tmp_path_factory.mktemp("azureml-models")
    save_serving_model(entity_model_dir, root / "mlflow_model")
    return root


def _built(tmp_path: Path, model: str, **options) -> tuple:
    online_endpoint = endpoint.create_online_endpoint("resume-ner-test", tags={"team": "nlp"})
    code = None if options.get("mlflow_no_code") else tmp_path / "out" / "code"
    deployment = endpoint.create_online_deployment(model, endpoint_name="resume-ner-test", code_directory=code,
                                                   **options)
    return online_endpoint, deployment


@pytest.mark.parametrize("no_code", [False, True], ids=["scoring-script", "mlflow-no-code"])
@pytest.mark.parametrize("registered", [True, False], ids=["registered", "local"])
def test_the_yaml_loads_back_into_equal_entities_that_become_rest_objects(tmp_path, models_root, no_code,
                                                                          registered):
    model = "azureml:resume-ner:3" if registered else str(models_root / "mlflow_model")
    options = {"mlflow_no_code": True} if no_code else {"environment": "azureml:resume-ner-azureml:2"}
    built = _built(tmp_path, model, **options)
    written = endpoint.write_endpoint_files(tmp_path / "out", *built)
    assert written == (tmp_path / "out" / "endpoint.yaml", tmp_path / "out" / "deployment.yaml")
    loaded = (load_online_endpoint(written[0]), load_online_deployment(written[1]))
    assert [entity._to_dict() for entity in loaded] == [entity._to_dict() for entity in built]
    assert endpoint.load_endpoint_files(tmp_path / "out")[1]._to_dict() == built[1]._to_dict()

    rest_endpoint = loaded[0]._to_rest_online_endpoint(LOCATION)
    rest_deployment = loaded[1]._to_rest_object(location=LOCATION)
    assert rest_endpoint.properties.auth_mode == "Key" and rest_endpoint.tags == {"team": "nlp"}
    assert rest_deployment.properties.instance_type == "Standard_DS3_v2"
    assert rest_deployment.properties.model == ("resume-ner:3" if registered else None)  # local: uploaded first
    if no_code:
        assert rest_deployment.properties.code_configuration is None and loaded[1].environment is None
    else:
        assert rest_deployment.properties.environment_id == "resume-ner-azureml:2"
        assert rest_deployment.properties.code_configuration.scoring_script == "score.py"
        validate_scoring_script(loaded[1])  # what online_deployments.begin_create_or_update checks first
    if not registered:
        assert loaded[1].model.type == "mlflow_model" and loaded[1].model.path == str(models_root / "mlflow_model")


def test_the_defaults(tmp_path, monkeypatch):
    monkeypatch.setenv("RESUME_NER_IMAGE", "myacr.azurecr.io/resume-ner:1.2.3")
    online_endpoint, deployment = _built(tmp_path, "azureml:resume-ner:3")
    assert online_endpoint.auth_mode == "key"
    assert deployment.name == "blue" and deployment.endpoint_name == "resume-ner-test"
    assert (deployment.instance_type, deployment.instance_count) == ("Standard_DS3_v2", 1)
    assert deployment.environment.image == "myacr.azurecr.io/resume-ner:1.2.3-azureml"  # as the jobs
    assert deployment.environment_variables == {"HF_HUB_OFFLINE": "1"}
    assert deployment.request_settings.request_timeout_ms == 30_000
    assert deployment.request_settings.max_concurrent_requests_per_instance == 1
    assert deployment.liveness_probe.initial_delay == 30 and deployment.readiness_probe.failure_threshold == 30
    code = Path(deployment.code_configuration.code)
    assert code == (tmp_path / "out" / "code").resolve() and [p.name for p in code.iterdir()] == ["score.py"]
    assert (code / "score.py").read_bytes() == Path(endpoint.__file__).with_name("score.py").read_bytes()


def test_settings_reach_the_deployment(tmp_path):
    _, deployment = _built(tmp_path, "azureml:resume-ner:3", name="green", instance_type="Standard_F4s_v2",
                           instance_count=2, request_timeout_ms=60_000, max_concurrent_requests_per_instance=2,
                           liveness_probe={"initial_delay": 120}, readiness_probe={"period": 5},
                           environment_variables={"RESUME_NER_X": "1"})
    assert (deployment.name, deployment.instance_type, deployment.instance_count) == ("green", "Standard_F4s_v2", 2)
    assert deployment.request_settings.request_timeout_ms == 60_000
    assert deployment.liveness_probe.initial_delay == 120 and deployment.liveness_probe.period == 10
    assert deployment.readiness_probe.period == 5
    assert deployment.environment_variables == {"HF_HUB_OFFLINE": "1", "RESUME_NER_X": "1"}
    online_endpoint = endpoint.create_online_endpoint("resume-ner-test", auth_mode="aml_token")
    assert online_endpoint._to_rest_online_endpoint(LOCATION).properties.auth_mode == "AMLToken"


@pytest.mark.parametrize("call, message", [
    (lambda tmp: endpoint.create_online_endpoint("9lives"), "endpoint name '9lives': AzureML takes 3 to 32"),
    (lambda tmp: endpoint.create_online_endpoint("resume-ner", auth_mode="aad"), "auth_mode 'aad': expected one"),
    (lambda tmp: _built(tmp, str(tmp)), "not an MLflow model of resume-ner"),
    (lambda tmp: _built(tmp, "azureml:m:1", name="b"), "deployment name 'b'"),
    (lambda tmp: _built(tmp, "azureml:m:1", mlflow_no_code=True, environment="azureml:e:1"),
     "a no-code MLflow deployment takes no environment"),
    (lambda tmp: _built(tmp, "azureml:m:1", liveness_probe={"delay": 3}), "liveness probe: unknown setting(s) delay"),
    (lambda tmp: _built(tmp, "azureml:m:1", instance_count=0), "instance_count (0)"),
    (lambda tmp: endpoint.create_online_deployment("azureml:m:1", endpoint_name="resume-ner"), "code_directory"),
], ids=["endpoint-name", "auth-mode", "not-a-model", "deployment-name", "no-code-environment", "probe", "count",
        "no-code-dir"])
def test_what_azureml_would_refuse_is_refused_before(tmp_path, call, message):
    with pytest.raises(ConfigError, match=re.escape(message)):
        call(tmp_path)


# --- the scoring script, as AzureML's inference server runs it --------------------------------------------------

@pytest.fixture(scope="module")
def scoring(models_root: Path, tmp_path_factory: pytest.TempPathFactory) -> ModuleType:
    """The deployment's copy of ``score.py``, imported from its file and initialised as the server does."""
    code = endpoint.write_scoring_code(tmp_path_factory.mktemp("code"))
    spec = importlib.util.spec_from_file_location("entry_module", code / "score.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("AZUREML_MODEL_DIR", str(models_root))
        module.init()
    return module


def test_run_answers_what_the_predictor_predicts(scoring, entity_model_dir, synth_documents):
    texts = [document.text for document in synth_documents[44:48]]
    expected = [[entity.to_dict() for entity in entities] for entities in Predictor(entity_model_dir).predict(texts)]
    assert any(expected), "the tiny model extracts nothing: the comparison would be empty"
    for request in ({"dataframe_records": [{"text": text} for text in texts]},
                    {"dataframe_split": {"columns": ["text"], "data": [[text] for text in texts]}},
                    {"inputs": {"text": texts}}):
        answer = scoring.run(json.dumps(request))
        assert json.loads(json.dumps(answer)) == {"predictions": [{"entities": found} for found in expected]}


@pytest.mark.parametrize("body, message", [
    ('{"dataframe_records": [{"text": "Jane', "the request is not valid JSON"),
    ('[{"text": "Jane Doe"}]', "the request must be a JSON object"),
    ('{"data": [{"text": "Jane Doe"}]}', "dataframe_split"),  # no known key: MLflow names the ones it takes
    ('{"dataframe_records": [{"txt": "Jane Doe"}]}', "missing inputs ['text']"),
    ('{"dataframe_records": [{"text": "Jane Doe"}, {"text": "  "}]}', "row 1: text is empty"),
], ids=["malformed", "not-an-object", "no-format", "no-text-column", "empty-text"])
def test_bad_input_is_a_400_with_mlflow_error_json(scoring, body, message):
    response = scoring.run(body)
    error = json.loads(response.get_data(as_text=True))
    assert response.status_code == 400 and response.mimetype == "application/json"
    assert error["error_code"] in ("BAD_REQUEST", "INVALID_PARAMETER_VALUE") and message in error["message"]


def test_init_names_a_missing_model(tmp_path, monkeypatch, scoring):
    monkeypatch.delenv("AZUREML_MODEL_DIR", raising=False)
    with pytest.raises(RuntimeError, match=r"\$AZUREML_MODEL_DIR is not set"):
        scoring.init()
    monkeypatch.setenv("AZUREML_MODEL_DIR", str(tmp_path))
    with pytest.raises(RuntimeError, match="expected one MLflow model"):
        scoring.init()


# --- the CLI ------------------------------------------------------------------------------------------------------

ENDPOINT_ARGS = ["--kind", "endpoint", "--endpoint-name", "resume-ner-test", "--model", "azureml:resume-ner:3"]


def test_build_writes_a_directory_that_loads(tmp_path, capsys):
    out = tmp_path / "endpoint"
    assert main(["azureml", "build", *ENDPOINT_ARGS, "--output", str(out), "--environment", "azureml:env:1",
                 "--deployment-name", "green", "--instance-count", "2", "--liveness-probe", "initial_delay=90,period=5",
                 "--env", "A=1", "--tag", "team=nlp"]) == 0
    assert capsys.readouterr().out.strip() == (
        f"endpoint resume-ner-test, deployment green (scoring script in azureml:env:1) -> {out}")
    assert sorted(p.relative_to(out).as_posix() for p in out.rglob("*") if p.is_file()) == [
        "code/score.py", "deployment.yaml", "endpoint.yaml"]
    online_endpoint, deployment = endpoint.load_endpoint_files(out)
    assert online_endpoint.name == "resume-ner-test" and online_endpoint.tags == {"team": "nlp"}
    assert (deployment.name, deployment.instance_count) == ("green", 2)
    assert deployment._to_dict()["environment"] == "azureml:env:1"  # the loaded entity keeps it without the prefix
    assert (deployment.liveness_probe.initial_delay, deployment.liveness_probe.period) == (90, 5)
    assert deployment.environment_variables == {"HF_HUB_OFFLINE": "1", "A": "1"}
    assert main(["azureml", "build", *ENDPOINT_ARGS, "--output", str(out)]) == 1
    assert "already exist" in capsys.readouterr().err
    assert main(["azureml", "build", *ENDPOINT_ARGS, "--output", str(out), "--overwrite", "--mlflow-no-code"]) == 0
    assert endpoint.load_endpoint_files(out)[1].code_configuration is None


def test_the_help_states_the_library_defaults(capsys):
    with pytest.raises(SystemExit):
        main(["azureml", "build", "--help"])
    text = " ".join(capsys.readouterr().out.split())
    for default in (f"default: {endpoint.DEFAULT_DEPLOYMENT}", f"default: {endpoint.DEFAULT_INSTANCE_TYPE}",
                    f"default: {endpoint.DEFAULT_REQUEST_TIMEOUT_MS}"):
        assert default in text
    for probe in (endpoint.DEFAULT_LIVENESS_PROBE, endpoint.DEFAULT_READINESS_PROBE):
        assert ", ".join(f"{key}={value}" for key, value in probe.items()) in text


@pytest.mark.parametrize("argv, message", [
    (["--kind", "endpoint", "--endpoint-name", "resume-ner-test"], "--kind endpoint needs --endpoint-name and --model"),
    (["--kind", "final"], "--kind final needs --data-asset and --compute"),
    ([*ENDPOINT_ARGS, "--liveness-probe", "period=soon"], "--liveness-probe: every value is a whole number"),
    ([*ENDPOINT_ARGS, "--mlflow-no-code", "--environment", "azureml:env:1"], "takes no environment nor code"),
])
def test_build_refuses_missing_or_bad_flags(tmp_path, capsys, argv, message):
    assert main(["azureml", "build", "--output", str(tmp_path / "out"), *argv]) == 1
    assert message in capsys.readouterr().err


def _submit(tmp_path, monkeypatch, client, *flags) -> int:
    assert main(["azureml", "build", *ENDPOINT_ARGS, "--output", str(tmp_path / "ep"), "--environment",
                 "azureml:env:1"]) == 0
    monkeypatch.setattr(submit, "workspace_client", lambda *workspace: client)
    return main(["azureml", "submit", "--endpoint", str(tmp_path / "ep"), *flags])


def test_submit_creates_the_endpoint_then_the_deployment_and_routes_the_traffic(tmp_path, monkeypatch, capsys):
    client = FakeMLClient(["Completed"])
    assert _submit(tmp_path, monkeypatch, client) == 0
    created = client.online_endpoints.created
    assert [e.name for e in created] == ["resume-ner-test", "resume-ner-test"] and created[-1].traffic == {"blue": 100}
    assert [d.name for d in client.online_deployments.created] == ["blue"]
    assert client.online_deployments.created[0].code_configuration.scoring_script == "score.py"
    assert capsys.readouterr().out.splitlines()[-1] == "endpoint resume-ner-test: deployment blue created; traffic: blue 100%"


def test_submit_with_no_traffic_leaves_the_traffic(tmp_path, monkeypatch, capsys):
    client = FakeMLClient(["Completed"])
    assert _submit(tmp_path, monkeypatch, client, "--no-traffic") == 0
    assert len(client.online_endpoints.created) == 1
    assert capsys.readouterr().out.splitlines()[-1].endswith("traffic: none")


def test_a_deployment_that_fails_names_its_logs(tmp_path, monkeypatch, capsys):
    client = FakeMLClient(["Completed"], deployment_failure="ResourceNotReady: User container has crashed")
    assert _submit(tmp_path, monkeypatch, client) == 1
    err = capsys.readouterr().err
    assert "AzureML online deployment blue of endpoint resume-ner-test failed: ResourceNotReady" in err
    assert "az ml online-deployment get-logs --name blue --endpoint-name resume-ner-test" in err


def test_submit_checks_the_endpoint_directory_before_the_workspace(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(submit, "workspace_client", lambda *a: pytest.fail("the workspace was contacted"))
    assert main(["azureml", "submit", "--endpoint", str(tmp_path)]) == 1
    assert f"{tmp_path / 'endpoint.yaml'}: not an AzureML managed online endpoint" in capsys.readouterr().err
