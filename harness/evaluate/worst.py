"""The worst-scored examples of a task, from the samples an evaluation kept (`harness eval worst`).

Each record of lm-eval's samples (harness.evaluate.samples) is scored by how wrong the model was
on it, by what the task asked:

- multiple choice: the margin, the gold choice's log-likelihood minus the best wrong choice's
  (below 0: a wrong choice won; the most negative first). The raw log-likelihoods are the
  ones lm-eval's `acc` compares;
- one continuation (lambada-like): its log-likelihood, the lowest first;
- rolling log-likelihood (the held-out text): the document's bits per byte, the highest first;
- generation: the first metric of the record (exact_match, say), the lowest first.

Which one a record is comes from its requests, as lm-eval built them: a generation request
carries its generation settings (a dict), a rolling one only the text, a multiple-choice
document several (context, continuation) requests and a single continuation one. Light: no
lm_eval import.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from harness.evaluate.samples import FILE_SUFFIX, read_samples, task_sample_files

PROMPT_CHARS = 600  # a longer prompt (few-shot examples first) is shown by its end
TEXT_CHARS = 300    # a held-out document is shown by its start
RANKED_BY = {
    "multiple_choice": "the gold choice's log-likelihood minus the best wrong choice's, most negative first",
    "loglikelihood": "the target's log-likelihood, lowest first",
    "loglikelihood_rolling": "bits per byte of the document, highest first",
    "generate_until": "the record's first metric, lowest first",
}


@dataclass(frozen=True)
class Example:
    """One document, scored: `badness` orders them (the larger, the worse), `lines` show it."""

    kind: str
    task: str
    doc_id: str
    badness: float
    summary: str
    lines: tuple[str, ...]


def request_args(record: dict) -> list[list]:
    """The records' requests, in order: [[context, continuation], ...] (or [text], [context, settings])."""
    numbered = record["arguments"]
    if isinstance(numbered, list):  # as lm-eval logs them before writing
        return [list(args) for args in numbered]
    order = sorted(numbered, key=lambda key: int(key.rsplit("_", 1)[1]))
    return [[numbered[key][arg] for arg in sorted(numbered[key], key=lambda a: int(a.rsplit("_", 1)[1]))]
            for key in order]


def kind_of(record: dict) -> str:
    """multiple_choice, loglikelihood, loglikelihood_rolling or generate_until (see the module)."""
    requests = request_args(record)
    if any(len(args) > 1 and isinstance(args[1], dict) for args in requests):
        return "generate_until"
    if all(len(args) == 1 for args in requests):
        return "loglikelihood_rolling"
    return "multiple_choice" if len(requests) > 1 else "loglikelihood"


def worst(records: Iterable[tuple[str, dict]], n: int) -> tuple[list[Example], int]:
    """The `n` worst of (task, record) pairs, worst first, ties by task and document; and how
    many were scored."""
    scored = [example for task, record in records if (example := score(task, record)) is not None]
    scored.sort(key=lambda e: (-e.badness, e.task, _doc_order(e.doc_id)))
    return scored[:n], len(scored)


def _doc_order(doc_id: str) -> tuple:
    return (0, int(doc_id), "") if doc_id.isdigit() else (1, 0, doc_id)


def score(task: str, record: dict) -> Example | None:
    """The record scored by its kind; None when it cannot be (no gold among the choices, say)."""
    scorer = {"multiple_choice": _multiple_choice, "loglikelihood": _continuation,
              "loglikelihood_rolling": _rolling, "generate_until": _generation}[kind_of(record)]
    return scorer(task, record)


