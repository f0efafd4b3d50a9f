"""One training run on one worker: a DeepSpeed engine driving an objective over token blocks.

`train_worker` runs in every worker process of a run (Ray Train starts them and the process
group; see harness.schedule). It reads top to bottom: set up, resume, loop, save. Rank 0 alone
writes files. Every batch is a pure function of (seed, step, micro-step, rank), so a run resumed
from a checkpoint reads exactly the blocks an uninterrupted run would have read. It resumes from
the newest checkpoint that is complete by its manifest, and loads it weights-only
(harness.train.checkpoint): a checkpoint folder cannot make a worker run code.
"""

from __future__ import annotations

import copy
import json
import logging
import math
import os
import shutil
import socket
import time

import numpy as np
import torch
import torch.distributed as dist
from safetensors.torch import save_file

from harness import provenance
from harness.train import attempts, checkpoint, lr
from harness.train.startup import Startup, attempt_began
from harness.data.entry import PreparedData
from harness.data.sampler import BlockSampler
from harness.data.tokenizer import load_tokenizer
from harness.errors import UserError
from harness.jobs import TrainJob
from harness.models.families import model_factory
from harness.models.sizes import SIZES
from harness.plan import vocab_of
from harness.results import RunDir, open_to_umask, read_jsonl, replace_dir, write_atomic, write_json
from harness.tracking import open_tracker
from objectives import registry
from objectives.base import Export, check_batch

VAL_SEED = 7_777  # validation masks are fixed across steps and runs


def train_worker(config: dict, node: dict | None = None, entered: float | None = None,
                 began: float | None = None) -> dict:
    """Train the run described by `config` (a TrainJob, as plain data); return its summary on rank 0.
    `node`: where this worker runs (Ray's node id and address), for train.json. `began`, `entered`:
    see harness.train.startup (`began` defaults to the run's attempts record)."""
    plan = TrainJob.model_validate(config)
    run = RunDir(plan.run_dir)
    startup = Startup(attempt_began(attempts.read(run)) if began is None else began, entered)
    startup.mark("imports")
    rank, world = _join_group(plan)
    workers = _where_workers_run(node, rank, world)
    beat = attempts.Heartbeat(run, enabled=rank == 0)  # the scheduler's watchdog reads it
    beat("start")
    objective = _objective(plan)
    engine, ds_config = _engine(plan, objective, plan.data, startup)
    beat("engine")
    step, elapsed = _resume(engine, run, rank)
    startup.mark("resume")
    beat.started(resumed_from_step=step)
    sampler, val_blocks = _data(plan, objective, rank, world, startup)
    started, val = time.time() - elapsed, {}
    with MetricsLog(run, plan, enabled=rank == 0, after_step=step) as log:
        while step < plan.steps:
            metrics = _train_step(engine, objective, sampler, plan, step, rank)
            step += 1
            startup.step_done()
            beat.step(step)
            if step % plan.train.log_every == 0 or step == plan.steps:
                log.write(_train_row(engine, plan, step, _mean_metrics(metrics), time.time() - started))
            if step % plan.train.eval_every == 0 or step == plan.steps:
                val = _validate(engine, objective, val_blocks, plan.seed)
                log.write({"kind": "val", "step": step, **val})
                beat("val", step)
            if step % plan.train.checkpoint_every == 0 and step < plan.steps:
                _checkpoint(engine, run, step, time.time() - started, rank)
                beat("checkpoint", step)
    beat("finish", step)
    recorded = {"workers": workers, "deepspeed_config": ds_config, "startup": startup.record()}
    return _finish(engine, objective, plan, run, plan.data, val, time.time() - started, rank, recorded)


# --- set-up ------------------------------------------------------------------------------------


def _join_group(plan: TrainJob) -> tuple[int, int]:
    """This worker's (rank, world size), in the run's process group, computing on its CPUs."""
    os.environ.setdefault("DS_ACCELERATOR", "cuda" if torch.cuda.is_available() else "cpu")
    torch.set_num_threads(plan.resources.cpus_per_worker)
    _ensure_process_group()
    return dist.get_rank(), dist.get_world_size()


def _ensure_process_group() -> None:
    # Ray Train has already made the group; a lone process (tests, debugging) gets a group of one.
    if not dist.is_initialized():
        os.environ.setdefault("MASTER_ADDR", "127.0.0.1")
        os.environ.setdefault("MASTER_PORT", str(29_500 + os.getpid() % 1000))
        for name in ("RANK", "LOCAL_RANK"):
            os.environ.setdefault(name, "0")
        os.environ.setdefault("WORLD_SIZE", "1")
        dist.init_process_group("gloo", rank=0, world_size=1)


