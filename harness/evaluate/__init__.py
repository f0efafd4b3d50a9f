"""Evaluate a trained run with lm-eval: the one place in the harness that imports lm_eval.

    evaluate_entry(run_dir / "model", "pseudo-loglikelihood", "synthetic_glue",
                   tasks_dir=tasks_dir, out_dir=run_dir / "eval")

runs lm-eval's `simple_evaluate` on one entry of a suite's `eval.tasks` (a task, a group such as
`mmlu`, or a tag such as `glue`) with the model class for the objective's scoring method
(`SCORING_MODELS`), and writes `out_dir/<entry>.json`: lm-eval's own results (configs, versions,
seeds, batch size, n-shot, task hashes) plus a `harness` section with the scoring method, the
chance level and plain metric names of the rows the report shows.

Where tasks come from, first match wins:
- the harness's own tasks, shipped as YAML templates in `tasks/`; `materialize_tasks` points
  copies of them at the local data files under `tasks_dir`;
- an offline bundle (`harness eval bundle`, harness.evaluate.bundle): stock tasks reading
  stored copies of their data;
- lm-eval's stock task registry, which reads the Hugging Face hub (or its local cache).

`check_tasks` is the preflight run before any training: every entry must load, data and all.

lm_eval is imported inside the functions: importing it takes seconds, and the command line
imports this package only to read `SCORING_MODELS`.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import statistics
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import yaml

from harness.errors import UserError, did_you_mean
from harness.results import hash_file
from harness.results import write_atomic as _write_atomic

# Scoring method (declared by each objective) -> lm-eval model name.
SCORING_MODELS = {
    "loglikelihood": "hf",                        # causal decoders: lm-eval's own HFLM
    "pseudo-loglikelihood": "harness-pll",        # masked-LM encoders (Salazar et al. 2020)
    "seq2seq-loglikelihood": "harness-seq2seq",   # encoder-decoders: context in, continuation out
    "prefix-loglikelihood": "harness-prefix",     # prefix LM and UL2: bidirectional context
    "discriminator": "harness-electra",           # ELECTRA: P(original) from replaced-token detection
}
# Held-out text (bits per byte) needs a sliding-window rolling likelihood; lm-eval's HFLM rolls
# disjoint windows, so causal models use the harness's causal class there (same scores).
ROLLING_MODELS = {**SCORING_MODELS, "loglikelihood": "harness-causal"}
# The harness's own lm-eval model classes, registered lazily as lm-eval registers its own.
HARNESS_MODELS = {
    "harness-causal": "harness.evaluate.adapters:CausalLM",
    "harness-pll": "harness.evaluate.adapters:PseudoLogLikelihoodLM",
    "harness-seq2seq": "harness.evaluate.seq2seq:EncoderDecoderLM",
    "harness-prefix": "harness.evaluate.prefix:PrefixLM",
    "harness-electra": "harness.evaluate.electra:DiscriminatorLM",
}

# Weight files that torch unpickles: never loaded from a model folder (safetensors_weights).
PICKLED_WEIGHTS = (".bin", ".pt", ".pth", ".pkl", ".pickle", ".ckpt")
TEMPLATES = Path(__file__).parent / "tasks"
SHIPPED_TASKS = tuple(sorted(path.stem for path in TEMPLATES.glob("*.yaml")))
HELDOUT_TASK = "harness_heldout"  # the validation documents, scored for bits per byte
BUNDLE_HINT = ("offline, evaluate it from a bundle: make one where the network is with "
               "`harness eval bundle {task} --out DIR`, then set `eval.bundle: DIR` in the suite "
               "(or pass --bundle DIR)")


def evaluate_entry(
    model_dir: Path,
    scoring: str,
    entry: str,
    *,
    tasks_dir: Path,
    out_dir: Path,
    bundle: Path | None = None,
    num_fewshot: int | None = None,
    batch_size: int = 32,
    limit: int | None = None,
    seed: int = 0,
    device: str | None = None,
    model_args: dict | None = None,
    cache_dir: Path | None = None,
) -> dict:
    """Evaluate the model saved in `model_dir` on one task, group or tag; write `out_dir/<entry>.json`.

    Returns the file's `harness` section: {"entry", "scoring", "model_sha256", "request",
    "tasks": {task: {"metrics", "chance", "n", "num_fewshot", "higher_is_better"}}}.
    `cache_dir` keeps lm-eval's response cache there, in a file named by the checkpoint's hash,
    so that one model's answers are never served to another; it holds JSON, not lm-eval's
    pickles (harness.evaluate.cache). Only safetensors weights are loaded (`safetensors_weights`).
    `device` None means CUDA when available, else CPU.
    """
    from lm_eval import simple_evaluate

    from harness.evaluate.cache import json_response_cache

    model_dir = Path(model_dir)
    checkpoint = model_sha256(model_dir)  # first: it refuses weights that are not safetensors
    rolling = entry == HELDOUT_TASK
    model = _lm_eval_model(scoring, rolling=rolling)
    args = _model_args(model, model_dir) | dict(model_args or {})
    cache = None
    if cache_dir is not None:
        Path(cache_dir).mkdir(parents=True, exist_ok=True)
        # "-json": the pickled caches earlier versions left (<model>-<hash>_rank0.db) are never opened.
        cache = str(Path(cache_dir) / f"{model}-{checkpoint[:16]}-json")
    with _quiet(), json_response_cache():
        manager = _task_manager(tasks_dir, bundle, [entry], args)
        _check_names([entry], manager)
        results = simple_evaluate(
            model=model, model_args=args, tasks=[entry], task_manager=manager,
            num_fewshot=num_fewshot, batch_size=batch_size, device=_device(device), limit=limit,
            use_cache=cache, random_seed=seed, numpy_random_seed=seed, torch_random_seed=seed,
            fewshot_random_seed=seed,
            log_samples=True,  # the samples give the number of choices (the chance level) and the task hashes
        )
    samples = results.pop("samples", {})
    results["task_hashes"] = task_hashes(samples)
    section = {
        "entry": entry, "scoring": scoring, "model": model, "model_sha256": checkpoint,
        "request": {"num_fewshot": num_fewshot, "limit": limit},
        "tasks": {task: _row(results, samples, task) for task in reported_tasks(results, entry)},
    }
    results["harness"] = section
    Path(out_dir).mkdir(parents=True, exist_ok=True)
    _write_atomic(Path(out_dir) / f"{entry}.json", _to_json(results))
    return section


def reported_tasks(results: dict, entry: str) -> list[str]:
    """The rows the report shows for an entry: a task or a group itself (a group's score is
    lm-eval's aggregate over its subtasks), and every member of a tag (a tag has no score)."""
    if entry in results["results"]:
        return [entry]
    groups = set(results.get("groups", {})) | set(results.get("group_subtasks", {}))
    return sorted(task for task in results["results"] if task not in groups)


def _row(results: dict, samples: dict, task: str) -> dict:
    leaves = _leaves(results, task)
    config = results["configs"].get(leaves[0], {})
    return {
        "metrics": plain_metrics(results["results"][task]),
        "chance": chance_level([s for leaf in leaves for s in samples.get(leaf, [])], config.get("output_type")),
        "n": sum(results.get("n-samples", {}).get(leaf, {}).get("effective", 0) for leaf in leaves),
        "num_fewshot": results.get("n-shot", {}).get(leaves[0]),
        "higher_is_better": results.get("higher_is_better", {}).get(task, {}),
    }


def _leaves(results: dict, task: str) -> list[str]:
    """The leaf tasks under `task` (itself when it is one), from lm-eval's group_subtasks."""
    children = results.get("group_subtasks", {}).get(task)
    if not children:
        return [task]
    return [leaf for child in children for leaf in _leaves(results, child)]


def task_hashes(samples: dict[str, list[dict]]) -> dict[str, str]:
    """One hash per task over its documents, prompts and targets, as lm-eval's EvaluationTracker
    computes it: two results with equal hashes scored the same requests."""
    from lm_eval.utils import hash_string

    return {task: hash_string("".join(s["doc_hash"] + s["prompt_hash"] + s["target_hash"] for s in rows))
            for task, rows in samples.items()}


def model_sha256(model_dir: Path) -> str:
    """A hash of the checkpoint's weight files (`safetensors_weights`): what the response cache
    is keyed by."""
    digest = hashlib.sha256()
    for path in safetensors_weights(model_dir):
        digest.update(path.name.encode())
        hash_file(path, digest)
    return digest.hexdigest()


def safetensors_weights(model_dir: Path) -> list[Path]:
    """The `*.safetensors` weight files of a model folder, sorted: the only weights the harness
    loads (it saves nothing else). Checked before anything reads the folder; a weights file in a
    pickle-based format there (`PICKLED_WEIGHTS`: pytorch_model.bin, *.pt, ...) is a UserError
    naming it, with safetensors beside it or not, since unpickling runs what the file says."""
    model_dir = Path(model_dir)
    if not model_dir.is_dir():
        raise UserError("no such model folder", where=str(model_dir))
    for path in sorted(model_dir.iterdir()):
        if path.suffix.lower() in PICKLED_WEIGHTS:
            raise UserError(f"a weights file in a pickle-based format ({path.suffix}): only safetensors weights "
                            "(*.safetensors, as the harness saves them) are loaded, never a pickle; remove the "
                            "file or convert it to safetensors", where=str(path))
    if not (weights := sorted(model_dir.glob("*.safetensors"))):
        raise UserError("no model weights: expected *.safetensors files (only safetensors is loaded)",
                        where=str(model_dir))
    return weights


def check_tasks(tasks: Sequence[str], tasks_dir: Path, bundle: Path | None = None) -> None:
    """Preflight, before any training: every entry is known and loads, data and all.

    The harness's own tasks need only their data files. Any other entry is built as lm-eval
    builds it (its dataset is read: from the bundle, a local Hugging Face cache or the hub);
    one that cannot be loaded is a UserError saying how to evaluate it offline.
    """
    tasks = list(tasks)
    if not tasks:
        raise UserError(f"no tasks to evaluate; known: {', '.join(SHIPPED_TASKS)} and lm-eval's own tasks",
                        where="eval.tasks")
    shipped = [task for task in tasks if task in SHIPPED_TASKS]
    for task in shipped:
        _check_task_data(task, Path(tasks_dir))
    bundled = set(_bundle_tasks(bundle))
    others = [task for task in tasks if task not in SHIPPED_TASKS]
    # At most two task indexes: the bundle's tasks, and lm-eval's stock ones for the rest.
    for batch in ([t for t in others if t in bundled], [t for t in others if t not in bundled]):
        if batch:
            _check_loads(batch, tasks_dir, bundle)


def _check_loads(tasks: list[str], tasks_dir: Path, bundle: Path | None) -> None:
    with _quiet():
        manager = _task_manager(tasks_dir, bundle, tasks, {})
        _check_names(tasks, manager)
        for task in tasks:
            try:
                manager.load([task])  # builds every task under the name: its dataset is read
            except Exception as e:  # datasets says ConnectionError, FileNotFoundError, ValueError, ...
                reason = str(e).strip().splitlines()[0][:300] if str(e).strip() else type(e).__name__
                raise UserError(f"task '{task}' cannot be loaded ({reason}); "
                                + BUNDLE_HINT.format(task=task), where="eval.tasks") from None


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


def _lm_eval_model(scoring: str, rolling: bool = False) -> str:
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
    return (ROLLING_MODELS if rolling else SCORING_MODELS)[scoring]


def _model_args(model: str, model_dir: Path) -> dict[str, Any]:
    # An absolute path: HFLM asks the hub for a model's revision, and a bare relative name like
    # "model" would look like a hub repository id.
    args: dict[str, Any] = {"pretrained": str(model_dir.resolve()), "dtype": "float32"}
    if model == "hf":
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


def _bundle_tasks(bundle: Path | None) -> list[str]:
    if bundle is None:
        return []
    from harness.evaluate.bundle import bundle_tasks
    return bundle_tasks(Path(bundle))


def _task_manager(tasks_dir: Path, bundle: Path | None, tasks: Sequence[str], metadata: dict):
    """A TaskManager over the shipped tasks, and either the bundle's (when it holds every name
    asked for) or lm-eval's stock ones (indexing those thousands of YAML files takes seconds).
    Never both: a bundle holding only sst2 would redefine the stock tag `glue` as sst2 alone."""
    from lm_eval.tasks import TaskManager

    include = [materialize_tasks(tasks_dir)]
    others = [task for task in tasks if task not in SHIPPED_TASKS]
    use_bundle = bool(others) and set(others) <= set(_bundle_tasks(bundle))
    if use_bundle:
        from harness.evaluate.bundle import bundle_include
        include.append(bundle_include(Path(bundle)))
    stock = bool(others) and not use_bundle
    # model_args as metadata, as simple_evaluate does when it builds the manager itself.
    return TaskManager(include_path=[str(p) for p in include], include_defaults=stock, metadata=dict(metadata))


def _check_names(tasks: Sequence[str], manager) -> None:
    for task in tasks:
        if task not in manager.all_tasks:
            raise UserError(
                f"unknown task '{task}'{did_you_mean(task, manager.all_tasks)}; known: "
                f"{', '.join(SHIPPED_TASKS)} and lm-eval's own tasks (`lm-eval ls tasks`)",
                where="eval.tasks")


def _check_task_data(task: str, tasks_dir: Path) -> None:
    config = yaml.safe_load((TEMPLATES / f"{task}.yaml").read_text())
    for name in config["dataset_kwargs"]["data_files"].values():
        if not (path := tasks_dir / task / name).is_file():
            raise UserError(f"{path}: data for task '{task}' is missing (the data step writes it)")


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
