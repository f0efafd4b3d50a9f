"""The shared noise primitives against the T5 arithmetic and published masking statistics."""

from __future__ import annotations

import numpy as np
import pytest

from objectives.noise import (iid_mask, prefix_split, random_spans_mask, span_corrupt, span_counts,
                              span_lengths, split_by_rates)

SENTINELS = np.arange(1000, 1100)


@pytest.mark.parametrize("inputs_length, density, mean_span, expected", [
    (512, 0.15, 3.0, (568, 114)),   # T5's C4 setting, as its random_spans_helper gives
    (128, 0.15, 3.0, (141, 29)),
    (128, 0.5, 3.0, (191, 129)),
])
def test_span_lengths_follow_the_t5_arithmetic(inputs_length, density, mean_span, expected):
    raw, targets = span_lengths(inputs_length, density, mean_span)
    assert (raw, targets) == expected
    noise, spans = span_counts(raw, density, mean_span)
    assert noise == round(raw * density) and spans == round(noise / mean_span)
    assert raw - noise + spans + 1 <= inputs_length < raw + 1 - span_counts(raw + 1, density, mean_span)[0] \
        + span_counts(raw + 1, density, mean_span)[1] + 1


# Span counts are rounded (T5), so a mean span of 64 needs a long sequence to be met closely.
@pytest.mark.parametrize("length, density, mean_span", [(568, 0.15, 3.0), (568, 0.5, 8.0), (4096, 0.15, 64.0)])
def test_random_spans_have_the_configured_density_and_span_length(length, density, mean_span):
    rng = np.random.default_rng(0)
    n = 400
    masks = [random_spans_mask(length, density, mean_span, rng) for _ in range(n)]
    noise, spans = span_counts(length, density, mean_span)
    for m in masks:  # exact counts per example, as T5 fixes them
        assert m.sum() == noise and _runs(m) == spans and not m[0]
    lengths = np.concatenate([_run_lengths(m) for m in masks])
    assert abs(lengths.mean() - noise / spans) < 1e-9  # mean span length = noise / spans exactly
    assert abs(noise / spans - mean_span) / mean_span < 0.1
    # span lengths vary (a random composition), not all equal
    assert lengths.std() > 0


def _runs(mask: np.ndarray) -> int:
    return int((mask & ~np.concatenate([[False], mask[:-1]])).sum())


def _run_lengths(mask: np.ndarray) -> np.ndarray:
    edges = np.diff(np.concatenate([[0], mask.astype(int), [0]]))
    return np.flatnonzero(edges == -1) - np.flatnonzero(edges == 1)


def test_span_corruption_reconstructs_the_original_and_numbers_sentinels_in_order():
    rng = np.random.default_rng(1)
    for _ in range(200):
        tokens = rng.integers(0, 900, size=141)
        mask = random_spans_mask(len(tokens), 0.15, 3.0, rng)
        inputs, targets = span_corrupt(tokens, mask, SENTINELS)
        used_in = inputs[inputs >= 1000]
        used_out = targets[targets >= 1000]
        assert list(used_in) == list(used_out) == list(SENTINELS[:_runs(mask)])  # unique, in order
        assert _reconstruct(inputs, targets).tolist() == tokens.tolist()
        assert len(inputs) + 1 <= 128 and len(targets) + 1 <= 29  # with end tokens, fits the lengths


def _reconstruct(inputs: np.ndarray, targets: np.ndarray) -> np.ndarray:
    spans, current = {}, None
    for t in targets:
        if t >= 1000:
            current = spans.setdefault(int(t), [])
        else:
            current.append(int(t))
    out = []
    for t in inputs:
        out.extend(spans[int(t)] if t >= 1000 else [int(t)])
    return np.array(out)


def test_the_docstring_example():
    inputs, targets = span_corrupt(np.array([1, 2, 3, 4, 5, 6]), np.array([0, 1, 0, 0, 1, 1], bool),
                                   np.array([90, 91]))
    assert inputs.tolist() == [1, 90, 3, 4, 91] and targets.tolist() == [90, 2, 91, 5, 6]


def test_iid_mask_and_split_rates():
    rng = np.random.default_rng(2)
    mask = iid_mask((1000, 200), 0.15, rng)
    assert abs(mask.mean() - 0.15) < 5 * np.sqrt(0.15 * 0.85 / mask.size)
    a, b, c = split_by_rates(mask, (0.8, 0.1, 0.1), rng)
    assert not (a & b).any() and ((a | b | c) == mask).all()


def test_prefix_split_covers_every_length_and_leaves_both_parts_non_empty():
    rng = np.random.default_rng(3)
    draws = [prefix_split(8, rng) for _ in range(2000)]
    assert set(draws) == set(range(1, 8))