def _where_workers_run(node: dict | None, rank: int, world: int) -> list[dict]:
    """Every rank's node (Ray's node id and address) and host name, by rank: gathered by all."""
    here = {"rank": rank, "node_id": None, "node_ip": None, **(node or {}), "host": socket.gethostname()}
    workers = [None] * world
    dist.all_gather_object(workers, here)
    return workers


def _objective(plan: TrainJob):
    return registry.build(plan.objective, plan.objective_config, vocab_of(plan.data))


def _data(plan: TrainJob, objective, rank: int, world: int, startup: Startup) -> tuple[BlockSampler, list[np.ndarray]]:
    """The training blocks' sampler (its first batch checked against the objective's contract)
    and this rank's fixed validation blocks."""
    data = plan.data
    sampler = BlockSampler(data.train_tokens, data.dtype, plan.block_length, seed=plan.seed)
    check_batch(objective.transform(sampler.batch(0, 0, rank, 1), np.random.default_rng(0)), plan.objective)
    val_blocks = BlockSampler(data.val_tokens, data.dtype, plan.block_length, seed=VAL_SEED).val_batches(
        plan.train.val_batches, plan.train.micro_batch_size, rank, world)
    startup.mark("data")
    return sampler, val_blocks


def _engine(plan: TrainJob, objective, data: PreparedData, startup: Startup | None = None) -> tuple[object, dict]:
    """The DeepSpeed engine of the run, and (a copy of) the config it was given, for train.json;
    `startup` marks the end of each part."""
    startup = startup or Startup(None)
    model = objective.build_model(model_factory(SIZES[plan.size], vocab_size=data.vocab_size,
                                                special=data.special_tokens, max_len=plan.seq_len,
                                                seed=plan.seed))
    startup.mark("model")
    import deepspeed
    from deepspeed.accelerator import get_accelerator
    from deepspeed.utils import logger as ds_logger
    ds_logger.setLevel(logging.WARNING)
    startup.mark("deepspeed")
    # deepspeed.initialize would do this first; done here, its cost is seen on its own
    deepspeed.init_distributed(dist_backend=get_accelerator().communication_backend_name())
    startup.mark("comm")
    config = deepspeed_config(plan)
    given = copy.deepcopy(config)  # as given: DeepSpeed may add to the dict it reads
    engine, *_ = deepspeed.initialize(model=model, config=config, lr_scheduler=_client_scheduler(plan),
                                      model_parameters=_param_groups(model, plan.train.weight_decay))
    engine.checkpoint_engine = _weights_only_loads(engine)
    startup.mark("engine")
    return engine, given


def _weights_only_loads(engine):
    """DeepSpeed's torch checkpoint engine, except that it loads with weights_only=True and the
    short allow-list of harness.train.checkpoint (DeepSpeed's own unpickles anything, running its code).
    Every load of engine.load_checkpoint, ZeRO partitions included, goes through it."""
    from deepspeed.runtime.checkpoint_engine import TorchCheckpointEngine

    class WeightsOnly(TorchCheckpointEngine):
        def load(self, path, map_location=None):
            return checkpoint.load(path, map_location)

    assert type(engine.checkpoint_engine) is TorchCheckpointEngine  # no other writer is configured
    return WeightsOnly(engine._config)  # saves as DeepSpeed's engine would, from the same config


def deepspeed_config(plan: TrainJob) -> dict:
    """The DeepSpeed config of a run: ZeRO stage, AdamW, warmup then cosine decay (under wsd, no
    scheduler: `_client_scheduler` gives it)."""
    t = plan.train
    config = {
        "train_micro_batch_size_per_gpu": t.micro_batch_size,
        "gradient_accumulation_steps": t.grad_accum,
        "gradient_clipping": t.grad_clip,
        "zero_optimization": {"stage": t.zero_stage},
        "bf16": {"enabled": t.precision == "bf16"},
        "optimizer": {"type": "AdamW", "params": {
            "lr": t.lr, "betas": list(t.betas), "eps": 1e-8,
            # torch's AdamW on every device: no CUDA op to compile, same arithmetic on CPU and GPU
            "weight_decay": t.weight_decay, "torch_adam": True}},
        "scheduler": {"type": "WarmupCosineLR", "params": {
            "total_num_steps": plan.steps, "warmup_num_steps": plan.warmup_steps,
            "warmup_type": "linear", "cos_min_ratio": t.min_lr_ratio}},
        "steps_per_print": 10**9,
        "wall_clock_breakdown": False,
    }
    if t.schedule != "cosine":
        del config["scheduler"]
    return config


