"""The schema of a suite: what each section may say, its defaults and its checks.

Each section belongs to one component (data, budget, train, resources, eval, tracking); nothing
downstream receives the whole suite. Reading the file (includes, profiles, `--set`) and turning
validation errors into one message naming file and key is harness.suite's job. Nothing here
imports torch or transformers: a suite is validated in a second, on any machine.
"""

from __future__ import annotations

import importlib.util
import re
import types
import typing
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from harness.data.config import DataConfig, SyntheticData
from harness.errors import UserError
from harness.models.sizes import SIZES
from objectives import registry

DEFAULT_PROFILE = "default"
# A suite's name is a folder of the results: one path component, not hidden, not the data cache.
NAME = re.compile(r"[A-Za-z0-9_-][A-Za-z0-9._-]*")
RESERVED_NAMES = ("_data",)
NAME_RULE = "letters, digits, '.', '_' and '-', not starting with '.'"


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class ObjectiveEntry(Strict):
    name: str = Field(description="a registered objective (see `harness objectives`)")
    config: dict[str, Any] = Field(default_factory=dict, description="the objective's own settings")
    label: str | None = Field(None, description="its name in the report (default: name and config)")

    @property
    def display(self) -> str:
        """The report's name for this entry: `mtp` or `mtp(k=2)`, unless a label is given."""
        if self.label:
            return self.label
        settings = ",".join(f"{k}={v}" for k, v in sorted(self.config.items()))
        return f"{self.name}({settings})" if settings else self.name


class BudgetConfig(Strict):
    """The compute every run spends: FLOPs (the default) or tokens, never both. Either may be a
    list, one run per budget (a compute sweep): `budget: {flops: [1e12, 3e12, 1e13]}`, kept in
    ascending order; `budgets` gives them one by one, each a single-value BudgetConfig."""

    flops: float | list[float] | None = Field(None, description="training FLOPs per run (forward + "
                                              "backward); a list runs every objective at each")
    tokens: float | list[float] | None = Field(None, description="training tokens per run; a list "
                                               "runs every objective at each")
    min_steps: int = Field(50, gt=0, description="refuse budgets that leave a run fewer optimizer steps")

    @field_validator("flops", "tokens", mode="before")
    @classmethod
    def _amounts(cls, value, info):
        return None if value is None else _positive_amounts(value, ("budget", info.field_name))

    @model_validator(mode="after")
    def _one_unit(self):
        if (self.flops is None) == (self.tokens is None):
            raise ValueError("give exactly one of 'flops' or 'tokens'")
        return self

    @property
    def unit(self) -> Literal["flops", "tokens"]:
        return "flops" if self.flops is not None else "tokens"

    @property
    def budgets(self) -> list[BudgetConfig]:
        """One single-value BudgetConfig per budget, smallest first."""
        values = getattr(self, self.unit)
        return [BudgetConfig(**{self.unit: v, "min_steps": self.min_steps})
                for v in (values if isinstance(values, list) else [values])]

    @property
    def amount(self) -> float:
        """The one budget of a single-value BudgetConfig."""
        value = getattr(self, self.unit)
        if isinstance(value, list):
            raise ValueError("a list of budgets has no single amount; use `budgets`")
        return value


def _positive_amounts(value, key: tuple) -> float | list[float]:
    """A budget given as one number, or a list of distinct numbers (sorted): each > 0."""
    if not isinstance(value, list):
        return _positive(value, key)
    if not value:
        raise KeyedError(key, "expected a number or a non-empty list of numbers")
    amounts, seen = [], {}
    for i, item in enumerate(value):
        amount = _positive(item, (*key, i))
        if amount in seen:
            raise KeyedError((*key, i), f"{amount:g} is already {_spelled((*key, seen[amount]))}")
        seen[amount] = i
        amounts.append(amount)
    return sorted(amounts)


def _positive(value, key: tuple) -> float:
    try:  # YAML reads 1e12 (no dot) as text: accept what reads as a number
        amount = float(value) if not isinstance(value, bool) else None
    except (TypeError, ValueError):
        amount = None
    if amount is None or not amount > 0 or amount == float("inf"):
        raise KeyedError(key, f"expected a number greater than 0 (got {value!r})")
    return amount


def _spelled(key: tuple) -> str:
    return "".join(f"[{k}]" if isinstance(k, int) else (f".{k}" if i else k) for i, k in enumerate(key))


