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
