"""What counting a training step's FLOPs costs: with real compute (how planning counted before)
and without (fake weights and activations, real token blocks and masks: harness.budget.step_cost).

For each size and objective given, one child process builds the model and counts forward +
backward on the same random blocks with each method, one method per fresh process so that
each process's peak memory is its own. Prints both counts (they must be equal), the time and
the peak memory each method added to its process, and the ratios old / new.

    python bench/flop_count.py                        # mini and small, clm and mlm, batch 32 x 512
    python bench/flop_count.py --sizes tiny --batch 8 --seq-len 128
"""

from __future__ import annotations

import argparse
import platform
import resource
import time
from concurrent.futures import ProcessPoolExecutor
from multiprocessing import get_context

import numpy as np
import torch

from harness.budget import micro_step_flops, step_cost
from harness.models.families import model_factory
from harness.models.sizes import SIZES
from objectives import registry
from objectives.base import Vocab

SPECIAL = {"[PAD]": 0, "[UNK]": 1, "[EOS]": 2, "[MASK]": 3, "[CLS]": 4, "[SEP]": 5}
METHODS = ("real", "fake")


def count(method: str, objective_name: str, size: str, vocab: int, batch: int, seq_len: int,
          blocks: int) -> dict:
    """In a fresh process: (FLOPs, seconds, peak bytes added) of one method's count."""
    objective = registry.build(objective_name, {}, Vocab(vocab, SPECIAL))
    make = model_factory(SIZES[size], vocab_size=vocab, special=SPECIAL, max_len=seq_len)
    rng = np.random.default_rng(0)
    data = [rng.integers(len(SPECIAL), vocab, size=(batch, seq_len)) for _ in range(blocks)]
    before, start = _rss_bytes(), time.perf_counter()
    if method == "real":
        flops = micro_step_flops(objective, objective.build_model(make), data, seed=0)
    else:
        flops = step_cost(objective, make, data, seed=0)[0]
    seconds = time.perf_counter() - start
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # ru_maxrss is in KiB
    return {"flops": flops, "seconds": seconds, "peak": peak - before}


def _rss_bytes() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * resource.getpagesize()


def in_fresh_process(*args) -> dict:
    with ProcessPoolExecutor(max_workers=1, mp_context=get_context("spawn")) as pool:
        return pool.submit(count, *args).result()


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--sizes", nargs="+", default=["mini", "small"])
    p.add_argument("--objectives", nargs="+", default=["clm", "mlm"])
    p.add_argument("--vocab", type=int, default=8192)
    p.add_argument("--batch", type=int, default=32)
    p.add_argument("--seq-len", type=int, default=512)
    p.add_argument("--blocks", type=int, default=1, help="blocks counted (planning counts 3)")
    args = p.parse_args()
    print(f"one micro-step, batch {args.batch} x {args.seq_len}, vocabulary {args.vocab}, {args.blocks} "
          f"block(s); {torch.get_num_threads()} threads, torch {torch.__version__}, {platform.machine()}")
    print(f"{'size':<6} {'objective':<10} {'FLOPs':>10} {'equal':>5} {'real s':>8} {'fake s':>7} "
          f"{'time x':>7} {'real MB':>8} {'fake MB':>8} {'memory x':>8}")
    for size in args.sizes:
        for name in args.objectives:
            real, fake = (in_fresh_process(m, name, size, args.vocab, args.batch, args.seq_len, args.blocks)
                          for m in METHODS)
            mb = [max(r["peak"], 1) / 2**20 for r in (real, fake)]
            seconds = [r["seconds"] for r in (real, fake)]
            print(f"{size:<6} {name:<10} {fake['flops']:>10.3g} {str(real['flops'] == fake['flops']):>5} "
                  f"{seconds[0]:>8.2f} {seconds[1]:>7.2f} {seconds[0] / seconds[1]:>7.1f} "
                  f"{mb[0]:>8.0f} {mb[1]:>8.0f} {mb[0] / mb[1]:>8.1f}")


if __name__ == "__main__":
    main()
