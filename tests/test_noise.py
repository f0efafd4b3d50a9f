"""The shared noise primitives against the T5 arithmetic and published masking statistics."""

from __future__ import annotations

import numpy as np
import pytest

from objectives.noise import (denoise, drop_noise_tokens, drop_nonnoise_tokens, framed, iid_mask, prefix_split,
                              random_prefix_noise, random_spans_mask, random_spans_noise, replace_spans,
                              sentinel_inputs, sentinel_targets, span_counts, span_lengths, span_targets,
                              split_by_rates)

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
        inputs, targets = replace_spans(tokens, mask, SENTINELS), span_targets(tokens, mask, SENTINELS)
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
    tokens, mask, sentinels = np.array([1, 2, 3, 4, 5, 6]), np.array([0, 1, 0, 0, 1, 1], bool), np.array([90, 91])
    inputs, targets = replace_spans(tokens, mask, sentinels), span_targets(tokens, mask, sentinels)
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


# --- denoise: one composition for span corruption, prefix LM and UL2's denoisers -------------------


def test_denoise_with_span_noise_is_span_corruption():
    tokens = np.random.default_rng(4).integers(0, 900, size=141)
    inputs, targets = denoise(tokens, np.random.default_rng(5), noise_mask_fn=random_spans_noise(0.15, 3.0),
                              inputs_fn=sentinel_inputs(SENTINELS), targets_fn=sentinel_targets(SENTINELS))
    mask = random_spans_mask(len(tokens), 0.15, 3.0, np.random.default_rng(5))  # the same draws
    assert np.array_equal(inputs, replace_spans(tokens, mask, SENTINELS))
    assert np.array_equal(targets, span_targets(tokens, mask, SENTINELS))
    assert _reconstruct(inputs, targets).tolist() == tokens.tolist()


def test_denoise_with_prefix_noise_cuts_where_prefix_split_does():
    rng_a, rng_b = np.random.default_rng(6), np.random.default_rng(6)
    for _ in range(50):
        tokens = np.arange(20) + 100
        prefix, suffix = denoise(tokens, rng_a, noise_mask_fn=random_prefix_noise, inputs_fn=drop_noise_tokens,
                                 targets_fn=drop_nonnoise_tokens)
        cut = prefix_split(len(tokens), rng_b)
        assert prefix.tolist() == tokens[:cut].tolist() and suffix.tolist() == tokens[cut:].tolist()


def test_framed_puts_tokens_around_and_keeps_the_dtype():
    tokens, mask = np.array([5, 6, 7, 8], dtype=np.int64), np.array([0, 1, 1, 0], bool)
    assert framed(drop_noise_tokens, before=[1])(tokens, mask).tolist() == [1, 5, 8]
    assert framed(drop_nonnoise_tokens, after=[2])(tokens, mask).tolist() == [6, 7, 2]
    unframed = framed(drop_noise_tokens)(tokens, mask)
    assert unframed.dtype == np.int64 and unframed.tolist() == [5, 8]
    # UL2's R/X row: the mode token, the corrupted text; then the targets and [EOS]
    prefix, suffix = denoise(tokens, None, noise_mask_fn=lambda n, rng: mask.copy(),
                             inputs_fn=framed(sentinel_inputs(SENTINELS), before=[9]),
                             targets_fn=framed(sentinel_targets(SENTINELS), after=[2]))
    assert prefix.tolist() == [9, 5, 1000, 8] and suffix.tolist() == [1000, 6, 7, 2]
