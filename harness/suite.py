"""The suite file: a strict schema, named profiles and command-line overrides.

A suite YAML holds a base configuration and a `profiles` mapping of named overlays. The
configuration a run uses is: base, deep-merged with the chosen profile, then `--set key=value`
overrides (command line over profile over base). Every profile is validated whenever the suite
is loaded, so a typo in the `gpu` profile is caught on a laptop too.

Each section belongs to one component (data, budget, train, resources, eval); nothing
downstream receives the whole suite.
"""

from __future__ import annotations

import copy
import functools
import re
import types
import typing
from pathlib import Path
from typing import Any, Literal

import yaml
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
    """The compute every run spends: FLOPs (the default) or tokens, never both."""

    flops: float | None = Field(None, gt=0, description="training FLOPs per run (forward + backward)")
    tokens: float | None = Field(None, gt=0, description="training tokens per run")
    min_steps: int = Field(50, gt=0, description="refuse budgets that leave a run fewer optimizer steps")

    @model_validator(mode="after")
    def _one_unit(self):
        if (self.flops is None) == (self.tokens is None):
            raise ValueError("give exactly one of 'flops' or 'tokens'")
        return self


class TrainConfig(Strict):
    micro_batch_size: int = Field(16, gt=0, description="sequences per worker per micro-step")
    grad_accum: int = Field(1, gt=0, description="micro-steps per optimizer step")
    lr: float = Field(1e-3, gt=0, description="peak learning rate (AdamW)")
    warmup_fraction: float = Field(0.05, ge=0, lt=1, description="share of steps in linear warmup")
    min_lr_ratio: float = Field(0.1, ge=0, le=1, description="final learning rate / peak after cosine decay")
    weight_decay: float = Field(0.01, ge=0)
    betas: tuple[float, float] = (0.9, 0.95)
    grad_clip: float = Field(1.0, ge=0, description="gradient norm clipping; 0 turns it off")
    zero_stage: Literal[0, 1, 2, 3] = Field(2, description="DeepSpeed ZeRO stage")
    precision: Literal["fp32", "bf16"] = "fp32"
    log_every: int = Field(10, gt=0, description="optimizer steps between metric lines")
    eval_every: int = Field(100, gt=0, description="optimizer steps between validation losses")
    val_batches: int = Field(4, gt=0, description="validation micro-batches per worker")
    checkpoint_every: int = Field(100, gt=0, description="optimizer steps between checkpoints")


class ResourcesConfig(Strict):
    workers_per_run: int = Field(2, gt=0, description="DeepSpeed processes (Ray Train workers) per run")
    use_gpu: bool = Field(False, description="one GPU per worker; otherwise CPU processes with gloo")
    cpus_per_worker: int = Field(1, gt=0)


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
    bits_per_byte: bool = Field(True, description="score the held-out text (sliding window) for "
                                "objectives that define a likelihood")
    aggregate: str | dict | None = Field(None, description="a versioned aggregate of centered "
                                         "accuracy: a registered name (harness/aggregate.py) or "
                                         "{name, version, tasks: {task: metric}}")
    finetune: FinetuneConfig = Field(default_factory=FinetuneConfig,
                                     description="the fine-tuning track (classification tasks)")
    cpus: int = Field(1, gt=0, description="CPUs of each evaluation or fine-tuning task")

    @model_validator(mode="after")
    def _known_aggregate(self):
        if self.aggregate is not None:
            from harness.aggregate import resolve_aggregate
            try:
                resolve_aggregate(self.aggregate)
            except UserError as e:
                raise _KeyedError(("eval", "aggregate"), e.message) from None
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
                raise _KeyedError(("objectives", i, "name"), e.message) from None
            except ValidationError as e:
                err = e.errors()[0]
                raise _KeyedError(("objectives", i, "config", *err["loc"]),
                                  _describe(err, config_cls)) from None
        seen: dict[str, int] = {}
        for i, entry in enumerate(self.objectives):
            if entry.display in seen:
                raise _KeyedError(("objectives", i), f"'{entry.display}' is already objectives"
                                  f"[{seen[entry.display]}]; give one of them a different `label`")
            seen[entry.display] = i
        for i, size in enumerate(self.sizes):
            if size not in SIZES:
                raise _KeyedError(("sizes", i), f"unknown model size '{size}'; known: {', '.join(SIZES)}")
        return self


