"""Noise primitives shared by the denoising objectives.

Each is a pure function of a shape (or a block) and a numpy Generator, so an objective is a
short composition of them and a test can check their statistics with no model at all.
"""

from __future__ import annotations

import numpy as np


def iid_mask(shape: tuple[int, ...], rate: float, rng: np.random.Generator,
             eligible: np.ndarray | None = None) -> np.ndarray:
    """Boolean mask selecting each eligible position independently with probability `rate`."""
    mask = rng.random(shape) < rate
    return mask if eligible is None else mask & eligible


def split_by_rates(mask: np.ndarray, rates: tuple[float, ...], rng: np.random.Generator):
    """Partition the True positions of `mask` into len(rates) groups, one draw per position.

    BERT's 80/10/10 is split_by_rates(selected, (0.8, 0.1, 0.1)).
    """
    edges = np.cumsum(rates)
    if not np.isclose(edges[-1], 1.0):
        raise ValueError(f"rates must sum to 1, got {rates}")
    draw = rng.random(mask.shape)
    groups, low = [], 0.0
    for high in edges:
        groups.append(mask & (draw >= low) & (draw < high))
        low = high
    return groups


# --- span noise (T5, Raffel et al. 2020, section 3.1.4 and its preprocessors) -----------------


def span_counts(length: int, density: float, mean_span: float) -> tuple[int, int]:
    """(noise tokens, noise spans) for a sequence of `length`: T5's rounding, at least one of
    each, and at least one clean token."""
    noise = min(max(round(length * density), 1), length - 1)
    return noise, max(round(noise / mean_span), 1)


def random_spans_mask(length: int, density: float, mean_span: float, rng: np.random.Generator) -> np.ndarray:
    """Boolean noise mask of `length` with span_counts(...) noise tokens in that many spans.

    Noise and clean span lengths are uniform random compositions (every span non-empty), and the
    sequence starts with a clean span, as in T5's `random_spans_noise_mask`.
    """
    noise, spans = span_counts(length, density, mean_span)
    noise_lengths = _random_composition(noise, spans, rng)
    clean_lengths = _random_composition(length - noise, spans, rng)
    runs = np.stack([clean_lengths, noise_lengths], axis=1).reshape(-1)
    return np.repeat(np.tile([False, True], spans), runs)


def _random_composition(total: int, parts: int, rng: np.random.Generator) -> np.ndarray:
    """`total` split into `parts` positive integers, uniformly over all such splits."""
    cuts = np.sort(rng.choice(np.arange(1, total), size=parts - 1, replace=False))
    return np.diff(np.concatenate([[0], cuts, [total]]))


def replace_spans(tokens: np.ndarray, mask: np.ndarray, sentinels: np.ndarray) -> np.ndarray:
    """Each run of masked tokens replaced by one sentinel, the k-th run by sentinels[k].

    >>> replace_spans(np.array([1, 2, 3, 4, 5]), np.array([0, 1, 1, 0, 1], bool), np.array([90, 91]))
    array([ 1, 90,  4, 91])
    """
    starts = mask & ~np.concatenate([[False], mask[:-1]])
    out = tokens.copy()
    out[starts] = sentinels[np.cumsum(starts)[starts] - 1]
    return out[~mask | starts]


def span_corrupt(tokens: np.ndarray, mask: np.ndarray, sentinels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """T5's (inputs, targets): noise spans become sentinels in the inputs, and the targets are
    each sentinel followed by the span it replaced.

        tokens  [the, cat, sat, on, the, mat]   mask [0, 1, 0, 0, 1, 1]
        inputs  [the, <s0>, sat, on, <s1>]
        targets [<s0>, cat, <s1>, the, mat]
    """
    starts = mask & ~np.concatenate([[False], mask[:-1]])
    targets = np.insert(tokens[mask], np.flatnonzero(starts[mask]), sentinels[:starts.sum()])
    return replace_spans(tokens, mask, sentinels), targets


def prefix_split(length: int, rng: np.random.Generator) -> int:
    """A prefix length drawn uniformly from 1..length-1 (both parts non-empty)."""
    return int(rng.integers(1, length))


def span_lengths(inputs_length: int, density: float, mean_span: float) -> tuple[int, int]:
    """(raw tokens, targets length) such that span-corrupted inputs fit `inputs_length`.

    The T5 arithmetic (its `random_spans_helper`): the longest raw length whose inputs (clean
    tokens, one sentinel per span, one end token) still fit, and the targets that length gives
    (noise tokens, one sentinel per span, one end token).
    """
    def lengths(raw: int) -> tuple[int, int]:
        noise, spans = span_counts(raw, density, mean_span)
        return raw - noise + spans + 1, noise + spans + 1

    raw = inputs_length - 1
    while lengths(raw + 1)[0] <= inputs_length:
        raw += 1
    return raw, lengths(raw)[1]
