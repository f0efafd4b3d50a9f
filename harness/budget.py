"""Matched compute: count the FLOPs of a real training step, then solve each run's step count.

FLOPs come from torch's FlopCounterMode around one forward and backward pass of the actual
model on an actual batch from the objective's transform, so whatever an objective does
differently (a vocabulary projection at masked positions only, extra heads, a generator) is
in the count. Optimizer arithmetic is left out, as in the usual 6ND accounting.
"""

from __future__ import annotations

import numpy as np
import torch
from torch.utils.flop_counter import FlopCounterMode

from harness.errors import UserError


def micro_step_flops(objective, model: torch.nn.Module, blocks: list[np.ndarray], seed: int) -> float:
    """Mean FLOPs of forward + backward on each block (objectives with random masks vary a little)."""
    totals = []
    for i, block in enumerate(blocks):
        batch = objective.transform(block, np.random.default_rng([seed, i]))
        model.zero_grad(set_to_none=True)
        with FlopCounterMode(display=False) as counter:
            loss, _ = objective.loss(model, batch)
            loss.backward()
        totals.append(counter.get_total_flops())
    model.zero_grad(set_to_none=True)
    return float(np.mean(totals))


def solve_steps(budget, *, flops_per_step: float, tokens_per_step: int, label: str) -> int:
    """Optimizer steps that spend the budget; refuse budgets that leave too few steps."""
    if budget.flops is not None:
        steps, key = round(budget.flops / flops_per_step), "budget.flops"
    else:
        steps, key = round(budget.tokens / tokens_per_step), "budget.tokens"
    if steps < budget.min_steps:
        raise UserError(
            f"leaves run {label} only {steps} optimizer steps (min_steps is {budget.min_steps}; "
            f"one step costs {flops_per_step:.3g} FLOPs, {tokens_per_step} tokens): raise the "
            f"budget or shrink the batch", where=key)
    return steps
