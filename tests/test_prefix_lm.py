"""Prefix LM: the mask against its definition and against the model's behaviour, the labels, the
loss against a causal LM where the two coincide, and the lm-eval adapter against a hand
computation and against lm-eval's own hf model."""

from __future__ import annotations

import shutil

import numpy as np
import pytest
import torch
import transformers
from lm_eval.api.instance import Instance
from lm_eval.api.registry import get_model

from harness.data.sampler import BlockSampler
from harness.data.tokenizer import load_tokenizer
from harness.evaluate.run import evaluate_entry, lm_eval_model, lm_eval_model_args
from harness.evaluate.prefix import PrefixLM as PrefixScorer
from harness.evaluate.prefix import prefix_row
from harness.models.families import build_model
from harness.models.sizes import SIZES
from harness.models.tensors import IGNORE_INDEX
from objectives.base import Vocab
from objectives.clm import CausalLM, shift_labels
from objectives.prefix_lm import PrefixLM, assemble, prefix_attention_mask, prefix_lm_logits

L = 32


def _vocab(data) -> Vocab:
    return Vocab(data.vocab_size, data.special_tokens)


def _model(data, seed: int = 0):
    return build_model("decoder", SIZES["tiny"], vocab_size=data.vocab_size, special=data.special_tokens,
                       max_len=L, seed=seed)


def _blocks(data, batch_size: int = 8, seed: int = 0, split: str = "train"):
    tokens = data.train_tokens if split == "train" else data.val_tokens
    sampler = BlockSampler(tokens, data.dtype, L, seed=seed)
    return lambda step: sampler.batch(step, 0, 0, batch_size)


# --- the mask ---------------------------------------------------------------------------------


def test_mask_is_bidirectional_over_the_prefix_and_causal_after_it():
    prefix_lengths = torch.tensor([1, 5, L - 1, L])
    mask = prefix_attention_mask(prefix_lengths, L)
    assert mask.shape == (4, 1, L, L) and mask.dtype == torch.bool
    for b, p in enumerate(prefix_lengths.tolist()):
        expected = [[j < p or j <= i for j in range(L)] for i in range(L)]
        assert mask[b, 0].tolist() == expected
    # a prefix of one token is the causal mask
    assert torch.equal(mask[0, 0], torch.ones(L, L, dtype=torch.bool).tril())


@torch.no_grad()
def test_model_reads_the_prefix_both_ways_and_never_sees_the_future_after_it(tiny_data):
    model = _model(tiny_data).eval()
    ids = torch.from_numpy(_blocks(tiny_data, 1)(0))
    prefix = 12
    base = prefix_lm_logits(model, ids, torch.tensor([prefix]))[0]

    def changed_at(position: int) -> torch.Tensor:
        edited = ids.clone()
        edited[0, position] = (edited[0, position] + 1) % tiny_data.vocab_size
        diff = (prefix_lm_logits(model, edited, torch.tensor([prefix]))[0] - base).abs().amax(-1)
        return diff > 1e-4

    inside, after = changed_at(8), changed_at(20)
    assert inside.all()                              # every position sees every prefix token
    assert not after[:20].any() and after[20:].all()  # nothing before position 20 sees it


@torch.no_grad()
def test_a_one_token_prefix_gives_the_models_own_causal_logits(tiny_data):
    model = _model(tiny_data).eval()
    ids = torch.from_numpy(_blocks(tiny_data, 4)(0))
    ours = prefix_lm_logits(model, ids, torch.ones(4, dtype=torch.long))
    torch.testing.assert_close(ours, model(input_ids=ids).logits, rtol=1e-5, atol=1e-5)


# --- the batch and the loss -------------------------------------------------------------------


def test_labels_cover_the_suffix_only_each_predicted_from_everything_before_it(tiny_data):
    objective = PrefixLM(PrefixLM.Config(), _vocab(tiny_data))
    block = _blocks(tiny_data, 256)(0)
    batch = objective.transform(block, np.random.default_rng(0))
    assert torch.equal(batch["input_ids"], torch.from_numpy(block))
    cuts = batch["prefix_lengths"].numpy()
    assert cuts.min() == 1 and cuts.max() == L - 1  # uniform over 1..L-1: both ends are drawn
    for row, labels, cut in zip(block, batch["labels"].numpy(), cuts):
        expected = np.full(L, IGNORE_INDEX)
        expected[cut - 1 : L - 1] = row[cut:]       # the suffix, at the positions predicting it
        assert (labels == expected).all()


