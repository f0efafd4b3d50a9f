"""The warmup-stable-decay (wsd) learning-rate schedule, for compute sweeps.

Linear warmup to the peak, the peak held, then a linear decay to `min_lr_ratio` over the last
`decay_fraction` of the run's steps. A sweep gives every budget the warmup of its smallest, so
two runs of one objective, size and seed at different budgets use the same learning rate at every
step before the shorter one starts to decay: the shorter run is a prefix of the longer one up to
there. For 10 steps, warmup 2, decay_fraction 0.3 (3 steps) and min_lr_ratio 0.1:

    >>> [round(wsd_factor(s, steps=10, warmup=2, decay=3, min_ratio=0.1), 2) for s in range(10)]
    [0.5, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 0.7, 0.4, 0.1]

DeepSpeed's own schedulers warm up then decay from the start (WarmupDecayLR, WarmupCosineLR), so
wsd is a torch LambdaLR handed to deepspeed.initialize; DeepSpeed saves and loads its state
(the step count) with every checkpoint, and the factor is a pure function of the step, so a
resumed run continues the schedule exactly. The default, cosine, stays DeepSpeed's WarmupCosineLR.
"""

from __future__ import annotations

import torch


def decay_steps(steps: int, decay_fraction: float) -> int:
    """Steps of a run's final decay: at least one."""
    return max(1, round(decay_fraction * steps))


def wsd_factor(step: int, *, steps: int, warmup: int, decay: int, min_ratio: float) -> float:
    """The learning rate of optimizer step `step` (0 for the first) over the peak."""
    warm = min(1.0, (step + 1) / warmup)
    into_decay = step - (steps - decay) + 1  # 1 on the first step of the decay
    decayed = 1.0 - (1.0 - min_ratio) * min(1.0, max(0, into_decay) / decay)
    return min(warm, decayed)


def wsd_scheduler(steps: int, warmup: int, decay_fraction: float, min_ratio: float):
    """A callable DeepSpeed calls with its optimizer: the LambdaLR of the wsd schedule."""
    decay = decay_steps(steps, decay_fraction)

    def factor(step: int) -> float:  # a function, so LambdaLR's state_dict leaves it out
        return wsd_factor(step, steps=steps, warmup=warmup, decay=decay, min_ratio=min_ratio)

    def build(optimizer):
        return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)
    return build
