"""UL2: each row's mode token against its denoiser, the mixture's frequencies, the span noise
against its settings, reconstruction of the raw text, rows that fit, and training."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from harness.data.sampler import BlockSampler
from harness.errors import UserError
from harness.models.families import build_model
from harness.models.sizes import SIZES
from harness.models.tensors import IGNORE_INDEX
from objectives.base import Vocab
from objectives.noise import span_counts
from objectives.configs import PAPER_DENOISERS
from objectives.ul2 import MODE_TOKENS, SENTINELS, UL2, choose_denoisers, span_raw_length


@pytest.fixture(scope="module")
def vocab(tiny_data) -> Vocab:
    """The corpus vocabulary with UL2's tokens appended after it, as ids the text never uses."""
    extra = {token: tiny_data.vocab_size + i for i, token in enumerate(UL2.special_tokens)}
    return Vocab(tiny_data.vocab_size + len(extra), {**tiny_data.special_tokens, **extra})


def _ul2(vocab, denoisers=None) -> UL2:
    config = UL2.Config() if denoisers is None else UL2.Config(denoisers=denoisers)
    return UL2(config, vocab)


def _blocks(data, seq_len: int, n: int, seed: int = 0, split: str = "train") -> np.ndarray:
    tokens = data.train_tokens if split == "train" else data.val_tokens
    return BlockSampler(tokens, data.dtype, seq_len - 1, seed=seed).batch(0, 0, 0, n)


def _parse(row: np.ndarray, labels: np.ndarray, prefix: int):
    """(mode, inputs, suffix) of one row: the suffix is what the labels cover."""
    suffix = labels[labels != IGNORE_INDEX]
    assert (row[prefix : prefix + len(suffix)] == suffix).all()
    return row[0], row[1:prefix], suffix


def _reconstruct(inputs: np.ndarray, targets: np.ndarray, sentinel_ids: dict[int, int]) -> list[int]:
    spans, current = {}, None
    for t in targets.tolist():
        if t in sentinel_ids:
            current = spans.setdefault(t, [])
        else:
            current.append(t)
    return [t for token in inputs.tolist() for t in (spans[token] if token in sentinel_ids else [token])]


def _sentinels(vocab) -> dict[int, int]:
    return {vocab.id(s): k for k, s in enumerate(SENTINELS)}


def _span_stats(inputs: np.ndarray, targets: np.ndarray, sentinel_ids) -> tuple[int, int, int]:
    """(raw length, noise tokens, spans) of a span row."""
    spans = int(np.isin(inputs, list(sentinel_ids)).sum())
    noise = len(targets) - spans
    return len(inputs) - spans + noise, noise, spans


@pytest.mark.parametrize("seq_len", [32, 128])
def test_rows_fit_reconstruct_the_text_and_carry_their_denoisers_mode_token(tiny_data, vocab, seq_len):
    objective = _ul2(vocab)
    assert objective.block_length(seq_len) == seq_len - 1
    block = _blocks(tiny_data, seq_len, 300)
    batch = objective.transform(block, np.random.default_rng(0))
    assert batch["input_ids"].shape == batch["labels"].shape == (300, seq_len)
    sentinel_ids = _sentinels(vocab)
    # what each paradigm's denoisers produce at this seq_len: (raw length, noise, spans)
    expected = {p: {(r := span_raw_length(seq_len, d.density, d.mean_span), *span_counts(r, d.density, d.mean_span))
                    for d in PAPER_DENOISERS if d.paradigm == p} for p in "RX"}
    seen = set()
    for raw, row, labels, prefix in zip(block, batch["input_ids"].numpy(), batch["labels"].numpy(),
                                        batch["prefix_lengths"].numpy()):
        mode, inputs, suffix = _parse(row, labels, prefix)
        paradigm = {vocab.id(t): p for p, t in MODE_TOKENS.items()}[mode]
        seen.add(paradigm)
        if paradigm == "S":  # the raw block, cut once; no sentinels, no [EOS] added
            assert (np.concatenate([inputs, suffix]) == raw).all() and len(suffix) >= 1
            continue
        assert suffix[-1] == vocab.id("[EOS]") and suffix[0] == vocab.id(SENTINELS[0])
        targets = suffix[:-1]
        stats = _span_stats(inputs, targets, sentinel_ids)
        assert stats in expected[paradigm]
        assert _reconstruct(inputs, targets, sentinel_ids) == raw[: stats[0]].tolist()  # the block's start
        assert 1 + len(inputs) + len(targets) + 1 == prefix + len(suffix) <= seq_len
        assert (row[prefix + len(suffix):] == vocab.id("[PAD]")).all()
    assert seen == {"R", "S", "X"}


def test_span_rows_use_the_longest_raw_text_that_fits():
    for seq_len in (32, 128, 512):
        for d in PAPER_DENOISERS:
            if d.paradigm == "S":
                continue
            raw = span_raw_length(seq_len, d.density, d.mean_span)
            row = lambda r: r + 2 * span_counts(r, d.density, d.mean_span)[1] + 2  # noqa: E731
            assert row(raw) <= seq_len < row(raw + 1)


