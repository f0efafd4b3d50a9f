"""Matched compute: count the FLOPs of a real training step, then solve each run's step count.

FLOPs come from torch's FlopCounterMode around one forward and backward pass of the actual
model on an actual batch from the objective's transform, so whatever an objective does
differently (a vocabulary projection at masked positions only, extra heads, a generator) is
in the count. Optimizer arithmetic is left out, as in the usual 6ND accounting.

The count needs shapes, not values, so planning does no arithmetic (`step_cost`): under
`shapes_only` the model's weights and activations are fake tensors (torch's FakeTensorMode:
shape and dtype, no memory, nothing computed), while integer and boolean tensors (token
blocks, masks, labels) stay real. A mask drawn from the data therefore selects exactly the
positions it selects in training, and the count equals that of real compute to the FLOP:
tests/test_budget.py checks every registered objective against real compute. A fake value read
as a number (a metric's .item()) reads 0, and real data written with fake values keeps its own
(ELECTRA's sampled tokens): values, never shapes. An objective whose shapes follow values its
model computes cannot be counted so, and is counted with real compute instead.
"""

from __future__ import annotations

import contextlib

import numpy as np
import torch
from torch._subclasses.fake_tensor import (DataDependentOutputException, DynamicOutputShapeException,
                                           FakeTensor, FakeTensorMode, UnsupportedFakeTensorException,
                                           UnsupportedOperatorException, unset_fake_temporarily)
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_leaves
from torch.utils.flop_counter import FlopCounterMode

from harness.errors import UserError

aten = torch.ops.aten
# Reading a fake tensor's value as a Python number (.item(), bool(tensor))
_SCALAR_READS = {aten._local_scalar_dense.default, aten.is_nonzero.default, aten.item.default}
_INDEXING = {aten.index.Tensor, aten.index_put.default, aten.index_put_.default,
             aten._index_put_impl_.default}
# What FakeTensorMode raises where an output's shape or a Python value needs a fake tensor's values
_NEEDS_VALUES = (DataDependentOutputException, DynamicOutputShapeException, UnsupportedOperatorException,
                 UnsupportedFakeTensorException)


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


def step_cost(objective, make, blocks: list[np.ndarray], seed: int) -> tuple[float, torch.nn.Module]:
    """(micro_step_flops, the module trained), the module built by `make` (a ModelFactory) with
    fake weights; with real ones, and real arithmetic, where the count needs computed values."""
    try:
        with shapes_only():
            module = objective.build_model(make)
            return micro_step_flops(objective, module, blocks, seed), module
    except _NEEDS_VALUES:
        module = objective.build_model(make)
        return micro_step_flops(objective, module, blocks, seed), module


@contextlib.contextmanager
def shapes_only():
    """Floating-point tensors made inside are fake, integer and boolean ones real (see module doc)."""
    with FakeTensorMode(allow_non_fake_inputs=True), _RealData():
        yield


class _RealData(TorchDispatchMode):
    """Runs every op whose tensors are all real for real, and lets FakeTensorMode (under it)
    run the others; see `__torch_dispatch__` for the cases in between."""

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        tensors = [t for t in tree_leaves((args, kwargs)) if isinstance(t, torch.Tensor)]
        if tensors and not any(isinstance(t, FakeTensor) for t in tensors):
            return _real(func, args, kwargs)
        if func in _SCALAR_READS:  # a fake value feeds metrics only: any number will do
            return _zero(args[0].dtype)
        if func in _INDEXING:  # a real boolean mask becomes the real positions it selects
            args = (args[0], _positions(args[1]), *args[2:])
        if tensors and _writes_real(func, args):
            return args[0]  # fake values written into real data change values, never shapes
        out = func(*args, **kwargs)
        if not tensors and isinstance(out, torch.Tensor) and not _floating(out):
            return _real(func, args, kwargs)  # a factory of positions or masks (torch.arange)
        return out


def _real(func, args, kwargs):
    with unset_fake_temporarily():
        return func(*args, **kwargs)


def _zero(dtype: torch.dtype):
    return False if dtype == torch.bool else 0.0 if dtype.is_floating_point else 0


def _positions(indices: list) -> list:
    """Indices with each real boolean mask replaced by the integer positions it selects, one
    tensor per dimension it spans (what indexing with the mask does)."""
    out = []
    for index in indices:
        if _is_real(index) and index.dtype in (torch.bool, torch.uint8):
            with unset_fake_temporarily():
                out += index.nonzero().unbind(1)
        else:
            out.append(index)
    return out


def _writes_real(func, args) -> bool:
    first = func._schema.arguments[0]
    return first.alias_info is not None and first.alias_info.is_write and _is_real(args[0])


def _is_real(t) -> bool:
    return isinstance(t, torch.Tensor) and not isinstance(t, FakeTensor)


def _floating(t: torch.Tensor) -> bool:
    return t.is_floating_point() or t.is_complex()


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
