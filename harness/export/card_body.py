"""The markdown body of a model card (harness.export.card makes the card and its metadata):
what the model is, how it was trained, every evaluation result with its scoring method, what it
is for and how to load it. Plain text from the run's facts, so the same run gives the same bytes.
"""

from __future__ import annotations

import ast
import importlib.util
import json
from pathlib import Path
from typing import TYPE_CHECKING

from harness.models.sizes import SIZES

if TYPE_CHECKING:
    from harness.export.card import Result, RunFacts

SCALES_NOTE = ("Scoring methods differ in what they measure: log-likelihood, pseudo-log-likelihood, "
               "prefix and encoder-decoder log-likelihood and discriminator scores are not on one scale, "
               "so compare a number only with numbers scored the same way.")


def body(facts: RunFacts, repo_id: str | None) -> str:
    parts = [_introduction(facts), _training(facts), _evaluation(facts.results), _intended_use(facts),
             _how_to_load(facts.usage, repo_id)]
    return "\n\n".join(parts) + "\n"


def _introduction(facts: RunFacts) -> str:
    plan = facts.plan
    lines = [f"# {plan.run_id}", "",
             f"A `{plan.size}` {plan.architecture} pretrained with the `{plan.objective}` objective by "
             f"objective-harness: one run of the suite `{plan.suite}`, a comparison of pretraining "
             f"objectives at matched training compute."]
    if summary := objective_summary(plan.objective):
        lines += ["", f"`{plan.objective}`: {summary}"]
    lines += ["", "The harness rewrites this card whenever it writes the suite's report, so it holds every "
                  "evaluation result of the run so far."]
    return "\n".join(lines)


def _training(facts: RunFacts) -> str:
    plan, train, data = facts.plan, facts.train, facts.plan.data
    size = SIZES.get(plan.size)
    shape = (f": width {size.hidden}, {size.layers} layers, {size.heads} heads, MLP {size.intermediate}"
             if size else "")
    params, trained = train.get("params", plan.params), train.get("params_trained", plan.params_trained)
    extra = f" ({trained:,} trained, with heads or a generator that are not kept)" if trained != params else ""
    label = f" (reported as `{plan.label}`)" if plan.label != plan.objective else ""
    rows = [("objective", f"`{plan.objective}`{label}, config `{dumps(plan.objective_config)}`"),
            ("model", f"{plan.architecture}, size `{plan.size}`{shape}"),
            ("parameters", f"{params:,}{extra}"),
            ("data", f"{data.source}; {data.n_train_tokens:,} training tokens"),
            ("tokenizer", f"{data.tokenizer}, vocabulary {data.vocab_size:,}"),
            ("sequence length", f"{plan.seq_len} tokens"),
            ("training", f"{train.get('steps', plan.steps):,} optimizer steps, "
                         f"{train.get('tokens_seen', plan.total_tokens):,} tokens, "
                         f"{train.get('flops_spent', plan.total_flops):.3g} FLOPs"),
            ("seed", str(plan.seed))]
    if plan.budget is not None:
        rows.append(("budget", f"{plan.budget:g} {plan.budget_unit}, the same for every objective at this size"))
    if "val_loss" in train:
        rows.append(("validation loss", f"{train['val_loss']:.4f} (the objective's own loss on held-out blocks)"))
    rows.append(("harness", _commit_text(train.get("environment"))))
    return "## Training\n\n" + _table(["", ""], rows)


def _commit_text(environment: dict | None) -> str:
    if not environment:
        return "commit not recorded (trained before the harness recorded its environment)"
    version = (environment.get("versions") or {}).get("harness", "?")
    sha, dirty = environment.get("commit", "unknown"), environment.get("dirty")
    changes = {True: ", with uncommitted changes", False: ""}.get(dirty, ", changes unknown")
    return f"{version}, commit unknown" if sha == "unknown" else f"{version}, commit `{sha}`{changes}"


