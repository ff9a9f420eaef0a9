"""The registered model served for real: `mlflow models serve -m models:/NAME@champion --env-manager local` on
127.0.0.1 answers /ping and /invocations with what the Predictor finds, refuses bad requests with a 4xx and a clear
message and keeps serving, and holds a bounded load (8 clients, 400 requests) with no error and flat memory."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from resume_ner.inference import Predictor
from resume_ner.serving.load import invocations_body, post_invocations, run_load
from resume_ner.serving.local_server import LocalModelServer

MODEL_NAME = "resume-ner-serving"


@pytest.fixture(scope="module")
def served(entity_model_dir: Path, tmp_path_factory: pytest.TempPathFactory):
    """The entity model logged as an MLflow model, registered as version 1 @champion in a sqlite store, served."""
    from mlflow import MlflowClient

    from resume_ner.serving.mlflow_model import log_serving_model

    root = tmp_path_factory.mktemp("serving")
    store = f"sqlite:///{(root / 'mlflow.db').as_posix()}"
    client = MlflowClient(tracking_uri=store)
    experiment = client.create_experiment("serving", artifact_location=(root / "artifacts").as_uri())
    run_id = client.create_run(experiment).info.run_id
    source = log_serving_model(run_id, store, entity_model_dir)
    client.create_registered_model(MODEL_NAME)
    version = client.create_model_version(MODEL_NAME, source, run_id=run_id).version
    client.set_registered_model_alias(MODEL_NAME, "champion", version)
    server = LocalModelServer(f"models:/{MODEL_NAME}@champion", root / "serve.log",
                              environment={"MLFLOW_TRACKING_URI": store, "PATH": "/usr/bin:/bin"})
    with server:
        yield server


def _post(server: LocalModelServer, body: bytes) -> tuple[int, dict]:
    status, answer = post_invocations(server.url, body, timeout_s=120)
    return status, json.loads(answer)


def _texts(synth_documents, count: int = 5) -> list[str]:
    return [document.text for document in synth_documents[44 : 44 + count]]


@pytest.mark.network
@pytest.mark.timeout(300)
def test_the_served_champion_answers_what_the_predictor_finds(served, entity_model_dir, synth_documents):
    assert served.ping()
    texts = _texts(synth_documents)
    status, answer = _post(served, invocations_body(texts))
    expected = [[entity.to_dict() for entity in found] for found in Predictor(entity_model_dir).predict(texts)]
    assert status == 200 and answer == {"predictions": [{"entities": entities} for entities in expected]}
    assert any(expected)
    split = json.dumps({"dataframe_split": {"columns": ["text"], "data": [[texts[0]]]}}).encode()
    assert _post(served, split) == (200, {"predictions": [{"entities": expected[0]}]})


BAD_REQUESTS = {
    "malformed JSON": (b'{"dataframe_records": [', "Ensure that input is a valid JSON"),
    "a missing column": (b'{"dataframe_records": [{"txt": "Jane Doe"}]}', "missing inputs ['text']"),
    "a non-string value": (b'{"dataframe_records": [{"text": 5}]}', "row 0: text must be a string, got int"),
    "a null value": (b'{"dataframe_records": [{"text": null}]}', "row 0: text must be a string, got NoneType"),
    "an empty text": (b'{"dataframe_records": [{"text": "Jane"}, {"text": " "}]}', "row 1: text is empty"),
    "a 5 MB text": (invocations_body(["resume " * 750_000]), "row 0: text has 5,250,000 characters, more than "
                                                             "the model's max_text_chars (1,000,000)"),
}


@pytest.mark.network
@pytest.mark.timeout(300)
@pytest.mark.parametrize("case", list(BAD_REQUESTS))
def test_a_bad_request_gets_a_4xx_with_a_clear_message_and_the_server_keeps_serving(served, synth_documents, case):
    body, message = BAD_REQUESTS[case]
    status, answer = _post(served, body)
    assert 400 <= status < 500 and message in answer["message"], (status, answer)
    assert served.ping()
    assert _post(served, invocations_body(_texts(synth_documents, 1)))[0] == 200


@pytest.mark.network
@pytest.mark.timeout(600)
def test_a_bounded_load_has_no_error_and_flat_memory(served, synth_documents):
    texts = [document.text for document in synth_documents]
    run_load(served.url, texts, concurrency=8, requests=40)  # warm-up: allocator pools, lazy imports
    before = served.rss_mib()
    report = run_load(served.url, texts, concurrency=8, requests=400)
    after = served.rss_mib()
    print(f"\n{report.summary()}; server RSS {before:.0f} -> {after:.0f} MiB")
    assert report.errors == 0, report.error_samples
    assert report.p50_ms > 0 and report.p95_ms >= report.p50_ms and report.requests_per_s > 0
    assert after <= before * 1.10 + 32, f"resident memory grew from {before:.0f} to {after:.0f} MiB under load"
    assert served.ping()


@pytest.mark.network
@pytest.mark.timeout(300)
def test_load_test_command_reports_and_fails_on_errors(served, synth_documents, tmp_path, capsys):
    from resume_ner.cli.main import main

    data = tmp_path / "resumes.jsonl"
    data.write_text("".join(json.dumps({"text": document.text}) + "\n" for document in synth_documents[:8]))
    assert main(["load-test", "--url", served.url, "--data", str(data), "--requests", "16", "--concurrency", "4",
                 "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert (report["requests"], report["errors"], report["concurrency"]) == (16, 0, 4) and report["p95_ms"] > 0
    (tmp_path / "empty.txt").write_text("\n\n")
    assert main(["load-test", "--url", served.url, "--data", str(tmp_path / "empty.txt")]) == 1
    assert "no texts" in capsys.readouterr().err
    blank = tmp_path / "blank.jsonl"
    blank.write_text(json.dumps({"text": " "}) + "\n")
    assert main(["load-test", "--url", served.url, "--data", str(blank), "--requests", "2"]) == 1
    assert "row 0: text is empty" in capsys.readouterr().err