@pytest.mark.parametrize("mean_span, density", [(3, 0.15), (8, 0.15), (3, 0.5), (8, 0.5), (64, 0.5)])
def test_span_noise_has_the_configured_density_and_mean_span(tiny_data, vocab, mean_span, density):
    paradigm = "R" if density < 0.5 else "X"
    objective = _ul2(vocab, [{"paradigm": paradigm, "mean_span": mean_span, "density": density}])
    seq_len = 512
    batch = objective.transform(_blocks(tiny_data, seq_len, 40), np.random.default_rng(1))
    sentinel_ids = _sentinels(vocab)
    stats, lengths = [], []
    for row, labels, prefix in zip(batch["input_ids"].numpy(), batch["labels"].numpy(), batch["prefix_lengths"].numpy()):
        mode, inputs, suffix = _parse(row, labels, prefix)
        assert mode == vocab.id(MODE_TOKENS[paradigm])
        targets = suffix[:-1]
        stats.append(_span_stats(inputs, targets, sentinel_ids))
        # the targets cut before each sentinel: a sentinel and the span it replaced
        lengths += [len(s) - 1 for s in np.split(targets, np.flatnonzero(np.isin(targets, list(sentinel_ids))))[1:]]
    raw, noise, _ = np.sum(stats, axis=0)
    assert abs(noise / raw - density) < 0.01
    assert abs(np.mean(lengths) - mean_span) / mean_span < 0.1
    assert np.std(lengths) > 0  # random span lengths, not all equal


def test_mixture_frequencies_match_the_weights(tiny_data, vocab):
    # Paper defaults: seven denoisers of equal weight
    rng = np.random.default_rng(0)
    drawn = np.bincount(choose_denoisers(70_000, PAPER_DENOISERS, rng), minlength=7)
    assert all(_within(n, 70_000, 1 / 7) for n in drawn)
    # unequal weights, read from the mode tokens of transformed rows
    objective = _ul2(vocab, [{"paradigm": "S", "weight": 3.0},
                             {"paradigm": "R", "mean_span": 3, "density": 0.15, "weight": 1.5},
                             {"paradigm": "X", "mean_span": 8, "density": 0.5, "weight": 0.5}])
    n = 2000
    modes = objective.transform(_blocks(tiny_data, 32, n), rng)["input_ids"][:, 0].numpy()
    for paradigm, p in (("S", 0.6), ("R", 0.3), ("X", 0.1)):
        assert _within(int((modes == vocab.id(MODE_TOKENS[paradigm])).sum()), n, p)


def _within(observed: int, n: int, p: float, sigmas: float = 5.0) -> bool:
    return abs(observed - n * p) <= sigmas * np.sqrt(n * p * (1 - p))


def test_config_rejects_noise_that_does_not_fit_its_paradigm():
    with pytest.raises(ValueError, match="S denoiser takes no"):
        UL2.Config(denoisers=[{"paradigm": "S", "mean_span": 3, "density": 0.5}])
    with pytest.raises(ValueError, match="needs mean_span and density"):
        UL2.Config(denoisers=[{"paradigm": "X", "mean_span": 3}])
    with pytest.raises(ValueError):
        UL2.Config(denoisers=[])


def test_too_many_spans_for_the_sentinels_is_a_user_error(vocab):
    objective = _ul2(vocab)
    assert objective.block_length(512) == 511
    with pytest.raises(UserError, match="128 spans at seq_len 1024, more than the 100 sentinels"):
        objective.block_length(1024)


def test_transform_is_deterministic_under_a_seed(tiny_data, vocab):
    objective, block = _ul2(vocab), _blocks(tiny_data, 32, 16)
    a, b = (objective.transform(block, np.random.default_rng(5)) for _ in range(2))
    c = objective.transform(block, np.random.default_rng(6))
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert not torch.equal(a["input_ids"], c["input_ids"])


def test_scoring_uses_the_sequential_mode(vocab):
    assert UL2.scoring == "prefix-loglikelihood" and UL2.defines_likelihood
    assert UL2(UL2.Config(), vocab).scoring_args(128) == {"mode_token": "[S2S]"}


def test_a_few_optimizer_steps_lower_the_loss(tiny_data, vocab):
    seq_len = 32
    model = build_model("decoder", SIZES["tiny"], vocab_size=vocab.size, special=vocab.special, max_len=seq_len)
    objective = _ul2(vocab)
    held_out = objective.transform(_blocks(tiny_data, seq_len, 32, split="val"), np.random.default_rng(0))
    optimizer = torch.optim.AdamW(model.parameters(), lr=3e-3)
    before = objective.loss(model, held_out)[0].item()
    for step in range(30):
        batch = objective.transform(_blocks(tiny_data, seq_len, 16, seed=step), np.random.default_rng(step))
        loss, _ = objective.loss(model, batch)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    after = objective.loss(model, held_out)[0].item()
    print(f"ul2 held-out loss {before:.3f} -> {after:.3f}")
    assert after < before - 1.0, (before, after)
