"""Next-sentence and sentence-order prediction on real token blocks of the tiny corpus: how pairs
are drawn, how rows are laid out and masked, and the model's two losses from one encoder pass."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
import transformers

from harness.data.sampler import BlockSampler
from harness.models.families import model_factory
from harness.models.sizes import SIZES
from harness.plan import vocab_of
from harness.models.tensors import IGNORE_INDEX
from objectives.base import Vocab
from objectives.nsp import IS_NEXT, NOT_NEXT, NextSentencePrediction, nsp_pairs
from objectives.segments import PAIR_SPECIALS, documents
from objectives.sop import IN_ORDER, SWAPPED, SentenceOrderPrediction, sop_pairs

SEQ_LEN = 32
OBJECTIVES = [NextSentencePrediction, SentenceOrderPrediction]


def _blocks(tiny_data, n_batches, rows=16):
    sampler = BlockSampler(tiny_data.train_tokens, tiny_data.dtype, SEQ_LEN, seed=0)
    return [sampler.batch(step, 0, 0, rows) for step in range(n_batches)]


def _draw(draw, block, vocab, rng):
    """Pairs for `block` drawn by `draw` (nsp_pairs or sop_pairs), as `transform` draws them."""
    eos = vocab.id("[EOS]")
    docs = [documents(row, np.array(vocab.sentence_end), eos) for row in block]
    return draw(block, docs, SEQ_LEN - PAIR_SPECIALS, eos, rng)


def _pairs(tiny_data, draw, n_batches):
    """(block, pairs) for each batch."""
    vocab = vocab_of(tiny_data)
    return [(block, _draw(draw, block, vocab, np.random.default_rng(step)))
            for step, block in enumerate(_blocks(tiny_data, n_batches))]


def _within(observed, n, p=0.5, sigmas=5.0):
    return abs(observed - n * p) <= sigmas * np.sqrt(n * p * (1 - p))


def _one_document(block, row, start, stop, eos):
    return start < stop and not (block[row, start:stop] == eos).any()


def test_documents_finds_whole_sentences_only():
    # ids: 1 = ".", 9 = [EOS]; the row starts and ends mid-sentence
    row = np.array([5, 1, 6, 7, 1, 8, 1, 9, 4, 4, 1, 4, 9, 9, 3, 1, 2])
    assert documents(row, np.array([1]), eos_id=9) == [[(2, 5), (5, 7)], [(8, 11), (11, 12)], [(14, 16)]]


@pytest.mark.parametrize("draw", [nsp_pairs, sop_pairs])
def test_labels_are_balanced(tiny_data, draw):
    labels = [p.label for _, pairs in _pairs(tiny_data, draw, 120) for p in pairs]
    assert len(labels) == 1920 and set(labels) == {0, 1}
    assert _within(sum(labels), len(labels))


@pytest.mark.parametrize("draw", [nsp_pairs, sop_pairs])
def test_segments_are_cut_at_sentence_ends(tiny_data, draw):
    vocab = vocab_of(tiny_data)
    eos, boundary = vocab.id("[EOS]"), set(vocab.sentence_end) | {vocab.id("[EOS]")}
    for block, pairs in _pairs(tiny_data, draw, 20):
        for segment in (s for p in pairs for s in (p.first, p.second)):
            row, start, stop = segment
            assert start >= 1 and block[row, start - 1] in boundary  # starts after a sentence end
            assert block[row, stop - 1] in vocab.sentence_end or (stop < SEQ_LEN and block[row, stop] == eos)
            assert _one_document(block, row, start, stop, eos)
        for p in pairs:
            assert len(p.first.tokens(block)) + len(p.second.tokens(block)) <= SEQ_LEN - PAIR_SPECIALS


def test_sop_negatives_are_the_same_two_segments_swapped(tiny_data):
    eos = vocab_of(tiny_data).id("[EOS]")
    counts = {IN_ORDER: 0, SWAPPED: 0}
    for block, pairs in _pairs(tiny_data, sop_pairs, 30):
        for first, second, label in pairs:
            counts[label] += 1
            earlier, later = (first, second) if label == IN_ORDER else (second, first)
            assert earlier.row == later.row and earlier.stop == later.start  # adjacent text
            assert _one_document(block, earlier.row, earlier.start, later.stop, eos)
    assert min(counts.values()) > 100


def test_nsp_positives_are_the_next_text_and_negatives_another_document(tiny_data):
    eos = vocab_of(tiny_data).id("[EOS]")
    same_row = other_row = 0
    for block, pairs in _pairs(tiny_data, nsp_pairs, 30):
        for first, second, label in pairs:
            if label == IS_NEXT:
                assert first.row == second.row and first.stop == second.start
                assert _one_document(block, first.row, first.start, second.stop, eos)
                continue
            assert label == NOT_NEXT
            if second.row == first.row:  # an [EOS] lies between the two: another document
                same_row += 1
                low, high = sorted([(first.start, first.stop), (second.start, second.stop)])
                assert (block[first.row, low[1] : high[0]] == eos).any()
            else:  # taken from another row of the batch, only when A's row has no other document
                other_row += 1
            true_next = block[first.row, first.stop : first.stop + len(second.tokens(block))]
            assert not np.array_equal(second.tokens(block), true_next)
    assert same_row > 100 and other_row > 0


@pytest.mark.parametrize(("cls", "draw"), [(NextSentencePrediction, nsp_pairs), (SentenceOrderPrediction, sop_pairs)])
def test_rows_are_laid_out_and_masking_avoids_specials(tiny_data, cls, draw):
    vocab = vocab_of(tiny_data)
    cls_id, sep, pad, mask = (vocab.id(t) for t in ("[CLS]", "[SEP]", "[PAD]", "[MASK]"))
    objective = cls(cls.Config(), vocab)
    for step, block in enumerate(_blocks(tiny_data, 10)):
        batch = objective.transform(block, np.random.default_rng(step))
        inputs, labels = batch["input_ids"].numpy(), batch["labels"].numpy()
        selected = labels != IGNORE_INDEX
        original = np.where(selected, labels, inputs)
        layout = np.isin(original, [cls_id, sep, pad])
        assert not (selected & layout).any() and (inputs[layout] == original[layout]).all()
        assert (inputs[:, 0] == cls_id).all() and ((inputs == sep).sum(1) == 2).all()
        assert np.array_equal(batch["attention_mask"].numpy(), (inputs != pad).astype(np.int64))
        lengths = batch["attention_mask"].numpy().sum(1)
        assert (inputs[np.arange(len(inputs)), lengths - 1] == sep).all()  # padding after the last [SEP]
        pairs = _draw(draw, block, vocab, np.random.default_rng(step))  # the draw transform made
        for row, (first, second, label) in zip(original, pairs):
            expected = [cls_id, *first.tokens(block), sep, *second.tokens(block), sep]
            assert row[: len(expected)].tolist() == expected and (row[len(expected):] == pad).all()
        assert batch["sequence_labels"].tolist() == [p.label for p in pairs]
        assert (inputs[selected] == mask).mean() > 0.6


def _module(tiny_data, objective):
    return objective.build_model(model_factory(SIZES["tiny"], vocab_size=tiny_data.vocab_size,
                                               special=tiny_data.special_tokens, max_len=SEQ_LEN))


@pytest.mark.parametrize("cls", OBJECTIVES)
def test_one_pass_gives_both_losses_and_exports_the_masked_lm(tiny_data, cls):
    objective = cls(cls.Config(), vocab_of(tiny_data))
    module = _module(tiny_data, objective)
    batch = objective.transform(_blocks(tiny_data, 1)[0], np.random.default_rng(0))
    loss, metrics = objective.loss(module, batch)
    exported = objective.export_model(module)
    assert type(exported) is transformers.ModernBertForMaskedLM
    # References: the MLM's own forward for the tokens, the backbone's [CLS] state for the pair.
    with torch.no_grad():
        selected = batch["labels"] != IGNORE_INDEX
        logits = exported(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
        hidden = exported.model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).last_hidden_state
    token = F.cross_entropy(logits[selected], batch["labels"][selected])
    pair = F.cross_entropy(module.pair_head(hidden[:, 0]), batch["sequence_labels"])
    torch.testing.assert_close(loss.detach(), token + pair, rtol=1e-5, atol=1e-5)
    assert metrics["mlm_loss"] == pytest.approx(token.item(), rel=1e-5)
    assert metrics[f"{cls.name}_loss"] == pytest.approx(pair.item(), rel=1e-5)
    assert metrics["predicted"] == int(selected.sum())


@pytest.mark.parametrize("cls", OBJECTIVES)
def test_a_few_steps_lower_the_loss(tiny_data, cls):
    objective = cls(cls.Config(), vocab_of(tiny_data))
    module = _module(tiny_data, objective)
    batch = objective.transform(_blocks(tiny_data, 1)[0], np.random.default_rng(0))
    optimizer = torch.optim.AdamW(module.parameters(), lr=3e-3)
    first = None
    for _ in range(15):
        loss, metrics = objective.loss(module, batch)
        first = first or metrics
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    last = objective.loss(module, batch)[1]
    assert last["loss"] < 0.7 * first["loss"]
    assert last[f"{cls.name}_loss"] < first[f"{cls.name}_loss"]


def test_transform_is_deterministic_under_a_seed(tiny_data):
    objective = NextSentencePrediction(NextSentencePrediction.Config(), vocab_of(tiny_data))
    block = _blocks(tiny_data, 1)[0]
    a, b = (objective.transform(block, np.random.default_rng(5)) for _ in range(2))
    c = objective.transform(block, np.random.default_rng(6))
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert not torch.equal(a["input_ids"], c["input_ids"])


def test_a_vocabulary_without_sentence_ends_is_refused(tiny_data):
    with pytest.raises(ValueError, match="sentence end"):
        SentenceOrderPrediction(SentenceOrderPrediction.Config(), Vocab(500, tiny_data.special_tokens))


def test_a_block_without_two_whole_sentences_is_cut_in_half():
    # One row, one document (ids: 1 = ".", 9 = [EOS]), and no two whole sentences in it.
    block = np.array([[5, 6, 1, 7, 8, 4, 4, 4, 9, 2]])
    docs = [documents(block[0], np.array([1]), eos_id=9)]
    assert docs == [[[(3, 8)]]]  # one whole sentence
    for draw in (nsp_pairs, sop_pairs):
        for seed in range(20):
            [(first, second, label)] = draw(block, docs, 6, 9, np.random.default_rng(seed))
            assert sorted([first, second]) == [(0, 0, 3), (0, 3, 6)]  # the longest text, halved
            assert draw is sop_pairs or label == IS_NEXT  # no other document: never a negative
