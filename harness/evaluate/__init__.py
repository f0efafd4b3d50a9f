"""Evaluate a trained run with lm-eval: the one place in the harness that imports lm_eval.

    evaluate_model(run_dir / "model", "pseudo-loglikelihood", ["synthetic_glue"], tasks_dir, run_dir / "eval")

runs lm-eval's `simple_evaluate` with the model class for the objective's scoring method
(`SCORING_MODELS`) and writes one JSON per task to the eval directory. The harness's own tasks
ship as YAML templates in `tasks/`; `materialize_tasks` points copies of them at the local data
files under `tasks_dir`. Any other name is looked up among lm-eval's stock tasks.

lm_eval is imported inside the functions: importing it takes seconds, and the command line
imports this package only to read `SCORING_MODELS`.
"""

from __future__ import annotations

import contextlib
import json
import logging
import statistics
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import yaml

from harness.errors import UserError, did_you_mean
from harness.results import write_atomic as _write_atomic

# Scoring method (declared by each objective) -> lm-eval model name.
SCORING_MODELS = {
    "loglikelihood": "hf",                        # causal decoders: lm-eval's own HFLM
    "pseudo-loglikelihood": "harness-pll",        # masked-LM encoders (Salazar et al. 2020)
    "seq2seq-loglikelihood": "harness-seq2seq",   # encoder-decoders: context in, continuation out
    "prefix-loglikelihood": "harness-prefix",     # prefix LM and UL2: bidirectional context
    "discriminator": "harness-electra",           # ELECTRA: P(original) from replaced-token detection
}
# The harness's own lm-eval model classes, registered lazily as lm-eval registers its own.
HARNESS_MODELS = {
    "harness-pll": "harness.evaluate.adapters:PseudoLogLikelihoodLM",
    "harness-seq2seq": "harness.evaluate.seq2seq:EncoderDecoderLM",
    "harness-prefix": "harness.evaluate.prefix:PrefixLM",
    "harness-electra": "harness.evaluate.electra:DiscriminatorLM",
}

TEMPLATES = Path(__file__).parent / "tasks"
SHIPPED_TASKS = tuple(sorted(path.stem for path in TEMPLATES.glob("*.yaml")))


def evaluate_model(
    model_dir: Path,
    scoring: str,
    tasks: Sequence[str],
    tasks_dir: Path,
    out_dir: Path,
    batch_size: int = 32,
    limit: int | None = None,
    seed: int = 0,
    device: str | None = None,
    extra_model_args: dict | None = None,
) -> dict[str, dict]:
    """Evaluate the model saved in `model_dir` on `tasks`; write `out_dir/<task>.json` for each.

    Returns {task: {"acc": .., "acc_stderr": .., "acc_norm": .. (where reported), "scoring": ..,
    "chance": ..}}. `device` None means CUDA when available, else CPU.
    """
    from lm_eval import simple_evaluate

    tasks = [tasks] if isinstance(tasks, str) else list(tasks)
    model = _lm_eval_model(scoring)
    include = materialize_tasks(tasks_dir)
    model_args = _model_args(scoring, Path(model_dir)) | dict(extra_model_args or {})
    with _quiet():
        manager = _task_manager(include, tasks, model_args)
        _check_tasks(tasks, manager, Path(tasks_dir))
        results = simple_evaluate(
            model=model,
            model_args=model_args,
            tasks=tasks,
            task_manager=manager,
            batch_size=batch_size,
            device=_device(device),
            limit=limit,
            random_seed=seed,
            numpy_random_seed=seed,
            torch_random_seed=seed,
            fewshot_random_seed=seed,
            log_samples=True,  # the samples give the number of choices, hence the chance level
        )
    return {task: _write_task_result(results, task, scoring, Path(out_dir)) for task in results["configs"]}


def check_tasks(tasks: Sequence[str], tasks_dir: Path) -> None:
    """Preflight, before any training: every task is known and the data it reads is there.

    The harness's own tasks need only their data files; a stock lm-eval name costs building
    lm-eval's task index (seconds).
    """
    tasks = list(tasks)
    if tasks and all(task in SHIPPED_TASKS for task in tasks):
        for task in tasks:
            _check_task_data(task, Path(tasks_dir))
        return
    with _quiet():
        manager = _task_manager(materialize_tasks(tasks_dir), tasks, {})
    _check_tasks(tasks, manager, Path(tasks_dir))


