"""The wsd schedule (harness.train.lr) without training: its shape as torch's LambdaLR steps it,
two budgets of a sweep agreeing up to the shorter one's decay, and the DeepSpeed config of each
schedule. Resuming a wsd run exactly is tests/test_train.py."""

from __future__ import annotations

import pytest
import torch

from harness.plan import plan_suite
from harness.schema import Suite
from harness.train.lr import decay_steps, wsd_scheduler
from harness.train.worker import _client_scheduler, deepspeed_config

SWEEP = {"name": "sweep", "objectives": ["clm"], "sizes": ["tiny"], "seeds": [0],
         "data": {"synthetic": {"entities": 12, "documents": 600, "seed": 3}, "seq_len": 32},
         "budget": {"tokens": [3 * 40 * 4 * 32, 40 * 4 * 32], "min_steps": 10},  # 40 and 120 steps
         "train": {"micro_batch_size": 4, "lr": 0.01, "schedule": "wsd", "warmup_fraction": 0.1,
                   "decay_fraction": 0.25, "min_lr_ratio": 0.1},
         "resources": {"workers_per_run": 1}}


def _lrs(plan) -> list[float]:
    """The learning rate of every optimizer step, as DeepSpeed's LambdaLR gives it to AdamW."""
    optimizer = torch.optim.AdamW([torch.nn.Parameter(torch.zeros(1))], lr=plan.train.lr)
    scheduler = _client_scheduler(plan)(optimizer)
    out = []
    for _ in range(plan.steps):
        out.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        scheduler.step()
    return out


@pytest.fixture(scope="module")
def plans(tiny_data, tmp_path_factory):
    return plan_suite(Suite.model_validate(SWEEP), tiny_data, tmp_path_factory.mktemp("sweep"))


def test_wsd_warms_up_holds_the_peak_then_decays_linearly_to_the_floor(plans):
    long = plans[1]
    lrs, peak, warmup, decay = _lrs(long), long.train.lr, long.warmup_steps, decay_steps(long.steps, 0.25)
    assert (long.steps, warmup, decay) == (120, 4, 30)  # the warmup of the 40-step budget
    assert lrs[:warmup] == pytest.approx([peak * (s + 1) / warmup for s in range(warmup)])
    assert lrs[warmup:long.steps - decay] == pytest.approx([peak] * (long.steps - decay - warmup))
    tail = lrs[long.steps - decay:]
    assert tail[-1] == pytest.approx(0.1 * peak)
    steps = [a - b for a, b in zip(tail, tail[1:])]
    assert tail[0] < peak and steps == pytest.approx([0.9 * peak / decay] * (decay - 1))


def test_a_shorter_budget_is_a_prefix_of_a_longer_one_up_to_its_decay(plans):
    short, long = plans
    assert short.steps == 40 and short.warmup_steps == long.warmup_steps
    start = short.steps - decay_steps(short.steps, 0.25)
    a, b = _lrs(short), _lrs(long)
    assert a[:start] == b[:start]  # the same numbers, not merely close
    assert a[start] < b[start]  # and the shorter one decays from there


def test_the_state_torch_checkpoints_is_plain_data():
    """DeepSpeed saves the scheduler's state_dict and loads it weights-only: no function in it."""
    optimizer = torch.optim.AdamW([torch.nn.Parameter(torch.zeros(1))], lr=1.0)
    scheduler = wsd_scheduler(10, 2, 0.3, 0.1)(optimizer)
    for _ in range(8):
        optimizer.step()
        scheduler.step()
    state = scheduler.state_dict()
    assert state["lr_lambdas"] == [None] and state["last_epoch"] == 8
    fresh_optimizer = torch.optim.AdamW([torch.nn.Parameter(torch.zeros(1))], lr=1.0)
    fresh = wsd_scheduler(10, 2, 0.3, 0.1)(fresh_optimizer)
    fresh.load_state_dict(state)
    fresh_optimizer.step()
    fresh.step()
    assert fresh.get_last_lr() == pytest.approx([0.1])  # step 9: the end of the decay


def test_deepspeed_schedules_cosine_itself_and_leaves_wsd_to_the_harness(plans):
    wsd = plans[0]
    assert "scheduler" not in deepspeed_config(wsd) and callable(_client_scheduler(wsd))
    cosine = wsd.model_copy(update={"train": wsd.train.model_copy(update={"schedule": "cosine"})})
    assert _client_scheduler(cosine) is None
    assert deepspeed_config(cosine)["scheduler"] == {"type": "WarmupCosineLR", "params": {
        "total_num_steps": 40, "warmup_num_steps": wsd.warmup_steps, "warmup_type": "linear",
        "cos_min_ratio": 0.1}}
    assert deepspeed_config(cosine).keys() - deepspeed_config(wsd).keys() == {"scheduler"}
