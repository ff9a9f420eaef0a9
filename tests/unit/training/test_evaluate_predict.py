"""Evaluation on whole documents and entity extraction with character offsets."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import pytest

from resume_ner.inference import Predictor
from resume_ner.training.evaluator import evaluate_model
from resume_ner.training.trainer import train_model


@pytest.fixture(scope="module")
def trained(tiny_backbone, synth_documents, tmp_path_factory):
    config = {
        "model": {"backbone": str(tiny_backbone), "max_length": 64, "stride": 16},
        "training": {"learning_rate": 2e-3, "batch_size": 8, "epochs": 2, "random_seed": 3, "num_threads": 1},
        "tracking": {"enabled": False},
    }
    return train_model(config, synth_documents[:40], synth_documents[40:50], tmp_path_factory.mktemp("run"))


def test_evaluate_model_reports_entity_and_span_metrics(trained, synth_documents):
    metrics = evaluate_model(trained.model_dir, synth_documents[50:], device="cpu")
    for key in ("f1_micro", "f1_macro", "precision_micro", "recall_micro", "span_f1_micro", "span_f1_macro", "loss"):
        assert 0.0 <= metrics[key] <= (1.0 if key != "loss" else 100.0), key
    assert metrics["documents"] == 10
    assert set(metrics["span_per_type"]) <= {"NAME", "EMAIL", "DESIGNATION", "COMPANY", "LOCATION",
                                             "YEARS_EXPERIENCE", "COLLEGE", "DEGREE", "GRADUATION_YEAR",
                                             "SKILL", "TECH_TOOL", "SOFT_SKILL"}


def test_evaluate_model_reports_a_confusion_matrix_of_entity_types(trained, synth_documents):
    documents = synth_documents[50:]
    confusion = evaluate_model(trained.model_dir, documents, device="cpu")["confusion"]
    labels, matrix = confusion["labels"], confusion["matrix"]
    assert labels[-1] == "O" and labels[:-1] == sorted(labels[:-1])
    assert len(matrix) == len(labels) and all(len(row) == len(labels) for row in matrix)
    gold_counts = Counter(span.label for doc in documents for span in doc.spans)
    assert set(gold_counts) <= set(labels)
    assert {label: sum(row) for label, row in zip(labels, matrix) if label != "O"} == {
        label: gold_counts[label] for label in labels[:-1]}
    assert matrix[-1][-1] == 0


def test_the_model_records_its_decoding_and_evaluate_and_predict_can_override_it(trained, synth_documents):
    metadata = json.loads((Path(trained.model_dir) / "resume_ner.json").read_text(encoding="utf-8"))
    assert metadata["decoding"] == "viterbi"
    documents = synth_documents[50:]
    viterbi = evaluate_model(trained.model_dir, documents, device="cpu")
    argmax = evaluate_model(trained.model_dir, documents, device="cpu", decoding="argmax")
    assert (viterbi["decoding"], argmax["decoding"]) == ("viterbi", "argmax")
    assert viterbi["loss"] == pytest.approx(argmax["loss"])
    assert Predictor(trained.model_dir, device="cpu").decoding == "viterbi"
    assert Predictor(trained.model_dir, device="cpu", decoding="argmax").decoding == "argmax"


def test_predict_returns_entities_with_exact_offsets_over_long_texts(trained, synth_documents):
    predictor = Predictor(trained.model_dir, device="cpu")
    texts = [doc.text for doc in synth_documents[50:53]] + [synth_documents[50].text * 4, ""]
    results = predictor.predict(texts)
    assert len(results) == len(texts) and results[-1] == []
    for text, entities in zip(texts, results):
        for entity in entities:
            assert text[entity.start : entity.end] == entity.text
            assert entity.text == entity.text.strip() and entity.end > entity.start
            assert 0.0 <= entity.score <= 1.0
    # a window boundary never loses the tail of a long text
    assert max((e.end for e in results[3]), default=0) <= len(texts[3])
    assert list(predictor.predict_stream(texts, chunk_size=2)) == results


def test_bf16_prediction_keeps_offsets_and_agrees_with_fp32_on_most_entities(trained, synth_documents):
    texts = [doc.text for doc in synth_documents[50:]]
    fp32 = Predictor(trained.model_dir, device="cpu", precision="fp32")
    bf16 = Predictor(trained.model_dir, device="cpu", precision="bf16")
    assert (fp32.bf16, bf16.bf16) == (False, True)
    exact, approx = fp32.predict(texts), bf16.predict(texts)
    for text, entities in zip(texts, approx):
        assert all(text[e.start : e.end] == e.text for e in entities)
    pairs = [({(e.start, e.end, e.label) for e in a}, {(e.start, e.end, e.label) for e in b})
             for a, b in zip(exact, approx)]
    shared = sum(len(a & b) for a, b in pairs)
    assert shared >= 0.8 * max(sum(len(a) for a, _ in pairs), 1)
