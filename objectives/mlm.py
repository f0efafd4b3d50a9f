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
from objectives.base import Objective, Vocab, cross_entropy
from objectives.configs import MaskedLMConfig
from objectives.noise import bert_noise


def bert_mask(block: np.ndarray, rng: np.random.Generator, vocab: Vocab, *, rate: float,
              split: tuple[float, ...]) -> tuple[np.ndarray, np.ndarray]:
    """(input_ids, labels) of BERT's masking of a (B, T) block with the vocabulary's [MASK] and
    ordinary tokens; `split` shares the selected positions among [MASK], a random token and
    unchanged (MaskedLMConfig.split). Masked LM, NSP/SOP and ELECTRA all mask with it."""
    block = np.asarray(block, dtype=np.int64)
    inputs, selected = bert_noise(block, rng, rate=rate, split=split, mask_id=vocab.id("[MASK]"),
                                  special_ids=vocab.special_ids(), vocab_size=vocab.size)
    return inputs, np.where(selected, block, IGNORE_INDEX)


def dense_for_export(model):
    """`model` (a ModernBertForMaskedLM trained with sparse prediction) configured to give full
    logits once saved. Its own forward keeps the mode it was built with (ModernBERT reads the
    flag at construction), so training the same module on is unaffected."""
    model.config.sparse_prediction = False  # a training-time saving; users get full logits
    return model


class MaskedLM(Objective):
    name = "mlm"
    architecture = "encoder"
    special_tokens = ("[MASK]", "[CLS]", "[SEP]")
    scoring = "pseudo-loglikelihood"
    defines_likelihood = False
    Config = MaskedLMConfig

    def transform(self, block, rng):
        cfg = self.config
        inputs, labels = bert_mask(block, rng, self.vocab, rate=cfg.mask_rate, split=cfg.split)
        return {"input_ids": torch.from_numpy(inputs), "labels": torch.from_numpy(labels)}

    def loss(self, model, batch):
        # With sparse prediction (set for training by model_overrides) the model projects to the
        # vocabulary only at labelled positions and returns those rows alone, in row-major order.
        labels = batch["labels"]
        logits = model(input_ids=batch["input_ids"], labels=labels).logits
        targets = labels if logits.dim() == 3 else labels[labels != IGNORE_INDEX]
        loss, metrics = cross_entropy(logits, targets, self.config)
        return loss, {"loss": loss.detach(), **metrics}

    def model_overrides(self):
        return {"sparse_prediction": True}

    def export_model(self, module):
        return dense_for_export(module)
