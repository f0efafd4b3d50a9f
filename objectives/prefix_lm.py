"""Prefix language modelling on a decoder (Raffel et al. 2020, section 3.2.1; Liu et al. 2018).

Each row is cut at a prefix length drawn uniformly from 1..L-1 (`noise.prefix_split`). The
prefix is read bidirectionally, the rest causally: query i attends key j iff j < prefix or
j <= i. The loss covers the suffix tokens only, each predicted from everything before it; the
first suffix token is predicted at the last prefix position, which sees the whole prefix and
nothing after it. Prefix positions predict nothing: they see the token they would predict.

    block           [the, cat, sat, on, the, mat]          prefix length 3
    input_ids       [the, cat, sat, on, the, mat]
    labels          [-100, -100, on, the, mat, -100]
    prefix_lengths  3

    attention (row = query, 1 = may attend)
        the  1 1 1 0 0 0
        cat  1 1 1 0 0 0
        sat  1 1 1 0 0 0
        on   1 1 1 1 0 0
        the  1 1 1 1 1 0
        mat  1 1 1 1 1 1

`prefix_attention_mask`, `assemble` and `prefix_lm_logits` are shared with UL2 and with the
lm-eval adapter (harness.evaluate.prefix).
"""

from __future__ import annotations

import numpy as np
import torch

from harness.models.tensors import IGNORE_INDEX
from objectives.base import Objective, cross_entropy
from objectives.configs import PrefixLMConfig
from objectives.noise import denoise, drop_noise_tokens, drop_nonnoise_tokens, random_prefix_noise


def prefix_attention_mask(prefix_lengths: torch.Tensor, length: int) -> torch.Tensor:
    """(B, 1, L, L) bool, True where query i may attend key j: j < prefix length or j <= i.

    True means attend, as scaled_dot_product_attention reads a boolean mask. Every query may
    attend at least itself, so no row is empty (an empty row would make sdpa return NaN).
    """
    positions = torch.arange(length, device=prefix_lengths.device)
    causal = positions[None, :] <= positions[:, None]                     # (L, L): key <= query
    in_prefix = positions[None, :] < prefix_lengths.reshape(-1, 1, 1)    # (B, 1, L): key in prefix
    return (causal[None] | in_prefix)[:, None]


def prefix_lm_logits(model: torch.nn.Module, input_ids: torch.Tensor, prefix_lengths: torch.Tensor):
    """Logits of a ModernBERT decoder reading each row's prefix bidirectionally.

    A 4-D mask is used as given by transformers' mask creation (create_causal_mask returns a
    prepared 4-D mask unchanged), so the decoder's causal mask is replaced, not combined.
    """
    mask = prefix_attention_mask(prefix_lengths, input_ids.shape[1])
    return model(input_ids=input_ids, attention_mask=mask).logits


def assemble(prefix: np.ndarray, suffix: np.ndarray, length: int, pad_id: int):
    """(input_ids, labels) of one row: prefix then suffix, right-padded to `length`.

    labels[t] = row[t + 1] wherever row[t + 1] is a suffix token, IGNORE_INDEX elsewhere.

    >>> assemble(np.array([7, 8]), np.array([9, 10]), 5, pad_id=0)
    (array([ 7,  8,  9, 10,  0]), array([-100,    9,   10, -100, -100]))
    """
    content = np.concatenate([prefix, suffix]).astype(np.int64)
    if len(content) > length:
        raise ValueError(f"a row of {len(content)} tokens does not fit {length}")
    input_ids = np.full(length, pad_id, dtype=np.int64)
    input_ids[: len(content)] = content
    labels = np.full(length, IGNORE_INDEX, dtype=np.int64)
    labels[len(prefix) - 1 : len(content) - 1] = suffix
    return input_ids, labels


def split_rows(block: np.ndarray, rng: np.random.Generator):
    """Prefix LM batch arrays of a (B, L) block: (input_ids, labels, prefix_lengths). Each row is
    denoised as T5's prefix_lm: the noise after a random cut is the suffix, the rest the prefix."""
    rows = []
    for row in np.asarray(block, dtype=np.int64):
        prefix, suffix = denoise(row, rng, noise_mask_fn=random_prefix_noise, inputs_fn=drop_noise_tokens,
                                 targets_fn=drop_nonnoise_tokens)
        rows.append((*assemble(prefix, suffix, len(row), pad_id=0), len(prefix)))
    input_ids, labels, prefix_lengths = zip(*rows)
    return np.stack(input_ids), np.stack(labels), np.array(prefix_lengths, dtype=np.int64)


def prefix_use(mode_token: str | None = None) -> str:
    """How to score an export trained with a bidirectional prefix (harness_export's `use`)."""
    mode = f"{mode_token} first, then " if mode_token else ""
    return (f"A decoder trained with a bidirectional prefix: the prefix ({mode}the context) attends bidirectionally "
            "within itself, the continuation causally (key j is visible to query i iff j < prefix length or "
            "j <= i). Pass that as a 4-D boolean attention_mask (B, 1, L, L), True where a query may attend, with "
            "attn_implementation='sdpa', and score each continuation token from the logits at the position "
            "before it. Loaded plainly it runs as a causal decoder, which it was not trained as.")


def as_batch(input_ids: np.ndarray, labels: np.ndarray, prefix_lengths: np.ndarray) -> dict[str, torch.Tensor]:
    return {"input_ids": torch.from_numpy(input_ids), "labels": torch.from_numpy(labels),
            "prefix_lengths": torch.from_numpy(prefix_lengths)}


def prefix_lm_loss(model, batch: dict[str, torch.Tensor], config):
    """(loss, metrics) of a batch with prefix_lengths: cross-entropy on the labelled suffix."""
    logits = prefix_lm_logits(model, batch["input_ids"], batch["prefix_lengths"])
    loss, metrics = cross_entropy(logits, batch["labels"], config)
    return loss, {"loss": loss.detach(), **metrics}


class PrefixLM(Objective):
    name = "prefix_lm"
    architecture = "decoder"
    special_tokens = ()
    scoring = "prefix-loglikelihood"
    # Text scored causally after a bidirectional prefix is a chain-rule likelihood (objectives.base).
    defines_likelihood = True
    Config = PrefixLMConfig

    def transform(self, block, rng):
        # No padding: every row is the whole block, so pad_id is never written.
        return as_batch(*split_rows(block, rng))

    def loss(self, model, batch):
        return prefix_lm_loss(model, batch, self.config)

    def export_usage(self, seq_len):
        return super().export_usage(seq_len) | {"attention": "prefix", "use": prefix_use()}
