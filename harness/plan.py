"""Expand a suite into runs (objective x size x seed) and fix each run's compute.

A run's id is derived from everything that changes its training: objective and its config,
model size, seed, data settings, the tokenizer's content and special tokens (adding an objective
to a suite can add special tokens, which changes the vocabulary every run sees), budget,
training settings and the number of workers. Evaluation
settings are not part of it, so changing the evaluation never retrains a model.
"""

from __future__ import annotations

import functools
import hashlib
import json
from dataclasses import asdict, dataclass, field
from pathlib import Path

from harness.budget import solve_steps, step_cost
from harness.data import BlockSampler, PreparedData, load_tokenizer
from harness.errors import UserError
from harness.models.families import model_factory, parameter_count
from harness.models.sizes import SIZES
from harness.results import file_sha256
from harness.suite import Suite
from objectives import registry
from objectives.base import Vocab


@dataclass(frozen=True)
class RunPlan:
    """Everything one training run and its evaluation need, JSON-able for Ray and run.yaml."""

    run_id: str
    suite: str
    objective: str
    label: str           # the objective's name in the report (two configs of one objective differ)
    objective_config: dict
    architecture: str
    scoring: str
    defines_likelihood: bool
    size: str
    seed: int
    steps: int
    warmup_steps: int
    flops_per_step: float
    tokens_per_step: int
    params: int          # the model kept and evaluated
    params_trained: int  # everything optimized (with extra heads, a generator)
    seq_len: int
    block_length: int    # raw tokens per example (span corruption reads more than seq_len)
    scoring_args: dict
    run_dir: str
    data: dict = field(repr=False)       # PreparedData.to_dict()
    train: dict = field(repr=False)      # TrainConfig
    resources: dict = field(repr=False)  # ResourcesConfig
    eval: dict = field(repr=False)       # EvalConfig

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> RunPlan:
        return cls(**d)

    @property
    def total_flops(self) -> float:
        return self.steps * self.flops_per_step

    @property
    def total_tokens(self) -> int:
        return self.steps * self.tokens_per_step


def run_id(suite: Suite, objective, size: str, seed: int, data: PreparedData) -> str:
    identity = {
        "objective": objective.name, "objective_config": objective.config, "size": size,
        "model": SIZES[size].model_dump(), "seed": seed, "data": suite.data.model_dump(),
        "tokenizer": tokenizer_sha256(data.tokenizer_dir), "special_tokens": data.special_tokens,
        "budget": suite.budget.model_dump(), "train": suite.train.model_dump(),
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
                    run_dir=str(results_dir / rid), seq_len=suite.data.seq_len,
                    data=data.to_dict(), train=suite.train.model_dump(),
                    resources=suite.resources.model_dump(), eval=_eval_settings(suite),
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
    if suite.data.source == "prepared":  # the mirror's split is fixed: it is made again
        return f"prepare the mirror again with a data.val_fraction above {data.val_fraction}"
    return f"raise data.val_fraction (now {data.val_fraction})"


def _eval_settings(suite: Suite) -> dict:
    """The eval section as plain data, the bundle made absolute for the Ray workers."""
    settings = suite.eval.model_dump(mode="json")
    if settings["bundle"]:
        settings["bundle"] = str(Path(settings["bundle"]).resolve())
    return settings


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


def vocab_of(data: dict | PreparedData) -> Vocab:
    data = data if isinstance(data, PreparedData) else PreparedData.from_dict(data)
    # The data layer found the sentence ends when it cut its sentence index (any tokenizer,
    # pretrained ones too); older entries without them fall back to the vocabulary scan.
    sentence_end = data.sentence_end or _sentence_ends(str(data.tokenizer_dir))
    return Vocab(data.vocab_size, data.special_tokens, sentence_end)


@functools.lru_cache(maxsize=8)
def _sentence_ends(tokenizer_dir: str) -> tuple[int, ...]:
    """Ids of the tokens that end a sentence, for objectives that cut text into sentences."""
    vocab = load_tokenizer(Path(tokenizer_dir)).get_vocab()
    return tuple(sorted(i for token, i in vocab.items() if token.lstrip("\u2581 ") in {".", "!", "?"}))
