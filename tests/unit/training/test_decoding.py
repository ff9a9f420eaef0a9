"""Word tags from label log-probabilities: Viterbi finds the most probable valid IOB2 sequence."""

from __future__ import annotations

import itertools
import math

import pytest
import torch

from resume_ner.data.labels import LabelScheme
from resume_ner.training.decoding import decode_tags, model_decoding

SCHEME = LabelScheme.from_types(["NAME", "SKILL"])  # O, B-NAME, I-NAME, B-SKILL, I-SKILL


def _valid(tags: list[str]) -> bool:
    previous = "O"
    for tag in tags:
        if tag.startswith("I-") and previous[2:] != tag[2:]:
            return False
        previous = tag
    return True


def _log_probs(rows: list[dict[str, float]]) -> torch.Tensor:
    """Rows of label -> probability (the rest shared evenly) as log-probabilities."""
    out = []
    for row in rows:
        rest = (1.0 - sum(row.values())) / (len(SCHEME.labels) - len(row))
        out.append([math.log(row.get(label, rest)) for label in SCHEME.labels])
    return torch.tensor(out)


def test_viterbi_joins_an_entity_that_argmax_splits_at_a_word_read_as_outside():
    # "Gordon - Pretoria": argmax reads B O I, i.e. two entities; the valid sequence B I I is more probable
    rows = _log_probs([{"B-NAME": 0.9}, {"O": 0.55, "I-NAME": 0.4}, {"I-NAME": 0.7, "B-NAME": 0.2}])
    (argmax_tags, _), = decode_tags([rows], SCHEME, "argmax")
    (viterbi_tags, scores), = decode_tags([rows], SCHEME, "viterbi")
    assert argmax_tags == ["B-NAME", "O", "I-NAME"]
    assert viterbi_tags == ["B-NAME", "I-NAME", "I-NAME"]
    assert scores == pytest.approx([0.9, 0.4, 0.7])


def test_viterbi_is_the_most_probable_valid_sequence_and_argmax_where_argmax_is_valid():
    generator = torch.Generator().manual_seed(0)
    labels = SCHEME.labels
    documents = [torch.randn(n, len(labels), generator=generator).mul(2).log_softmax(-1) for n in (1, 2, 3, 4, 4, 3)]
    decoded = decode_tags(documents, SCHEME, "viterbi")
    argmaxed = decode_tags(documents, SCHEME, "argmax")
    for rows, (tags, _), (argmax_tags, _) in zip(documents, decoded, argmaxed):
        best = max((seq for seq in itertools.product(range(len(labels)), repeat=len(rows))
                    if _valid([labels[i] for i in seq])),
                   key=lambda seq: sum(rows[t, i].item() for t, i in enumerate(seq)))
        assert tags == [labels[i] for i in best]
        if _valid(argmax_tags):
            assert tags == argmax_tags


def test_documents_of_different_lengths_decode_as_they_do_alone():
    generator = torch.Generator().manual_seed(1)
    documents = [torch.randn(n, len(SCHEME.labels), generator=generator).log_softmax(-1) for n in (7, 1, 40, 0, 13)]
    together = decode_tags(documents, SCHEME, "viterbi")
    assert together[3] == ([], [])
    for rows, result in zip(documents, together):
        assert decode_tags([rows], SCHEME, "viterbi")[0] == result
        assert len(result[0]) == len(rows) and _valid(result[0])


def test_unknown_decoding_is_refused_and_checkpoints_without_one_use_viterbi():
    with pytest.raises(ValueError, match="unknown decoding 'beam'"):
        decode_tags([], SCHEME, "beam")  # type: ignore[arg-type]
    assert model_decoding({"label_scheme": {}}) == "viterbi"
    assert model_decoding({"decoding": "argmax"}) == "argmax"
