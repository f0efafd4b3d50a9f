"""What the harness's training path costs per step, against a bare torch loop doing the same work.

Both run on the CPU, as the suite's default workers train (DS_ACCELERATOR=cpu unless set).

1. One process: the harness's step (harness.train.worker._train_step on the DeepSpeed engine that
   `_engine` builds from `deepspeed_config`: ZeRO stage 2, the suite's defaults, a gloo group of
   one) against a bare loop (the same model from the same seed, the same batches from the same
   transform, fp32 both, torch's AdamW with the same hyperparameters and parameter groups, the
   same learning-rate schedule and gradient clipping), for each objective and size asked for.
   The two alternate in short rounds of a few steps each, so that both see the same machine load;
   each round gives one throughput ratio harness / bare. Both train in lockstep on the same
   steps, so their losses must agree: the largest difference is printed as a check of "same work".
2. Two workers (one CPU and one thread each, at the main configuration): the harness's path (a Ray
   Train TorchTrainer on an embedded Ray that this script starts, with its own temp dir), the same
   worker code under torch.multiprocessing with the variables torchrun sets, and bare DDP
   (DistributedDataParallel + AdamW). Each is timed in steady state, after warm-up steps, with
   start-up left out: steps/s of rank 0 between barriers. `--no-workers` skips this part.

The last line printed is `harness/bare step throughput: X`, X the median ratio of part 1 at
clm mini. `--profile` adds torch.profiler's top operators of a few steps of each path.

    python bench/step_parity.py                                  # clm and mlm, tiny and mini
    python bench/step_parity.py --objectives clm --sizes mini --rounds 15 --no-workers
    python bench/step_parity.py --objectives clm --sizes mini --profile --no-workers
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import os
import shutil
import statistics
import sys
import tempfile
from pathlib import Path

os.environ.setdefault("DS_ACCELERATOR", "cpu")  # as a CPU worker has it, before DeepSpeed is imported
sys.path.insert(0, str(Path(__file__).resolve().parent))  # bench/_common.py, run as a script

import numpy as np  # noqa: E402
import torch  # noqa: E402
import torch.distributed as dist  # noqa: E402

from _common import (interleaved, planned_job, quiet_deepspeed, ratios, seconds_of, spread, start,  # noqa: E402
                     step_arguments, synthetic_data)
from harness.data.sampler import BlockSampler  # noqa: E402
from harness.jobs import TrainJob  # noqa: E402
from harness.models.families import model_factory  # noqa: E402
from harness.models.sizes import SIZES  # noqa: E402
from harness.train import lr  # noqa: E402
from harness.train.worker import _engine, _objective, _param_groups, _train_step  # noqa: E402

MAIN = ("clm", "mini")


# --- the bare loop -----------------------------------------------------------------------------


class Bare:
    """The harness's step without the harness: the same model, batches, optimizer and schedule
    in plain torch. `wrap` (DDP, say) wraps the model; the optimizer holds the model's own
    parameters either way."""

    def __init__(self, plan: TrainJob, objective, device, wrap=None):
        self.plan, self.objective, self.device = plan, objective, device
        model = objective.build_model(model_factory(SIZES[plan.size], vocab_size=plan.data.vocab_size,
                                                    special=plan.data.special_tokens, max_len=plan.seq_len,
                                                    seed=plan.seed)).to(device)
        t = plan.train
        self.optimizer = torch.optim.AdamW(_param_groups(model, t.weight_decay), lr=t.lr, betas=t.betas, eps=1e-8)
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(self.optimizer, schedule(plan))
        self.params = list(model.parameters())
        self.model = wrap(model) if wrap else model

    def step(self, sampler: BlockSampler, step: int, rank: int = 0) -> list[dict]:
        """As _train_step: grad_accum micro-steps (the loss scaled as DeepSpeed scales it), then
        clipping, AdamW and the schedule's step."""
        t, rows = self.plan.train, []
        self.model.train()
        for micro in range(t.grad_accum):
            block = sampler.batch(step, micro, rank, t.micro_batch_size)
            rng = np.random.default_rng([self.plan.seed, step, micro, rank])
            batch = {k: v.to(self.device) for k, v in self.objective.transform(block, rng).items()}
            last = micro == t.grad_accum - 1
            with self.model.no_sync() if hasattr(self.model, "no_sync") and not last else contextlib.nullcontext():
                loss, metrics = self.objective.loss(self.model, batch)
                (loss / t.grad_accum).backward()
            rows.append(metrics)
        if t.grad_clip > 0:
            torch.nn.utils.clip_grad_norm_(self.params, t.grad_clip)
        self.optimizer.step()
        self.scheduler.step()
        self.optimizer.zero_grad(set_to_none=True)
        return rows


