"""Expand a suite into runs (objective x size x budget x seed) and fix each run's compute.

A run's id is derived from everything that changes its training: objective and its config,
model size, seed, data settings, the tokenizer's content and special tokens (adding an objective
to a suite can add special tokens, which changes the vocabulary every run sees), the run's
budget, training settings and the number of workers. Evaluation settings are not part of it, so
changing the evaluation never retrains a model.

A suite with `budget: {flops: [1.5e11, 6e12]}`, objectives clm and mlm, size mini and seeds
[0, 1] plans eight runs, one per objective x size x budget x seed, named like

    clm-mini-s0-1.5e11-3f0c2a91   clm-mini-s0-6e12-8bd10500   (tokens budgets read `t2e6`)

the last part a digest of the identity; a run of a one-budget suite has the digest it had
before budgets could be lists.
"""

from __future__ import annotations

import hashlib
import json
import re
from pathlib import Path

from tqdm.auto import tqdm

from harness.budget import solve_steps, step_cost
from harness.data.config import MirrorData
from harness.data.entry import PreparedData
from harness.jobs import RunPlan
from harness.data.sampler import BlockSampler
from harness.errors import UserError
from harness.models.families import model_factory, parameter_count
from harness.models.sizes import SIZES
from harness.results import file_sha256
from harness.schema import BudgetConfig, EvalConfig, Suite, TrainConfig
from objectives import registry
from objectives.base import Vocab


# Settings of how a run is watched, not of what it computes: kept out of its identity.
NOT_IDENTITY = {"step_timeout_s"}
# Train settings added after runs were first named: left out of the identity while they hold
# their defaults, so that every run planned before keeps its id.
LATER_TRAIN_FIELDS = ("schedule", "decay_fraction")


def run_id(suite: Suite, objective, size: str, seed: int, data: PreparedData, budget: BudgetConfig,
           warmup_steps: int) -> str:
    """`clm-mini-s0-6e12-8bd10500`: objective, size, seed and budget (`budget_label`), then the
    digest of the identity. `budget` is the run's own (single-value) budget, hashed as a suite of
    that one budget is, so a one-budget suite's digests are those it always had."""
    identity = {
        "objective": objective.name, "objective_config": objective.config, "size": size,
        "model": SIZES[size].model_dump(), "seed": seed, "data": suite.data.identity(),
        "tokenizer": tokenizer_sha256(data.tokenizer_dir), "special_tokens": data.special_tokens,
        "budget": budget.model_dump(), "train": train_identity(suite.train),
        "workers": suite.resources.workers_per_run,
    }
    if suite.train.schedule == "wsd":  # its warmup follows the sweep's smallest budget
        identity["warmup_steps"] = warmup_steps
    digest = hashlib.sha256(json.dumps(identity, sort_keys=True).encode()).hexdigest()[:8]
    return f"{objective.name}-{size}-s{seed}-{budget_label(budget)}-{digest}"


def train_identity(train: TrainConfig) -> dict:
    """The train settings that name a run: all but NOT_IDENTITY, and LATER_TRAIN_FIELDS only
    where they differ from their defaults."""
    defaults = {name for name in LATER_TRAIN_FIELDS if getattr(train, name) == TrainConfig.model_fields[name].default}
    return train.model_dump(exclude=NOT_IDENTITY | defaults)


def budget_label(budget: BudgetConfig) -> str:
    """A single budget, short: FLOPs as `6e12` or `1.5e11`, tokens as `t2e6`."""
    text = re.sub(r"e\+?0*(\d)", r"e\1", f"{budget.amount:g}")
    return text if budget.unit == "flops" else f"t{text}"


def tokenizer_sha256(tokenizer_dir: Path) -> str:
    """The tokenizer's content (vocabulary, merges, special tokens), as the model sees it."""
    return file_sha256(Path(tokenizer_dir) / "tokenizer.json")


def plan_suite(suite: Suite, data: PreparedData, results_dir: Path) -> list[RunPlan]:
    """One RunPlan per objective x size x budget x seed, with FLOPs counted once per objective x size."""
    plans = []
    grid = [(entry, size) for entry in suite.objectives for size in suite.sizes]
    # Counting takes seconds per model, minutes for a large grid: a bar on a terminal, nothing in logs.
    for entry, size in tqdm(grid, desc="counting FLOPs per step", unit="model", disable=None, leave=False):
        cost = _cost(suite, data, entry, size)
        steps = [solve_steps(budget, flops_per_step=cost["flops_per_step"], tokens_per_step=cost["tokens_per_step"],
                             label=f"{entry.name}/{size} at {budget_label(budget)}")
                 for budget in suite.budget.budgets]
        for budget, run_steps in zip(suite.budget.budgets, steps):
            warmup = warmup_steps(suite.train, run_steps, min(steps))
            for seed in suite.seeds:
                rid = run_id(suite, entry, size, seed, data, budget, warmup)
                plans.append(RunPlan(
                    run_id=rid, suite=suite.name, objective=entry.name, label=entry.display,
                    objective_config=dict(entry.config), size=size, seed=seed,
                    run_dir=results_dir / rid, seq_len=suite.data.seq_len, data=data,
                    train=suite.train, resources=suite.resources, eval=_eval_settings(suite),
                    tracking=suite.tracking, steps=run_steps, warmup_steps=warmup, budget=budget.amount, budget_unit=budget.unit,
                    **cost))
    return plans


def warmup_steps(train: TrainConfig, steps: int, smallest: int) -> int:
    """Linear warmup steps of a run of `steps`: a share of its own steps under cosine; under wsd,
    of the sweep's smallest run (`smallest` steps), the same for every budget, so that a shorter
    run is a prefix of a longer one up to the start of its decay."""
    return max(1, round(train.warmup_fraction * (smallest if train.schedule == "wsd" else steps)))


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


def _cost(suite: Suite, data: PreparedData, entry, size: str) -> dict:
    """What an objective x size costs per optimizer step, and what the plan records of it."""
    objective = registry.build(entry.name, entry.config, vocab_of(data))
    make = model_factory(SIZES[size], vocab_size=data.vocab_size, special=data.special_tokens,
                         max_len=suite.data.seq_len)
    train, workers = suite.train, suite.resources.workers_per_run
    block_length = objective.block_length(suite.data.seq_len)
    blocks = _count_blocks(data, block_length, train.micro_batch_size)
    # Counted on fake weights: planning a large model costs neither its memory nor its arithmetic.
    micro_flops, module = step_cost(objective, make, blocks, seed=0)
    micro_steps = train.grad_accum * workers
    return dict(architecture=objective.architecture, scoring=objective.scoring,
                defines_likelihood=objective.defines_likelihood,
                flops_per_step=micro_flops * micro_steps,
                tokens_per_step=train.micro_batch_size * block_length * micro_steps,
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