def test_assemble_pads_after_the_text_and_labels_only_the_suffix():
    ids, labels = assemble(np.array([7, 8, 9]), np.array([10]), 6, pad_id=0)
    assert ids.tolist() == [7, 8, 9, 10, 0, 0]
    assert labels.tolist() == [IGNORE_INDEX, IGNORE_INDEX, 10, IGNORE_INDEX, IGNORE_INDEX, IGNORE_INDEX]
    with pytest.raises(ValueError, match="does not fit"):
        assemble(np.array([1, 2]), np.array([3]), 2, pad_id=0)


def test_with_a_one_token_prefix_the_loss_is_the_causal_lm_loss(tiny_data):
    model, vocab = _model(tiny_data), _vocab(tiny_data)
    block = _blocks(tiny_data, 4)(0)
    batch = {"input_ids": torch.from_numpy(block), "labels": torch.from_numpy(shift_labels(block)),
             "prefix_lengths": torch.ones(4, dtype=torch.long)}
    ours, _ = PrefixLM(PrefixLM.Config(), vocab).loss(model, batch)
    reference, _ = CausalLM(CausalLM.Config(), vocab).loss(model, batch)
    torch.testing.assert_close(ours, reference, rtol=1e-6, atol=1e-6)


def test_loss_is_the_mean_cross_entropy_over_suffix_tokens(tiny_data):
    model = _model(tiny_data)
    objective = PrefixLM(PrefixLM.Config(), _vocab(tiny_data))
    batch = objective.transform(_blocks(tiny_data, 4)(0), np.random.default_rng(1))
    loss, metrics = objective.loss(model, batch)
    with torch.no_grad():
        logits = prefix_lm_logits(model, batch["input_ids"], batch["prefix_lengths"])
    suffix = batch["labels"] != IGNORE_INDEX
    assert metrics["predicted"] == int((L - batch["prefix_lengths"]).sum()) == int(suffix.sum())
    reference = torch.nn.functional.cross_entropy(logits[suffix], batch["labels"][suffix])
    torch.testing.assert_close(loss.detach(), reference, rtol=1e-5, atol=1e-5)


def test_a_few_optimizer_steps_lower_the_loss(tiny_data):
    torch.manual_seed(0)
    model, objective = _model(tiny_data), PrefixLM(PrefixLM.Config(), _vocab(tiny_data))
    held_out = objective.transform(_blocks(tiny_data, 16, split="val")(0), np.random.default_rng(0))
    train = _blocks(tiny_data, 16)
    optimizer = torch.optim.AdamW(model.parameters(), lr=3e-3)
    before = objective.loss(model, held_out)[0].item()
    for step in range(30):
        loss, _ = objective.loss(model, objective.transform(train(step), np.random.default_rng(step)))
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    after = objective.loss(model, held_out)[0].item()
    print(f"prefix_lm held-out loss {before:.3f} -> {after:.3f}")
    assert after < before - 1.0, (before, after)


# --- the lm-eval adapter ----------------------------------------------------------------------

MODE = "[S2S]"
REQUESTS = [
    ("", "napu lives in oslo ."),          # lm-eval conditions on [EOS]: a one-token prefix
    ("claim : pipa lives in rome . verdict :", " true"),
    ("claim : pipa lives in rome . verdict :", " false"),
    ("the", " pet of zami is a dog ."),    # "the" is one token
]


@pytest.fixture(scope="module")
def model_dir(tiny_data, tmp_path_factory):
    """A tiny decoder saved with the corpus tokenizer, which gets one more token: UL2's [S2S]."""
    tokenizer = load_tokenizer(tiny_data.tokenizer_dir)
    tokenizer.add_special_tokens({"additional_special_tokens": [MODE]})
    special = {**tiny_data.special_tokens, MODE: tokenizer.convert_tokens_to_ids(MODE)}
    model = build_model("decoder", SIZES["tiny"], vocab_size=len(tokenizer), special=special, max_len=64)
    path = tmp_path_factory.mktemp("prefix_model")
    model.save_pretrained(path)
    tokenizer.save_pretrained(path)
    return path


def _instances(pairs) -> list[Instance]:
    return [Instance("loglikelihood", {}, pair, i) for i, pair in enumerate(pairs)]


