"""One battery over the whole objective registry (composer's algorithm_settings habit).

Every registered objective must: honour the batch contract, be deterministic under a seed, give
a finite loss, and lower its loss in a few CPU optimizer steps at the tiny size. An objective
registered without an entry in SETTINGS fails here, visibly.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from harness.data.sampler import BlockSampler
from harness.models.families import model_factory, parameter_count
from harness.models.sizes import SIZES
from harness.plan import vocab_of
from objectives import registry
from objectives.base import check_batch

SEQ_LEN = 32
# Config overrides that let each objective learn in a few steps at the tiny size (none needed
# so far: defaults work).
SETTINGS: dict[str, dict] = {
    "clm": {},
    "mlm": {},
    "span_corruption": {},
    "prefix_lm": {},
    "ul2": {},
    "mtp": {},
    "electra": {},
    "nsp": {},
    "sop": {},
}


@pytest.fixture(scope="module")
def data(every_objective_data):
    return every_objective_data


def test_every_registered_objective_has_settings():
    assert sorted(SETTINGS) == registry.names()


def _objective(name, data):
    return registry.build(name, SETTINGS.get(name, {}), vocab_of(data))


def _blocks(objective, data, n=1, batch=8):
    sampler = BlockSampler(data.train_tokens, data.dtype, objective.block_length(SEQ_LEN), seed=0)
    return [sampler.batch(step, 0, 0, batch) for step in range(n)]


@pytest.mark.parametrize("name", registry.names())
def test_batch_contract_and_determinism(name, data):
    objective = _objective(name, data)
    block = _blocks(objective, data)[0]
    a = objective.transform(block, np.random.default_rng(11))
    b = objective.transform(block, np.random.default_rng(11))
    check_batch(a, name)
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    for key, value in a.items():
        assert value.shape[0] == len(block) and not value.is_floating_point(), key
    assert ((a["labels"] == -100) | ((a["labels"] >= 0) & (a["labels"] < data.vocab_size))).all()
    assert ((a["input_ids"] >= 0) & (a["input_ids"] < data.vocab_size)).all()
    assert len(objective.__class__.__module__) and _has_worked_example(objective)


def _has_worked_example(objective) -> bool:
    import sys
    doc = sys.modules[objective.__class__.__module__].__doc__ or ""
    return "input_ids" in doc or "inputs" in doc or "->" in doc


@pytest.mark.parametrize("name", registry.names())
def test_a_few_steps_lower_a_finite_loss(name, data):
    objective = _objective(name, data)
    torch.manual_seed(0)
    module = objective.build_model(model_factory(SIZES["tiny"], vocab_size=data.vocab_size,
                                                 special=data.special_tokens, max_len=SEQ_LEN))
    export = objective.export_model(module)
    assert parameter_count(export) <= parameter_count(module)
    assert not getattr(export.config, "sparse_prediction", False)  # saved models give full logits
    optimizer = torch.optim.AdamW(module.parameters(), lr=3e-3)
    blocks = _blocks(objective, data, n=30)
    fixed = objective.transform(blocks[0], np.random.default_rng(99))

    def held_out() -> float:
        with torch.no_grad():
            return objective.loss(module, fixed)[0].item()

    before = held_out()
    assert np.isfinite(before)
    for step, block in enumerate(blocks):
        loss, metrics = objective.loss(module, objective.transform(block, np.random.default_rng(step)))
        assert torch.isfinite(loss) and metrics["predicted"] > 0
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    assert held_out() < 0.9 * before