def _evaluation(results: list[Result]) -> str:
    if not results:
        return "## Evaluation\n\nNo evaluation results yet: `harness eval RUN_DIR` adds them."
    rows = [(_how(result), result.task, result.metric, f"{result.value:.4f}",
             "" if result.stderr is None else f"{result.stderr:.4f}",
             "" if result.chance is None else f"{result.chance:.4g}", result.scoring,
             "" if result.shots is None else str(result.shots)) for result in results]
    header = ["evaluation", "task", "metric", "value", "stderr", "chance", "scored by", "shots"]
    return "## Evaluation\n\n" + SCALES_NOTE + "\n\n" + _table(header, rows)


def _how(result: Result) -> str:
    if result.kind != "fine-tuning":
        return result.kind
    split = f", {result.split} split" if result.split else ""
    return f"fine-tuning (median of {result.seeds} seeds{split})"


def _intended_use(facts: RunFacts) -> str:
    plan, data = facts.plan, facts.plan.data
    lines = [f"A research artifact: this model exists to compare pretraining objectives. Every objective "
             f"of the suite `{plan.suite}` was trained with the same transformer block, width and depth, "
             f"the same data and tokenizer, and the same training FLOPs at each size; read its numbers "
             f"beside the other runs of the suite. It is not a general-purpose language model, and was "
             f"neither aligned nor checked for safety."]
    if data.source.startswith("synthetic"):
        lines.append(f"It was trained on the harness's {data.source}: a small generated language about "
                     f"people, places and their relations, {data.n_train_tokens:,} training tokens. It knows "
                     f"nothing of natural language.")
    else:
        lines.append(f"It was trained on {data.source}: {data.n_train_tokens:,} training tokens of which "
                     f"it saw {facts.train.get('tokens_seen', plan.total_tokens):,}.")
    if facts.description.strip():
        lines.append(f"The suite describes itself: {' '.join(facts.description.split())}")
    return "## Intended use\n\n" + "\n\n".join(lines)


def _how_to_load(usage: dict, repo_id: str | None) -> str:
    auto_class = usage.get("auto_class", "AutoModel")
    where = repo_id or "path/to/this/folder"
    remote = ", trust_remote_code=True" if usage.get("trust_remote_code") else ""
    code = (f"```python\nfrom transformers import {auto_class}, AutoTokenizer\n\n"
            f"model = {auto_class}.from_pretrained(\"{where}\"{remote})\n"
            f"tokenizer = AutoTokenizer.from_pretrained(\"{where}\")\n```")
    lines = [code]
    if remote:
        lines.append("`trust_remote_code=True` runs the modelling code saved in this folder: read it first.")
    if usage.get("use"):
        lines.append(f"Scored by `{usage.get('scoring', '?')}`. {usage['use']}")
    if usage.get("attention"):
        token = f", mode token `{usage['mode_token']}` first in the context" if usage.get("mode_token") else ""
        lines.append(f"Attention: `{usage['attention']}`{token}.")
    for name, head in sorted((usage.get("heads") or {}).items()):
        lines.append(f"Extra head `{name}`: `{dumps(head)}`.")
    if "format" in usage:
        lines.append("config.json's `harness_export` says all this in machine-readable form; "
                     "`harness.export.loader.load_exported(folder)` applies it.")
    return "## How to load\n\n" + "\n\n".join(lines)


def _table(header: list[str], rows: list[tuple]) -> str:
    cells = lambda row: "| " + " | ".join(str(c).replace("|", "\\|").replace("\n", " ") for c in row) + " |"
    return "\n".join([cells(header), "|" + "|".join(":--" for _ in header) + "|", *map(cells, rows)])


def objective_summary(name: str) -> str:
    """The first paragraph of the objective's module docstring (objectives/<name>.py), read
    without importing it (importing an objective imports torch); "" where there is none."""
    spec = importlib.util.find_spec(f"objectives.{name}")
    if spec is None or not spec.origin or not Path(spec.origin).is_file():
        return ""
    doc = ast.get_docstring(ast.parse(Path(spec.origin).read_text())) or ""
    return " ".join(doc.split("\n\n")[0].split())


def dumps(value) -> str:
    """Compact, key-sorted JSON: an objective's config or an export head, as a card shows it."""
    return json.dumps(value, sort_keys=True, separators=(", ", ": "))
