"""UL2's mixture of denoisers on a decoder with a bidirectional prefix (Tay et al. 2022).

Each row draws one denoiser by weight and is written as a prefix LM row (objectives.prefix_lm):
the prefix, read bidirectionally, starts with the denoiser's mode token; the loss covers the
suffix. Span denoisers (R: regular, X: extreme) corrupt spans of the raw text with T5's
sentinels (objectives.noise) and put the targets, then [EOS], in the suffix; the sequential
denoiser (S) is a prefix LM cut uniformly at random, with no [EOS] added (the cut is not the
end of a document). Defaults are the paper's seven denoisers, each given the same weight here
(so R 2/7, S 1/7, X 4/7 of the rows); `weight` sets other proportions:

    R  [NLU]  mean span 3, density 0.15;  mean span 8, density 0.15
    S  [S2S]  prefix LM
    X  [NLG]  mean span 3, density 0.5;  8, 0.5;  64, 0.15;  64, 0.5

An R row and an S row at seq_len 12, from a block of 11 raw tokens (<0> is <extra_id_0>). The
R row reads 8 raw tokens (see below) and span_counts gives it one noise token, here c:

    block           [a, b, c, d, e, f, g, h, i, j, k]
    R input_ids     [[NLU], a, b, <0>, d, e, f, g, h, <0>, c, [EOS]]
      labels        [-100 x8, <0>, c, [EOS], -100]
      prefix_lengths 9                                 ([NLU] a b <0> d e f g h)
    S input_ids     [[S2S], a, b, c, d, e, f, g, h, i, j, k]      (cut after 4 raw tokens)
      labels        [-100 x4, e, f, g, h, i, j, k, -100]
      prefix_lengths 5

The raw text a span row reads is the longest length r whose row fits: 1 (mode) + inputs +
targets + 1 ([EOS]) = r + 2 * spans(r) + 2 <= seq_len, with spans(r) from noise.span_counts;
the rest of the block is unused. An S row reads seq_len - 1 tokens, the block's length.

Each denoiser is one `noise.denoise` call (`denoiser_fns`): R and X are T5's span corruption,
S is prefix LM, each with the mode token put in front of its prefix.
"""

from __future__ import annotations

import functools

import numpy as np

from harness.errors import UserError
from objectives.base import Objective
from objectives.configs import Denoiser, UL2Config
from objectives.noise import (SENTINELS, check_span_count, denoise, drop_noise_tokens, drop_nonnoise_tokens,
                              framed, random_prefix_noise, random_spans_noise, sentinel_ids, sentinel_inputs,
                              sentinel_targets, span_counts)
from objectives.prefix_lm import as_batch, assemble, prefix_lm_loss, prefix_use

MODE_TOKENS = {"R": "[NLU]", "S": "[S2S]", "X": "[NLG]"}


@functools.lru_cache(maxsize=256)
def span_raw_length(seq_len: int, density: float, mean_span: float) -> int:
    """Longest raw length r whose row [mode] inputs targets [EOS] fits seq_len.

    Inputs hold r - noise + spans tokens and targets noise + spans, so the row is
    r + 2 * spans + 2 tokens.
    """
    for raw in range(seq_len - 2, 1, -1):
        if raw + 2 * span_counts(raw, density, mean_span)[1] + 2 <= seq_len:
            return raw
    raise UserError(f"seq_len {seq_len} is too short for a UL2 span row", where="data.seq_len")


def denoiser_fns(denoiser: Denoiser, mode_id: int, sentinels: np.ndarray, eos_id: int) -> dict:
    """The `denoise` functions of one denoiser, its prefix starting with its mode token: prefix
    LM for S; T5 span corruption for R and X, the targets and [EOS] as the suffix."""
    if denoiser.paradigm == "S":
        return dict(noise_mask_fn=random_prefix_noise, inputs_fn=framed(drop_noise_tokens, before=[mode_id]),
                    targets_fn=drop_nonnoise_tokens)
    return dict(noise_mask_fn=random_spans_noise(denoiser.density, denoiser.mean_span),
                inputs_fn=framed(sentinel_inputs(sentinels), before=[mode_id]),
                targets_fn=framed(sentinel_targets(sentinels), after=[eos_id]))


def choose_denoisers(n: int, denoisers: tuple[Denoiser, ...], rng: np.random.Generator) -> np.ndarray:
    """Index of the denoiser of each of n rows, drawn independently by weight."""
    weights = np.array([d.weight for d in denoisers], dtype=np.float64)
    return rng.choice(len(denoisers), size=n, p=weights / weights.sum())


class UL2(Objective):
    name = "ul2"
    architecture = "decoder"
    special_tokens = (*MODE_TOKENS.values(), *SENTINELS)
    scoring = "prefix-loglikelihood"
    # The mixture's loss is no likelihood of the text, but the S denoiser's mode ([S2S], a
    # bidirectional prefix then causal text) scores one, as prefix LM does.
    defines_likelihood = True
    Config = UL2Config

    def __init__(self, config, vocab):
        super().__init__(config, vocab)
        sentinels = sentinel_ids(vocab.special, self.name)
        self._fns = [denoiser_fns(d, vocab.id(MODE_TOKENS[d.paradigm]), sentinels, vocab.id("[EOS]"))
                     for d in config.denoisers]

    def block_length(self, seq_len):
        # Every row spends one position on its mode token; S rows read the rest of the row.
        for d in self.config.denoisers:
            if d.paradigm != "S":
                spans = span_counts(span_raw_length(seq_len, d.density, d.mean_span), d.density, d.mean_span)[1]
                check_span_count(spans, seq_len, f"UL2 denoiser {d.paradigm} (mean span {d.mean_span}, "
                                                 f"density {d.density})")
        return seq_len - 1

    def transform(self, block, rng):
        block = np.asarray(block, dtype=np.int64)
        seq_len = block.shape[1] + 1  # block_length(seq_len) is seq_len - 1
        rows = [self._row(raw, i, seq_len, rng)
                for raw, i in zip(block, choose_denoisers(len(block), self.config.denoisers, rng))]
        input_ids, labels, prefix_lengths = zip(*rows)
        return as_batch(np.stack(input_ids), np.stack(labels), np.array(prefix_lengths, dtype=np.int64))

    def loss(self, model, batch):
        return prefix_lm_loss(model, batch, self.config)

    def scoring_args(self, seq_len):
        # Scoring a continuation after a context is the S denoiser's task: a bidirectional
        # prefix, then causal text with no sentinels. The paper uses [S2S] for such prompts.
        return {"mode_token": MODE_TOKENS["S"]}

    def export_usage(self, seq_len):
        mode = MODE_TOKENS["S"]
        return super().export_usage(seq_len) | {"attention": "prefix", "mode_token": mode, "use": prefix_use(mode)}

    def _row(self, raw: np.ndarray, index: int, seq_len: int, rng: np.random.Generator):
        denoiser = self.config.denoisers[index]
        if denoiser.paradigm != "S":  # a span row reads the longest raw text whose row fits
            raw = raw[: span_raw_length(seq_len, denoiser.density, denoiser.mean_span)]
        prefix, suffix = denoise(raw, rng, **self._fns[index])
        return *assemble(prefix, suffix, seq_len, self.vocab.id("[PAD]")), len(prefix)