class TrainConfig(Strict):
    micro_batch_size: int = Field(16, gt=0, description="sequences per worker per micro-step")
    grad_accum: int = Field(1, gt=0, description="micro-steps per optimizer step")
    lr: float = Field(1e-3, gt=0, description="peak learning rate (AdamW)")
    warmup_fraction: float = Field(0.05, ge=0, lt=1, description="share of steps in linear warmup")
    min_lr_ratio: float = Field(0.1, ge=0, le=1, description="final learning rate / peak after the decay")
    schedule: Literal["cosine", "wsd"] = Field("cosine", description="cosine: warmup, then cosine decay "
                                               "over the run; wsd: warmup, constant peak, then linear "
                                               "decay over the last decay_fraction of the steps, the "
                                               "warmup as long for every budget (that of the smallest)")
    decay_fraction: float = Field(0.2, gt=0, le=1, description="share of steps in wsd's final decay")
    weight_decay: float = Field(0.01, ge=0)
    betas: tuple[float, float] = (0.9, 0.95)
    grad_clip: float = Field(1.0, ge=0, description="gradient norm clipping; 0 turns it off")
    zero_stage: Literal[0, 1, 2, 3] = Field(2, description="DeepSpeed ZeRO stage")
    precision: Literal["fp32", "bf16"] = "fp32"
    log_every: int = Field(10, gt=0, description="optimizer steps between metric lines")
    eval_every: int = Field(100, gt=0, description="optimizer steps between validation losses")
    val_batches: int = Field(4, gt=0, description="validation micro-batches per worker")
    checkpoint_every: int = Field(100, gt=0, description="optimizer steps between checkpoints")
    step_timeout_s: float = Field(600.0, gt=0, description="a run with no training step (or "
                                  "validation, or checkpoint) finished for this long is stopped and "
                                  "failed as hung; not part of the run's identity")

    @model_validator(mode="after")
    def _room_for_the_plateau(self):
        if self.schedule == "wsd" and self.warmup_fraction + self.decay_fraction > 1:
            raise KeyedError(("train", "decay_fraction"), f"warmup_fraction ({self.warmup_fraction}) + "
                             f"decay_fraction ({self.decay_fraction}) exceed the run: keep their sum <= 1")
        return self


class ResourcesConfig(Strict):
    workers_per_run: int = Field(2, gt=0, description="DeepSpeed processes (Ray Train workers) per run")
    use_gpu: bool = Field(False, description="one GPU per worker; otherwise CPU processes with gloo")
    cpus_per_worker: int = Field(1, gt=0)
    max_failures: int = Field(2, ge=0, description="times Ray Train restarts a run's workers after "
                              "a lost worker or node; each restart resumes from the last checkpoint")
    placement: Literal["PACK", "SPREAD"] = Field("PACK", description="a run's workers on as few "
                                                 "nodes as possible (PACK) or across nodes (SPREAD)")


class FinetuneConfig(Strict):
    """The fixed fine-tuning recipe every pretrained model of a suite gets on every task."""

    tasks: list[str] = Field(default_factory=list, description="classification tasks to fine-tune on "
                             "(FINETUNE_TASKS); none means no fine-tuning track")
    lr: float = Field(1e-4, gt=0, description="peak learning rate; 1e-4 is ELECTRA's base-size rate, "
                      "between its small (3e-4) and large (5e-5) ones, so it suits tiny to base models")
    epochs: float = Field(3.0, gt=0, description="passes over the training split (fractions allowed)")
    batch_size: int = Field(32, ge=1, description="examples per optimizer step")
    seeds: list[int] = Field(default_factory=lambda: [0, 1, 2], min_length=1,
                             description="one fine-tuning per seed (head, dropout, order); the median is reported")
    max_length: int | None = Field(None, ge=2, description="tokens per example, longer ones cut; "
                                   "None: the run's seq_len")
    weight_decay: float = Field(0.01, ge=0, description="AdamW weight decay (not on biases and norms)")
    warmup_fraction: float = Field(0.1, ge=0, lt=1, description="share of the steps the learning rate warms up")
    max_steps: int | None = Field(None, ge=1, description="cap on optimizer steps per seed")


