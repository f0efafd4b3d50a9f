"""A model card in every model folder: RUN/model/README.md, Hugging Face's format.

The card is made with huggingface_hub's ModelCard, ModelCardData and EvalResult, from what the run
folder holds: run.yaml (objective, config, size, data, seed), train.json (parameters, FLOPs,
tokens, steps, the environment with the harness's commit), every evaluation result
(eval/<entry>.json: the `harness` block's tasks, metrics and scoring method; finetune/<task>.json:
the median over fine-tuning seeds) and, in model/config.json, `harness_export`: how the model
must be loaded and scored. Without that key (a run exported before the harness wrote it), the
run's architecture decides the Auto class.

    ---
    library_name: transformers
    pipeline_tag: text-generation
    tags: [objective-harness, clm, decoder, loglikelihood]
    harness: {run_id: ..., objective: clm, size: mini, seed: 0, commit: ..., ...}
    model-index:
    - name: clm-mini-s0-6e12-1a2b3c4d
      results:
      - task: {type: multiple-choice, name: Zero-shot (lm-eval)}
        dataset: {type: synthetic_hellaswag, name: synthetic_hellaswag, args: {num_few_shot: 0}}
        metrics: [{type: acc_norm, value: 0.41, name: acc_norm (loglikelihood), config: loglikelihood}]
    ---
    # clm-mini-s0-6e12-1a2b3c4d
    ... Training, Evaluation (a table naming each scoring method), Intended use, How to load

`write_cards(suite_dir)` (re)writes the card of every finished run of a suite (train.json and
model/ there); harness.pipeline and `harness eval` / `harness report` call it whenever they write
the suite's report, so a card always holds every result. The same inputs give the same bytes (no
dates, nothing random), and a card is rewritten, atomically, only when its text changes.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from harness.errors import UserError
from harness.evaluate.tasks import HELDOUT_TASK
from harness.export.card_body import body
from harness.jobs import RunPlan
from harness.results import SUITE_RECORD, RunDir, read_json, write_atomic

CARD_NAME = "README.md"
HARNESS_TAG = "objective-harness"
# Without config.json's harness_export: the Auto class of each architecture (and whether it needs
# the folder's own code), ELECTRA's discriminator being a token classifier.
FALLBACK_CLASS = {"decoder": ("AutoModelForCausalLM", False), "encoder": ("AutoModelForMaskedLM", False),
                  "encoder-decoder": ("AutoModelForSeq2SeqLM", True)}
PIPELINE_TAGS = {"AutoModelForCausalLM": "text-generation", "AutoModelForMaskedLM": "fill-mask",
                 "AutoModelForTokenClassification": "token-classification",
                 "AutoModelForSeq2SeqLM": "text2text-generation"}
# How each scoring method reads the model (README, Evaluation), for cards without harness_export.
HOW_TO_SCORE = {
    "loglikelihood": "Score a continuation by its log-likelihood under the causal model.",
    "pseudo-loglikelihood": "Score text by its pseudo-log-likelihood: mask each token in turn and sum the "
                            "log-probabilities of the originals (Salazar et al. 2020).",
    "prefix-loglikelihood": "The context is a bidirectional prefix: its tokens attend to each other in both "
                            "directions and the continuation attends causally. A plain causal forward pass "
                            "scores it wrongly.",
    "seq2seq-loglikelihood": "Give the context to the encoder, ending in a sentinel, and score the continuation "
                             "with the decoder.",
    "discriminator": "Each token gets one logit: sigmoid(logit) is the probability that the token was "
                     "replaced. Text is scored by the sum of log P(original) over its tokens.",
}
# lm-eval's output types as the Hub's task types.
TASK_TYPES = {"multiple_choice": "multiple-choice", "loglikelihood": "text-generation",
              "loglikelihood_rolling": "text-generation", "generate_until": "text-generation"}


@dataclass(frozen=True)
class Result:
    """One number of the run's evaluation: a task's metric, how it was scored and against what."""

    kind: str            # "zero-shot", "held-out text" or "fine-tuning"
    task: str
    metric: str
    value: float
    scoring: str         # the scoring method, or the fine-tuning head
    task_type: str       # the Hub's task type
    stderr: float | None = None
    chance: float | None = None
    shots: int | None = None
    split: str | None = None
    seeds: int | None = None


@dataclass
class RunFacts:
    """Everything a card says, read from one run folder."""

    plan: RunPlan
    train: dict
    usage: dict          # config.json's harness_export, or the fallback of `usage_of`
    results: list[Result]
    description: str     # the suite's, as suite.json records it ("" without)


def write_cards(suite_dir: Path) -> list[Path]:
    """The card of every finished run (train.json and model/ present) of the runs the suite plans
    now, as the report reads them: those suite.json lists (every run without a suite.json)."""
    suite_dir = Path(suite_dir)
    runs = sorted(path.parent for path in suite_dir.glob("*/run.yaml"))
    record = suite_dir / SUITE_RECORD
    if record.is_file() and "runs" in (current := read_json(record)):
        runs = [run for run in runs if run.name in set(current["runs"])]
    return [write_card(run) for run in runs if (run / "train.json").is_file() and (run / "model").is_dir()]


def write_card(run_dir: Path) -> Path:
    """RUN/model/README.md from the run's current results; untouched when the text is the same."""
    path = RunDir(run_dir).model / CARD_NAME
    text = card_text(run_dir)
    if not path.is_file() or path.read_text(encoding="utf-8") != text:
        write_atomic(path, text)
    return path


