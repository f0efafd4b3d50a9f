"""A CPU analogue of model FLOPs utilization: how close training comes to the speed of its own matmuls.

Achieved training FLOP/s: the FLOPs of one optimizer step as the harness counts them
(harness.budget.micro_step_flops, torch's FlopCounterMode over forward and backward on the real
batches, times grad_accum), over the measured time of the harness's step (_train_step on the
DeepSpeed engine of `_engine`, as a lone worker runs it). The reference: torch.mm's FLOP/s at
the model's own matmul shapes, read from its linear layers on the same batch (tokens x in x out),
each as training runs it: forward, gradient of the input, gradient of the weight; fp32, on the
same number of threads. Training steps and reference passes alternate in rounds.

torch's FlopCounterMode has no formula for the CPU kernel of scaled-dot-product attention, so the
count leaves attention's two batched products out on CPU; a second ratio adds them at
12·L·H·Q·T FLOPs per token (L layers, H heads, Q head width, T tokens per sequence).

    python bench/cpu_mfu.py                          # clm mini, batch 16 x 128, all threads
    python bench/cpu_mfu.py --objective mlm --threads 1 --rounds 12
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
from pathlib import Path

os.environ.setdefault("DS_ACCELERATOR", "cpu")  # as a CPU worker has it, before DeepSpeed is imported
sys.path.insert(0, str(Path(__file__).resolve().parent))  # bench/_common.py, run as a script

import numpy as np  # noqa: E402
import torch  # noqa: E402

from _common import (interleaved, planned_job, ratios, seconds_of, spread, start, step_arguments,  # noqa: E402
                     synthetic_data)
from harness.budget import micro_step_flops  # noqa: E402
from harness.data.sampler import BlockSampler  # noqa: E402
from harness.models.families import model_factory  # noqa: E402
from harness.models.sizes import SIZES  # noqa: E402
from harness.train.worker import _engine, _objective, _train_step  # noqa: E402


def linear_shapes(model: torch.nn.Module, objective, batch: dict) -> list[tuple[int, int, int]]:
    """(tokens, in, out) of every linear layer's call in one forward pass on `batch`."""
    shapes = []

    def record(module, inputs, output):
        shapes.append((inputs[0].numel() // module.in_features, module.in_features, module.out_features))
    hooks = [m.register_forward_hook(record) for m in model.modules() if isinstance(m, torch.nn.Linear)]
    try:
        with torch.no_grad():
            objective.loss(model, batch)
    finally:
        for hook in hooks:
            hook.remove()
    return shapes


class MatmulPass:
    """torch.mm at each shape as a training step runs it: x @ w forward, then g @ w.T (the input's
    gradient) and x.T @ g (the weight's), on operands made once."""

    def __init__(self, shapes: list[tuple[int, int, int]]):
        self.operands = []
        for m, k, n in shapes:
            x, w, g = torch.randn(m, k), torch.randn(k, n), torch.randn(m, n)
            self.operands += [(x, w), (g, w.t().contiguous()), (x.t().contiguous(), g)]
        self.flops = sum(6 * m * k * n for m, k, n in shapes)

    def __call__(self) -> None:
        for a, b in self.operands:
            torch.mm(a, b)


def attention_flops_per_token(plan) -> int:
    size = SIZES[plan.size]
    return 12 * size.layers * size.heads * (size.hidden // size.heads) * plan.seq_len


def measure(plan, rounds: int, round_steps: int, warmup: int) -> dict:
    """The step's counted FLOPs, and round by round its FLOP/s and the reference's."""
    objective = _objective(plan)
    engine, _ = _engine(plan, objective, plan.data)
    sampler = BlockSampler(plan.data.train_tokens, plan.data.dtype, plan.block_length, seed=plan.seed)
    t = plan.train
    counted = objective.build_model(model_factory(SIZES[plan.size], vocab_size=plan.data.vocab_size,
                                                  special=plan.data.special_tokens, max_len=plan.seq_len,
                                                  seed=plan.seed))
    blocks = [sampler.batch(0, micro, 0, t.micro_batch_size) for micro in range(t.grad_accum)]
    micro_flops = micro_step_flops(objective, counted, blocks, seed=plan.seed)
    shapes = linear_shapes(counted, objective, objective.transform(blocks[0], np.random.default_rng(0)))
    matmuls = MatmulPass(shapes)
    step = iter(range(10**9))

    def train(n: int) -> None:
        for _ in range(n):
            _train_step(engine, objective, sampler, plan, next(step), 0)
    train_s, mm_s = seconds_of(lambda: train(warmup)) / warmup, seconds_of(matmuls)
    passes = max(1, round(round_steps * train_s / mm_s))  # a reference round about as long as a training round
    times = interleaved({"train": lambda: seconds_of(lambda: train(round_steps)),
                         "mm": lambda: seconds_of(lambda: [matmuls() for _ in range(passes)])}, rounds)
    step_flops = micro_flops * t.grad_accum
    return {"step_flops": step_flops, "linear_share": matmuls.flops / micro_flops,
            "achieved": [step_flops * round_steps / s for s in times["train"]],
            "reference": [matmuls.flops * passes / s for s in times["mm"]],
            "tokens_per_step": t.micro_batch_size * plan.seq_len * t.grad_accum}


def parse() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--objective", default="clm", help="(default: %(default)s)")
    p.add_argument("--size", default="mini", help="(default: %(default)s)")
    step_arguments(p, rounds=8)
    return p.parse_args()


def main() -> None:
    args = parse()
    start(args.threads)
    steps = args.warmup + args.rounds * args.round_steps
    with tempfile.TemporaryDirectory() as tmp:
        data = synthetic_data(Path(tmp) / "data", args.seq_len, [args.objective])
        plan = planned_job(data, args.objective, args.size, args.seq_len, Path(tmp) / "runs", steps,
                           {"micro_batch_size": args.batch, "grad_accum": args.grad_accum})
        r = measure(plan, args.rounds, args.round_steps, args.warmup)
    mfu = ratios(r["achieved"], r["reference"])
    with_attention = 1 + attention_flops_per_token(plan) * r["tokens_per_step"] / r["step_flops"]
    print(f"\n{args.objective} {args.size}, batch {args.batch} x {args.seq_len}, grad_accum {args.grad_accum}, "
          f"fp32, ZeRO 2, {torch.get_num_threads()} threads; median (range) over rounds")
    print(f"  FLOPs per step, counted on the real batch:  {r['step_flops']:.4g} "
          f"(planned: {plan.flops_per_step:.4g}; linear layers: {100 * r['linear_share']:.1f}% of it)")
    print(f"  achieved training FLOP/s (_train_step):     {spread([a / 1e9 for a in r['achieved']])} GFLOP/s")
    print(f"  torch.mm FLOP/s at the model's shapes:      {spread([m / 1e9 for m in r['reference']])} GFLOP/s")
    print(f"  the ratio with attention's products counted too (x{with_attention:.3f} the FLOPs): "
          f"{statistics.median(mfu) * with_attention:.2f}")
    print(f"cpu mfu (achieved / torch.mm): {spread(mfu)}")


if __name__ == "__main__":
    main()
