"""FLOPs counted without arithmetic (harness.budget.step_cost) equal those of the real step.

The reference is the count planning made before: the real model, real weights, real compute.
Every registered objective is compared to the FLOP, with its parameter counts; so are options
whose shapes follow the data (a higher mask rate) or that index logits with a mask (z_loss).
"""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch._subclasses.fake_tensor import FakeTensor

from harness.budget import micro_step_flops, shapes_only, step_cost
from harness.data.sampler import BlockSampler
from harness.models.families import model_factory, parameter_count
from harness.models.sizes import SIZES
from harness.models.tensors import IGNORE_INDEX
from harness.plan import vocab_of
from objectives import registry
from objectives.clm import CausalLM

from conftest import REPO

SEQ_LEN = 64
CASES = [(name, "tiny", {}) for name in registry.names()] + [
    ("clm", "mini", {}), ("mlm", "mini", {}),
    ("mlm", "tiny", {"mask_rate": 0.5, "z_loss": 1e-4, "label_smoothing": 0.1}),
    ("electra", "tiny", {"mask_rate": 0.3, "z_loss": 1e-4}),
]


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """The reference counts compute for real: on a small shared machine, two intra-op threads
    fighting other processes made them ~20x slower than one."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def data(every_objective_data):
    return every_objective_data


def _setup(data, name: str, size: str, config: dict, objective_cls=None):
    if objective_cls is None:
        objective = registry.build(name, config, vocab_of(data))
    else:
        objective = objective_cls(objective_cls.Config(**config), vocab_of(data))
    make = model_factory(SIZES[size], vocab_size=data.vocab_size, special=data.special_tokens,
                         max_len=SEQ_LEN)
    sampler = BlockSampler(data.train_tokens, data.dtype, objective.block_length(SEQ_LEN), seed=0)
    return objective, make, [sampler.batch(step, 0, 0, batch_size=8) for step in range(3)]


def counted_with_real_compute(objective, make, blocks):
    """How planning counted before: (FLOPs, params kept, params trained) of the real model."""
    module = objective.build_model(make)
    flops = micro_step_flops(objective, module, blocks, seed=0)
    return flops, parameter_count(objective.export_model(module)), parameter_count(module)


@pytest.mark.parametrize("name,size,config", CASES, ids=["-".join([n, s, *c]) for n, s, c in CASES])
def test_count_without_compute_equals_real_count_exactly(data, name, size, config):
    objective, make, blocks = _setup(data, name, size, config)
    flops, module = step_cost(objective, make, blocks, seed=0)
    new = flops, parameter_count(objective.export_model(module)), parameter_count(module)
    assert new == counted_with_real_compute(objective, make, blocks)
    assert all(isinstance(p, FakeTensor) for p in module.parameters())  # no weight was allocated


def test_masks_stay_real_so_the_count_follows_the_data(data):
    """MLM's sparse prediction projects only masked positions: the count changes block by block."""
    objective, make, blocks = _setup(data, "mlm", "tiny", {})
    with shapes_only():
        module = objective.build_model(make)
        per_block = [micro_step_flops(objective, module, [b], seed=0) for b in blocks]
    # micro_step_flops draws block i's masks from default_rng([seed, i]); each block is i = 0 here
    labels = [objective.transform(b, np.random.default_rng([0, 0]))["labels"] for b in blocks]
    masked = [int((x != IGNORE_INDEX).sum()) for x in labels]
    assert len(set(masked)) > 1 and len(set(per_block)) > 1
    assert per_block == [counted_with_real_compute(objective, make, [b])[0] for b in blocks]


class HardTokensLM(CausalLM):
    """Loss on the positions the model gets wrong: shapes that depend on values it computes."""

    def loss(self, model, batch):
        logits, labels = model(input_ids=batch["input_ids"]).logits, batch["labels"]
        wrong = (logits.argmax(-1) != labels) & (labels != IGNORE_INDEX)
        return F.cross_entropy(logits[wrong], labels[wrong]), {}


def test_shapes_from_computed_values_fall_back_to_real_compute(data):
    objective, make, blocks = _setup(data, "clm", "tiny", {}, objective_cls=HardTokensLM)
    flops, module = step_cost(objective, make, blocks, seed=0)
    assert not isinstance(next(module.parameters()), FakeTensor)
    assert flops == counted_with_real_compute(objective, make, blocks)[0]


PLAN_GPU_PROFILE = """
import json, sys
from pathlib import Path
from harness.data.prepare import PreparedData
from harness.plan import plan_suite
from harness.suite import load_suite
suite = load_suite(Path(sys.argv[1]), "gpu")
plans = plan_suite(suite, PreparedData.from_dict(json.loads(sys.argv[2])), Path(sys.argv[3]))
print(json.dumps({"flops": [p.flops_per_step for p in plans]}))
"""


def test_the_gpu_profile_plans_on_this_machine(tiny_data, tmp_path):
    """small and base models at 32 x 512 (the shipped gpu profile's sizes and batch) are planned
    here, where counting them with real compute took over 25 minutes and 5 GB (its time and memory
    against real compute: bench/flop_count.py)."""
    args = [sys.executable, "-c", PLAN_GPU_PROFILE, str(REPO / "suites/clm_vs_mlm.yaml"),
            json.dumps(tiny_data.to_dict(), default=str), str(tmp_path)]
    out = json.loads(subprocess.run(args, capture_output=True, text=True, timeout=900, check=True,
                                    cwd=REPO).stdout)
    assert len(out["flops"]) == 12 and min(out["flops"]) > 1e12  # base: ~2.4e13 per step