def _client_scheduler(plan: TrainJob):
    """wsd's LambdaLR (harness.train.lr), which DeepSpeed builds on its optimizer; None under cosine."""
    if plan.train.schedule != "wsd":
        return None
    return lr.wsd_scheduler(plan.steps, plan.warmup_steps, plan.train.decay_fraction, plan.train.min_lr_ratio)


def _param_groups(model: torch.nn.Module, weight_decay: float) -> list[dict]:
    # No decay on norms, biases and embeddings (tied to the output layer), as is usual.
    decay, no_decay = [], []
    for name, p in model.named_parameters():
        (no_decay if p.ndim < 2 or "embeddings" in name else decay).append(p)
    return [{"params": decay, "weight_decay": weight_decay},
            {"params": no_decay, "weight_decay": 0.0}]


def _resume(engine, run: RunDir, rank: int) -> tuple[int, float]:
    """Load the newest complete checkpoint, if any; return (step, seconds already spent)."""
    tag = _on_rank0(lambda: _resume_tag(run), rank)
    if tag is None:
        return 0, 0.0
    if rank != 0:  # rank 0 verified it while choosing; every rank checks what it will unpickle
        checkpoint.verify(run.checkpoints / tag)
    _, client = engine.load_checkpoint(str(run.checkpoints), tag=tag)
    return int(client["step"]), float(client.get("elapsed", 0.0))


def _resume_tag(run: RunDir) -> str | None:
    """The newest complete checkpoint's tag, whatever `latest` says; newer folders that failed
    their check are set aside, so that saving their step again cannot mix old and new files."""
    folder, passed = checkpoint.resume_point(run.checkpoints)
    for bad, why in passed.items():
        logging.getLogger(__name__).warning("%s; set aside as %s", why, checkpoint.set_aside(bad).name)
    return folder.name if folder else None


def _on_rank0(decide, rank: int):
    """Run `decide` on rank 0 alone and give every rank its answer, or its UserError."""
    answer = [None]
    if rank == 0:
        try:
            answer = [("answer", decide())]
        except UserError as e:
            answer = [("error", e.message, e.where)]
    dist.broadcast_object_list(answer, src=0)
    if answer[0][0] == "error":
        raise UserError(answer[0][1], where=answer[0][2])
    return answer[0][1]


# --- the loop ----------------------------------------------------------------------------------


def _train_step(engine, objective, sampler, plan: TrainJob, step: int, rank: int) -> list[dict]:
    """One optimizer step: grad_accum micro-steps, each backward then step (DeepSpeed accumulates).
    Returns each micro-step's metrics, still tensors: they are read only on a logged step."""
    engine.train()
    rows = []
    for micro in range(plan.train.grad_accum):
        block = sampler.batch(step, micro, rank, plan.train.micro_batch_size)
        batch = _to_device(objective.transform(block, np.random.default_rng([plan.seed, step, micro, rank])), engine)
        loss, metrics = objective.loss(engine, batch)
        engine.backward(loss)
        engine.step()
        rows.append(metrics)
    return rows


def _mean_metrics(rows: list[dict]) -> dict:
    """Each metric's mean over the micro-steps of one step, read as Python numbers."""
    return {k: float(np.mean([r[k].item() for r in rows])) for k in rows[0]}


def _to_device(batch: dict, engine) -> dict:
    return {k: v.to(engine.device) for k, v in batch.items()}


@torch.no_grad()
def _validate(engine, objective, blocks: list[np.ndarray], seed: int) -> dict:
    """Objective loss on fixed held-out blocks, weighted by predicted positions, over all ranks."""
    engine.eval()
    total = torch.zeros(3, dtype=torch.float64)
    for i, block in enumerate(blocks):
        batch = _to_device(objective.transform(block, np.random.default_rng([VAL_SEED, seed, i])), engine)
        loss, metrics = objective.loss(engine, batch)
        n = metrics["predicted"].item()
        total += torch.tensor([loss.item() * n, metrics["accuracy"].item() * n, n], dtype=torch.float64)
    dist.all_reduce(total)
    return {"val_loss": (total[0] / total[2]).item(), "val_accuracy": (total[1] / total[2]).item()}


def _train_row(engine, plan: TrainJob, step: int, metrics: dict, elapsed: float) -> dict:
    loss = torch.tensor([metrics["loss"]], dtype=torch.float64)
    dist.all_reduce(loss)
    return {"kind": "train", "step": step, "steps": plan.steps,
            "loss": loss.item() / dist.get_world_size(), "accuracy": metrics["accuracy"],
            "lr": engine.get_lr()[0], "tokens": step * plan.tokens_per_step,
            "flops": step * plan.flops_per_step, "elapsed_s": round(elapsed, 2),
            "tokens_per_s": step * plan.tokens_per_step / max(elapsed, 1e-9)}


