"""T5 span corruption on real tokens: its statistics, its sentinels, exact reconstruction, lengths
against T5's arithmetic, and a loss that training lowers."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from harness.budget import micro_step_flops
from harness.errors import UserError
from harness.models.families import build_model
from harness.models.sizes import SIZES
from harness.models.tensors import IGNORE_INDEX
from objectives import registry
from objectives.base import Vocab
from objectives.noise import span_lengths
from objectives.span_corruption import SENTINELS, SpanCorruption


@pytest.fixture(scope="module")
def vocab(tiny_data) -> Vocab:
    """tiny_data's vocabulary with the sentinels added after its last id."""
    sentinels = {s: tiny_data.vocab_size + k for k, s in enumerate(SENTINELS)}
    return Vocab(tiny_data.vocab_size + len(SENTINELS), {**tiny_data.special_tokens, **sentinels})


@pytest.fixture(scope="module")
def tokens(tiny_data) -> np.ndarray:
    return np.fromfile(tiny_data.train_tokens, dtype=tiny_data.dtype).astype(np.int64)


def blocks(tokens: np.ndarray, rows: int, length: int, seed: int = 0) -> np.ndarray:
    starts = np.random.default_rng(seed).integers(0, len(tokens) - length, size=rows)
    return np.stack([tokens[s : s + length] for s in starts])


def reconstruct(inputs: np.ndarray, labels: np.ndarray, sentinel_ids: np.ndarray):
    """(original tokens, noise mask) from one row's input and labels: each sentinel in the input
    replaced by the tokens that follow it in the labels, up to the next sentinel or the end."""
    targets = labels[labels != IGNORE_INDEX][:-1]  # less the final [EOS]
    cuts = np.flatnonzero(np.isin(targets, sentinel_ids))
    spans = {targets[c]: targets[c + 1 : e] for c, e in zip(cuts, [*cuts[1:], len(targets)])}
    tokens, mask = [], []
    for token in inputs[:-1]:  # less the final [EOS]
        span = spans.get(token, [token])
        tokens += list(span)
        mask += [token in spans] * len(span)
    return np.array(tokens), np.array(mask)


