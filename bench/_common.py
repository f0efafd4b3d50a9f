"""What the training benchmarks share (step_parity, cpu_mfu, gpu_mfu): the line that says what
machine a figure came from, interleaved repetitions and their median and spread, a small synthetic
corpus, a training job planned as the suite plans it, and a process group of one.

Not a benchmark itself: imported by the scripts beside it, which put bench/ on sys.path when run
as `python bench/NAME.py`.
"""

from __future__ import annotations

import logging
import os
import platform
import statistics
import time
from collections.abc import Callable
from pathlib import Path

import torch

ALL_SPECIALS = ("[MASK]", "[CLS]", "[SEP]")  # the encoder objectives' tokens; sentinels are added per objective


def machine() -> str:
    """One line: processor, cores (usable, load), torch and DeepSpeed, threads, the GPU if any."""
    import deepspeed
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    load = ", load average %.1f" % os.getloadavg()[0] if hasattr(os, "getloadavg") else ""
    gpu = f", {torch.cuda.get_device_name()}" if torch.cuda.is_available() else ", no GPU"
    return (f"{platform.machine()}, {os.cpu_count()} cores ({cores} usable{load}){gpu}, torch "
            f"{torch.__version__} with {torch.get_num_threads()} threads, deepspeed {deepspeed.__version__}")


def interleaved(timers: dict[str, Callable[[], float]], rounds: int) -> dict[str, list[float]]:
    """Each timer's result, once per round; the order is reversed every other round, so that no
    one of them always runs first (after the machine was idle) or last."""
    results: dict[str, list[float]] = {name: [] for name in timers}
    names = list(timers)
    for r in range(rounds):
        for name in names if r % 2 == 0 else reversed(names):
            results[name].append(timers[name]())
    return results


def seconds_of(fn: Callable[[], object], sync: bool = False) -> float:
    """Wall seconds of fn(); with `sync`, the GPU's queued work is waited for on both sides."""
    if sync:
        torch.cuda.synchronize()
    start = time.perf_counter()
    fn()
    if sync:
        torch.cuda.synchronize()
    return time.perf_counter() - start


def spread(values: list[float], digits: int = 2) -> str:
    """'median (min-max, n)': the middle value and the range it came from."""
    fmt = f"{{:.{digits}f}}"
    return (f"{fmt.format(statistics.median(values))} ({fmt.format(min(values))}-{fmt.format(max(values))}, "
            f"{len(values)} rounds)")


def ratios(numerators: list[float], denominators: list[float]) -> list[float]:
    """Round by round: the ratio of two measurements taken side by side."""
    return [a / b for a, b in zip(numerators, denominators)]


def synthetic_data(folder: Path, seq_len: int, objectives: list[str], documents: int = 3000):
    """A prepared synthetic corpus (the suite's BPE tokenizer of 1024) with every special token
    `objectives` need, built in `folder`."""
    from harness.data.config import SyntheticData
    from harness.data.prepare import BASE_SPECIAL_TOKENS, prepare
    from harness.runtime import quiet
    from harness.synthetic import WorldConfig
    from objectives import registry
    tokens = [*BASE_SPECIAL_TOKENS, *ALL_SPECIALS]
    for name in objectives:
        tokens += [t for t in registry.get(name).special_tokens if t not in tokens]
    cfg = SyntheticData(synthetic=WorldConfig(entities=40, documents=documents, seed=0), seq_len=seq_len,
                        val_fraction=0.05, eval_examples=20)
    with quiet():
        return prepare(cfg, tokens, folder)


def planned_job(data, objective: str, size: str, seq_len: int, results: Path, steps: int, train: dict,
                workers: int = 1):
    """The TrainJob the suite would plan for one run of `objective` at `size` on `data`: the
    suite's defaults (ZeRO stage 2, fp32, cosine) unless `train` says otherwise, and a token
    budget of `steps` optimizer steps. Logging, validation and checkpoints never come due."""
    from harness.plan import plan_suite
    from harness.schema import Suite
    micro, accum = train.get("micro_batch_size", 16), train.get("grad_accum", 1)
    suite = Suite.model_validate({
        "name": "bench", "objectives": [objective], "sizes": [size], "seeds": [0],
        "data": {"synthetic": {"entities": 40, "documents": 3000, "seed": 0}, "seq_len": seq_len},
        "budget": {"tokens": steps * micro * accum * workers * seq_len, "min_steps": 1},
        "train": {"log_every": 10**6, "eval_every": 10**6, "checkpoint_every": 10**6, **train},
        "resources": {"workers_per_run": workers}})
    return plan_suite(suite, data, results)[0].train_job()


def group_of_one(backend: str = "gloo") -> None:
    """This process as a process group of one (rank 0 of 1), as a lone harness worker makes it;
    nccl for a GPU, where DeepSpeed's collectives need it."""
    import torch.distributed as dist
    if dist.is_initialized():
        return
    os.environ.setdefault("MASTER_ADDR", "127.0.0.1")
    os.environ.setdefault("MASTER_PORT", str(29_500 + os.getpid() % 1000))
    for name in ("RANK", "LOCAL_RANK"):
        os.environ.setdefault(name, "0")
    os.environ.setdefault("WORLD_SIZE", "1")
    dist.init_process_group(backend, rank=0, world_size=1)


def quiet_deepspeed() -> None:
    """DeepSpeed narrates every engine it builds at INFO; the benchmarks print their own lines."""
    from deepspeed.utils import logger
    logger.setLevel(logging.WARNING)


def step_arguments(parser, rounds: int) -> None:
    """The options of the training benchmarks: the batch (the suite's defaults), threads, rounds."""
    parser.add_argument("--batch", type=int, default=16, help="micro-batch size (the suite's default)")
    parser.add_argument("--seq-len", type=int, default=128, help="(the suite's default)")
    parser.add_argument("--grad-accum", type=int, default=1)
    parser.add_argument("--threads", type=int, default=torch.get_num_threads(),
                        help="torch threads of a one-process measurement (default: all)")
    parser.add_argument("--warmup", type=int, default=3, help="untimed training steps of each path first")
    parser.add_argument("--rounds", type=int, default=rounds, help="alternating rounds")
    parser.add_argument("--round-steps", type=int, default=3, help="training steps of one path per round")


def start(threads: int) -> None:
    """Before a one-process measurement: torch's threads, the machine line, a process group of
    one (DeepSpeed's engine needs one), DeepSpeed's logging quiet."""
    torch.set_num_threads(threads)
    print(f"machine: {machine()}")
    group_of_one()
    quiet_deepspeed()