def _checkpoint(engine, run: RunDir, step: int, elapsed: float, rank: int) -> None:
    """Save a checkpoint on every rank; once all have saved, rank 0 seals it with its manifest,
    and only then deletes complete checkpoints older than the newest two."""
    tag = checkpoint.tag_of(step)
    engine.save_checkpoint(str(run.checkpoints), tag=tag, client_state={"step": step, "elapsed": elapsed})
    dist.barrier()
    if rank == 0:
        checkpoint.seal(run.checkpoints / tag, step)
        checkpoint.prune(run.checkpoints)


class MetricsLog:
    """metrics.jsonl, appended by rank 0, each row also sent to the run's trackers
    (harness.tracking: TensorBoard always, MLflow or W&B when the suite names one); lines past a
    resumed step are dropped first. Leaving it closes the trackers, as failed on an exception."""

    def __init__(self, run: RunDir, plan: TrainJob, enabled: bool, after_step: int):
        self.path, self.enabled = run.metrics, enabled
        if enabled:
            self.path.parent.mkdir(parents=True, exist_ok=True)
        if enabled and self.path.exists():
            keep = [row for row in read_jsonl(self.path) if row["step"] <= after_step]
            write_atomic(self.path, "".join(json.dumps(row) + "\n" for row in keep))
        self.tracker = open_tracker(plan, run, after_step) if enabled else None

    def write(self, row: dict) -> None:
        if self.enabled:
            with self.path.open("a") as f:
                f.write(json.dumps(row) + "\n")
            self.tracker.log(row)

    def __enter__(self) -> MetricsLog:
        return self

    def __exit__(self, kind, error, trace) -> None:
        if self.tracker is not None:
            self.tracker.close(failed=kind is not None)


# --- the end -----------------------------------------------------------------------------------


def _finish(engine, objective, plan: TrainJob, run: RunDir, data: PreparedData, val: dict, elapsed: float,
            rank: int, recorded: dict) -> dict:
    """Save the model in Hugging Face format and the run's summary; rank 0 writes both. The summary
    also keeps `recorded` (where the workers ran, the DeepSpeed config given) and the environment
    of rank 0 (harness.provenance: versions, commit, hardware), all kept out of the report's tables."""
    summary = {}
    with _gathered(engine, plan):
        if rank == 0:
            _save_model(objective.export(engine.module, plan.seq_len), run, data)
            summary = (_summary(plan, val, elapsed, data) | _engine_facts(engine) | attempts.summary(run) | recorded
                       | {"environment": provenance.environment()})
            write_json(run.train_json, summary)
            shutil.rmtree(run.checkpoints, ignore_errors=True)
    dist.barrier()
    return summary


def _gathered(engine, plan: TrainJob):
    """Under ZeRO-3 the parameters are partitioned: gather them whole for saving."""
    import contextlib

    import deepspeed
    if plan.train.zero_stage != 3:
        return contextlib.nullcontext()
    return deepspeed.zero.GatheredParameters(list(engine.module.parameters()), modifier_rank=None)


def _save_model(export: Export, run: RunDir, data: PreparedData) -> None:
    """RUN/model/: the exported model (its config.json saying how to use it, `harness_export`),
    the extra modules the objective keeps (safetensors), and the tokenizer; staged, then renamed."""
    staging = run.root / ".model.tmp"
    shutil.rmtree(staging, ignore_errors=True)
    export.model.save_pretrained(staging)
    for name, tensors in export.files.items():
        save_file({key: value.detach().cpu().contiguous() for key, value in tensors.items()}, staging / name)
    load_tokenizer(data.tokenizer_dir).save_pretrained(staging)
    open_to_umask(staging)  # safetensors writes the weights 0600: colleagues could not evaluate them
    replace_dir(staging, run.model)


def _engine_facts(engine) -> dict:
    """What DeepSpeed actually ran, as opposed to what was asked for."""
    return {"world_size": engine.world_size, "zero_stage": engine.zero_optimization_stage(),
            "optimizer": type(engine.optimizer).__name__, "device": str(engine.device)}


def _summary(plan: TrainJob, val: dict, elapsed: float, data: PreparedData) -> dict:
    # Bits per byte are measured after training, on the held-out text (harness.evaluate).
    return {"run_id": plan.run_id, "objective": plan.objective, "size": plan.size,
            "seed": plan.seed, "steps": plan.steps, "tokens_seen": plan.total_tokens,
            "flops_spent": plan.total_flops, "flops_per_step": plan.flops_per_step,
            "params": plan.params, "params_trained": plan.params_trained, "val_loss": val["val_loss"], "val_accuracy": val["val_accuracy"],
            "wall_time_s": round(elapsed, 2),
            "uniform_loss": math.log(data.vocab_size)}
