"""The CRF head: its loss over each window's labelled tokens, its saved scores, and decoding with them."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

from resume_ner.config import config_from_dict
from resume_ner.data.labels import LabelScheme
from resume_ner.errors import CheckpointError, ConfigError
from resume_ner.inference import Predictor
from resume_ner.layout import CRF_FILE
from resume_ner.training.checkpoint import validate_checkpoint
from resume_ner.training.crf import (
    CrfTokenClassifier,
    crf_nll,
    crf_scores,
    labelled_first,
    load_crf,
    load_crf_scores,
    new_crf,
    save_crf,
)
from resume_ner.training.decoding import FORBIDDEN, decode_tags
from resume_ner.training.evaluator import evaluate_model
from resume_ner.training.trainer import train_model

SCHEME = LabelScheme.from_types(["NAME", "SKILL"])  # O, B-NAME, I-NAME, B-SKILL, I-SKILL
O, B_NAME, I_NAME, B_SKILL, I_SKILL = range(5)
IGNORE = -100


def test_a_new_crf_forbids_invalid_iob2_moves_inside_a_window_but_not_an_entity_continued_at_its_start():
    crf = new_crf(SCHEME)
    assert crf.transitions[O, I_NAME] == FORBIDDEN and crf.transitions[B_SKILL, I_NAME] == FORBIDDEN
    assert crf.transitions[B_NAME, I_NAME] == 0 and crf.transitions[I_NAME, I_NAME] == 0
    assert crf.transitions[I_NAME, B_SKILL] == 0 and crf.transitions[O, B_NAME] == 0
    assert torch.all(crf.start_transitions == 0) and torch.all(crf.end_transitions == 0)


def test_labelled_tokens_are_moved_to_the_front_in_order_and_unlabelled_windows_left_out():
    labels = torch.tensor([[IGNORE, B_NAME, IGNORE, I_NAME, O, IGNORE],
                           [IGNORE, IGNORE, IGNORE, IGNORE, IGNORE, IGNORE],
                           [IGNORE, O, B_SKILL, IGNORE, IGNORE, IGNORE]])
    logits = torch.arange(3 * 6, dtype=torch.float).reshape(3, 6, 1).expand(3, 6, 5)
    scores, tags, mask = labelled_first(logits, labels)
    assert tags.tolist() == [[B_NAME, I_NAME, O], [O, B_SKILL, 0]]
    assert mask.tolist() == [[True, True, True], [True, True, False]]
    assert scores[:, :, 0].tolist() == [[1.0, 3.0, 4.0], [13.0, 14.0, 12.0]]  # logits[b, t] = 6 b + t


def test_the_nll_is_the_crfs_over_the_words_alone_and_counts_the_labelled_tokens():
    torch.manual_seed(0)
    crf = new_crf(SCHEME)
    with torch.no_grad():
        crf.transitions.add_(torch.randn(5, 5))
        crf.start_transitions.add_(torch.randn(5))
    logits = torch.randn(2, 6, 5)
    labels = torch.tensor([[IGNORE, B_NAME, I_NAME, IGNORE, O, IGNORE],
                           [IGNORE, I_SKILL, O, IGNORE, IGNORE, IGNORE]])
    nll, tokens = crf_nll(crf, logits, labels)
    alone = [-crf(logits[0, [1, 2, 4]].unsqueeze(0), torch.tensor([[B_NAME, I_NAME, O]]), torch.ones(1, 3).bool()),
             -crf(logits[1, [1, 2]].unsqueeze(0), torch.tensor([[I_SKILL, O]]), torch.ones(1, 2).bool())]
    assert tokens == 5
    assert nll.item() == pytest.approx(sum(a.item() for a in alone), rel=1e-5)


def test_the_wrapped_classifier_reports_the_nll_per_labelled_token_and_trains_the_transitions():
    class Classifier(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.linear = torch.nn.Linear(3, 5)

        def forward(self, inputs):
            return type("Output", (), {"logits": self.linear(inputs), "loss": None})()

    crf = new_crf(SCHEME)
    model = CrfTokenClassifier(Classifier(), crf)
    inputs = torch.randn(2, 4, 3)
    labels = torch.tensor([[IGNORE, B_NAME, I_NAME, IGNORE], [IGNORE, O, IGNORE, IGNORE]])
    output = model(inputs=inputs, labels=labels)
    nll, tokens = crf_nll(crf, output.logits, labels)
    assert output.loss.item() == pytest.approx(nll.item() / 3)
    output.loss.backward()
    assert crf.transitions.grad[B_NAME, I_NAME] != 0
    assert crf.transitions.grad[O, I_NAME] == 0  # forbidden moves stay where they are


def test_learned_scores_steer_viterbi_and_iob2_constraints_still_hold():
    rows = torch.tensor([[0.5, 0.4, 0.1, 0.0, 0.0], [0.1, 0.0, 0.45, 0.45, 0.0]]).clamp(min=1e-4).log()
    (plain, _), = decode_tags([rows], SCHEME, "viterbi")
    learned = crf_scores(new_crf(SCHEME))
    learned["transitions"][B_NAME, I_NAME] = 3.0  # a name goes on
    learned["start_transitions"][I_SKILL] = 50.0  # learned inside windows; never a document's first tag
    (steered, _), = decode_tags([rows], SCHEME, "viterbi", learned)
    assert plain == ["O", "B-SKILL"]
    assert steered == ["B-NAME", "I-NAME"]
    only_inside = torch.full((1, 5), -20.0).index_fill(1, torch.tensor([I_SKILL]), 0.0)
    (first, _), = decode_tags([only_inside], SCHEME, "viterbi", learned)
    assert first != ["I-SKILL"]


def test_saved_scores_load_back_and_a_broken_file_is_named(tmp_path):
    crf = new_crf(SCHEME)
    with torch.no_grad():
        crf.end_transitions.fill_(0.25)
    save_crf(crf, tmp_path)
    assert torch.equal(load_crf(tmp_path, SCHEME).end_transitions, crf.end_transitions)
    other = LabelScheme.from_types(["NAME"])
    wrong_shape = r"crf.safetensors start_transitions should have shape \(3,\) for 3 labels, found \(5,\)"
    with pytest.raises(CheckpointError, match=wrong_shape):
        load_crf_scores(tmp_path, other)
    save_file({"transitions": torch.zeros(5, 5)}, str(tmp_path / CRF_FILE))
    with pytest.raises(CheckpointError, match="start_transitions should have shape .* found missing"):
        load_crf_scores(tmp_path, SCHEME)
    (tmp_path / CRF_FILE).write_bytes(b"not safetensors")
    with pytest.raises(CheckpointError, match="crf.safetensors is truncated or corrupt"):
        load_crf_scores(tmp_path, SCHEME)
    with pytest.raises(CheckpointError, match="crf.safetensors is missing"):
        load_crf_scores(tmp_path / "elsewhere", SCHEME)


def test_argmax_decoding_is_refused_for_a_crf_head():
    with pytest.raises(ConfigError, match="head 'crf' needs decoding 'viterbi'"):
        config_from_dict({"model": {"head": "crf", "decoding": "argmax"}})
    assert config_from_dict({"model": {"head": "softmax", "decoding": "argmax"}}).model.head == "softmax"


@pytest.fixture(scope="module")
def crf_run(tiny_backbone, synth_documents, tmp_path_factory):
    config = {
        "model": {"backbone": str(tiny_backbone), "max_length": 64, "stride": 16, "head": "crf"},
        "training": {"learning_rate": 2e-3, "batch_size": 8, "epochs": 2, "random_seed": 3, "num_threads": 1},
        "tracking": {"enabled": False},
    }
    return train_model(config, synth_documents[:40], synth_documents[40:50], tmp_path_factory.mktemp("crf"))


def test_a_crf_model_saves_its_learned_scores_and_predicts_and_evaluates_with_them(crf_run, synth_documents):
    model_dir = Path(crf_run.model_dir)
    metadata = json.loads((model_dir / "resume_ner.json").read_text())
    assert metadata["head"] == "crf" and (model_dir / CRF_FILE).is_file()
    learned = load_crf_scores(model_dir, LabelScheme.from_dict(metadata["label_scheme"]))
    assert learned["transitions"].abs().max() > 0  # trained, not the zeros it started from
    predictor = Predictor(model_dir, device="cpu")
    assert predictor.transitions is not None and torch.equal(predictor.transitions["transitions"],
                                                             learned["transitions"])
    texts = [doc.text for doc in synth_documents[50:]]
    assert sum(len(entities) for entities in predictor.predict(texts)) > 0
    metrics = evaluate_model(model_dir, synth_documents[40:50], device="cpu", precision="fp32")  # as validation runs
    assert metrics["span_f1_micro"] == pytest.approx(crf_run.metrics["span_f1_micro"])
    assert metrics["loss"] == pytest.approx(crf_run.metrics["loss"], rel=1e-3)  # the CRF's NLL, as in training


def test_a_crf_model_without_its_scores_is_refused_by_name(crf_run, tmp_path):
    import shutil

    copy = tmp_path / "model"
    shutil.copytree(crf_run.model_dir, copy)
    (copy / CRF_FILE).unlink()
    with pytest.raises(CheckpointError, match="crf.safetensors is missing or empty"):
        validate_checkpoint(copy)
    with pytest.raises(CheckpointError, match="crf.safetensors is missing"):
        Predictor(copy, device="cpu")


def test_a_softmax_head_writes_no_crf_scores(tiny_config, synth_documents, tmp_path):
    tiny_config["model"]["head"] = "softmax"
    tiny_config["training"]["epochs"] = 1
    result = train_model(tiny_config, synth_documents[:16], synth_documents[16:20], tmp_path)
    model_dir = Path(result.model_dir)
    assert json.loads((model_dir / "resume_ner.json").read_text())["head"] == "softmax"
    assert not (model_dir / CRF_FILE).exists()
    assert Predictor(model_dir, device="cpu").transitions is None