class EvalConfig(Strict):
    """What every trained run is evaluated on: lm-eval tasks zero/few-shot, fine-tuning, and the
    held-out bits per byte (for objectives that define a likelihood)."""

    tasks: list[str] = Field(default_factory=lambda: [
        "synthetic_hellaswag", "synthetic_mmlu", "synthetic_glue", "synthetic_cola", "synthetic_sst2",
        "synthetic_rte"], description="lm-eval task, group or tag names: the synthetic world's, or "
        "lm-eval's own (mmlu, hellaswag, glue, sst2, arc_easy, ...); one Ray task per name and run")
    num_fewshot: int | None = Field(None, ge=0, description="examples in each prompt (None: each task's own default)")
    batch_size: int = Field(32, gt=0)
    limit: int | None = Field(None, gt=0, description="examples per task (None: all)")
    bundle: Path | None = Field(None, description="an offline task bundle (`harness eval bundle`): "
                                "stock tasks read their data from it instead of the hub")
    cache: bool = Field(False, description="keep lm-eval's response cache, one per model checkpoint")
    log_samples: bool = Field(True, description="keep lm-eval's per-sample records (prompts, "
                              "answers, scores), gzipped beside each result: eval/<entry>.samples/; "
                              "read by `harness eval worst`. 140-250 bytes per document measured on "
                              "the synthetic tasks, about 0.5 kB estimated for MMLU and HellaSwag "
                              "(6-7 MB for all of MMLU): kept always, limit or not")
    bits_per_byte: bool = Field(True, description="score the held-out text (sliding window) for "
                                "objectives that define a likelihood")
    aggregate: str | dict | None = Field(None, description="a versioned aggregate of centered "
                                         "accuracy: a registered name (harness/aggregate.py) or "
                                         "{name, version, tasks: {task: metric}}")
    finetune: FinetuneConfig = Field(default_factory=FinetuneConfig,
                                     description="the fine-tuning track (classification tasks)")
    cpus: int = Field(1, gt=0, description="CPUs of each evaluation or fine-tuning task")
    gpus: float | None = Field(None, ge=0, description="GPUs of each evaluation or fine-tuning "
                               "task (None: 1 where runs train on GPUs, else 0)")

    @model_validator(mode="after")
    def _known_aggregate(self):
        if self.aggregate is not None:
            from harness.aggregate import resolve_aggregate
            try:
                resolve_aggregate(self.aggregate)
            except UserError as e:
                raise KeyedError(("eval", "aggregate"), e.message) from None
        return self


TRACKING_EXTRA = "pip install objective-harness[tracking]"


class MlflowConfig(Strict):
    """One MLflow run per harness run, in `experiment` of the tracking server or store at `uri`."""

    uri: str = Field(description="a tracking server (http://host:5000), a file store "
                     "(file:///abs/mlruns) or a plain path (a file store, made absolute)")
    experiment: str | None = Field(None, description="the MLflow experiment (None: the suite's name)")

    @field_validator("uri")
    @classmethod
    def _absolute(cls, uri: str) -> str:
        # A path means a file store; made absolute here because workers run in other folders.
        return uri if ":" in uri else Path(uri).expanduser().resolve().as_uri()


class WandbConfig(Strict):
    """One Weights & Biases run per harness run, its files inside the run's folder."""

    project: str = Field(description="the W&B project")
    entity: str | None = Field(None, description="the W&B user or team (None: your default)")
    mode: Literal["offline", "online"] = Field("offline", description="offline: written under "
                                               "RUN/wandb/, uploaded later with `wandb sync`")


class TrackingConfig(Strict):
    """Experiment trackers that receive every training metric as it is logged, besides the
    TensorBoard files every run writes (harness.tracking). Not part of a run's identity."""

    mlflow: MlflowConfig | None = Field(None, description="{uri, experiment}: log to MLflow")
    wandb: WandbConfig | None = Field(None, description="{project, entity, mode}: log to W&B")

    @model_validator(mode="after")
    def _installed(self):
        # Refused here, before Ray starts, rather than in every training worker.
        for key, module in (("mlflow", "mlflow"), ("wandb", "wandb")):
            if getattr(self, key) is not None and importlib.util.find_spec(module) is None:
                raise KeyedError(("tracking", key), f"tracking.{key} needs the {module} package, "
                                 f"which is not installed: {TRACKING_EXTRA}")
        return self