def name_problem(name: str) -> str | None:
    """Why `name` cannot name a suite's results folder, or None when it can."""
    if name in RESERVED_NAMES:
        return f"'{name}' is reserved: <results>/{name}/ holds the prepared data"
    if not NAME.fullmatch(name):
        return f"'{name}' cannot name the results folder <results>/<name>/; use {NAME_RULE}"
    return None


class _KeyedError(ValueError):
    """A validation failure at a key path that pydantic would otherwise report at the root."""

    def __init__(self, loc: tuple, message: str):
        super().__init__(message)
        self.loc, self.message = loc, message


# ---------------------------------------------------------------------------------------------
# Loading


def load_suite(path: str | Path, profile: str = DEFAULT_PROFILE, overrides: list[str] = ()) -> Suite:
    """Read, merge and validate a suite; every problem is one UserError naming file and key."""
    path = Path(path)
    layers = read_with_includes(path)
    raw = functools.reduce(lambda base, layer: deep_merge(base, layer[1]), reversed(layers), {})
    profiles = raw.pop("profiles", None) or {}
    if not isinstance(profiles, dict):
        raise UserError("expected a mapping of profile name -> overrides", where=f"{path}: profiles")
    if "name" not in raw:
        _check_default_name(path)
        raw["name"] = path.stem
    for name in [DEFAULT_PROFILE, *profiles]:  # a typo in any profile is an error everywhere
        _resolve(layers, raw, profiles, name, [])
    if profile != DEFAULT_PROFILE and profile not in profiles:
        known = ", ".join([DEFAULT_PROFILE, *profiles])
        raise UserError(f"no profile '{profile}' in the suite (profiles: {known})", where=str(path))
    return _resolve(layers, raw, profiles, profile, list(overrides))


def read_with_includes(path: Path, chain: tuple[Path, ...] = ()) -> list[tuple[Path, dict]]:
    """The suite file and the files it includes, nearest first: [(file, mapping), ...].

    `include: FILE` (or a list of files), relative to the including file, names mappings the
    file is merged onto: the including file wins, and of several includes the later one wins.
    Includes may include; a file that includes itself, directly or not, is an error."""
    raw = _read_yaml(path)
    targets = raw.pop("include", None)
    if targets is None:
        return [(path, raw)]
    if isinstance(targets, str):
        targets = [targets]
    if not isinstance(targets, list) or not all(isinstance(t, str) for t in targets):
        raise UserError("expected a file name or a list of file names", where=f"{path}: include")
    layers = [(path, raw)]
    for target in reversed(targets):
        layers += read_with_includes(_included(path, target, (*chain, path)), (*chain, path))
    return layers


def _included(path: Path, target: str, chain: tuple[Path, ...]) -> Path:
    file = (path.parent / target).resolve()
    if file in {p.resolve() for p in chain}:
        cycle = " -> ".join(str(p) for p in (*chain, file))
        raise UserError(f"include cycle: {cycle}", where=f"{path}: include")
    if not file.is_file():
        raise UserError(f"no such file to include: {file}", where=f"{path}: include")
    return file


def _check_default_name(path: Path) -> None:
    if problem := name_problem(path.stem):
        raise UserError(f"the suite has no `name`, and its file's name is no suite name: {problem}; "
                        "set `name:` in the suite, or rename the file", where=f"{path}: name")


def _read_yaml(path: Path) -> dict:
    if not path.is_file():
        raise UserError("no such suite file", where=str(path))
    try:
        raw = yaml.safe_load(path.read_text())
    except yaml.YAMLError as e:
        raise UserError(f"not valid YAML: {e}", where=str(path)) from None
    if not isinstance(raw, dict):
        raise UserError("expected a mapping at the top of the suite", where=str(path))
    return raw


def _resolve(layers: list[tuple[Path, dict]], raw: dict, profiles: dict, profile: str,
             overrides: list[str]) -> Suite:
    path = layers[0][0]
    overlay = {} if profile == DEFAULT_PROFILE else profiles.get(profile) or {}
    if not isinstance(overlay, dict):
        raise UserError("expected a mapping of overrides", where=f"{path}: profiles.{profile}")
    merged = deep_merge(raw, overlay)
    set_paths = [apply_override(merged, item) for item in overrides]
    merged["profile"] = profile
    try:
        return Suite.model_validate(merged)
    except ValidationError as e:
        raise _user_error(layers, e, profile, set_paths) from None


