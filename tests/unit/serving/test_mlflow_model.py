"""The MLflow pyfunc model of a checkpoint: saved, loaded with mlflow.pyfunc, it predicts what the Predictor (and so
`resume-ner predict`) predicts; bad input is refused with the row named; registration registers it."""

from __future__ import annotations

from pathlib import Path

import pytest

from resume_ner import __version__
from resume_ner.inference import Predictor
from resume_ner.serving.mlflow_model import pinned_requirements, save_serving_model


@pytest.fixture(scope="module")
def saved_model(entity_model_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return save_serving_model(entity_model_dir, tmp_path_factory.mktemp("pyfunc") / "mlflow_model")


def _texts(synth_documents, count: int = 4) -> list[str]:
    return [document.text for document in synth_documents[44 : 44 + count]]


def test_the_saved_model_predicts_what_the_predictor_predicts(saved_model, entity_model_dir, synth_documents):
    import mlflow.pyfunc
    import pandas as pd

    texts = _texts(synth_documents)
    loaded = mlflow.pyfunc.load_model(str(saved_model))
    predicted = loaded.predict(pd.DataFrame({"text": texts}))
    expected = [[entity.to_dict() for entity in entities] for entities in Predictor(entity_model_dir).predict(texts)]
    assert list(predicted.columns) == ["entities"] and list(predicted["entities"]) == expected
    assert any(expected), "the tiny model extracts nothing: the comparison would be empty"
    for entities, text in zip(expected, texts, strict=True):
        assert all(text[entity["start"] : entity["end"]] == entity["text"] for entity in entities)


def test_the_saved_model_is_code_and_safetensors_with_a_signature_and_pinned_requirements(saved_model):
    import yaml

    mlmodel = yaml.safe_load((saved_model / "MLmodel").read_text())
    flavor = mlmodel["flavors"]["python_function"]
    assert flavor["loader_module"] == "mlflow.pyfunc.loaders.code_model"  # models from code: nothing unpickled
    assert not list(saved_model.rglob("*.pkl")) and not list(saved_model.rglob("*.bin"))
    checkpoint = saved_model / flavor["artifacts"]["checkpoint"]["path"]
    assert (checkpoint / "model.safetensors").is_file() and (checkpoint / "resume_ner.json").is_file()
    assert '"name": "text"' in mlmodel["signature"]["inputs"] and '"name": "entities"' in mlmodel["signature"]["outputs"]
    assert (saved_model / "serving_input_example.json").is_file()
    requirements = (saved_model / "requirements.txt").read_text().split()
    assert requirements[0] == f"resume-ner=={__version__}" and requirements == pinned_requirements()
    assert all("==" in line and "+" not in line for line in requirements)  # pinned, no local build label


@pytest.mark.parametrize("frame, message", [
    ({"txt": ["Jane Doe"]}, "missing inputs ['text']"),
    ({"text": [3]}, "Incompatible input types for column text"),
    ({"text": ["Jane Doe", "   "]}, "row 1: text is empty"),
    ({"text": ["x" * 101]}, "row 0: text has 101 characters, more than the model's max_text_chars (100)"),
])
def test_bad_input_is_refused_naming_the_row(saved_model, frame, message):
    import mlflow.pyfunc
    import pandas as pd
    from mlflow.exceptions import MlflowException

    loaded = mlflow.pyfunc.load_model(str(saved_model), model_config={"max_text_chars": 100})
    with pytest.raises(MlflowException) as caught:
        loaded.predict(pd.DataFrame(frame))
    assert message in caught.value.message and caught.value.get_http_status_code() == 400


def test_a_directory_without_a_checkpoint_is_refused(tmp_path):
    with pytest.raises(FileNotFoundError, match="not a model directory"):
        save_serving_model(tmp_path, tmp_path / "out")


def test_predict_takes_a_downloaded_registered_version(saved_model, entity_model_dir, synth_documents, tmp_path,
                                                       capsys):
    import json

    from resume_ner.cli.main import main

    texts = _texts(synth_documents, 2)
    (tmp_path / "resumes.jsonl").write_text("".join(json.dumps({"text": text}) + "\n" for text in texts))
    assert main(["predict", "--model", str(saved_model), str(tmp_path / "resumes.jsonl"), "-q"]) == 0
    lines = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    expected = [[entity.to_dict() for entity in found] for found in Predictor(entity_model_dir).predict(texts)]
    assert [line["entities"] for line in lines] == expected


def test_serve_runs_mlflow_models_serve_with_the_projects_tracking_uri(monkeypatch, tmp_path):
    import subprocess
    import sys

    from resume_ner.cli import serve_commands
    from resume_ner.cli.main import main

    ran = []
    monkeypatch.setattr(serve_commands.subprocess, "run",
                        lambda command, env: ran.append((command, env)) or subprocess.CompletedProcess(command, 0))
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://from-env:5000")
    assert main(["serve", "--port", "5077"]) == 0
    command, env = ran[-1]
    assert command[:5] == [sys.executable, "-m", "mlflow", "models", "serve"]
    assert command[command.index("--model-uri") + 1] == "models:/resume-ner@champion"
    assert command[command.index("--env-manager") + 1] == "local" and command[command.index("--port") + 1] == "5077"
    assert env["MLFLOW_TRACKING_URI"] == "http://from-env:5000"
    assert env["PATH"].split(":")[0] == str(Path(sys.executable).parent)  # MLflow starts uvicorn by name
    assert main(["serve", "--tracking-uri", "http://flag:5000"]) == 0 and ran[-1][1]["MLFLOW_TRACKING_URI"] == (
        "http://flag:5000")
    assert main(["serve", "--model", str(tmp_path)]) == 0 and ran[-1][1]["MLFLOW_TRACKING_URI"] == (
        "http://from-env:5000")  # a directory: the environment's, untouched


class _FakePredictor:
    """FAKE Predictor: each text's one entity names the text; records the texts of every call; slow enough that
    concurrent requests queue up."""

    def __init__(self, fail_on: str | None = None) -> None:
        self.calls: list[list[str]] = []
        self.fail_on = fail_on

    def predict(self, texts):
        import time

        from resume_ner.inference import Entity

        self.calls.append(list(texts))
        time.sleep(0.05)
        if self.fail_on in texts:
            raise RuntimeError(f"cannot predict {self.fail_on!r}")
        return [[Entity("NAME", 0, len(text), text, 1.0)] for text in texts]


def test_concurrent_requests_are_predicted_together_and_each_gets_its_own_entities():
    from concurrent.futures import ThreadPoolExecutor

    from resume_ner.serving.pyfunc import _Batcher

    predictor = _FakePredictor()
    batcher = _Batcher(predictor, max_batch_texts=5)
    requests = [[f"resume {i}-{j}" for j in range(1 + i % 2)] for i in range(12)]
    with ThreadPoolExecutor(8) as pool:
        answers = list(pool.map(batcher.predict, requests))
    for texts, entities in zip(requests, answers, strict=True):
        assert [[entity["text"] for entity in found] for found in entities] == [[text] for text in texts]
    assert sorted(text for call in predictor.calls for text in call) == sorted(t for r in requests for t in r)
    assert len(predictor.calls) < len(requests)  # queued requests shared forward passes
    assert max(len(call) for call in predictor.calls) <= 5  # ... of at most max_batch_texts texts
    assert batcher.predict(["alone"])[0][0]["text"] == "alone" and predictor.calls[-1] == ["alone"]


def test_an_error_reaches_every_request_of_its_batch_and_the_next_ones_are_served():
    from concurrent.futures import ThreadPoolExecutor

    from resume_ner.serving.pyfunc import _Batcher

    batcher = _Batcher(_FakePredictor(fail_on="bad"), max_batch_texts=16)
    with ThreadPoolExecutor(4) as pool:
        futures = [pool.submit(batcher.predict, [text]) for text in ("a", "bad", "b", "c")]
    outcomes = [future.exception() or future.result() for future in futures]
    assert any(isinstance(outcome, RuntimeError) for outcome in outcomes)
    assert all(isinstance(outcome, RuntimeError) or outcome[0][0]["text"] in "abc" for outcome in outcomes)
    assert batcher.predict(["d"])[0][0]["text"] == "d"
