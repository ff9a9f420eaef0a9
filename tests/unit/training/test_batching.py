"""Length-grouped training orders: every window once, near-equal lengths per batch, random across megabatches."""

from __future__ import annotations

import random

from resume_ner.data.windows import Window
from resume_ner.training.batching import MEGABATCH_BATCHES, collate_windows, length_grouped


def test_length_grouped_keeps_every_window_and_fills_most_batches_with_full_windows():
    rng = random.Random(3)
    lengths = [256 if rng.random() < 0.85 else rng.randint(20, 255) for _ in range(2000)]
    order = list(range(len(lengths)))
    rng.shuffle(order)
    batch = 16

    grouped = length_grouped(order, lengths, batch)

    assert sorted(grouped) == sorted(order)
    batches = [grouped[i : i + batch] for i in range(0, len(grouped), batch)]
    unpadded = sum(len({lengths[i] for i in b}) == 1 for b in batches)
    shuffled = [order[i : i + batch] for i in range(0, len(order), batch)]
    assert unpadded >= 0.8 * len(batches)
    assert sum(len({lengths[i] for i in b}) == 1 for b in shuffled) < 0.2 * len(batches)  # 0.85**16 without it
    size = MEGABATCH_BATCHES * batch
    for start in range(0, len(order), size):  # windows stay in their megabatch of the random order
        assert sorted(grouped[start : start + size]) == sorted(order[start : start + size])
        megabatch = [lengths[i] for i in grouped[start : start + size]]
        assert megabatch == sorted(megabatch, reverse=True)


def test_length_grouped_keeps_the_random_order_among_equal_lengths():
    order = [5, 3, 9, 1, 7]
    assert length_grouped(order, [10] * 10, 2) == order


def test_collate_pads_to_a_multiple_with_masked_ignored_positions():
    windows = [Window(doc_index=0, input_ids=[101, 7, 102], attention_mask=[1, 1, 1], labels=[-100, 1, -100],
                      word_ids=[None, 0, None], first_subtoken=[False, True, False], is_first=True, is_last=True)]
    batch = collate_windows(windows, pad_token_id=0, pad_to_multiple_of=8)
    assert batch["input_ids"].tolist() == [[101, 7, 102, 0, 0, 0, 0, 0]]
    assert batch["attention_mask"].tolist() == [[1, 1, 1, 0, 0, 0, 0, 0]]
    assert batch["labels"].tolist() == [[-100, 1, -100] + [-100] * 5]
    assert collate_windows(windows, pad_token_id=0)["input_ids"].shape == (1, 3)
