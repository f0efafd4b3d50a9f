"""T5 span corruption (Raffel et al. 2020, section 3.1.4) for the encoder-decoder.

Spans of the block, `noise_density` of its tokens in spans of mean length `mean_span_length`,
are each replaced in the encoder's input by one sentinel, <extra_id_0>, <extra_id_1>, ... in
order; the decoder predicts each sentinel followed by the span it replaced, then [EOS]. The
block is longer than seq_len (`block_length`, T5's arithmetic) so that the corrupted input,
with its [EOS], just fits seq_len (T5 pads it to seq_len; here every row has the same length, so
nothing is padded and the encoder needs no attention mask). With noise_density 0.3 and
mean_span_length 2, a 10-token block has 3 noise tokens in 2 spans, here "sat on" and "dog":

    block              [the, cat, sat, on, the, mat, ., [EOS], a, dog]
    input_ids          [the, cat, <extra_id_0>, the, mat, ., [EOS], a, <extra_id_1>, [EOS]]
    labels             [<extra_id_0>, sat, on, <extra_id_1>, dog, [EOS]]
    decoder_input_ids  [[PAD], <extra_id_0>, sat, on, <extra_id_1>, dog]   (labels shifted right)

The decoder's loss is a likelihood of the noise tokens given the rest of the text.
"""

from __future__ import annotations

import numpy as np
import torch

from harness.models.tensors import IGNORE_INDEX, shift_right
from objectives.base import Objective, Vocab, cross_entropy
from objectives.configs import SpanCorruptionConfig
from objectives.noise import random_spans_mask, span_corrupt, span_counts, span_lengths

SENTINELS = tuple(f"<extra_id_{k}>" for k in range(100))


def corrupt_row(tokens: np.ndarray, rng: np.random.Generator, *, density: float, mean_span: float,
                sentinels: np.ndarray, eos: int) -> tuple[np.ndarray, np.ndarray]:
    """(encoder input, decoder target) of one row, each ended by [EOS]."""
    mask = random_spans_mask(len(tokens), density, mean_span, rng)
    inputs, targets = span_corrupt(tokens, mask, sentinels)
    return np.append(inputs, eos), np.append(targets, eos)


def pad_rows(rows: list[np.ndarray], fill: int) -> np.ndarray:
    """Rows stacked into (B, longest row), right-padded with `fill`."""
    out = np.full((len(rows), max(len(row) for row in rows)), fill, dtype=np.int64)
    for i, row in enumerate(rows):
        out[i, : len(row)] = row
    return out


def span_corruption(block: np.ndarray, rng: np.random.Generator, *, density: float, mean_span: float,
                    sentinels: np.ndarray, eos: int, pad: int) -> tuple[np.ndarray, np.ndarray]:
    """(input_ids, labels) of a (B, L) block: encoder inputs padded with [PAD], targets with
    IGNORE_INDEX. Every row of a block has the same noise and span counts (T5's rounding), so
    neither is padded when all rows have the same length, as training blocks do."""
    pairs = [corrupt_row(row, rng, density=density, mean_span=mean_span, sentinels=sentinels, eos=eos)
             for row in np.asarray(block, dtype=np.int64)]
    return pad_rows([p[0] for p in pairs], pad), pad_rows([p[1] for p in pairs], IGNORE_INDEX)


def sentinel_ids(vocab: Vocab, n: int) -> np.ndarray:
    """Ids of the first `n` sentinels."""
    if n > len(SENTINELS):
        raise ValueError(f"span corruption needs {n} sentinels, more than the {len(SENTINELS)} it defines: "
                         "use a shorter seq_len or a lower noise density")
    missing = [s for s in SENTINELS[:n] if s not in vocab.special]
    if missing:
        raise ValueError(f"the vocabulary lacks {len(missing)} sentinel tokens ({missing[0]}, ...): "
                         "its tokenizer was not prepared with span_corruption's special tokens")
    return np.array([vocab.id(s) for s in SENTINELS[:n]], dtype=np.int64)


class SpanCorruption(Objective):
    name = "span_corruption"
    architecture = "encoder-decoder"
    special_tokens = SENTINELS
    scoring = "seq2seq-loglikelihood"
    # The loss covers the noise spans only, but the decoder scores a continuation cut out after a
    # context (one span at the end): a chain-rule likelihood of the text, window by window.
    defines_likelihood = True
    Config = SpanCorruptionConfig

    def block_length(self, seq_len):
        return span_lengths(seq_len, self.config.noise_density, self.config.mean_span_length)[0]

    def targets_length(self, seq_len: int) -> int:
        """The decoder's length when the encoder's is seq_len."""
        return span_lengths(seq_len, self.config.noise_density, self.config.mean_span_length)[1]

    def transform(self, block, rng):
        cfg, block = self.config, np.asarray(block, dtype=np.int64)
        spans = span_counts(block.shape[1], cfg.noise_density, cfg.mean_span_length)[1]
        inputs, labels = span_corruption(
            block, rng, density=cfg.noise_density, mean_span=cfg.mean_span_length,
            sentinels=sentinel_ids(self.vocab, spans), eos=self.vocab.id("[EOS]"), pad=self.vocab.id("[PAD]"))
        labels = torch.from_numpy(labels)
        # T5 starts the decoder with [PAD]; the model's own labels-only path does the same.
        pad = self.vocab.id("[PAD]")
        return {"input_ids": torch.from_numpy(inputs), "labels": labels,
                "decoder_input_ids": shift_right(labels, start_id=pad, pad_id=pad)}

    def loss(self, model, batch):
        logits = model(input_ids=batch["input_ids"], decoder_input_ids=batch["decoder_input_ids"]).logits
        loss, metrics = cross_entropy(logits, batch["labels"], self.config)
        return loss, {"loss": loss.item(), **metrics}

    def scoring_args(self, seq_len):
        # Each sliding window scores no more tokens than the decoder was trained to emit
        # (its targets hold a sentinel and [EOS] besides the text).
        return {"sentinel": SENTINELS[0], "rolling_stride": max(1, self.targets_length(seq_len) - 2)}