def _multiple_choice(task: str, record: dict) -> Example | None:
    requests = request_args(record)
    if "acc_mutual_info" in record.get("metrics", []):  # the unconditional requests come second
        requests = requests[:len(requests) // 2]
    lls = [float(resp[0]) for resp in record["filtered_resps"][:len(requests)]]
    choices = [args[1] for args in requests]
    gold = gold_indices(record.get("target"), choices)
    wrong = [i for i in range(len(choices)) if i not in gold]
    if not gold or not wrong:
        return None
    best_gold, best_wrong = max(gold, key=lls.__getitem__), max(wrong, key=lls.__getitem__)
    margin, chosen = lls[best_gold] - lls[best_wrong], max(range(len(lls)), key=lls.__getitem__)
    rows = [f"  {'gold' if i in gold else '':<4} {'chosen' if i == chosen else '':<6} {ll:>10.3f}  {choice!r}"
            for i, (choice, ll) in enumerate(zip(choices, lls))]
    summary = (f"margin {margin:.3f}: gold {choices[best_gold]!r} "
               f"{'below' if margin < 0 else 'above'} {choices[best_wrong]!r}")
    return Example("multiple_choice", task, str(record["doc_id"]), -margin, summary,
                   (*_prompt_lines(requests[0][0]), f"  gold chosen {'log-lik.':>10}  choice", *rows))


def gold_indices(target, choices: list[str]) -> list[int]:
    """The gold choices of a record's target as lm-eval writes it (text): an index ("2"), a list
    of indices ("[0, 2]"), or a choice's own text."""
    text = str(target).strip()
    try:
        value = json.loads(text)
    except ValueError:
        value = None
    if isinstance(value, int) and not isinstance(value, bool):
        value = [value]
    if isinstance(value, list) and all(isinstance(v, int) and 0 <= v < len(choices) for v in value):
        return sorted(set(value))
    return [i for i, choice in enumerate(choices) if choice.strip() == text]


def _continuation(task: str, record: dict) -> Example:
    (context, continuation), = request_args(record)
    ll, greedy = record["filtered_resps"][0][:2]
    return Example("loglikelihood", task, str(record["doc_id"]), -float(ll),
                   f"log-likelihood {float(ll):.3f} of the target (greedy: {greedy})",
                   (*_prompt_lines(context), f"  target {continuation!r}"))


def _rolling(task: str, record: dict) -> Example:
    text = request_args(record)[0][0]
    ll, n_bytes = record.get("bits_per_byte") or (float(record["filtered_resps"][0]), len(text.encode()))
    bits = -float(ll) / max(int(n_bytes), 1) / math.log(2)
    shown = text[:TEXT_CHARS] + ("..." if len(text) > TEXT_CHARS else "")
    return Example("loglikelihood_rolling", task, str(record["doc_id"]), bits, f"{bits:.3f} bits per byte over {n_bytes} bytes",
                   (f"  text: {shown!r}",))


def _generation(task: str, record: dict) -> Example:
    metric = next((m for m in record.get("metrics", []) if _is_number(record.get(m))), None)
    value = float(record[metric]) if metric else math.nan
    generated = record["filtered_resps"][0] if record["filtered_resps"] else ""
    filtered = record.get("filter", "none")
    return Example("generate_until", task, str(record["doc_id"]), -value if metric else math.inf,
                   f"{metric or 'no metric'} {value:.3f}" + (f" (filter {filtered})" if filtered != "none" else ""),
                   (*_prompt_lines(request_args(record)[0][0]), f"  target    {record.get('target')!r}",
                    f"  generated {generated!r}"))


def _is_number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _prompt_lines(prompt: str) -> tuple[str, ...]:
    shown = prompt if len(prompt) <= PROMPT_CHARS else "..." + prompt[-PROMPT_CHARS:]
    return ("  prompt:", *(f"    {line}" for line in shown.splitlines() or [""]))


def worst_of_run(eval_dir: Path, task: str, n: int) -> str:
    """The `n` worst examples of `task` in a run's `eval/` folder, as text; a UserError naming
    the samples file when there is none (harness.evaluate.samples.task_sample_files)."""
    records = [(path.name.removesuffix(FILE_SUFFIX), record)
               for path in task_sample_files(eval_dir, task) for record in read_samples(path)]
    examples, scored = worst(records, n)
    return render(examples, scored, task)


def render(examples: list[Example], scored: int, task: str) -> str:
    """The examples as text, numbered worst first, with a header saying how they were ranked."""
    kinds = sorted({e.kind for e in examples})
    ranked = "; ".join(f"{kind}: {RANKED_BY[kind]}" for kind in kinds) or "nothing to rank"
    head = f"{task}: the {len(examples)} worst of {scored} documents (ranked by {ranked})"
    blocks = [f"#{rank} {e.task} doc {e.doc_id}: {e.summary}\n" + "\n".join(e.lines)
              for rank, e in enumerate(examples, 1)]
    return "\n\n".join([head, *blocks]) + "\n"