def materialize_tasks(tasks_dir: Path) -> Path:
    """Write the shipped task YAMLs, pointed at the data under `tasks_dir`, into `tasks_dir/lm_eval/`.

    Returns that directory, for lm-eval's `TaskManager(include_path=...)`. The data files are
    made absolute (`tasks_dir/<task>/<split>.jsonl`), and `datasets` caches its Arrow copies
    under `tasks_dir/datasets_cache` rather than in the user's home.
    """
    tasks_dir = Path(tasks_dir).resolve()
    include = tasks_dir / "lm_eval"
    include.mkdir(parents=True, exist_ok=True)
    for template in sorted(TEMPLATES.glob("*.yaml")):
        config = yaml.safe_load(template.read_text())
        config["dataset_kwargs"] = _local_dataset_kwargs(config, tasks_dir)
        header = f"# Written by harness.evaluate.materialize_tasks from {template.name}; edits are lost.\n"
        _write_atomic(include / template.name, header + yaml.safe_dump(config, sort_keys=False))
    return include


def _local_dataset_kwargs(config: dict, tasks_dir: Path) -> dict:
    data_dir = tasks_dir / config["task"]
    files = config["dataset_kwargs"]["data_files"]
    return {
        "data_files": {split: str(data_dir / name) for split, name in files.items()},
        "cache_dir": str(tasks_dir / "datasets_cache"),
    }


def _lm_eval_model(scoring: str) -> str:
    """The lm-eval model name for a scoring method; registers the harness's own classes."""
    import lm_eval.models  # noqa: F401  registers lm-eval's own models ("hf", ...) lazily
    from lm_eval.api.registry import model_registry

    if scoring not in SCORING_MODELS:
        raise UserError(f"unknown scoring method '{scoring}'{did_you_mean(scoring, SCORING_MODELS)}; "
                        f"known: {', '.join(SCORING_MODELS)}")
    # A lazy entry, as lm-eval registers its own models: adapters (and torch) load on first use.
    for name, target in HARNESS_MODELS.items():
        if name not in model_registry:
            model_registry.register(name, target=target)
    return SCORING_MODELS[scoring]


def _model_args(scoring: str, model_dir: Path) -> dict[str, Any]:
    # An absolute path: HFLM asks the hub for a model's revision, and a bare relative name like
    # "model" would look like a hub repository id.
    args: dict[str, Any] = {"pretrained": str(model_dir.resolve()), "dtype": "float32"}
    if SCORING_MODELS[scoring] == "hf":
        # No [BOS]/[CLS] before the text, as in training; an empty context is conditioned on
        # [EOS], the document separator the model saw, whatever the tokenizer calls its BOS.
        args |= {"add_bos_token": False, "prefix_token_id": _eos_token_id(model_dir)}
    return args


def _eos_token_id(model_dir: Path) -> int:
    import transformers

    return transformers.AutoTokenizer.from_pretrained(model_dir).eos_token_id


def _device(device: str | None) -> str:
    # lm-eval's HFLM defaults to "cuda" even where there is none; choose here instead.
    import torch

    return device or ("cuda" if torch.cuda.is_available() else "cpu")


def _task_manager(include: Path, tasks: Sequence[str], metadata: dict):
    """A TaskManager over the shipped tasks, and over lm-eval's stock ones only when asked for:
    indexing those thousands of YAML files takes seconds."""
    from lm_eval.tasks import TaskManager

    stock = any(task not in SHIPPED_TASKS for task in tasks)
    # model_args as metadata, as simple_evaluate does when it builds the manager itself.
    return TaskManager(include_path=str(include), include_defaults=stock, metadata=dict(metadata))


