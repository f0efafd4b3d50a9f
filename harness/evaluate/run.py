"""Evaluate a trained run's model with lm-eval, one entry of the suite's `eval.tasks` at a time.

    evaluate_entry(run_dir / "model", "pseudo-loglikelihood", "synthetic_glue",
                   tasks_dir=tasks_dir, out_dir=run_dir / "eval")

runs lm-eval's `simple_evaluate` on one entry (a task, a group such as `mmlu`, or a tag such as
`glue`) with the model class for the objective's scoring method (`SCORING_MODELS`), and writes
`out_dir/<entry>.json`: lm-eval's own results (configs, versions, seeds, batch size, n-shot,
task hashes) plus a `harness` section with the scoring method, the chance level and plain metric
names of the rows the report shows; and beside it `out_dir/<entry>.documents.jsonl`, each
document's score (harness.evaluate.documents), and `out_dir/<entry>.samples/`, lm-eval's record of
every request and answer (harness.evaluate.samples).

This module imports lm_eval and transformers: import it where evaluation runs, not on a light
path (the pipeline imports it inside the function that evaluates).
"""

from __future__ import annotations

import importlib
import json
import statistics
from pathlib import Path
from typing import Any

from lm_eval import simple_evaluate
from lm_eval.utils import handle_non_serializable, hash_string

from harness import runtime
from harness.errors import UserError, did_you_mean
from harness.evaluate.cache import json_response_cache
from harness.evaluate.documents import document_rows, write_documents
from harness.evaluate.export import hf_model_args
from harness.evaluate.samples import remove_samples, write_samples
from harness.evaluate.tasks import HELDOUT_TASK, check_names, task_manager
from harness.evaluate.weights import model_sha256
from harness.results import write_atomic

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


def evaluate_entry(model_dir: Path, scoring: str, entry: str, *, tasks_dir: Path, out_dir: Path,
                   bundle: Path | None = None, num_fewshot: int | None = None, batch_size: int = 32,
                   limit: int | None = None, seed: int = 0, device: str | None = None,
                   model_args: dict | None = None, cache_dir: Path | None = None,
                   log_samples: bool = True) -> dict:
    """Evaluate the model saved in `model_dir` on one task, group or tag; write `out_dir/<entry>.json`,
    its per-document scores `out_dir/<entry>.documents.jsonl` and, with `log_samples`, lm-eval's
    per-sample records `out_dir/<entry>.samples/<task>.jsonl.gz` (harness.evaluate.samples).

    Returns the file's `harness` section: {"entry", "scoring", "model_sha256", "request",
    "tasks": {task: {"metrics", "chance", "n", "num_fewshot", "higher_is_better"}}}.
    `cache_dir` keeps lm-eval's response cache there, in a file named by the checkpoint's hash,
    so that one model's answers are never served to another; it holds JSON, not lm-eval's
    pickles (harness.evaluate.cache). Only safetensors weights are loaded (`safetensors_weights`).
    `device` None means CUDA when available, else CPU.
    """
    model_dir = Path(model_dir)
    checkpoint = model_sha256(model_dir)  # first: it refuses weights that are not safetensors
    model = lm_eval_model(scoring, rolling=entry == HELDOUT_TASK)
    args = lm_eval_model_args(model, model_dir) | dict(model_args or {})
    cache = _response_cache(cache_dir, model, checkpoint)
    with runtime.quiet(), json_response_cache():
        manager = task_manager(tasks_dir, bundle, [entry], args)
        check_names([entry], manager)
        results = simple_evaluate(
            model=model, model_args=args, tasks=[entry], task_manager=manager,
            num_fewshot=num_fewshot, batch_size=batch_size, device=str(runtime.device(device)), limit=limit,
            use_cache=cache, random_seed=seed, numpy_random_seed=seed, torch_random_seed=seed,
            fewshot_random_seed=seed,
            log_samples=True,  # the samples give the number of choices (the chance level) and the task hashes
        )
    samples = results.get("samples", {})
    section = _harness_section(results, {"entry": entry, "scoring": scoring, "model": model,
                                         "model_sha256": checkpoint,
                                         "request": {"num_fewshot": num_fewshot, "limit": limit}})
    _write_entry(Path(out_dir), entry, results, samples, log_samples)
    return section


def _write_entry(out_dir: Path, entry: str, results: dict, samples: dict, log_samples: bool) -> None:
    """The per-document scores, the samples (or none: earlier ones are removed), then the result
    file, whose existence marks the entry done."""
    out_dir.mkdir(parents=True, exist_ok=True)
    leaves = {task: _leaves(results, task) for task in results["harness"]["tasks"]}
    write_documents(out_dir, entry, document_rows(samples, leaves))
    if log_samples:
        write_samples(out_dir, entry, samples)
    else:
        remove_samples(out_dir, entry)
    write_atomic(out_dir / f"{entry}.json", _to_json(results))


def _response_cache(cache_dir: Path | None, model: str, checkpoint: str) -> str | None:
    """lm-eval's `use_cache` path for this checkpoint, or None for no cache."""
    if cache_dir is None:
        return None
    Path(cache_dir).mkdir(parents=True, exist_ok=True)
    # "-json": the pickled caches earlier versions left (<model>-<hash>_rank0.db) are never opened.
    return str(Path(cache_dir) / f"{model}-{checkpoint[:16]}-json")


def _harness_section(results: dict, section: dict) -> dict:
    """Replace lm-eval's samples in `results` by their task hashes, and add `section` with the
    report's rows ("tasks") as its `harness` section; returns that section."""
    samples = results.pop("samples", {})
    results["task_hashes"] = task_hashes(samples)
    entry = section["entry"]
    section["tasks"] = {task: _row(results, samples, task) for task in reported_tasks(results, entry)}
    results["harness"] = section
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
    return {task: hash_string("".join(s["doc_hash"] + s["prompt_hash"] + s["target_hash"] for s in rows))
            for task, rows in samples.items()}


def register_models() -> None:
    """Make lm-eval's own model classes ("hf", ...) and the harness's (`HARNESS_MODELS`) known to
    lm-eval's model registry, both as lazy "module:class" entries: a class (and torch) loads on
    first use. Idempotent."""
    from lm_eval.api.registry import model_registry

    importlib.import_module("lm_eval.models")  # importing it registers lm-eval's own models
    for name, target in HARNESS_MODELS.items():
        if name not in model_registry:
            model_registry.register(name, target=target)


def lm_eval_model(scoring: str, rolling: bool = False) -> str:
    """The lm-eval model name for a scoring method (`ROLLING_MODELS` for held-out text), with
    the models registered (`register_models`)."""
    register_models()
    if scoring not in SCORING_MODELS:
        raise UserError(f"unknown scoring method '{scoring}'{did_you_mean(scoring, SCORING_MODELS)}; "
                        f"known: {', '.join(SCORING_MODELS)}")
    return (ROLLING_MODELS if rolling else SCORING_MODELS)[scoring]


def lm_eval_model_args(model: str, model_dir: Path) -> dict[str, Any]:
    """The model arguments the harness gives lm-eval's `model` for the model saved in `model_dir`
    (for lm-eval's own `hf`, `hf_model_args`: the ones `harness eval export-tasks` prints too)."""
    if model == "hf":
        return hf_model_args(model_dir)
    # An absolute path: HFLM asks the hub for a model's revision, and a bare relative name like
    # "model" would look like a hub repository id.
    return {"pretrained": str(Path(model_dir).resolve()), "dtype": "float32"}


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
    return json.dumps(record, indent=2, default=handle_non_serializable) + "\n"
