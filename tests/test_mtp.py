"""Multi-token prediction: head j against the token j ahead, the loss against the mean of the heads'
cross-entropies, the exported model against head 1, the FLOPs against k = 1, and training."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import transformers

from harness.budget import micro_step_flops
from harness.data.sampler import BlockSampler
from harness.models.families import model_factory, parameter_count
from harness.models.sizes import SIZES
from harness.models.tensors import IGNORE_INDEX
from objectives.base import Vocab
from objectives.clm import CausalLM
from objectives.mtp import MultiTokenModel, MultiTokenPrediction, future_labels

L = 32


def _objective(data, k: int = 4) -> MultiTokenPrediction:
    return MultiTokenPrediction(MultiTokenPrediction.Config(k=k), Vocab(data.vocab_size, data.special_tokens))


def _module(data, objective: MultiTokenPrediction, seed: int = 0) -> MultiTokenModel:
    return objective.build_model(model_factory(SIZES["tiny"], vocab_size=data.vocab_size,
                                               special=data.special_tokens, max_len=L, seed=seed))


def _blocks(data, batch_size: int, seed: int = 0, split: str = "train") -> np.ndarray:
    tokens = data.train_tokens if split == "train" else data.val_tokens
    return BlockSampler(tokens, data.dtype, L, seed=seed).batch(0, 0, 0, batch_size)


def test_head_j_targets_the_token_j_ahead(tiny_data):
    block = _blocks(tiny_data, 4)
    labels = _objective(tiny_data).transform(block, np.random.default_rng(0))["labels"]
    for j in range(1, 5):
        targets = future_labels(labels, j - 1).numpy()
        assert (targets[:, : L - j] == block[:, j:]).all()
        assert (targets[:, L - j :] == IGNORE_INDEX).all()


def test_loss_is_the_mean_of_the_heads_cross_entropies(tiny_data):
    objective = _objective(tiny_data, k=3)
    module = _module(tiny_data, objective)
    batch = objective.transform(_blocks(tiny_data, 4), np.random.default_rng(0))
    loss, metrics = objective.loss(module, batch)
    with torch.no_grad():
        logits = module(input_ids=batch["input_ids"])
    ids = batch["input_ids"]
    # head j (1-based) at position t against input_ids[t + j], written without future_labels
    per_head = [torch.nn.functional.cross_entropy(logits[j - 1][:, :-j].flatten(0, 1), ids[:, j:].flatten())
                for j in range(1, 4)]
    torch.testing.assert_close(loss.detach(), torch.stack(per_head).mean(), rtol=1e-5, atol=1e-5)
    for j, reference in enumerate(per_head, start=1):
        assert metrics[f"loss_head{j}"] == pytest.approx(reference.item(), rel=1e-5)
    assert metrics["predicted"] == 4 * (L - 1)  # head 1's positions, as the causal LM's


def test_with_one_head_the_loss_is_the_causal_lm_loss(tiny_data):
    objective = _objective(tiny_data, k=1)
    module = _module(tiny_data, objective)
    assert len(module.heads) == 0
    batch = objective.transform(_blocks(tiny_data, 4), np.random.default_rng(0))
    reference, _ = CausalLM(CausalLM.Config(), objective.vocab).loss(module.lm, batch)
    torch.testing.assert_close(objective.loss(module, batch)[0], reference, rtol=1e-6, atol=1e-6)


@torch.no_grad()
def test_exported_model_is_head_one_and_round_trips(tiny_data, tmp_path):
    objective = _objective(tiny_data)
    module = _module(tiny_data, objective).eval()
    exported = objective.export_model(module)
    assert isinstance(exported, transformers.ModernBertDecoderForCausalLM)
    ids = torch.from_numpy(_blocks(tiny_data, 2))
    head_one = module(input_ids=ids)[0]
    assert torch.equal(exported(input_ids=ids).logits, head_one)
    exported.save_pretrained(tmp_path)
    loaded = transformers.AutoModelForCausalLM.from_pretrained(tmp_path).eval()
    torch.testing.assert_close(loaded(input_ids=ids).logits, head_one, rtol=1e-5, atol=1e-5)
    # the extra heads are trained but not kept
    assert parameter_count(module) > parameter_count(exported) == parameter_count(loaded)


def test_one_step_with_four_heads_costs_more_flops_than_with_one(tiny_data):
    blocks = [_blocks(tiny_data, 4, seed=s) for s in range(2)]
    flops = {}
    for k in (1, 4):
        objective = _objective(tiny_data, k)
        flops[k] = micro_step_flops(objective, _module(tiny_data, objective), blocks, seed=0)
    clm = CausalLM(CausalLM.Config(), _objective(tiny_data).vocab)
    one = _module(tiny_data, _objective(tiny_data, 1))
    assert flops[1] == pytest.approx(micro_step_flops(clm, one.lm, blocks, seed=0))
    assert flops[4] > 1.5 * flops[1]


def _train(objective, module, batches, lr: float) -> None:
    optimizer = torch.optim.AdamW(module.parameters(), lr=lr)
    for batch in batches:
        loss, _ = objective.loss(module, batch)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()


def test_each_head_learns_to_predict_its_own_offset(tiny_data):
    """Rows cycle through 7 tokens from a random phase, so the token j ahead is a function of
    the current token, different for each j: a head that learns it has the right targets."""
    objective = _objective(tiny_data, k=4)
    torch.manual_seed(0)
    module = _module(tiny_data, objective)
    cycle = np.arange(10, 17)
    rng = np.random.default_rng(0)

    def batch():
        phases = rng.integers(0, 7, size=(8, 1))
        return objective.transform(cycle[(phases + np.arange(L)) % 7], rng)

    _train(objective, module, [batch() for _ in range(25)], lr=1e-2)
    ids = batch()["input_ids"]
    with torch.no_grad():
        logits = module(input_ids=ids)
    for j in range(1, 5):
        accuracy = (logits[j - 1][:, :-j].argmax(-1) == ids[:, j:]).float().mean().item()
        assert accuracy > 0.95, (j, accuracy)


def test_a_few_optimizer_steps_lower_the_loss(tiny_data):
    objective = _objective(tiny_data)
    torch.manual_seed(0)
    module = _module(tiny_data, objective)
    held_out = objective.transform(_blocks(tiny_data, 16, split="val"), np.random.default_rng(0))
    before = objective.loss(module, held_out)[0].item()
    _train(objective, module, [objective.transform(_blocks(tiny_data, 8, seed=s), None) for s in range(30)], lr=3e-3)
    after = objective.loss(module, held_out)[0].item()
    print(f"mtp held-out loss {before:.3f} -> {after:.3f}")
    assert after < before - 1.0, (before, after)
