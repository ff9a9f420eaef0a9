"""The benchmark baselines run for real on a small synthetic corpus: the Trainer (run_ner.py way) and spaCy.

Each script trains, predicts whole test resumes into the shared predictions format and is scored by the
same exact span match as this project (tiny random BERT for the Trainer, a few dozen spaCy steps).
"""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import pytest

from resume_ner.data.synth import generate_resumes

pytestmark = pytest.mark.slow

BENCH = Path(__file__).resolve().parents[2] / "bench"


@pytest.fixture(scope="module")
def common():
    spec = importlib.util.spec_from_file_location("common", BENCH / "common.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules["common"] = module
    spec.loader.exec_module(module)
    yield module
    del sys.modules["common"]


@pytest.fixture(scope="module")
def splits(common, tmp_path_factory) -> Path:
    docs = generate_resumes(30, seed=11)
    corpus = tmp_path_factory.mktemp("corpus")
    (corpus / "train.jsonl").write_text("".join(json.dumps(d.to_doccano()) + "\n" for d in [*docs[:24], docs[24]]))
    (corpus / "test.jsonl").write_text("".join(json.dumps(d.to_doccano()) + "\n" for d in docs[24:]))
    out = tmp_path_factory.mktemp("splits")
    assert common.write_splits(corpus, out)["test"] == 6
    return out


def _run(*args: str) -> None:
    done = subprocess.run([sys.executable, *args], capture_output=True, text=True, timeout=600,
                          cwd=BENCH.parent)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]


def _check_predictions(common, splits: Path, predictions: Path) -> dict:
    test = common.read_split(splits, "test")
    lines = [json.loads(line) for line in predictions.read_text().splitlines()]
    assert [line["id"] for line in lines] == [doc.id for doc in test]
    for doc, line in zip(test, lines):
        assert all(0 <= start < end <= len(doc.text) for start, end, _ in line["entities"])
    scores = common.score_predictions(test, predictions)
    assert 0.0 <= scores["span_f1_micro"] <= 1.0
    return scores


def test_trainer_baseline_trains_truncated_and_predicts_whole_resumes(common, splits, tiny_backbone, tmp_path):
    out = tmp_path / "hf"
    _run("bench/hf_baseline.py", "train", "--splits", str(splits), "--backbone", str(tiny_backbone), "--out",
         str(out), "--epochs", "2", "--learning-rate", "1e-3", "--max-length", "64", "--threads", "1")
    result = json.loads((out / "train_result.json").read_text())
    assert [h["epoch"] for h in result["history"]] == [1, 2]
    assert result["tokens"] <= 2 * 64 * result["train_docs"]  # every resume cut to its first 64 tokens
    timing = tmp_path / "timing.json"
    _run("bench/hf_baseline.py", "predict", "--model", str(out / "model"), "--docs", str(splits / "test.jsonl"),
         "--out", str(tmp_path / "hf.jsonl"), "--max-length", "64", "--stride", "16", "--repeat", "2",
         "--timing", str(timing))
    assert json.loads(timing.read_text())["repeat"] == 2
    _check_predictions(common, splits, tmp_path / "hf.jsonl")
    _run("bench/hf_baseline.py", "speed", "--splits", str(splits), "--backbone", str(tiny_backbone), "--out",
         str(tmp_path / "speed.json"), "--docs", "4", "--max-length", "64", "--stride", "16")
    speed = json.loads((tmp_path / "speed.json").read_text())
    assert speed["windows"] > 4 and speed["tokens_per_s"] > 0  # whole resumes: several windows each


def test_spacy_baseline_trains_with_its_own_cli_and_predicts(common, splits, tmp_path):
    out = tmp_path / "spacy"
    _run("bench/spacy_baseline.py", "train", "--splits", str(splits), "--out", str(out), "--threads", "1",
         "--max-steps", "30", "--eval-frequency", "10")
    result = json.loads((out / "train_result.json").read_text())
    assert result["history"] and result["settings"]["max_steps"] == 30
    assert result["gold_spans"]["train"] > 0 and result["dropped_spans"]["train"] >= 0
    _run("bench/spacy_baseline.py", "predict", "--model", str(out / "model-best"), "--docs",
         str(splits / "test.jsonl"), "--out", str(tmp_path / "spacy.jsonl"))
    _check_predictions(common, splits, tmp_path / "spacy.jsonl")