def card_text(run_dir: Path, repo_id: str | None = None) -> str:
    """The card's text; `repo_id` (a Hub repository) is what its loading example names."""
    return str(model_card(run_dir, repo_id))


def model_card(run_dir: Path, repo_id: str | None = None):
    from huggingface_hub import ModelCard

    facts = read_facts(Path(run_dir))
    yaml_block = metadata(facts).to_yaml()
    return ModelCard(f"---\n{yaml_block}\n---\n\n{body(facts, repo_id)}")


def read_facts(run_dir: Path) -> RunFacts:
    run = RunDir(run_dir)
    if not run.run_yaml.is_file() or not run.train_json.is_file():
        raise UserError("not a finished run (run.yaml and train.json are expected)", where=str(run_dir))
    plan = RunPlan.read(run.run_yaml)
    record = run.root.parent / SUITE_RECORD
    description = (read_json(record).get("description") or "") if record.is_file() else ""
    return RunFacts(plan, read_json(run.train_json), usage_of(plan, run.model), eval_results(run), description)


def usage_of(plan: RunPlan, model_dir: Path) -> dict:
    """config.json's `harness_export`; without it, what the run's objective implies."""
    config = Path(model_dir) / "config.json"
    exported = read_json(config).get("harness_export") if config.is_file() else None
    if exported:
        return dict(exported)
    auto_class, remote = FALLBACK_CLASS.get(plan.architecture, ("AutoModel", False))
    if plan.objective == "electra":
        auto_class = "AutoModelForTokenClassification"
    return {"objective": plan.objective, "auto_class": auto_class, "trust_remote_code": remote,
            "scoring": plan.scoring, "use": HOW_TO_SCORE.get(plan.scoring, "")}


# --- the results -------------------------------------------------------------------------------


def eval_results(run: RunDir) -> list[Result]:
    """Every evaluation result of the run: lm-eval's entries (a task reached through two entries
    counts once), then the fine-tuning tasks, each in file-name order."""
    results, seen = [], set()
    for path in sorted(run.eval_dir.glob("*.json")):
        for result in entry_results(path):
            if (result.kind, result.task, result.metric) not in seen:
                seen.add((result.kind, result.task, result.metric))
                results.append(result)
    return results + [result for path in sorted(run.finetune_dir.glob("*.json")) for result in finetune_results(path)]


