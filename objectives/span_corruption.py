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

The decoder's loss is a likelihood of the noise tokens given the rest of the text. Each row is
one `noise.denoise` call: random spans, sentinel inputs + [EOS], sentinel targets + [EOS].
"""

from __future__ import annotations

import numpy as np
import torch

from harness.models.tensors import IGNORE_INDEX, shift_right
from objectives.base import Objective, cross_entropy
from objectives.configs import SpanCorruptionConfig
from objectives.noise import (SENTINELS, check_span_count, denoise, framed, random_spans_noise, sentinel_ids,
                              sentinel_inputs, sentinel_targets, span_counts, span_lengths)


def span_corruption(block: np.ndarray, rng: np.random.Generator, *, density: float, mean_span: float,
                    sentinels: np.ndarray, eos: int, pad: int) -> tuple[np.ndarray, np.ndarray]:
    """(input_ids, labels) of a (B, L) block: each row denoised, its inputs and targets each
    ended by [EOS]; inputs padded with [PAD], targets with IGNORE_INDEX. Every row of a block
    has the same noise and span counts (T5's rounding), so neither is padded when all rows have
    the same length, as training blocks do."""
    t5 = dict(noise_mask_fn=random_spans_noise(density, mean_span),
              inputs_fn=framed(sentinel_inputs(sentinels), after=[eos]),
              targets_fn=framed(sentinel_targets(sentinels), after=[eos]))
    pairs = [denoise(row, rng, **t5) for row in np.asarray(block, dtype=np.int64)]
    return pad_rows([p[0] for p in pairs], pad), pad_rows([p[1] for p in pairs], IGNORE_INDEX)


def pad_rows(rows: list[np.ndarray], fill: int) -> np.ndarray:
    """Rows stacked into (B, longest row), right-padded with `fill`."""
    out = np.full((len(rows), max(len(row) for row in rows)), fill, dtype=np.int64)
    for i, row in enumerate(rows):
        out[i, : len(row)] = row
    return out


class SpanCorruption(Objective):
    name = "span_corruption"
    architecture = "encoder-decoder"
    special_tokens = SENTINELS
    scoring = "seq2seq-loglikelihood"
    # The loss covers the noise spans only, but the decoder scores a continuation cut out after a
    # context (one span at the end): a chain-rule likelihood of the text, window by window.
    defines_likelihood = True
    Config = SpanCorruptionConfig

    def __init__(self, config, vocab):
        super().__init__(config, vocab)
        self.sentinels = sentinel_ids(vocab.special, self.name)

    def block_length(self, seq_len):
        cfg = self.config
        raw = span_lengths(seq_len, cfg.noise_density, cfg.mean_span_length)[0]
        check_span_count(span_counts(raw, cfg.noise_density, cfg.mean_span_length)[1], seq_len,
                         f"span corruption (noise density {cfg.noise_density}, mean span {cfg.mean_span_length})")
        return raw

    def targets_length(self, seq_len: int) -> int:
        """The decoder's length when the encoder's is seq_len."""
        return span_lengths(seq_len, self.config.noise_density, self.config.mean_span_length)[1]

    def transform(self, block, rng):
        cfg, pad = self.config, self.vocab.id("[PAD]")
        inputs, labels = span_corruption(block, rng, density=cfg.noise_density, mean_span=cfg.mean_span_length,
                                         sentinels=self.sentinels, eos=self.vocab.id("[EOS]"), pad=pad)
        labels = torch.from_numpy(labels)
        # T5 starts the decoder with [PAD]; the model's own labels-only path does the same.
        return {"input_ids": torch.from_numpy(inputs), "labels": labels,
                "decoder_input_ids": shift_right(labels, start_id=pad, pad_id=pad)}

    def loss(self, model, batch):
        logits = model(input_ids=batch["input_ids"], decoder_input_ids=batch["decoder_input_ids"]).logits
        loss, metrics = cross_entropy(logits, batch["labels"], self.config)
        return loss, {"loss": loss.detach(), **metrics}

    def scoring_args(self, seq_len):
        # Each sliding window scores no more tokens than the decoder was trained to emit
        # (its targets hold a sentinel and [EOS] besides the text).
        return {"sentinel": SENTINELS[0], "rolling_stride": max(1, self.targets_length(seq_len) - 2)}

    def export_usage(self, seq_len):
        sentinel = SENTINELS[0]
        use = ("An encoder-decoder whose code is in this folder (load it with trust_remote_code=True). Score a "
               f"continuation as T5 scores zero-shot: the encoder reads context + {sentinel} + [EOS], the decoder "
               f"[PAD] + {sentinel} + continuation, and the continuation's tokens are scored after {sentinel}.")
        return super().export_usage(seq_len) | {"use": use}
