"""The contract between an objective and the trainer.

An objective turns a block of token ids into a batch and a batch into a loss. Every batch has
the same keys (`BATCH_KEYS`), so the trainer checks the contract once and never branches on
which objective it is driving:

    input_ids  (B, T) int64   what the model reads
    labels     (B, T) int64   the token to predict at each position, or IGNORE_INDEX

`labels` are aligned with the positions that predict them: for causal LM, labels[t] is the
token at t+1 (the shift happens in `transform`, not in the loss), so one cross-entropy serves
every objective.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar, Literal

import numpy as np
import torch
import torch.nn.functional as F
from pydantic import BaseModel, ConfigDict

IGNORE_INDEX = -100
BATCH_KEYS = ("input_ids", "labels")
Architecture = Literal["decoder", "encoder"]


@dataclass(frozen=True)
class Vocab:
    """What an objective needs to know about the suite's tokenizer."""

    size: int
    special: dict[str, int]  # every special token -> id

    def id(self, token: str) -> int:
        return self.special[token]

    def special_ids(self) -> np.ndarray:
        return np.array(sorted(self.special.values()), dtype=np.int64)


class ObjectiveConfig(BaseModel):
    """Base of every objective's own config: unknown keys are errors."""

    model_config = ConfigDict(extra="forbid", frozen=True)


class Objective:
    """One pretraining objective: its config, architecture, batch transform and loss."""

    name: ClassVar[str]
    architecture: ClassVar[Architecture]
    special_tokens: ClassVar[tuple[str, ...]] = ()
    # how lm-eval scores a model trained with this objective (see harness.evaluate)
    scoring: ClassVar[str]
    # whether the loss is a likelihood of the text, so that bits per byte mean something
    defines_likelihood: ClassVar[bool]
    Config: ClassVar[type[ObjectiveConfig]] = ObjectiveConfig

    def __init__(self, config: ObjectiveConfig, vocab: Vocab):
        self.config = config
        self.vocab = vocab

    def transform(self, block: np.ndarray, rng: np.random.Generator) -> dict[str, torch.Tensor]:
        """Turn a (B, T) block of token ids into a batch with the keys in BATCH_KEYS."""
        raise NotImplementedError

    def loss(self, model: torch.nn.Module, batch: dict[str, torch.Tensor]):
        """Return (loss tensor, metrics dict of floats) for one batch."""
        raise NotImplementedError

    def model_overrides(self) -> dict:
        """Config fields this objective sets on its model (e.g. sparse prediction)."""
        return {}


def token_cross_entropy(logits: torch.Tensor, labels: torch.Tensor):
    """Mean cross-entropy over labelled positions, plus accuracy and the count of positions."""
    logits = logits.reshape(-1, logits.size(-1)).float()
    labels = labels.reshape(-1)
    loss = F.cross_entropy(logits, labels, ignore_index=IGNORE_INDEX)
    keep = labels != IGNORE_INDEX
    accuracy = (logits.argmax(-1)[keep] == labels[keep]).float().mean()
    return loss, {"accuracy": accuracy.item(), "predicted": int(keep.sum())}