@pytest.mark.parametrize(("seq_len", "density", "mean_span"), [(128, 0.15, 3.0), (512, 0.15, 3.0), (256, 0.5, 8.0)])
def test_noise_density_and_span_length_match_the_config(vocab, tokens, seq_len, density, mean_span):
    objective = SpanCorruption(SpanCorruption.Config(noise_density=density, mean_span_length=mean_span), vocab)
    raw = objective.block_length(seq_len)
    block = blocks(tokens, 600, raw)
    batch = objective.transform(block, np.random.default_rng(0))
    sentinel_ids = np.array([vocab.id(s) for s in SENTINELS])
    masks = []
    for row, inputs, labels in zip(block, batch["input_ids"].numpy(), batch["labels"].numpy()):
        original, mask = reconstruct(inputs, labels, sentinel_ids)
        assert np.array_equal(original, row)
        masks.append(mask)
    masks = np.stack(masks)
    starts = masks & ~np.pad(masks, ((0, 0), (1, 0)))[:, :-1]
    # T5 fixes the counts per example; the rounding to whole tokens and spans is all that separates
    # them from the config (half a token, half a span).
    assert abs(masks.mean() - density) <= 0.5 / raw
    assert abs(masks.sum() / starts.sum() - mean_span) <= 0.5 * mean_span / starts.sum(1).mean()
    # the spans fall anywhere after the first token, which is always clean, as in T5
    assert not masks[:, 0].any() and masks[:, 1:].any(0).all()
    assert abs(masks[:, raw // 2].mean() - density) < 5 * np.sqrt(density * (1 - density) / len(masks))


def test_sentinels_are_unique_and_in_order(vocab, tokens):
    objective = SpanCorruption(SpanCorruption.Config(), vocab)
    block = blocks(tokens, 64, objective.block_length(128))
    batch = objective.transform(block, np.random.default_rng(1))
    sentinel_ids = np.array([vocab.id(s) for s in SENTINELS])
    for inputs, labels in zip(batch["input_ids"].numpy(), batch["labels"].numpy()):
        in_inputs, in_labels = inputs[np.isin(inputs, sentinel_ids)], labels[np.isin(labels, sentinel_ids)]
        assert len(in_inputs) == 7  # 21 noise tokens of 141 in spans of 3
        assert np.array_equal(in_inputs, sentinel_ids[: len(in_inputs)])
        assert np.array_equal(in_labels, in_inputs)
        assert labels[0] == sentinel_ids[0] and inputs[-1] == labels[-1] == vocab.id("[EOS]")


def test_inputs_and_targets_rebuild_the_text(tiny_data, vocab, tokens):
    from harness.data.tokenizer import load_tokenizer
    tokenizer = load_tokenizer(tiny_data.tokenizer_dir)
    objective = SpanCorruption(SpanCorruption.Config(), vocab)
    block = blocks(tokens, 8, objective.block_length(32), seed=2)
    batch = objective.transform(block, np.random.default_rng(2))
    sentinel_ids = np.array([vocab.id(s) for s in SENTINELS])
    for row, inputs, labels in zip(block, batch["input_ids"].numpy(), batch["labels"].numpy()):
        original, _ = reconstruct(inputs, labels, sentinel_ids)
        assert tokenizer.decode(original.tolist()) == tokenizer.decode(row.tolist())
        assert np.array_equal(original, row)


@pytest.mark.parametrize("seq_len", [8, 16, 32, 100, 128, 512])
def test_lengths_fit_seq_len_and_targets_length(vocab, tokens, seq_len):
    objective = SpanCorruption(SpanCorruption.Config(), vocab)
    raw, targets_length = span_lengths(seq_len, 0.15, 3.0)
    assert objective.block_length(seq_len) == raw and objective.targets_length(seq_len) == targets_length
    batch = objective.transform(blocks(tokens, 4, raw), np.random.default_rng(0))
    assert batch["input_ids"].shape[1] <= seq_len and batch["labels"].shape[1] <= targets_length
    assert (batch["input_ids"] != vocab.id("[PAD]")).all()  # equal rows: nothing to pad
    # the decoder reads the labels shifted right after a [PAD] start token
    expected = torch.cat([torch.full((4, 1), vocab.id("[PAD]")), batch["labels"][:, :-1]], dim=1)
    assert torch.equal(batch["decoder_input_ids"], expected)


def test_transform_is_deterministic_under_a_seed(vocab, tokens):
    objective = SpanCorruption(SpanCorruption.Config(), vocab)
    block = blocks(tokens, 4, objective.block_length(32))
    a, b, c = (objective.transform(block, np.random.default_rng(seed)) for seed in (5, 5, 6))
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert not torch.equal(a["labels"], c["labels"])


def test_missing_sentinels_are_named_when_the_objective_is_built(tiny_data):
    # Planning builds every objective for the suite's vocabulary, so this fails before training.
    with pytest.raises(ValueError, match=r"lacks 100 sentinel tokens \(<extra_id_0>, \.\.\.\): its tokenizer "
                                         "was not prepared with span_corruption's special tokens"):
        registry.build("span_corruption", {}, Vocab(tiny_data.vocab_size, tiny_data.special_tokens))


def test_too_many_spans_for_the_sentinels_is_a_user_error(vocab):
    objective = SpanCorruption(SpanCorruption.Config(), vocab)
    assert objective.block_length(1809) == 2009  # 100 spans: one sentinel each
    with pytest.raises(UserError, match="makes 101 spans at seq_len 1810, more than the 100 sentinels"):
        objective.block_length(1810)


def test_a_few_optimizer_steps_lower_the_loss(vocab, tokens):
    objective = SpanCorruption(SpanCorruption.Config(), vocab)
    model = build_model("encoder-decoder", SIZES["tiny"], vocab_size=vocab.size, special=vocab.special, max_len=32)
    raw = objective.block_length(32)
    held_out = objective.transform(blocks(tokens, 16, raw, seed=99), np.random.default_rng(99))
    loss, metrics = objective.loss(model, held_out)
    # the loss is the model's own labels loss (its labels-only path shifts them the same way)
    torch.testing.assert_close(loss, model(input_ids=held_out["input_ids"], labels=held_out["labels"]).loss)
    assert metrics["predicted"] == 16 * objective.targets_length(32)
    assert abs(metrics["loss"] - np.log(vocab.size)) < 0.5
    print(f"FLOPs per micro-step (16 x {raw} raw tokens): "
          f"{micro_step_flops(objective, model, [blocks(tokens, 16, raw)], seed=0):.3g}")
    optimizer = torch.optim.AdamW(model.parameters(), lr=3e-3)
    for step in range(12):
        batch = objective.transform(blocks(tokens, 16, raw, seed=step), np.random.default_rng(step))
        optimizer.zero_grad()
        objective.loss(model, batch)[0].backward()
        optimizer.step()
    with torch.no_grad():
        after = objective.loss(model, held_out)[0].item()
    print(f"held-out loss {loss.item():.3f} -> {after:.3f} after 12 steps")
    assert after < loss.item() - 0.5


def test_scoring_args_name_the_first_sentinel(vocab):
    objective = SpanCorruption(SpanCorruption.Config(), vocab)
    # T5's arithmetic at 512 input tokens: 114 decoder targets, of which a sentinel and [EOS]
    # are not text.
    assert objective.scoring_args(512) == {"sentinel": "<extra_id_0>", "rolling_stride": 112}