def _check_tasks(tasks: Sequence[str], manager, tasks_dir: Path) -> None:
    """Unknown names, and shipped tasks whose data is missing, are user errors."""
    if not tasks:
        raise UserError(f"no tasks to evaluate; known: {', '.join(SHIPPED_TASKS)} and lm-eval's own tasks")
    for task in tasks:
        if task not in manager.all_tasks:
            raise UserError(
                f"unknown task '{task}'{did_you_mean(task, manager.all_tasks)}; known: "
                f"{', '.join(SHIPPED_TASKS)} and lm-eval's own tasks (`lm-eval ls tasks`)"
            )
        if task in SHIPPED_TASKS:
            _check_task_data(task, tasks_dir)


def _check_task_data(task: str, tasks_dir: Path) -> None:
    config = yaml.safe_load((TEMPLATES / f"{task}.yaml").read_text())
    for name in config["dataset_kwargs"]["data_files"].values():
        if not (path := tasks_dir / task / name).is_file():
            raise UserError(f"{path}: data for task '{task}' is missing (the data step writes it)")


def _write_task_result(results: dict, task: str, scoring: str, out_dir: Path) -> dict:
    """Write `out_dir/<task>.json` (lm-eval's results file cut to this task, plus the scoring
    method, chance level and plain metric names); return the summary entry."""
    config = results["configs"][task]
    metrics = plain_metrics(results["results"][task])
    chance = chance_level(results.get("samples", {}).get(task, []), config.get("output_type"))
    per_task = ("results", "n-samples", "versions", "n-shot", "higher_is_better", "configs")
    record = {
        "task": task,
        "scoring": scoring,
        "chance": chance,
        "metrics": metrics,
        **{key: {task: results[key][task]} for key in per_task if task in results.get(key, {})},
        "config": results["config"],
    }
    out_dir.mkdir(parents=True, exist_ok=True)
    _write_atomic(out_dir / f"{task}.json", _to_json(record))
    return {**metrics, "scoring": scoring, "chance": chance}


def plain_metrics(task_results: dict) -> dict[str, float | None]:
    """lm-eval's "acc,none" -> "acc"; a metric under another filter keeps its "metric,filter" key.
    Entries that are not metrics ("alias", "name", "sample_len") have no filter and are left out.

    >>> plain_metrics({"alias": "t", "sample_len": 3, "acc,none": 0.5, "acc_stderr,none": "N/A"})
    {'acc': 0.5, 'acc_stderr': None}
    """
    plain = {}
    for key, value in task_results.items():
        name, comma, filter_name = key.partition(",")
        if comma:
            plain[name if filter_name == "none" else key] = None if value == "N/A" else value
    return plain


def chance_level(samples: list[dict], output_type: str | None) -> float | None:
    """Expected accuracy of a uniform guess over the documents evaluated (multiple choice only)."""
    if output_type != "multiple_choice" or not samples:
        return None
    return statistics.fmean(1 / _n_choices(sample) for sample in samples)


def _n_choices(sample: dict) -> int:
    requests = len(sample["arguments"])
    # acc_mutual_info adds one unconditional request per choice.
    return requests // 2 if "acc_mutual_info" in sample["metrics"] else requests


def _to_json(record: dict) -> str:
    from lm_eval.utils import handle_non_serializable

    return json.dumps(record, indent=2, default=handle_non_serializable) + "\n"


@contextlib.contextmanager
def _quiet() -> Iterator[None]:
    """Warnings only from lm-eval, transformers and datasets (they narrate every step at INFO and
    draw progress bars); the previous levels come back afterwards."""
    import datasets
    import transformers

    loggers = [logging.getLogger(name) for name in ("lm_eval", "transformers", "datasets", "accelerate")]
    levels = [logger.level for logger in loggers]
    bars = transformers.utils.logging.is_progress_bar_enabled(), datasets.is_progress_bar_enabled()
    for logger in loggers:
        logger.setLevel(max(logger.getEffectiveLevel(), logging.WARNING))
    transformers.utils.logging.disable_progress_bar()
    datasets.disable_progress_bars()
    try:
        yield
    finally:
        for logger, level in zip(loggers, levels):
            logger.setLevel(level)
        if bars[0]:
            transformers.utils.logging.enable_progress_bar()
        if bars[1]:
            datasets.enable_progress_bars()