def schedule(plan: TrainJob):
    """The learning-rate factor of optimizer step k, as the engine applies it: wsd's (the
    harness's own LambdaLR), or DeepSpeed's WarmupCosineLR, which steps after the optimizer from
    iteration -1 (factor 0), so that step k runs with its ratio of iteration k - 1."""
    t = plan.train
    if t.schedule == "wsd":
        decay = lr.decay_steps(plan.steps, t.decay_fraction)
        return lambda k: lr.wsd_factor(k, steps=plan.steps, warmup=plan.warmup_steps, decay=decay,
                                       min_ratio=t.min_lr_ratio)
    warmup, total = max(2, plan.warmup_steps), plan.steps

    def cosine(k: int) -> float:
        i = k - 1
        if i < 0:
            return 0.0
        if i < warmup:
            return i / warmup
        progress = min(1.0, (i - warmup + 1) / max(1, total - warmup))
        return max(0.0, t.min_lr_ratio + (1 - t.min_lr_ratio) * (1 + math.cos(math.pi * progress)) / 2)
    return cosine


# --- one process -------------------------------------------------------------------------------


def single_process(plan: TrainJob, warmup: int, rounds: int, round_steps: int, profile: bool) -> dict:
    """Round-by-round throughput ratios harness / bare, and the largest loss difference."""
    objective = _objective(plan)
    engine, _ = _engine(plan, objective, plan.data)
    bare = Bare(plan, objective, engine.device)
    sampler = BlockSampler(plan.data.train_tokens, plan.data.dtype, plan.block_length, seed=plan.seed)
    losses: dict[str, list] = {"harness": [], "bare": []}
    steps = {"harness": lambda s: _train_step(engine, objective, sampler, plan, s, 0),
             "bare": lambda s: bare.step(sampler, s)}
    cursor = {name: 0 for name in steps}

    def run(name: str, n: int) -> None:  # the next n steps of one path; both read the same steps
        for _ in range(n):
            losses[name].append(steps[name](cursor[name])[-1]["loss"])
            cursor[name] += 1
    for name in steps:
        run(name, warmup)
    times = interleaved({name: (lambda name=name: seconds_of(lambda: run(name, round_steps))) for name in steps},
                        rounds)
    gap = max(abs(a.item() - b.item()) for a, b in zip(losses["harness"], losses["bare"]))
    profiles = {name: profiled(lambda name=name: run(name, round_steps)) for name in steps} if profile else None
    return {"ratios": ratios(times["bare"], times["harness"]), "loss_gap": gap, "profiles": profiles,
            "steps_per_s": round_steps / statistics.median(times["harness"])}


def profiled(fn):
    """torch.profiler's per-operator totals of fn(), and its wall milliseconds under the profiler."""
    from torch.profiler import ProfilerActivity, profile
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        wall_ms = seconds_of(fn) * 1e3
    return prof.key_averages(), wall_ms


def print_profiles(profiles: dict, steps: int, rows: int = 15) -> None:
    """Each path's top operators by their own CPU time, then those the harness spends most more
    time in than the bare loop does, and the time outside any operator (Python, hooks): what the
    rest of the ratio is made of. One sample each: rerun it on a busy machine."""
    for name, (averages, _) in profiles.items():
        print(f"\n--- {name} step: top {rows} operators by self CPU time, {steps} steps ---")
        print(averages.table(sort_by="self_cpu_time_total", row_limit=rows))
    own = {name: {e.key: e.self_cpu_time_total / 1e3 for e in averages} for name, (averages, _) in profiles.items()}
    harness, bare = own["harness"], own["bare"]
    extra = sorted(harness.keys() | bare.keys(), key=lambda k: bare.get(k, 0) - harness.get(k, 0))[:rows]
    print(f"--- where the harness's step spends more: self CPU ms over {steps} steps ---")
    print(f"{'operator':<60} {'harness':>9} {'bare':>9} {'more':>9}")
    lines = [(key[:60], harness.get(key, 0), bare.get(key, 0)) for key in extra]
    ops = (sum(harness.values()), sum(bare.values()))
    walls = (profiles["harness"][1], profiles["bare"][1])
    lines += [("all operators", *ops), ("outside operators (Python, hooks)", walls[0] - ops[0], walls[1] - ops[1]),
              ("wall time, profiled", *walls)]
    for key, h, b in lines:
        print(f"{key:<60} {h:>9.1f} {b:>9.1f} {h - b:>9.1f}")


