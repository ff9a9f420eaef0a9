"""Evaluation on whole documents and entity extraction with character offsets."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import pytest

from resume_ner.data.document import Span
from resume_ner.data.labels import LabelScheme
from resume_ner.data.windows import WindowedDocuments, WordTokens
from resume_ner.inference import Predictor
from resume_ner.training.evaluator import evaluate_model, predicted_spans
from resume_ner.training.trainer import train_model


@pytest.fixture(scope="module")
def trained(tiny_backbone, synth_documents, tmp_path_factory):
    config = {
        "model": {"backbone": str(tiny_backbone), "max_length": 64, "stride": 16},
        "training": {"learning_rate": 2e-3, "batch_size": 8, "epochs": 2, "random_seed": 3, "num_threads": 1},
        "tracking": {"enabled": False},
    }
    return train_model(config, synth_documents[:40], synth_documents[40:50], tmp_path_factory.mktemp("run"))


def test_a_span_scores_the_mean_probability_of_the_words_it_overlaps():
    text = "Ann Lee, Java, C++ and Go"
    offsets = [(0, 3), (4, 7), (7, 8), (9, 13), (13, 14), (15, 16), (16, 18), (19, 22), (23, 25)]
    tags = ["B-NAME", "I-NAME", "O", "B-SKILL", "I-SKILL", "B-SKILL", "I-SKILL", "O", "B-SKILL"]
    scores = [0.9, 0.7, 0.1, 0.8, 0.4, 0.6, 0.5, 0.2, 0.3]
    windowed = WindowedDocuments([], [WordTokens("d", text, offsets, [])], LabelScheme(("NAME", "SKILL")), 16, 4)
    [scored] = predicted_spans(windowed, [(tags, scores)])
    # "Java," loses its trailing comma, and the comma's word its share of the score
    assert scored == [(Span(0, 7, "NAME"), pytest.approx(0.8)), (Span(9, 13, "SKILL"), pytest.approx(0.8)),
                      (Span(15, 18, "SKILL"), pytest.approx(0.55)), (Span(23, 25, "SKILL"), pytest.approx(0.3))]


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


@pytest.mark.parametrize("precision", ["fp32", "bf16", "auto"])
def test_evaluate_scores_the_entities_predict_finds_in_the_same_precision(trained, synth_documents, precision):
    from resume_ner.training.metrics import span_metrics

    docs = synth_documents[50:]
    metrics = evaluate_model(trained.model_dir, docs, device="cpu", precision=precision)
    predictor = Predictor(trained.model_dir, device="cpu", precision=precision)
    found = [[Span(e.start, e.end, e.label) for e in doc] for doc in predictor.predict([d.text for d in docs])]
    assert any(found), "the tiny model extracts nothing: the comparison would be empty"
    expected = span_metrics([list(d.spans) for d in docs], found)
    assert {k: metrics[k] for k in expected if k.startswith("span_")} == {k: v for k, v in expected.items()
                                                                        if k.startswith("span_")}
    assert metrics["precision"] == ("bf16" if predictor.bf16 else "fp32")
    if precision != "auto":  # a forced precision is the one that ran
        assert metrics["precision"] == precision


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
