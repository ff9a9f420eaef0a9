"""resume_ner.kfp.remote against a FAKE KFP v2beta1 API (support/fake_kfp_server.py): the requests it sends, the errors.

No ``from __future__ import annotations`` here: the KFP compiler reads the tiny pipeline's annotations as types.
"""

import re
import socket
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml
from support.fake_kfp_server import API, FakeKfpServer

from resume_ner.errors import ConfigError, ResumeNerError
from resume_ner.kfp import remote

pytest.importorskip("kfp")

network = pytest.mark.network
TINY_PARAMETERS = {
    "n": ("NUMBER_INTEGER", 3),
    "lr": ("NUMBER_DOUBLE", 0.5),
    "flag": ("BOOLEAN", False),
    "name": ("STRING", "x"),
    "tags": ("LIST", []),
    "cfg": ("STRUCT", {}),
}


@pytest.fixture(scope="module")
def package(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A compiled pipeline ``tiny`` with int, float, bool, str, list and dict parameters."""
    from kfp import compiler, dsl

    @dsl.component(base_image="python:3.11")
    def echo(n: int, lr: float, flag: bool, name: str) -> str:
        return f"{n} {lr} {flag} {name}"

    @dsl.pipeline(name="tiny")
    def tiny(n: int = 3, lr: float = 0.5, flag: bool = False, name: str = "x", tags: list = [], cfg: dict = {}):
        echo(n=n, lr=lr, flag=flag, name=name)

    path = tmp_path_factory.mktemp("package") / "tiny.yaml"
    compiler.Compiler().compile(tiny, str(path))
    return path


@pytest.fixture
def server() -> Iterator[FakeKfpServer]:
    with FakeKfpServer() as fake:
        yield fake


@pytest.fixture
def client(server: FakeKfpServer, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.delenv("KFP_TOKEN", raising=False)
    return remote.connect(server.url)


def _free_closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@network
def test_upload_creates_the_pipeline_then_new_versions_of_it(server: FakeKfpServer, client, package: Path) -> None:
    first = remote.upload_pipeline(client, package, pipeline_name="resume-ner", description="NER training")

    assert first.created_pipeline and first.pipeline_name == "resume-ner"
    assert first.version_name == "resume-ner"  # the server names the first version after the pipeline
    (upload,) = server.requests_to("POST", f"{API}/pipelines/upload")
    assert upload.query["name"] == "resume-ner"
    spec = yaml.safe_load(upload.files["uploadfile"])
    assert spec["pipelineInfo"]["name"] == "tiny"
    assert {k: v["parameterType"] for k, v in spec["root"]["inputDefinitions"]["parameters"].items()} == {
        name: kind for name, (kind, _) in TINY_PARAMETERS.items()
    }

    second = remote.upload_pipeline(client, package, pipeline_name="resume-ner")
    third = remote.upload_pipeline(client, package, pipeline_name="resume-ner", version_name="v3")

    assert not second.created_pipeline and second.pipeline_id == first.pipeline_id
    assert re.fullmatch(r"resume-ner-\d{8}-\d{6}", second.version_name)
    assert (third.pipeline_id, third.version_name) == (first.pipeline_id, "v3")
    assert len({first.version_id, second.version_id, third.version_id}) == 3
    uploads = server.requests_to("POST", f"{API}/pipelines/upload_version")
    assert [(r.query["pipelineid"], r.query["name"]) for r in uploads] == [
        (first.pipeline_id, second.version_name), (first.pipeline_id, "v3")
    ]
    assert yaml.safe_load(uploads[0].files["uploadfile"])["pipelineInfo"]["name"] == "tiny"
    assert len(server.pipelines) == 1 and len(server.versions) == 3


@network
def test_submit_sends_spec_typed_parameters_experiment_and_run_name(
    server: FakeKfpServer, client, package: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    params = remote.parse_run_parameters(package, ["n=8", "lr=3e-5", "flag=yes", "name=resumes v2"])

    result = remote.submit_run(client, package, experiment="nightly", params=params, run_name="smoke",
                               enable_caching=False)
    again = remote.submit_run(client, package, experiment="nightly", params={})

    (experiment,) = server.experiments.values()
    assert experiment["display_name"] == "nightly"
    first, second = (r.json for r in server.requests_to("POST", f"{API}/runs"))
    assert first["display_name"] == "smoke" and first["experiment_id"] == experiment["experiment_id"]
    sent = first["runtime_config"]["parameters"]
    assert sent == {"n": 8, "lr": 3e-5, "flag": True, "name": "resumes v2"}
    assert [type(sent[k]) for k in ("n", "lr", "flag", "name")] == [int, float, bool, str]
    assert first["pipeline_spec"]["pipelineInfo"]["name"] == "tiny"
    tasks = first["pipeline_spec"]["root"]["dag"]["tasks"].values()
    assert all(not task["cachingOptions"].get("enableCache") for task in tasks)  # enable_caching=False applied
    assert second["experiment_id"] == experiment["experiment_id"]  # the experiment is reused, not created again
    assert re.fullmatch(r"tiny-\d{8}-\d{6}", second["display_name"])
    assert result.run_name == "smoke" and result.state == "PENDING"
    assert result.experiment_id == experiment["experiment_id"]
    assert result.url == f"{server.url}/#/runs/details/{result.run_id}"
    assert again.run_id != result.run_id
    assert capsys.readouterr().out == ""  # kfp's "Run details: ..." prints go to stderr


@network
def test_submit_wait_returns_the_succeeded_run(server: FakeKfpServer, client, package: Path) -> None:
    result = remote.submit_run(client, package, experiment="e", params={"n": 1}, wait=True)

    assert result.state == "SUCCEEDED"
    assert server.requests_to("GET", f"{API}/runs/{result.run_id}")


@network
@pytest.mark.parametrize("state", ["FAILED", "CANCELED"])
def test_submit_wait_raises_with_the_servers_error_when_the_run_does_not_succeed(
    server: FakeKfpServer, client, package: Path, state: str
) -> None:
    server.run_final_state = state
    server.run_error = "task train-model: CUDA out of memory"

    with pytest.raises(ResumeNerError, match=f"run 'smoke' .* ended {state}: task train-model: CUDA out of memory"):
        remote.submit_run(client, package, experiment="e", params={}, run_name="smoke", wait=True)


@network
def test_submit_wait_times_out_on_a_run_that_keeps_running(server: FakeKfpServer, client, package: Path) -> None:
    server.run_final_state = "RUNNING"

    with pytest.raises(ResumeNerError, match="is still RUNNING after 0 s"):
        remote.submit_run(client, package, experiment="e", params={}, wait=True, timeout_s=0)


@network
def test_submit_refuses_an_unknown_parameter_before_any_run_is_sent(
    server: FakeKfpServer, client, package: Path
) -> None:
    with pytest.raises(ConfigError, match="'epochs'.*its parameters are: cfg, flag, lr, n, name, tags"):
        remote.submit_run(client, package, experiment="e", params={"epochs": 3})
    assert not server.requests_to("POST", f"{API}/runs")


@network
def test_submit_and_schedule_use_the_experiment_of_the_namespace(server: FakeKfpServer, client, package: Path) -> None:
    remote.submit_run(client, package, experiment="e", params={}, namespace="team-a")
    remote.schedule_run(client, package, experiment="e", cron="0 0 2 * * 1", job_name="j", params={},
                        namespace="team-a")

    (experiment,) = server.experiments.values()
    assert experiment["namespace"] == "team-a"
    lookups = server.requests_to("GET", f"{API}/experiments")[1:]  # after connect's check
    assert [r.query.get("namespace") for r in lookups] == ["team-a", "team-a"]
    assert server.requests_to("POST", f"{API}/recurringruns")[0].json["experiment_id"] == experiment["experiment_id"]


@network
def test_schedule_sends_cron_concurrency_catchup_parameters_and_spec(
    server: FakeKfpServer, client, package: Path
) -> None:
    result = remote.schedule_run(client, package, experiment="weekly", cron="0 0 2 * * 1", job_name="retrain",
                                 params={"n": 5, "flag": True}, catchup=False, start_time="2030-01-06T00:00:00Z")

    (request,) = server.requests_to("POST", f"{API}/recurringruns")
    body = request.json
    assert body["trigger"]["cron_schedule"] == {"cron": "0 0 2 * * 1", "start_time": "2030-01-06T00:00:00Z"}
    assert body["max_concurrency"] == 1 and body["no_catchup"] is True
    assert body["runtime_config"]["parameters"] == {"n": 5, "flag": True}
    assert body["pipeline_spec"]["pipelineInfo"]["name"] == "tiny"
    assert body["display_name"] == "retrain" and body["mode"] == "ENABLE"
    (experiment,) = server.experiments.values()
    assert body["experiment_id"] == experiment["experiment_id"] and experiment["display_name"] == "weekly"
    assert result.recurring_run_id in server.recurring_runs
    assert (result.job_name, result.experiment_id, result.cron, result.max_concurrency, result.catchup) == (
        "retrain", experiment["experiment_id"], "0 0 2 * * 1", 1, False
    )


@network
@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"cron": "0 2 * * 1"}, r"5 fields.*pass '0 0 2 \* \* 1'"),
        ({"cron": "0 0 2 * *"}, r"6 \(sec min hour dom month dow\)"),
        ({"max_concurrency": 0}, "must be 1..10"),
        ({"max_concurrency": 11}, "must be 1..10"),
        ({"end_time": "2030-01-06 02:00"}, "RFC 3339 time with an offset"),
        ({"params": {"epochs": 1}}, "unknown run parameter"),
    ],
)
def test_schedule_refuses_bad_input_before_any_request(
    server: FakeKfpServer, client, package: Path, options: dict, message: str
) -> None:
    sent_before = len(server.requests)
    arguments = {"experiment": "e", "cron": "0 0 2 * * 1", "job_name": "j", "params": {}, **options}

    with pytest.raises(ConfigError, match=message):
        remote.schedule_run(client, package, **arguments)
    assert len(server.requests) == sent_before


@network
def test_connect_sends_the_token_from_kfp_token_as_a_bearer_header(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("KFP_TOKEN", "s3cret-token")
    with FakeKfpServer(require_token="s3cret-token") as server:
        remote.connect(server.url)

    assert server.requests and all(r.headers["authorization"] == "Bearer s3cret-token" for r in server.requests)
    assert server.requests_to("GET", f"{API}/experiments")


@network
def test_connect_with_a_wrong_token_fails_fast_without_showing_the_token(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("KFP_TOKEN", "wrong-token-123")
    with FakeKfpServer(require_token="s3cret-token") as server:
        started = time.monotonic()
        with pytest.raises(ResumeNerError, match=f"authentication failed at {server.url}") as caught:
            remote.connect(server.url)

    assert time.monotonic() - started < 5  # kfp.Client alone retries a failed health check 5 times, 5 s apart
    assert "$KFP_TOKEN" in str(caught.value) and "Unauthenticated" in str(caught.value)
    assert "wrong-token-123" not in str(caught.value)


@network
def test_connect_to_an_unreachable_host_names_it_and_fails_fast(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("KFP_TOKEN", raising=False)
    host = f"http://127.0.0.1:{_free_closed_port()}"
    started = time.monotonic()

    with pytest.raises(ResumeNerError, match=f"cannot reach the KFP API at {host}") as caught:
        remote.connect(host)

    assert time.monotonic() - started < 5
    assert "kubectl port-forward svc/ml-pipeline-ui -n kubeflow 8080:80" in str(caught.value)


@network
def test_connect_checks_access_to_the_namespace(server: FakeKfpServer, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("KFP_TOKEN", raising=False)
    remote.connect(server.url, namespace="team-a")

    assert [r.query.get("namespace") for r in server.requests_to("GET", f"{API}/experiments")] == ["team-a"]


@network
def test_connect_through_a_kube_context_uses_the_api_server_proxy_and_its_credentials(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("KFP_TOKEN", "not-for-kube-contexts")
    monkeypatch.delenv("KUBERNETES_SERVICE_HOST", raising=False)  # kfp.Client prefers in-cluster config
    with FakeKfpServer(require_token="kube-secret") as server:
        kubeconfig = tmp_path / "kubeconfig"
        kubeconfig.write_text(yaml.safe_dump({
            "apiVersion": "v1", "kind": "Config", "current-context": "other",
            "clusters": [{"name": "fake", "cluster": {"server": server.url}}],
            "users": [{"name": "me", "user": {"token": "kube-secret"}}],
            "contexts": [{"name": "aks-dev", "context": {"cluster": "fake", "user": "me"}},
                         {"name": "other", "context": {"cluster": "fake", "user": "me"}}],
        }))
        # the kubernetes client reads $KUBECONFIG once, at import
        monkeypatch.setattr("kubernetes.config.kube_config.KUBE_CONFIG_DEFAULT_LOCATION", str(kubeconfig))

        remote.connect(None, kube_context="aks-dev")
        with pytest.raises(ConfigError, match="'prod' is not in the kubeconfig; its contexts: aks-dev, other"):
            remote.connect(None, kube_context="prod")

    assert server.requests
    proxy = "/api/v1/namespaces/kubeflow/services/ml-pipeline:http/proxy/"
    assert all(r.path.startswith(proxy) for r in server.requests)


def test_connect_refuses_a_kube_context_with_a_host_or_token() -> None:
    with pytest.raises(ConfigError, match="drop --host and the token, or drop --kube-context"):
        remote.connect("http://127.0.0.1:9", kube_context="aks-dev")


def test_read_pipeline_parameters_gives_types_and_typed_defaults(package: Path) -> None:
    parameters = remote.read_pipeline_parameters(package)

    assert parameters == TINY_PARAMETERS
    assert type(parameters["n"][1]) is int


def test_read_pipeline_parameters_refuses_a_missing_file_or_a_non_pipeline(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="missing.yaml not found; compile the pipeline first"):
        remote.read_pipeline_parameters(tmp_path / "missing.yaml")
    config = tmp_path / "train.yaml"
    config.write_text("training:\n  epochs: 3\n")
    with pytest.raises(ConfigError, match="is not a compiled KFP pipeline"):
        remote.read_pipeline_parameters(config)


def test_parse_run_parameters_types_values_by_the_pipeline(package: Path) -> None:
    values = remote.parse_run_parameters(
        package, ["n=12", "lr=0.25", "flag=False", "name= a=b ", "tags=[x, y]", 'cfg={"k": 1}']
    )

    assert values == {"n": 12, "lr": 0.25, "flag": False, "name": " a=b ", "tags": ["x", "y"], "cfg": {"k": 1}}
    assert type(values["n"]) is int and type(values["lr"]) is float
    assert remote.parse_run_parameters(package, ["flag=1"]) == {"flag": True}


def test_parse_run_parameters_refuses_an_unknown_name_listing_the_known_ones(package: Path) -> None:
    with pytest.raises(ConfigError, match="'epochs' for pipeline .*its parameters are: cfg, flag, lr, n, name, tags"):
        remote.parse_run_parameters(package, ["epochs=3"])


@pytest.mark.parametrize(
    ("item", "message"),
    [
        ("n=3.5", "run parameter n='3.5': expected an integer"),
        ("lr=fast", "run parameter lr='fast': expected a finite number"),
        ("lr=nan", "expected a finite number"),
        ("flag=maybe", "run parameter flag='maybe': expected true/false"),
        ("tags={a: 1}", "expected a JSON or YAML list"),
        ("cfg=[1", "expected a JSON or YAML mapping"),
        ("n", "'n' is not NAME=VALUE"),
        ("=3", "'=3' is not NAME=VALUE"),
    ],
)
def test_parse_run_parameters_refuses_bad_values(package: Path, item: str, message: str) -> None:
    with pytest.raises(ConfigError, match=re.escape(message)):
        remote.parse_run_parameters(package, [item])
