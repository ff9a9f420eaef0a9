"""Distillation: the teacher's word-level targets on the student's windows, the softened KL loss, and a
training that learns from a teacher (training.distill_from)."""

from __future__ import annotations

import copy

import pytest
import torch

from resume_ner.data.windows import build_windows
from resume_ner.errors import ConfigError
from resume_ner.training.distillation import (
    collate_soft_targets,
    distillation_loss,
    teacher_word_log_probs,
    window_soft_targets,
)
from resume_ner.training.model import load_fast_tokenizer
from resume_ner.training.trainer import train_model


def test_the_loss_is_zero_when_the_student_matches_the_teacher_and_skips_tokens_without_a_target():
    torch.manual_seed(0)
    logits = torch.randn(2, 5, 7)
    teacher = logits.log_softmax(-1).half()
    teacher[0, 1] = float("nan")
    assert distillation_loss(logits, teacher, 2.0).item() == pytest.approx(0.0, abs=1e-3)
    other = torch.randn(2, 5, 7, requires_grad=True)
    loss = distillation_loss(other, teacher, 2.0)
    assert loss.item() > 0.01
    loss.backward()
    assert other.grad[0, 1].abs().sum() == 0 and other.grad[0, 0].abs().sum() > 0  # no target, no gradient
    assert distillation_loss(other, torch.full_like(teacher, float("nan")), 2.0).item() == 0.0


def test_the_loss_is_the_mean_softened_kl_times_t_squared():
    student, teacher_logits = torch.tensor([[[1.0, 0.0, -1.0]]]), torch.tensor([[[0.0, 2.0, 0.0]]])
    t = 3.0
    p, q = (teacher_logits / t).softmax(-1), (student / t).softmax(-1)
    expected = (p * (p.log() - q.log())).sum() * t**2
    assert distillation_loss(student, teacher_logits.log_softmax(-1), t).item() == pytest.approx(
        expected.item(), rel=1e-4
    )


@pytest.fixture
def teacher(tiny_config, synth_documents, tmp_path_factory):
    """A tiny model trained for one epoch: the teacher of these tests."""
    config = copy.deepcopy(tiny_config)
    config["training"]["epochs"] = 1
    out = tmp_path_factory.mktemp("teacher")
    return train_model(config, synth_documents[:40], synth_documents[40:50], out / "run").model_dir


def test_teacher_targets_sit_at_the_first_sub_token_of_each_word(teacher, tiny_backbone, synth_documents):
    from resume_ner.data.labels import LabelScheme
    from resume_ner.training.checkpoint import read_metadata

    scheme = LabelScheme.from_dict(read_metadata(teacher)["label_scheme"])
    docs = synth_documents[:6]
    offsets, log_probs = teacher_word_log_probs(teacher, docs, scheme, torch.device("cpu"))
    assert [len(o) for o in offsets] == [len(p) for p in log_probs]
    # the student cuts other windows (32 tokens) with the same tokenizer and line markers: every word matches
    student = build_windows(
        docs, load_fast_tokenizer(str(tiny_backbone)), scheme, max_length=32, stride=8, line_markers=True
    )
    targets, matched = window_soft_targets(student, offsets, log_probs)
    assert matched == 1.0 and len(targets) == len(student.windows) > len(docs)
    for window, target in zip(student.windows, targets, strict=True):
        has_target = ~torch.isnan(target).any(-1)
        assert has_target.tolist() == window.first_subtoken
        t = window.first_subtoken.index(True)
        word = window.word_ids[t]
        assert torch.allclose(target[t].float(), log_probs[window.doc_index][word], atol=1e-2)
    batch = collate_soft_targets(targets[:3], 40)
    assert batch.shape == (3, 40, len(scheme.labels)) and torch.isnan(batch[0, len(targets[0]) :]).all()


def test_a_word_the_teacher_split_differently_gets_no_target(teacher, tiny_backbone, synth_documents):
    from resume_ner.data.labels import LabelScheme
    from resume_ner.training.checkpoint import read_metadata

    scheme = LabelScheme.from_dict(read_metadata(teacher)["label_scheme"])
    docs = synth_documents[:1]
    offsets, log_probs = teacher_word_log_probs(teacher, docs, scheme, torch.device("cpu"))
    offsets[0][3] = (offsets[0][3][0], offsets[0][3][1] + 1)  # the teacher's word 3 has another span
    student = build_windows(
        docs, load_fast_tokenizer(str(tiny_backbone)), scheme, max_length=64, stride=16, line_markers=True
    )
    targets, matched = window_soft_targets(student, offsets, log_probs)
    assert matched == pytest.approx(1 - 1 / len(offsets[0]))
    window = student.windows[0]
    token = next(t for t, wid in enumerate(window.word_ids) if wid == 3)
    assert torch.isnan(targets[0][token]).all()


def test_a_teacher_with_other_labels_is_refused(teacher, synth_documents):
    from resume_ner.data.labels import LabelScheme

    with pytest.raises(ConfigError, match="distill_from.*same entity types"):
        teacher_word_log_probs(teacher, synth_documents[:2], LabelScheme.from_types(["NAME"]), torch.device("cpu"))


def test_a_training_with_a_teacher_learns_from_it(teacher, tiny_config, synth_documents, tmp_path, caplog):
    train, val = synth_documents[:40], synth_documents[40:50]
    plain = train_model(tiny_config, train, val, tmp_path / "plain")
    config = copy.deepcopy(tiny_config)
    config["training"].update(distill_from=str(teacher), distill_weight=0.5, distill_temperature=2.0)
    with caplog.at_level("INFO", logger="resume_ner.training.trainer"):
        distilled = train_model(config, train, val, tmp_path / "distilled")
    assert "100.0% of the training words have a teacher target" in caplog.text
    assert distilled.global_step == plain.global_step
    assert distilled.history[0]["train_loss"] != pytest.approx(plain.history[0]["train_loss"], rel=1e-3)
    # the whole weight on the teacher: the student ends nearer to the teacher than the plain training does
    config["training"]["distill_weight"] = 1.0
    only_teacher = train_model(config, train, val, tmp_path / "only-teacher")
    assert _distance_to_teacher(only_teacher.model_dir, teacher, train) < _distance_to_teacher(
        plain.model_dir, teacher, train
    )


def _distance_to_teacher(student_dir, teacher_dir, documents) -> float:
    """The mean KL divergence of the student's word label distributions from the teacher's (T = 1)."""
    from resume_ner.data.labels import LabelScheme
    from resume_ner.training.batching import predict_windows
    from resume_ner.training.checkpoint import load_model_checkpoint

    model, tokenizer, metadata = load_model_checkpoint(student_dir)
    scheme = LabelScheme.from_dict(metadata["label_scheme"])
    windows = build_windows(documents, tokenizer, scheme, max_length=64, stride=16)
    offsets, teacher_log_probs = teacher_word_log_probs(teacher_dir, documents, scheme, torch.device("cpu"))
    targets, _ = window_soft_targets(windows, offsets, teacher_log_probs)
    student_log_probs, _ = predict_windows(model, windows.windows, tokenizer.pad_token_id, 32, torch.device("cpu"))
    losses = [distillation_loss(s[None], t[None], 1.0).item() for s, t in zip(student_log_probs, targets, strict=True)]
    return sum(losses) / len(losses)