class Suite(Strict):
    """One resolved suite: the base merged with a profile and overrides."""

    name: str = Field(description="results go to <results>/<name>/")
    description: str = ""
    objectives: list[ObjectiveEntry] = Field(min_length=1)
    sizes: list[str] = Field(default_factory=lambda: ["tiny"], min_length=1)
    seeds: list[int] = Field(default_factory=lambda: [0], min_length=1)
    data: DataConfig = Field(default_factory=SyntheticData)
    budget: BudgetConfig
    train: TrainConfig = Field(default_factory=TrainConfig)
    resources: ResourcesConfig = Field(default_factory=ResourcesConfig)
    eval: EvalConfig = Field(default_factory=EvalConfig)
    tracking: TrackingConfig = Field(default_factory=TrackingConfig,
                                     description="MLflow or W&B besides TensorBoard; not part of run ids")
    profile: str = DEFAULT_PROFILE

    @field_validator("name")
    @classmethod
    def _a_folder_name(cls, name: str) -> str:
        if problem := name_problem(name):
            raise ValueError(problem)
        return name

    @model_validator(mode="before")
    @classmethod
    def _objective_shorthand(cls, data):
        # "objectives: [clm, mlm]" is shorthand for [{name: clm}, {name: mlm}]
        if isinstance(data, dict) and isinstance(data.get("objectives"), list):
            data = {**data, "objectives": [{"name": o} if isinstance(o, str) else o
                                           for o in data["objectives"]]}
        return data

    @model_validator(mode="after")
    def _known_names(self):
        for i, entry in enumerate(self.objectives):
            try:
                config_cls = registry.config(entry.name)
                config_cls(**entry.config)
            except UserError as e:
                raise KeyedError(("objectives", i, "name"), e.message) from None
            except ValidationError as e:
                err = e.errors()[0]
                raise KeyedError(("objectives", i, "config", *err["loc"]),
                                  describe_error(err, config_cls)) from None
        seen: dict[str, int] = {}
        for i, entry in enumerate(self.objectives):
            if entry.display in seen:
                raise KeyedError(("objectives", i), f"'{entry.display}' is already objectives"
                                  f"[{seen[entry.display]}]; give one of them a different `label`")
            seen[entry.display] = i
        for i, size in enumerate(self.sizes):
            if size not in SIZES:
                raise KeyedError(("sizes", i), f"unknown model size '{size}'; known: {', '.join(SIZES)}")
        return self


def name_problem(name: str) -> str | None:
    """Why `name` cannot name a suite's results folder, or None when it can."""
    if name in RESERVED_NAMES:
        return f"'{name}' is reserved: <results>/{name}/ holds the prepared data"
    if not NAME.fullmatch(name):
        return f"'{name}' cannot name the results folder <results>/<name>/; use {NAME_RULE}"
    return None


class KeyedError(ValueError):
    """A validation failure at a key path that pydantic would otherwise report at the root."""

    def __init__(self, loc: tuple, message: str):
        super().__init__(message)
        self.loc, self.message = loc, message


# --- describing a validation error against the schema ------------------------------------------


def describe_error(err: dict, model: type[BaseModel] | None = None) -> str:
    if err["type"] == "extra_forbidden":
        allowed = _fields_at(model or Suite, tuple(err["loc"])[:-1])
        return "unknown key" + (f"; expected one of: {', '.join(allowed)}" if allowed else "")
    if err["type"] == "missing":
        return "required key is missing"
    message = err["msg"].removeprefix("Value error, ")
    return f"{message} (got {err['input']!r})" if err["type"] != "value_error" else message


def _fields_at(model: type, loc: tuple) -> list[str]:
    """The keys allowed at `loc` inside `model`."""
    node = _unwrap(walk_schema(model, loc)[0])
    if isinstance(node, type) and issubclass(node, BaseModel):
        return [k for k in node.model_fields if k != "profile"]
    return []


def walk_schema(model: type, loc: tuple) -> tuple[Any, tuple]:
    """The type at pydantic's `loc` inside `model`, walking nested models, lists and dicts, and
    the key path the suite spells: without the tag pydantic puts after a tagged union, which
    names its member (data.hf.path, not data.hf.hf.path)."""
    node: Any = model
    tag_key, spelled = None, ()
    for part in loc:
        if tag_key is not None:
            node, tag_key = _tagged_member(node, tag_key, part), None
            continue
        spelled += (part,)
        node = _unwrap(node)
        if isinstance(part, int) or not (isinstance(node, type) and issubclass(node, BaseModel)):
            args = typing.get_args(node)
            node = args[-1] if args else None
            continue
        field = node.model_fields.get(part)
        node, tag_key = (field.annotation, field.discriminator) if field else (None, None)
    return node, spelled


def _tagged_member(union, tag_key: str, tag) -> type | None:
    """The member of a union tagged by its field `tag_key` whose tag is `tag`."""
    return next((m for m in typing.get_args(union)
                 if tag in typing.get_args(m.model_fields[tag_key].annotation)), None)


def _unwrap(annotation):
    args = [a for a in typing.get_args(annotation) if a is not type(None)]
    if typing.get_origin(annotation) in (typing.Union, types.UnionType) and args:
        return args[0]
    return annotation