def deep_merge(base: dict, overlay: dict) -> dict:
    out = copy.deepcopy(base)
    for key, value in overlay.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = deep_merge(out[key], value)
        else:
            out[key] = copy.deepcopy(value)
    return out


def apply_override(config: dict, item: str) -> tuple[str, ...]:
    """Apply one `a.b.c=value` (value parsed as YAML) in place; return the key path."""
    key, sep, text = item.partition("=")
    if not sep or not key:
        raise UserError(f"expected key=value, got '{item}'", where="--set")
    keys = tuple(key.split("."))
    node = config
    for k in keys[:-1]:
        node = node.setdefault(k, {})
        if not isinstance(node, dict):
            raise UserError(f"'{k}' is not a section", where=f"--set {key}")
    try:
        node[keys[-1]] = yaml.safe_load(text)
    except yaml.YAMLError as e:  # also a tag that safe_load refuses: !!python/object, ...
        problem = getattr(e, "problem", None) or str(e).splitlines()[0]
        raise UserError(f"'{text}' is not a plain YAML value ({problem}); give a number, text, list "
                        "or mapping, and quote text that starts with '!'", where=f"--set {key}") from None
    return keys


# ---------------------------------------------------------------------------------------------
# Error messages


def _user_error(layers: list[tuple[Path, dict]], error: ValidationError, profile: str,
                set_paths: list[tuple[str, ...]]) -> UserError:
    err = error.errors()[0]
    ctx_error = (err.get("ctx") or {}).get("error")
    if isinstance(ctx_error, _KeyedError):
        loc, message = ctx_error.loc, ctx_error.message
    else:
        loc, message = _walk(Suite, tuple(err["loc"]))[1], _describe(err)
    key = _dotted(loc)
    if any(loc[:len(p)] == p or p[:len(loc)] == loc for p in set_paths):
        where = f"--set {key}"
    else:
        where = _origin(layers, loc, profile)
    more = len(error.errors()) - 1
    return UserError(message + (f" (and {more} more problem{'s' * (more > 1)})" if more else ""),
                     where=where)


def _origin(layers: list[tuple[Path, dict]], loc: tuple, profile: str) -> str:
    """The file and key that set `loc`: a profile's overlay first, then the suite file, then
    the files it includes (nearest first); the suite file itself when no file sets it."""
    key = _dotted(loc)
    if profile != DEFAULT_PROFILE:
        for file, raw in layers:
            if _has_path(raw, ("profiles", profile, *loc)):
                return f"{file}: profiles.{profile}.{key}"
    for file, raw in layers:
        if key and _has_path(raw, loc):
            return f"{file}: {key}"
    path = layers[0][0]
    return f"{path}: {key}" if key else str(path)


def _describe(err: dict, model: type[BaseModel] | None = None) -> str:
    if err["type"] == "extra_forbidden":
        allowed = _fields_at(model or Suite, tuple(err["loc"])[:-1])
        return "unknown key" + (f"; expected one of: {', '.join(allowed)}" if allowed else "")
    if err["type"] == "missing":
        return "required key is missing"
    message = err["msg"].removeprefix("Value error, ")
    return f"{message} (got {err['input']!r})" if err["type"] != "value_error" else message


def _fields_at(model: type, loc: tuple) -> list[str]:
    """The keys allowed at `loc` inside `model`."""
    node = _unwrap(_walk(model, loc)[0])
    if isinstance(node, type) and issubclass(node, BaseModel):
        return [k for k in node.model_fields if k != "profile"]
    return []


def _walk(model: type, loc: tuple) -> tuple[Any, tuple]:
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


def _dotted(loc: tuple) -> str:
    out = ""
    for part in loc:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out


def _has_path(tree: Any, loc: tuple) -> bool:
    for part in loc:
        if isinstance(part, int) and isinstance(tree, list) and part < len(tree):
            tree = tree[part]
        elif isinstance(tree, dict) and part in tree:
            tree = tree[part]
        else:
            return False
    return True
