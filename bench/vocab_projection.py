"""What projecting to the vocabulary only at predicted positions saves (MLM's sparse prediction).

Masked LM predicts ~15% of positions; ModernBERT's `sparse_prediction` runs the prediction head
and the vocabulary projection on those rows alone. This measures, side by side in one process,
the FLOPs (counted with FlopCounterMode) and the wall time of one training micro-step with dense
and with sparse prediction, for each size and vocabulary given, and prints the ratios.

    python bench/vocab_projection.py                      # mini and small, vocabularies 1k and 32k
    python bench/vocab_projection.py --sizes tiny --vocab 512 --repeats 3
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch

from harness.budget import micro_step_flops
from harness.models.families import build_model
from harness.models.sizes import SIZES
from objectives.base import Vocab
from objectives.mlm import MaskedLM

SPECIAL = {"[PAD]": 0, "[UNK]": 1, "[EOS]": 2, "[MASK]": 3, "[CLS]": 4, "[SEP]": 5}


def measure(size: str, vocab_size: int, batch: int, seq_len: int, repeats: int) -> dict:
    objective = MaskedLM(MaskedLM.Config(), Vocab(vocab_size, SPECIAL))
    block = np.random.default_rng(0).integers(len(SPECIAL), vocab_size, size=(batch, seq_len))
    out = {}
    for sparse in (False, True):
        model = build_model("encoder", SIZES[size], vocab_size=vocab_size, special=SPECIAL,
                            max_len=seq_len, overrides={"sparse_prediction": sparse})
        flops = micro_step_flops(objective, model, [block], seed=0)
        out[sparse] = (flops, _seconds(objective, model, block, repeats))
    return {"size": size, "vocab": vocab_size, "dense_flops": out[False][0], "sparse_flops": out[True][0],
            "flops_ratio": out[True][0] / out[False][0], "time_ratio": out[True][1] / out[False][1],
            "dense_s": out[False][1], "sparse_s": out[True][1]}


def _seconds(objective, model, block, repeats: int) -> float:
    batch = objective.transform(block, np.random.default_rng(1))
    times = []
    for _ in range(repeats + 1):  # the first pass warms up
        start = time.perf_counter()
        loss, _ = objective.loss(model, batch)
        loss.backward()
        times.append(time.perf_counter() - start)
        model.zero_grad(set_to_none=True)
    return float(np.median(times[1:]))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--sizes", nargs="+", default=["mini", "small"])
    p.add_argument("--vocab", nargs="+", type=int, default=[1024, 32768])
    p.add_argument("--batch", type=int, default=16)
    p.add_argument("--seq-len", type=int, default=128)
    p.add_argument("--repeats", type=int, default=5)
    args = p.parse_args()
    torch.manual_seed(0)
    print(f"MLM micro-step, batch {args.batch} x {args.seq_len}, mask rate 0.15, "
          f"{torch.get_num_threads()} threads, {torch.__version__}")
    print(f"{'size':<6} {'vocab':>6} {'dense FLOPs':>12} {'sparse FLOPs':>13} {'FLOPs ratio':>11} "
          f"{'dense s':>8} {'sparse s':>9} {'time ratio':>10}")
    for size in args.sizes:
        for vocab in args.vocab:
            r = measure(size, vocab, args.batch, args.seq_len, args.repeats)
            print(f"{r['size']:<6} {r['vocab']:>6} {r['dense_flops']:>12.3g} {r['sparse_flops']:>13.3g} "
                  f"{r['flops_ratio']:>11.3f} {r['dense_s']:>8.3f} {r['sparse_s']:>9.3f} {r['time_ratio']:>10.3f}")


if __name__ == "__main__":
    main()