def entry_results(path: Path) -> list[Result]:
    """The numbers of an eval/<entry>.json, from its `harness` block (stderrs beside their metric)."""
    record = read_json(path)
    if "harness" not in record:
        raise UserError("not an evaluation result: expected a 'harness' block", where=str(path))
    block = record["harness"]
    heldout = block["entry"] == HELDOUT_TASK
    results = []
    for task, row in block["tasks"].items():
        task_type = "text-generation" if heldout else TASK_TYPES.get(_output_type(record, task), "text-generation")
        for metric, value in row["metrics"].items():
            if metric.endswith("_stderr") or not _is_number(value):
                continue
            stderr = row["metrics"].get(f"{metric}_stderr")
            results.append(Result("held-out text" if heldout else "zero-shot", task, metric, value,
                                  block.get("scoring") or "?", task_type,
                                  stderr=stderr if _is_number(stderr) else None, chance=row.get("chance"),
                                  shots=None if heldout else row.get("num_fewshot")))
    return results


def _output_type(record: dict, task: str) -> str | None:
    """lm-eval's output type of `task`, or of the first task under it when it is a group."""
    children = record.get("group_subtasks", {})
    while children.get(task):
        task = children[task][0]
    return record.get("configs", {}).get(task, {}).get("output_type")


def finetune_results(path: Path) -> list[Result]:
    """A finetune/<task>.json: the median over fine-tuning seeds of each metric."""
    record = read_json(path)
    standard = record["metric"]
    ordered = [standard] + [metric for metric in record["median"] if metric != standard]
    return [Result("fine-tuning", record["task"], metric, record["median"][metric], f"{record['head']} head",
                   "text-classification", chance=record.get("chance") if metric == standard else None,
                   split=record.get("eval_split"), seeds=len(record.get("runs") or []))
            for metric in ordered if _is_number(record["median"][metric])]


def _is_number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


# --- the metadata ------------------------------------------------------------------------------


def metadata(facts: RunFacts):
    """The card's YAML block: library, pipeline, tags, the run's facts, and the model-index."""
    from huggingface_hub import ModelCardData

    plan, usage = facts.plan, facts.usage
    environment = facts.train.get("environment") or {}
    return ModelCardData(
        library_name="transformers", pipeline_tag=PIPELINE_TAGS.get(usage.get("auto_class")),
        tags=[HARNESS_TAG, plan.objective, plan.architecture, plan.scoring],
        model_name=plan.run_id, eval_results=[eval_result(result) for result in facts.results] or None,
        harness={"run_id": plan.run_id, "suite": plan.suite, "objective": plan.objective,
                 "objective_config": plan.objective_config, "size": plan.size, "seed": plan.seed,
                 "params": facts.train.get("params", plan.params), "steps": plan.steps,
                 "tokens": facts.train.get("tokens_seen", plan.total_tokens),
                 "flops": facts.train.get("flops_spent", plan.total_flops),
                 "commit": environment.get("commit", "not recorded"), "dirty": environment.get("dirty")})


def eval_result(result: Result):
    from huggingface_hub import EvalResult

    how = {"zero-shot": "Zero-shot (lm-eval)", "held-out text": "Held-out text (bits per byte)",
           "fine-tuning": f"Fine-tuning (median over {result.seeds} seeds)"}[result.kind]
    if result.kind == "zero-shot" and result.shots:
        how = f"Few-shot (lm-eval, {result.shots}-shot)"
    name = "held-out validation documents" if result.kind == "held-out text" else result.task
    return EvalResult(task_type=result.task_type, task_name=how, dataset_type=result.task,
                      dataset_name=name, dataset_split=result.split,
                      dataset_args={"num_few_shot": result.shots} if result.shots is not None else None,
                      metric_type=result.metric, metric_value=result.value,
                      metric_name=f"{result.metric} ({result.scoring})", metric_config=result.scoring)

