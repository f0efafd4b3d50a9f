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
"""

from __future__ import annotations

import functools

import numpy as np

from harness.errors import UserError
from objectives.base import Objective
from objectives.configs import Denoiser, UL2Config
from objectives.noise import prefix_split, random_spans_mask, span_corrupt, span_counts
from objectives.prefix_lm import as_batch, assemble, prefix_lm_loss
from objectives.span_corruption import SENTINELS  # the same sentinels as T5 span corruption

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


def span_row(raw: np.ndarray, denoiser: Denoiser, mode_id: int, sentinels: np.ndarray, eos_id: int,
             rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """(prefix, suffix) of a span row: [mode] + corrupted raw, then targets + [EOS]."""
    mask = random_spans_mask(len(raw), denoiser.density, denoiser.mean_span, rng)
    inputs, targets = span_corrupt(raw, mask, sentinels)
    return np.concatenate([[mode_id], inputs]), np.concatenate([targets, [eos_id]])


def sequential_row(raw: np.ndarray, mode_id: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """(prefix, suffix) of an S row: [mode] + the raw text up to a uniform cut, then the rest."""
    cut = prefix_split(len(raw), rng)
    return np.concatenate([[mode_id], raw[:cut]]), raw[cut:]


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

    def block_length(self, seq_len):
        # Every row spends one position on its mode token; S rows read the rest of the row.
        for d in self.config.denoisers:
            if d.paradigm != "S":
                self._check_sentinels(seq_len, d)
        return seq_len - 1

    def transform(self, block, rng):
        block = np.asarray(block, dtype=np.int64)
        seq_len = block.shape[1] + 1  # block_length(seq_len) is seq_len - 1
        rows = [self._row(raw, self.config.denoisers[i], seq_len, rng)
                for raw, i in zip(block, choose_denoisers(len(block), self.config.denoisers, rng))]
        input_ids, labels, prefix_lengths = zip(*rows)
        return as_batch(np.stack(input_ids), np.stack(labels), np.array(prefix_lengths, dtype=np.int64))

    def loss(self, model, batch):
        return prefix_lm_loss(model, batch, self.config)

    def scoring_args(self, seq_len):
        # Scoring a continuation after a context is the S denoiser's task: a bidirectional
        # prefix, then causal text with no sentinels. The paper uses [S2S] for such prompts.
        return {"mode_token": MODE_TOKENS["S"]}

    def _row(self, raw: np.ndarray, denoiser: Denoiser, seq_len: int, rng: np.random.Generator):
        mode_id = self.vocab.id(MODE_TOKENS[denoiser.paradigm])
        if denoiser.paradigm == "S":
            prefix, suffix = sequential_row(raw, mode_id, rng)
        else:
            used = raw[: span_raw_length(seq_len, denoiser.density, denoiser.mean_span)]
            prefix, suffix = span_row(used, denoiser, mode_id, self._sentinel_ids, self.vocab.id("[EOS]"), rng)
        return *assemble(prefix, suffix, seq_len, self.vocab.id("[PAD]")), len(prefix)

    @functools.cached_property
    def _sentinel_ids(self) -> np.ndarray:
        return np.array([self.vocab.id(s) for s in SENTINELS], dtype=np.int64)

    @staticmethod
    def _check_sentinels(seq_len: int, denoiser: Denoiser) -> None:
        raw = span_raw_length(seq_len, denoiser.density, denoiser.mean_span)
        spans = span_counts(raw, denoiser.density, denoiser.mean_span)[1]
        if spans > len(SENTINELS):
            raise UserError(f"UL2 denoiser {denoiser.paradigm} (mean span {denoiser.mean_span}, density "
                            f"{denoiser.density}) makes {spans} spans at seq_len {seq_len}, more than the "
                            f"{len(SENTINELS)} sentinels", where="data.seq_len")