# --- two workers -------------------------------------------------------------------------------


def harness_worker(config: dict) -> None:
    """In each worker: the harness's engine and step; rank 0 writes its steady-state steps/s."""
    plan = TrainJob.model_validate(config["job"])
    torch.set_num_threads(plan.resources.cpus_per_worker)  # as train_worker does
    quiet_deepspeed()
    objective = _objective(plan)
    engine, _ = _engine(plan, objective, plan.data)
    sampler = BlockSampler(plan.data.train_tokens, plan.data.dtype, plan.block_length, seed=plan.seed)
    rank = dist.get_rank()
    _timed_steps(lambda s: _train_step(engine, objective, sampler, plan, s, rank), config, rank)


def ddp_worker(config: dict) -> None:
    """In each worker: the bare loop under DistributedDataParallel."""
    from torch.nn.parallel import DistributedDataParallel
    plan = TrainJob.model_validate(config["job"])
    torch.set_num_threads(plan.resources.cpus_per_worker)
    bare = Bare(plan, _objective(plan), torch.device("cpu"), wrap=DistributedDataParallel)
    sampler = BlockSampler(plan.data.train_tokens, plan.data.dtype, plan.block_length, seed=plan.seed)
    rank = dist.get_rank()
    _timed_steps(lambda s: bare.step(sampler, s, rank), config, rank)


def _timed_steps(step_fn, config: dict, rank: int) -> None:
    """Warm-up steps, then rounds of steps between barriers; rank 0 writes steps/s per round."""
    step = 0
    for step in range(config["warmup"]):
        step_fn(step)
    rates = []
    for _ in range(config["rounds"]):
        dist.barrier()
        seconds = seconds_of(lambda: [step_fn(step + 1 + i) for i in range(config["round_steps"])])
        dist.barrier()
        step += config["round_steps"]
        rates.append(config["round_steps"] / seconds)
    if rank == 0:
        Path(config["out"]).write_text(json.dumps(rates))


def _spawned(rank: int, world: int, port: int, worker: str, config: dict) -> None:
    """A torch.multiprocessing child with the environment torchrun gives a worker."""
    from harness import loopback
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank), LOCAL_RANK=str(rank),
                      WORLD_SIZE=str(world), LOCAL_WORLD_SIZE=str(world), GROUP_RANK="0")
    if interface := loopback.loopback_interface():
        os.environ["GLOO_SOCKET_IFNAME"] = interface  # as the harness's Ray runtime env sets it
    dist.init_process_group("gloo")
    try:
        globals()[worker](config)
    finally:
        dist.destroy_process_group()


def by_spawn(worker: str, config: dict, world: int) -> list[float]:
    import socket

    import torch.multiprocessing as mp
    with socket.socket() as s:  # a port free now, for rank 0's store
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    # torchrun gives each of several workers OMP_NUM_THREADS=1, as Ray does a worker of one CPU;
    # read when torch is imported, so it is in the environment the children start with
    saved = os.environ.get("OMP_NUM_THREADS")
    os.environ["OMP_NUM_THREADS"] = "1"
    try:
        mp.spawn(_spawned, args=(world, port, worker, config), nprocs=world, join=True)
    finally:
        os.environ.pop("OMP_NUM_THREADS") if saved is None else os.environ.update(OMP_NUM_THREADS=saved)
    return json.loads(Path(config["out"]).read_text())


def by_ray_train(config: dict, world: int, storage: Path) -> list[float]:
    """The harness's launcher: a TorchTrainer whose group meets at the harness's rendezvous."""
    from ray.train import RunConfig, ScalingConfig
    from ray.train.torch import TorchTrainer

    from harness.rendezvous import NodeBoundTorchConfig
    trainer = TorchTrainer(harness_worker, train_loop_config=config,
                           scaling_config=ScalingConfig(num_workers=world, resources_per_worker={"CPU": 1}),
                           torch_config=NodeBoundTorchConfig(backend="gloo"),
                           run_config=RunConfig(name="step_parity", storage_path=str(storage)))
    trainer.fit()
    return json.loads(Path(config["out"]).read_text())


