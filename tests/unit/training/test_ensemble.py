"""Ensembles: several trained models predicting as one (``Predictor``, ``evaluate_model``, ``--model`` repeated):
the members' word probabilities averaged on the first member's words, matched by character span."""

from __future__ import annotations

import copy
import json
from dataclasses import replace

import pytest
import torch

from resume_ner.cli.main import main
from resume_ner.data.document import Span
from resume_ner.data.labels import LabelScheme
from resume_ner.data.windows import build_windows
from resume_ner.errors import ConfigError
from resume_ner.inference import Predictor
from resume_ner.training.checkpoint import read_metadata
from resume_ner.training.ensemble import mean_word_log_probs
from resume_ner.training.evaluator import evaluate_model
from resume_ner.training.metrics import span_metrics
from resume_ner.training.model import load_fast_tokenizer
from resume_ner.training.trainer import train_model


def test_word_probabilities_are_averaged_on_the_reference_words_matched_by_span(tiny_backbone, synth_documents):
    docs = synth_documents[:2]
    tokenizer = load_fast_tokenizer(str(tiny_backbone))
    scheme = LabelScheme.from_types(["NAME", "SKILL"])
    reference = build_windows(docs, tokenizer, scheme, max_length=64, stride=16)
    other = build_windows(docs, tokenizer, scheme, max_length=32, stride=8)  # other windows, the same words
    moved = list(other.words[0].offsets)
    moved[3] = (moved[3][0], moved[3][1] + 1)  # the second member split word 3 of document 0 otherwise
    other.words[0] = replace(other.words[0], offsets=moved)
    torch.manual_seed(0)
    first = [torch.randn(len(w.offsets), len(scheme.labels)).log_softmax(-1) for w in reference.words]
    second = [torch.randn(len(w.offsets), len(scheme.labels)).log_softmax(-1) for w in other.words]

    mean = mean_word_log_probs(reference, [(reference, first), (other, second)])

    for d in range(2):
        expected = ((first[d].exp() + second[d].exp()) / 2).log()
        expected[3] = first[d][3] if d == 0 else expected[3]  # only the first member has that word
        assert torch.allclose(mean[d], expected, atol=1e-6)
    assert mean_word_log_probs(reference, [(reference, first)]) == first  # one member: its own, unchanged


@pytest.fixture(scope="module")
def second_seed(tiny_backbone, synth_documents, tmp_path_factory):
    """The entity model's config trained with another seed and another window length: a second member."""
    config = {"model": {"backbone": str(tiny_backbone), "max_length": 48, "stride": 12},
              "training": {"epochs": 3, "batch_size": 8, "learning_rate": 5e-3, "num_threads": 1, "random_seed": 7},
              "tracking": {"enabled": False}}
    return train_model(config, synth_documents[:40], synth_documents[40:44], tmp_path_factory.mktemp("seed7")).model_dir


def test_an_ensemble_predicts_from_the_mean_of_its_members(entity_model_dir, second_seed, synth_documents):
    texts = [doc.text for doc in synth_documents[50:56]]
    single = Predictor(entity_model_dir, device="cpu", precision="fp32")
    other = Predictor(second_seed, device="cpu", precision="fp32")
    pair = Predictor([entity_model_dir, second_seed], device="cpu", precision="fp32")

    assert len(pair.members) == 2 and pair.decoding == single.decoding
    learned = [single.transitions, other.transitions]
    assert all(t is not None for t in learned)
    for name, scores in pair.transitions.items():
        assert torch.allclose(scores, (learned[0][name] + learned[1][name]) / 2)
    found = pair.predict(texts)
    assert found != single.predict(texts) and found != other.predict(texts)
    # a model with itself is the model: same entities, same scores
    twice = Predictor([entity_model_dir, entity_model_dir], device="cpu", precision="fp32").predict(texts)
    assert [[(e.label, e.start, e.end) for e in doc] for doc in twice] == [
        [(e.label, e.start, e.end) for e in doc] for doc in single.predict(texts)
    ]


def test_evaluate_scores_the_ensemble_that_predict_runs(entity_model_dir, second_seed, synth_documents):
    docs = synth_documents[50:56]
    metrics = evaluate_model([entity_model_dir, second_seed], docs, device="cpu")  # the default precision of both
    found = Predictor([entity_model_dir, second_seed], device="cpu").predict([d.text for d in docs])
    predicted = [[Span(e.start, e.end, e.label) for e in doc] for doc in found]
    expected = span_metrics([list(d.spans) for d in docs], predicted)
    assert metrics["span_f1_micro"] == pytest.approx(expected["span_f1_micro"])
    assert metrics["model_dir"] == [str(entity_model_dir), str(second_seed)] and metrics["loss"] is None
    assert evaluate_model(entity_model_dir, docs, device="cpu")["loss"] is not None  # one model keeps its loss


def test_members_with_other_labels_are_refused(entity_model_dir, tiny_config, synth_documents, tmp_path):
    names_only = [replace(d, spans=[s for s in d.spans if s.label == "NAME"]) for d in synth_documents[:8]]
    config = copy.deepcopy(tiny_config)
    config["training"]["epochs"] = 1
    config["data"] = {"label_map": {}}  # the types seen: NAME only
    other = train_model(config, names_only, names_only[:2], tmp_path / "names").model_dir
    assert LabelScheme.from_dict(read_metadata(other)["label_scheme"]).labels != LabelScheme.from_dict(
        read_metadata(entity_model_dir)["label_scheme"]
    ).labels
    with pytest.raises(ConfigError, match="same entity types"):
        Predictor([entity_model_dir, other], device="cpu")


def test_the_cli_takes_model_repeated(entity_model_dir, second_seed, synth_documents, tmp_path, capsys):
    docs = synth_documents[50:53]
    data = tmp_path / "docs.jsonl"
    data.write_text("".join(json.dumps(d.to_doccano()) + "\n" for d in docs), encoding="utf-8")
    models = ["--model", str(entity_model_dir), "--model", str(second_seed)]
    assert main(["predict", *models, "--output", str(tmp_path / "out.jsonl"), "-q", str(data)]) == 0
    lines = [json.loads(line) for line in (tmp_path / "out.jsonl").read_text(encoding="utf-8").splitlines()]
    expected = Predictor([entity_model_dir, second_seed], device="cpu").predict([d.text for d in docs])
    assert [line["entities"] for line in lines] == [[e.to_dict() for e in doc] for doc in expected]
    assert main(["evaluate", *models, "--data", str(data), "--json", "-q"]) == 0
    assert json.loads(capsys.readouterr().out)["model_dir"] == [str(entity_model_dir), str(second_seed)]