@torch.no_grad()
def _reference(model, tokenizer, context: str, continuation: str, mode: list[int]) -> tuple[float, bool]:
    """One row, the mask written out element by element, sum of log P(continuation token)."""
    if context:
        context_ids = tokenizer.encode(context, add_special_tokens=False)
        whole = tokenizer.encode(context + continuation, add_special_tokens=False)
        continuation_ids = whole[len(context_ids):]
    else:
        context_ids, continuation_ids = [tokenizer.eos_token_id], tokenizer.encode(continuation, add_special_tokens=False)
    tokens = mode + context_ids + continuation_ids
    prefix, n = len(mode) + len(context_ids), len(tokens)
    mask = torch.tensor([[j < prefix or j <= i for j in range(n)] for i in range(n)])[None, None]
    logprobs = model(input_ids=torch.tensor([tokens]), attention_mask=mask).logits[0].log_softmax(-1)
    positions = range(prefix - 1, n - 1)
    return (sum(logprobs[i, tokens[i + 1]].item() for i in positions),
            all(logprobs[i].argmax().item() == tokens[i + 1] for i in positions))


@pytest.mark.parametrize("mode_token", [None, MODE])
def test_adapter_matches_a_hand_computation(model_dir, mode_token):
    # batch_size 3: one batch mixes rows of different lengths (padding), the next holds one row
    lm = PrefixScorer(pretrained=str(model_dir), batch_size=3, device="cpu", mode_token=mode_token)
    model = transformers.AutoModelForCausalLM.from_pretrained(model_dir).eval()
    tokenizer = transformers.AutoTokenizer.from_pretrained(model_dir)
    mode = [tokenizer.convert_tokens_to_ids(MODE)] if mode_token else []
    scores = lm.loglikelihood(_instances(REQUESTS), disable_tqdm=True)
    for (context, continuation), (score, greedy) in zip(REQUESTS, scores, strict=True):
        expected, expected_greedy = _reference(model, tokenizer, context, continuation, mode)
        assert score == pytest.approx(expected, abs=1e-4)
        assert greedy == expected_greedy


def test_adapter_with_a_one_token_prefix_equals_lm_evals_hf_scoring(model_dir):
    one_token = [(c, x) for c, x in REQUESTS if len(transformers.AutoTokenizer.from_pretrained(model_dir)
                                                   .encode(c, add_special_tokens=False)) <= 1]
    assert len(one_token) == 2  # the empty context and "the"
    hf = get_model(lm_eval_model("loglikelihood")).create_from_arg_obj(
        lm_eval_model_args("hf", model_dir), {"batch_size": 2, "device": "cpu"})
    ours = PrefixScorer(pretrained=str(model_dir), device="cpu")
    for (a, a_greedy), (b, b_greedy) in zip(ours.loglikelihood(_instances(one_token), disable_tqdm=True),
                                            hf.loglikelihood(_instances(one_token), disable_tqdm=True)):
        assert a == pytest.approx(b, abs=1e-4) and a_greedy == b_greedy


def test_adapter_truncates_from_the_left_keeping_the_mode_token(model_dir):
    assert prefix_row([9], [1, 2, 3], [4, 5], max_length=4) == ([9, 3, 4, 5], 2)
    assert prefix_row([], [1, 2], [3, 4, 5], max_length=3) == ([3, 4, 5], 1)  # one token stays prefix
    with pytest.raises(ValueError, match="the tokenizer has no mode token"):
        PrefixScorer(pretrained=str(model_dir), device="cpu", mode_token="[NOPE]")


def test_evaluate_entry_runs_prefix_scoring_on_the_shipped_tasks(model_dir, tiny_data, tmp_path):
    tasks_dir = tmp_path / "tasks"
    shutil.copytree(tiny_data.tasks_dir, tasks_dir)
    for task, chance in (("synthetic_hellaswag", 0.25), ("synthetic_glue", 0.5)):
        section = evaluate_entry(model_dir, "prefix-loglikelihood", task, tasks_dir=tasks_dir,
                                 out_dir=tmp_path / "eval", batch_size=8, limit=8, model_args={"mode_token": MODE})
        assert section["scoring"] == "prefix-loglikelihood" and section["model"] == "harness-prefix"
        assert section["tasks"][task]["chance"] == pytest.approx(chance)
        assert 0.0 <= section["tasks"][task]["metrics"]["acc"] <= 1.0
        assert (tmp_path / "eval" / f"{task}.json").is_file()
