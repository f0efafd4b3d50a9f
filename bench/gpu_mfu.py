"""Model FLOPs utilization of the harness's training path at GPT-2 small's shape, on a GPU.

A 124M-parameter decoder (12 layers, width 768, 12 heads, 1024 tokens, vocabulary 50304) trained
through the harness's own path: the DeepSpeed engine of harness.train.worker._engine (ZeRO stage 2,
bf16 by the config's `precision: bf16`, AdamW, clipping), steps by `_train_step`, SDPA attention,
on random tokens (the values change no FLOP and no kernel). ELECTRA and the encoder-decoder (span
corruption) are trained at the same width and depth beside it. Each row's MFU is its FLOP/s over
the device's peak, two ways:

  (a) nanoGPT's estimate, FLOPs per token = 6N + 12·L·H·Q·T (N trained parameters, L layers,
      H heads, Q head width, T tokens per sequence), per input token. Exact in form for the
      decoder; for ELECTRA (a smaller generator beside the discriminator) and span corruption
      (the decoder reads fewer tokens than the encoder) it is the decoder's formula applied as is.
  (b) the harness's own count (harness.budget.micro_step_flops, torch's FlopCounterMode) on the
      real batch, on the training device. On a GPU it counts attention as the formula does (in
      full, causal or not); on the CPU it cannot count the CPU attention kernel at all.

The model's MLP is ModernBERT's gated one (3·h·i parameters), so GPT-2's 3072-wide MLP (2·h·4h)
is matched in parameters and FLOPs at i = 2048: that is the shape named `gpt2-small` here, 124.2M
parameters with tied embeddings (`--intermediate 3072` gives 152.5M). The shape is named in this
process only; the suite's sizes are unchanged.

The peak is the device's dense bf16 peak from a table by device name (`--peak-tflops` overrides
it); on the CPU it is torch.mm's measured fp32 FLOP/s at 4096 x 4096, taken in every round beside
the training. `--compile` adds each objective compiled (DeepSpeed's engine.compile, torch.compile),
to say whether it helps. Rows alternate in rounds of a few steps.

    python bench/gpu_mfu.py                            # on a GPU: clm, electra, span_corruption
    python bench/gpu_mfu.py --compile --rounds 8
    python bench/gpu_mfu.py --toy                      # a tiny shape, on the CPU, in seconds
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

import torch

CUDA = torch.cuda.is_available()
os.environ["DS_ACCELERATOR"] = "cuda" if CUDA else "cpu"  # DeepSpeed reads it on first import
sys.path.insert(0, str(Path(__file__).resolve().parent))  # bench/_common.py, run as a script

import numpy as np  # noqa: E402

from _common import group_of_one, interleaved, machine, quiet_deepspeed, seconds_of, spread  # noqa: E402
from harness.budget import micro_step_flops  # noqa: E402
from harness.data.entry import PreparedData  # noqa: E402
from harness.data.prepare import BASE_SPECIAL_TOKENS  # noqa: E402
from harness.data.sampler import BlockSampler  # noqa: E402
from harness.data.tokens import token_dtype  # noqa: E402
from harness.jobs import TrainJob  # noqa: E402
from harness.models.families import model_factory, parameter_count  # noqa: E402
from harness.models.sizes import SIZES, ModelSize  # noqa: E402
from harness.plan import vocab_of  # noqa: E402
from harness.schema import ResourcesConfig, TrainConfig  # noqa: E402
from harness.train.worker import _engine, _objective, _train_step  # noqa: E402
from objectives.noise import SENTINELS  # noqa: E402


@dataclass(frozen=True)
class Shape:
    name: str
    size: ModelSize
    seq_len: int
    vocab: int
    batch: int


GPT2_SMALL = Shape("gpt2-small", ModelSize(hidden=768, layers=12, heads=12, intermediate=2048), 1024, 50304, 16)
TOY = Shape("toy", ModelSize(hidden=64, layers=2, heads=2, intermediate=128), 64, 512, 4)
# Dense bf16 peaks, FLOP/s, by a part of the device's name; the first that matches is taken.
PEAKS = [("H100 PCIe", 756e12), ("H100 NVL", 835e12), ("GH200", 989e12), ("H200", 989e12), ("H100", 989e12), ("B200", 2250e12),
         ("A100", 312e12), ("L40S", 362e12), ("L4", 121e12)]
SPECIALS = [*BASE_SPECIAL_TOKENS, "[MASK]", "[CLS]", "[SEP]", *SENTINELS]


def table_peak() -> float | None:
    name = torch.cuda.get_device_name()
    return next((peak for part, peak in PEAKS if part in name), None)


class MeasuredPeak:
    """The CPU's peak: torch.mm's fp32 FLOP/s at n x n, measured once per call."""

    def __init__(self, n: int = 4096):
        self.a, self.b, self.flops = torch.randn(n, n), torch.randn(n, n), 2 * n**3

    def __call__(self) -> float:
        return self.flops / seconds_of(lambda: torch.mm(self.a, self.b))


def random_tokens(folder: Path, vocab: int, n_tokens: int = 2_000_000) -> PreparedData:
    """A prepared entry of uniformly random tokens (every special token of the objectives first)."""
    folder.mkdir(parents=True, exist_ok=True)
    dtype = token_dtype(vocab)
    rng = np.random.default_rng(0)
    for split in ("train", "val"):
        rng.integers(len(SPECIALS), vocab, size=n_tokens, dtype=np.int64).astype(dtype).tofile(folder / f"{split}.bin")
    return PreparedData(root=folder, tokenizer_dir=folder / "tokenizer", train_tokens=folder / "train.bin",
                        val_tokens=folder / "val.bin", dtype=dtype, vocab_size=vocab, n_train_tokens=n_tokens,
                        n_val_tokens=n_tokens, n_val_bytes=0, special_tokens={t: i for i, t in enumerate(SPECIALS)},
                        tasks_dir=folder / "tasks", source="random tokens")


def job_for(shape: Shape, objective: str, data: PreparedData, precision: str, steps: int, folder: Path) -> TrainJob:
    """A training job as the suite would plan it, at `shape`, with ZeRO 2 and the suite's other
    defaults; FLOPs and parameters are filled in by `counted`."""
    block_length = _objective_named(objective, data).block_length(shape.seq_len)
    return TrainJob(run_id=f"{objective}-{shape.name}", suite="bench", objective=objective, objective_config={},
                    size=shape.name, seed=0, steps=steps, warmup_steps=1, flops_per_step=0.0,
                    tokens_per_step=shape.batch * block_length, params=0, params_trained=0, seq_len=shape.seq_len,
                    block_length=block_length, run_dir=folder / objective, data=data,
                    train=TrainConfig(micro_batch_size=shape.batch, precision=precision, log_every=10**6,
                                      eval_every=10**6, checkpoint_every=10**6),
                    resources=ResourcesConfig(workers_per_run=1, use_gpu=CUDA))


def _objective_named(name: str, data: PreparedData):
    from objectives import registry
    return registry.build(name, {}, vocab_of(data))


def counted(plan: TrainJob, device: torch.device) -> TrainJob:
    """`plan` with its FLOPs per step as the harness counts them (on the real batch, a model of
    the training precision on the training device) and its parameters."""
    objective = _objective(plan)
    dtype = torch.bfloat16 if plan.train.precision == "bf16" else torch.float32
    model = objective.build_model(model_factory(SIZES[plan.size], vocab_size=plan.data.vocab_size,
                                                special=plan.data.special_tokens, max_len=plan.seq_len,
                                                seed=plan.seed)).to(device, dtype)
    sampler = BlockSampler(plan.data.train_tokens, plan.data.dtype, plan.block_length, seed=plan.seed)
    blocks = [sampler.batch(0, 0, 0, plan.train.micro_batch_size)]
    moved = _OnDevice(objective, device)
    flops = micro_step_flops(moved, model, blocks, seed=plan.seed) * plan.train.grad_accum
    update = {"flops_per_step": flops, "params": parameter_count(objective.export_model(model)),
              "params_trained": parameter_count(model)}
    del model
    if device.type == "cuda":
        torch.cuda.empty_cache()
    return plan.model_copy(update=update)


class _OnDevice:
    """The objective, its batches moved to `device` (as the trainer moves them) before the loss."""

    def __init__(self, objective, device):
        self.objective, self.device = objective, device

    def transform(self, block, rng):
        return {k: v.to(self.device) for k, v in self.objective.transform(block, rng).items()}

    def loss(self, model, batch):
        return self.objective.loss(model, batch)


class Row:
    """One objective's engine, compiled or not, and the step it has reached."""

    def __init__(self, plan: TrainJob, compiled: bool):
        self.plan, self.objective = plan, _objective(plan)
        self.engine, _ = _engine(plan, self.objective, plan.data)
        if compiled:
            self.engine.compile()
        self.sampler = BlockSampler(plan.data.train_tokens, plan.data.dtype, plan.block_length, seed=plan.seed)
        self.step = 0

    def run(self, n: int) -> None:
        for _ in range(n):
            _train_step(self.engine, self.objective, self.sampler, self.plan, self.step, 0)
            self.step += 1

    def formula_flops(self) -> float:
        """nanoGPT's estimate for one optimizer step: (6N + 12·L·H·Q·T) per input token."""
        size, p = SIZES[self.plan.size], self.plan
        per_token = 6 * p.params_trained + 12 * size.layers * size.heads * (size.hidden // size.heads) * p.seq_len
        return per_token * p.train.micro_batch_size * p.seq_len * p.train.grad_accum

    @property
    def tokens(self) -> int:  # input tokens per optimizer step
        return self.plan.train.micro_batch_size * self.plan.seq_len * self.plan.train.grad_accum


def build_rows(shape: Shape, args, data: PreparedData, folder: Path) -> dict[str, Row]:
    """Each objective's row, warmed up; with --compile, each compiled too (a failure to compile is
    reported and its row left out)."""
    device = torch.device("cuda", torch.cuda.current_device()) if CUDA else torch.device("cpu")
    steps = args.warmup + args.rounds * args.round_steps
    rows = {}
    for name in args.objectives:
        plan = counted(job_for(shape, name, data, args.precision, steps, folder), device)
        rows[name] = Row(plan, compiled=False)
        rows[name].run(args.warmup)
        if args.compile:
            try:
                rows[f"{name}+compile"] = Row(plan, compiled=True)
                rows[f"{name}+compile"].run(args.warmup + args.compile_warmup)
            except Exception as e:  # report it and go on: the eager rows are the measurement
                rows.pop(f"{name}+compile", None)
                print(f"{name}+compile: failed to compile ({type(e).__name__}: {str(e).splitlines()[0][:200]})")
    return rows


def measure(rows: dict[str, Row], peak, rounds: int, round_steps: int) -> tuple[dict, list[float]]:
    """Seconds per round of each row, and the peak of each round (measured on the CPU)."""
    timers = {name: (lambda row=row: seconds_of(lambda: row.run(round_steps), sync=CUDA)) for name, row in rows.items()}
    if callable(peak):
        timers["peak"] = peak
    times = interleaved(timers, rounds)
    return times, times.pop("peak", [peak] * rounds)


def report(rows: dict[str, Row], times: dict, peaks: list[float], round_steps: int) -> None:
    print(f"{'row':<24} {'params':>8} {'tokens/s':>10} {'(a) FLOP/tok':>12} {'MFU (a)':>8} "
          f"{'(b) FLOP/tok':>12} {'MFU (b)':>26} {'(b)/(a)':>8}")
    for name, row in rows.items():
        flops = {"a": row.formula_flops(), "b": row.plan.flops_per_step}
        mfu = {k: [f * round_steps / s / p for s, p in zip(times[name], peaks)] for k, f in flops.items()}
        tokens_s = row.tokens * round_steps / statistics.median(times[name])
        print(f"{name:<24} {row.plan.params_trained / 1e6:>7.1f}M {tokens_s:>10,.0f} "
              f"{flops['a'] / row.tokens:>12.4g} {statistics.median(mfu['a']):>8.3f} "
              f"{flops['b'] / row.tokens:>12.4g} {spread(mfu['b'], 3):>26} {flops['b'] / flops['a']:>8.3f}")
    for name in [n for n in rows if f"{n}+compile" in rows]:
        gain = statistics.median(times[name]) / statistics.median(times[f"{name}+compile"])
        print(f"torch.compile, {name}: {gain:.2f}x the eager tokens/s ({'helped' if gain > 1.02 else 'did not help'})")


def parse() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--toy", action="store_true", help="a tiny shape (2 layers, width 64, 64 tokens): seconds on a CPU")
    p.add_argument("--objectives", nargs="+", default=["clm", "electra", "span_corruption"])
    p.add_argument("--batch", type=int, help="micro-batch size (default: 16, toy 4)")
    p.add_argument("--intermediate", type=int, help="the MLP's width (default: 2048, gated; see above)")
    p.add_argument("--precision", choices=["bf16", "fp32"], help="(default: bf16 on a GPU, fp32 on the CPU)")
    p.add_argument("--peak-tflops", type=float, help="the device's peak, TFLOP/s, instead of the table's")
    p.add_argument("--peak-size", type=int, default=4096, help="n of the CPU's n x n peak matmul")
    p.add_argument("--compile", action="store_true", help="also each objective compiled, to compare")
    p.add_argument("--warmup", type=int, default=3, help="untimed steps of each row first")
    p.add_argument("--compile-warmup", type=int, default=3, help="more untimed steps of a compiled row")
    p.add_argument("--rounds", type=int, default=5, help="alternating rounds")
    p.add_argument("--round-steps", type=int, default=5, help="steps of each row per round")
    args = p.parse_args()
    if not CUDA and not args.toy:
        p.error("no GPU here: pass --toy for the tiny shape on the CPU (GPT-2 small's step takes minutes on a CPU)")
    args.precision = args.precision or ("bf16" if CUDA else "fp32")
    return args


def the_shape(args) -> Shape:
    base = TOY if args.toy else GPT2_SMALL
    size = base.size.model_copy(update={"intermediate": args.intermediate or base.size.intermediate})
    return Shape(base.name, size, base.seq_len, base.vocab, args.batch or base.batch)


def the_peak(args):
    """FLOP/s, or on the CPU a callable that measures it; None where the table does not know the GPU."""
    if args.peak_tflops:
        return args.peak_tflops * 1e12, f"{args.peak_tflops:g} TFLOP/s (--peak-tflops)"
    if CUDA:
        peak = table_peak()
        return peak, (f"{peak / 1e12:g} TFLOP/s dense bf16 (table, {torch.cuda.get_device_name()})" if peak else None)
    n = args.peak_size
    return MeasuredPeak(n), f"torch.mm's fp32 FLOP/s at {n} x {n}, measured in every round (no GPU)"


def main() -> None:
    args = parse()
    shape = the_shape(args)
    SIZES[shape.name] = shape.size  # named in this process only: _engine reads a run's size from SIZES
    peak, said = the_peak(args)
    if peak is None:
        sys.exit(f"no peak known for {torch.cuda.get_device_name()}: give it with --peak-tflops")
    if CUDA:
        torch.cuda.set_device(0)
    group_of_one("nccl" if CUDA else "gloo")
    quiet_deepspeed()
    print(f"machine: {machine()}")
    s = shape.size
    print(f"shape {shape.name}: {s.layers} layers, width {s.hidden}, {s.heads} heads, gated MLP {s.intermediate}, "
          f"{shape.seq_len} tokens, vocabulary {shape.vocab}, batch {shape.batch}; {args.precision}, ZeRO 2, SDPA")
    print(f"peak: {said}")
    with tempfile.TemporaryDirectory() as tmp:
        data = random_tokens(Path(tmp) / "data", shape.vocab)
        rows = build_rows(shape, args, data, Path(tmp) / "runs")
        times, peaks = measure(rows, peak, args.rounds, args.round_steps)
    if callable(peak):
        print(f"measured peak: {spread([p / 1e9 for p in peaks], 1)} GFLOP/s")
    print(f"median (range) over rounds of {args.round_steps} steps; FLOPs per input token")
    report(rows, times, peaks, args.round_steps)


if __name__ == "__main__":
    main()
