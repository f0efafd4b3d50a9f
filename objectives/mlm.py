"""BERT masked language modelling with the 80/10/10 replacement rule (Devlin et al. 2019).

Each non-special position is selected with probability `mask_rate`; a selected position is
replaced by [MASK] 80% of the time, by a random ordinary token 10%, and left unchanged 10%.
The loss is taken on selected positions only.

    block      [the, cat, sat, on, the, mat]
    input_ids  [the, [MASK], sat, on, dog, mat]     (cat -> [MASK], the -> random 'dog')
    labels     [-100, cat, -100, -100, the, -100]
"""

from __future__ import annotations

import numpy as np
import torch

from harness.models.tensors import IGNORE_INDEX
from objectives.base import Objective, cross_entropy
from objectives.configs import MaskedLMConfig
from objectives.noise import iid_mask, split_by_rates


def bert_mask(block: np.ndarray, rng: np.random.Generator, *, rate: float, mask_id: int,
              special_ids: np.ndarray, vocab_size: int, split=(0.8, 0.1, 0.1)):
    """Return (input_ids, labels) for BERT-style masking of a (B, T) block."""
    eligible = ~np.isin(block, special_ids)
    selected = iid_mask(block.shape, rate, rng, eligible)
    to_mask, to_random, _unchanged = split_by_rates(selected, split, rng)
    inputs = block.copy()
    inputs[to_mask] = mask_id
    inputs[to_random] = random_ordinary_tokens(int(to_random.sum()), special_ids, vocab_size, rng)
    labels = np.where(selected, block, IGNORE_INDEX)
    return inputs, labels


def random_ordinary_tokens(n: int, special_ids: np.ndarray, vocab_size: int,
                           rng: np.random.Generator) -> np.ndarray:
    """n tokens drawn uniformly from the vocabulary minus its special tokens."""
    ordinary = np.setdiff1d(np.arange(vocab_size), special_ids)
    return rng.choice(ordinary, size=n)


class MaskedLM(Objective):
    name = "mlm"
    architecture = "encoder"
    special_tokens = ("[MASK]", "[CLS]", "[SEP]")
    scoring = "pseudo-loglikelihood"
    defines_likelihood = False
    Config = MaskedLMConfig

    def transform(self, block, rng):
        cfg = self.config
        keep = 1.0 - cfg.mask_fraction - cfg.random_fraction
        inputs, labels = bert_mask(
            np.asarray(block, dtype=np.int64), rng, rate=cfg.mask_rate,
            mask_id=self.vocab.id("[MASK]"), special_ids=self.vocab.special_ids(),
            vocab_size=self.vocab.size, split=(cfg.mask_fraction, cfg.random_fraction, keep))
        return {"input_ids": torch.from_numpy(inputs), "labels": torch.from_numpy(labels)}

    def loss(self, model, batch):
        # With sparse prediction (set for training by model_overrides) the model projects to the
        # vocabulary only at labelled positions and returns those rows alone, in row-major order.
        labels = batch["labels"]
        logits = model(input_ids=batch["input_ids"], labels=labels).logits
        targets = labels if logits.dim() == 3 else labels[labels != IGNORE_INDEX]
        loss, metrics = cross_entropy(logits, targets, self.config)
        return loss, {"loss": loss.item(), **metrics}

    def model_overrides(self):
        return {"sparse_prediction": True}