def two_workers(plan: TrainJob, args, work: Path) -> dict[str, list[float]]:
    """Steady-state steps/s of each launcher, `args.worker_repeats` launches each, alternating."""
    from harness import schedule
    env = schedule.runtime_env(False)
    # Ray's workers import the harness and bench/_common.py from this checkout, as this process does
    env["env_vars"]["PYTHONPATH"] = os.pathsep.join([str(Path(__file__).resolve().parent), str(ROOT),
                                                     os.environ.get("PYTHONPATH", "")])
    ray_tmp = tempfile.mkdtemp(prefix="ray-", dir="/tmp")  # short: Ray's socket paths must fit 107 bytes
    # With the dashboard, both times: without it Ray's state API answers nothing, and Ray Train's
    # placement-group cleaner then takes the controller for dead and removes the workers' group.
    settings = {**schedule.FIRST_START, "_temp_dir": ray_tmp}
    schedule.start_embedded(env, first=settings, retry=settings)
    try:
        rates: dict[str, list[float]] = {"ray train + deepspeed": [], "torchrun-style + deepspeed": [],
                                         "bare ddp": []}
        for i in range(args.worker_repeats):
            config = {"job": plan.model_dump(mode="json"), "warmup": args.warmup, "rounds": args.worker_rounds,
                      "round_steps": args.round_steps, "out": str(work / f"rates-{i}.json")}
            rates["ray train + deepspeed"] += by_ray_train(config, 2, work / "ray")
            rates["torchrun-style + deepspeed"] += by_spawn("harness_worker", config, 2)
            rates["bare ddp"] += by_spawn("ddp_worker", config, 2)
    finally:
        schedule.shutdown()
        shutil.rmtree(ray_tmp, ignore_errors=True)
    return rates


# --- main --------------------------------------------------------------------------------------

ROOT = Path(__file__).resolve().parents[1]


def parse() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--objectives", nargs="+", default=["clm", "mlm"], help="(default: %(default)s)")
    p.add_argument("--sizes", nargs="+", default=["tiny", "mini"], help="(default: %(default)s)")
    step_arguments(p, rounds=10)
    p.add_argument("--no-workers", dest="workers", action="store_false", help="skip the two-worker part")
    p.add_argument("--worker-rounds", type=int, default=4, help="timed rounds per launch, two workers")
    p.add_argument("--worker-repeats", type=int, default=2, help="launches of each launcher, alternating")
    p.add_argument("--profile", action="store_true", help="torch.profiler's top operators of each path")
    return p.parse_args()


def main() -> None:
    args = parse()
    start(args.threads)
    train = {"micro_batch_size": args.batch, "grad_accum": args.grad_accum}
    steps = args.warmup + args.rounds * args.round_steps + (2 * args.round_steps if args.profile else 0)
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        data = synthetic_data(work / "data", args.seq_len, args.objectives)
        print(f"\none process, batch {args.batch} x {args.seq_len}, grad_accum {args.grad_accum}, fp32, ZeRO 2; "
              f"median (range) over rounds of {args.round_steps} steps")
        print(f"{'objective':<10} {'size':<5} {'harness/bare':>26} {'harness steps/s':>16} {'loss gap':>9}")
        measured = {}
        for size in args.sizes:
            for name in args.objectives:
                plan = planned_job(data, name, size, args.seq_len, work / "runs", steps, train)
                r = single_process(plan, args.warmup, args.rounds, args.round_steps, args.profile)
                print(f"{name:<10} {size:<5} {spread(r['ratios']):>26} {r['steps_per_s']:>16.2f} {r['loss_gap']:>9.1e}")
                if r["profiles"]:
                    print_profiles(r["profiles"], args.round_steps)
                measured[name, size] = statistics.median(r["ratios"])
        if args.workers:
            plan = planned_job(data, *MAIN, args.seq_len, work / "runs", steps, train, workers=2)
            print_workers(two_workers(plan, args, work), args)
    main = MAIN if MAIN in measured else next(iter(measured))
    if main != MAIN:
        print(f"\n({' '.join(MAIN)} was not measured: the last line is {' '.join(main)}'s)")
    print(f"harness/bare step throughput: {measured[main]:.2f}")


def print_workers(rates: dict[str, list[float]], args) -> None:
    bare = statistics.median(rates["bare ddp"])
    print(f"\ntwo workers, one thread each, {MAIN[0]} {MAIN[1]}: steady-state steps/s of rank 0 over "
          f"{args.worker_repeats} launches x {args.worker_rounds} rounds of {args.round_steps} steps")
    print(f"{'launcher':<28} {'steps/s':>30} {'/ bare ddp':>10}")
    for name, values in rates.items():
        print(f"{name:<28} {spread(values):>30} {statistics.median(values) / bare:>10.2f}")


if __name__ == "__main__":
    main()
