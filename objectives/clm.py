"""Causal language modelling: predict every next token under a causal mask.

    block      [the, cat, sat, ., [EOS]]
    input_ids  [the, cat, sat, ., [EOS]]
    labels     [cat, sat, ., [EOS], -100]     (the last position has no next token in the block)
"""

from __future__ import annotations

import numpy as np
import torch

from harness.models.tensors import IGNORE_INDEX
from objectives.base import Objective, cross_entropy
from objectives.configs import CausalLMConfig


def shift_labels(block: np.ndarray) -> np.ndarray:
    """labels[t] = block[t + 1]; the last position predicts nothing."""
    labels = np.full_like(block, IGNORE_INDEX)
    labels[:, :-1] = block[:, 1:]
    return labels


def next_token_batch(block: np.ndarray) -> dict[str, torch.Tensor]:
    """The causal-LM batch of a block: the block itself, and each position's next token."""
    block = np.asarray(block, dtype=np.int64)
    return {"input_ids": torch.from_numpy(block.copy()), "labels": torch.from_numpy(shift_labels(block))}


class CausalLM(Objective):
    name = "clm"
    architecture = "decoder"
    special_tokens = ()
    scoring = "loglikelihood"
    defines_likelihood = True
    Config = CausalLMConfig

    def transform(self, block, rng):
        return next_token_batch(block)

    def loss(self, model, batch):
        logits = model(input_ids=batch["input_ids"]).logits
        loss, metrics = cross_entropy(logits, batch["labels"], self.config)
        return loss, {"loss": loss.detach(), **metrics}
