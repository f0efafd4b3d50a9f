"""Expand a suite into runs (objective x size x seed) and fix each run's compute.

A run's id is derived from everything that changes its training: objective and its config,
model size, seed, data settings, the tokenizer's content and special tokens (adding an objective
to a suite can add special tokens, which changes the vocabulary every run sees), budget,
training settings and the number of workers. Evaluation
settings are not part of it, so changing the evaluation never retrains a model.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path


from harness.budget import solve_steps, step_cost
from harness.data.config import MirrorData
from harness.data.entry import PreparedData
from harness.jobs import RunPlan
from harness.data.sampler import BlockSampler
from harness.errors import UserError
from harness.models.families import model_factory, parameter_count
from harness.models.sizes import SIZES
from harness.results import file_sha256
from harness.schema import EvalConfig, Suite
from objectives import registry
from objectives.base import Vocab


# Settings of how a run is watched, not of what it computes: kept out of its identity.
NOT_IDENTITY = {"step_timeout_s"}


def run_id(suite: Suite, objective, size: str, seed: int, data: PreparedData) -> str:
    identity = {
        "objective": objective.name, "objective_config": objective.config, "size": size,
        "model": SIZES[size].model_dump(), "seed": seed, "data": suite.data.identity(),
        "tokenizer": tokenizer_sha256(data.tokenizer_dir), "special_tokens": data.special_tokens,
        "budget": suite.budget.model_dump(), "train": suite.train.model_dump(exclude=NOT_IDENTITY),
        "workers": suite.resources.workers_per_run,
    }
    digest = hashlib.sha256(json.dumps(identity, sort_keys=True).encode()).hexdigest()[:8]
    return f"{objective.name}-{size}-s{seed}-{digest}"


def tokenizer_sha256(tokenizer_dir: Path) -> str:
    """The tokenizer's content (vocabulary, merges, special tokens), as the model sees it."""
    return file_sha256(Path(tokenizer_dir) / "tokenizer.json")


def plan_suite(suite: Suite, data: PreparedData, results_dir: Path) -> list[RunPlan]:
    """One RunPlan per objective x size x seed, with FLOPs counted once per objective x size."""
    plans = []
    for entry in suite.objectives:
        for size in suite.sizes:
            ledger = _ledger(suite, data, entry, size)
            for seed in suite.seeds:
                rid = run_id(suite, entry, size, seed, data)
                plans.append(RunPlan(
                    run_id=rid, suite=suite.name, objective=entry.name, label=entry.display,
                    objective_config=dict(entry.config), size=size, seed=seed,
                    run_dir=results_dir / rid, seq_len=suite.data.seq_len, data=data,
                    train=suite.train, resources=suite.resources, eval=_eval_settings(suite),
                    tracking=suite.tracking,
                    **ledger))
    return plans


def check_validation_split(suite: Suite, data: PreparedData) -> None:
    """Refuse, before Ray starts, a validation split too short for every worker to read one
    micro-batch of its own blocks: `BlockSampler.val_batches` reads up to `train.val_batches`
    of them per worker, fewer when the split is short, and fails in the workers when it has none."""
    train, workers = suite.train, suite.resources.workers_per_run
    needed = train.micro_batch_size * workers
    for entry in suite.objectives:
        block = registry.build(entry.name, entry.config, vocab_of(data)).block_length(suite.data.seq_len)
        held = data.n_val_tokens // block
        if held < needed:
            raise UserError(
                f"the validation split holds {held} block{'s' * (held != 1)} of {block} tokens "
                f"({data.n_val_tokens:,} tokens); {entry.display} needs at least {needed}: one "
                f"micro-batch per worker, train.micro_batch_size ({train.micro_batch_size}) x "
                f"resources.workers_per_run ({workers}), of the up to train.val_batches "
                f"({train.val_batches}) each reads; {_more_validation(suite, data)}, or lower "
                "train.micro_batch_size", where="data.val_fraction")


def _more_validation(suite: Suite, data: PreparedData) -> str:
    if isinstance(suite.data, MirrorData):  # the mirror's split is fixed: it is made again
        return f"prepare the mirror again with a data.val_fraction above {data.val_fraction}"
    return f"raise data.val_fraction (now {data.val_fraction})"


def _eval_settings(suite: Suite) -> EvalConfig:
    """The eval section, its bundle made absolute for the Ray workers."""
    if suite.eval.bundle is None:
        return suite.eval
    return suite.eval.model_copy(update={"bundle": suite.eval.bundle.resolve()})


def _ledger(suite: Suite, data: PreparedData, entry, size: str) -> dict:
    objective = registry.build(entry.name, entry.config, vocab_of(data))
    make = model_factory(SIZES[size], vocab_size=data.vocab_size, special=data.special_tokens,
                         max_len=suite.data.seq_len)
    train, workers = suite.train, suite.resources.workers_per_run
    block_length = objective.block_length(suite.data.seq_len)
    blocks = _count_blocks(data, block_length, train.micro_batch_size)
    # Counted on fake weights: planning a large model costs neither its memory nor its arithmetic.
    micro_flops, module = step_cost(objective, make, blocks, seed=0)
    micro_steps = train.grad_accum * workers
    flops_per_step = micro_flops * micro_steps
    tokens_per_step = train.micro_batch_size * block_length * micro_steps
    steps = solve_steps(suite.budget, flops_per_step=flops_per_step,
                        tokens_per_step=tokens_per_step, label=f"{entry.name}/{size}")
    return dict(architecture=objective.architecture, scoring=objective.scoring,
                defines_likelihood=objective.defines_likelihood, steps=steps,
                warmup_steps=max(1, round(train.warmup_fraction * steps)),
                flops_per_step=flops_per_step, tokens_per_step=tokens_per_step,
                params=parameter_count(objective.export_model(module)),
                params_trained=parameter_count(module), block_length=block_length,
                scoring_args={"max_length": suite.data.seq_len, **objective.scoring_args(suite.data.seq_len)})


def _count_blocks(data: PreparedData, block_length: int, batch_size: int) -> list:
    """The training blocks the FLOPs are counted on: the first three micro-batches of rank 0."""
    sampler = BlockSampler(data.train_tokens, data.dtype, block_length, seed=0)
    return [sampler.batch(step=i, micro=0, rank=0, batch_size=batch_size) for i in range(3)]


def vocab_of(data: PreparedData) -> Vocab:
    """What the objectives need to know of the suite's tokenizer (sentence ends: found by the data
    layer when it prepared the entry, for any tokenizer)."""
    return Vocab(data.vocab_size, data.special_tokens, data.sentence_end)
