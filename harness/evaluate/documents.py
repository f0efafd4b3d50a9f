"""Per-document scores of an evaluation, beside its result: `eval/<entry>.documents.jsonl`.

lm-eval logs, for every document it scores, the value of each metric on that document (acc 0
or 1, acc_norm 0 or 1). The report pairs two objectives document by document with them
(harness.analysis.paired), so each entry's are kept, one JSON line per (task, document, metric):

    {"task": "synthetic_glue", "doc_id": "0", "metric": "acc", "value": 1.0}

`task` is the row the report shows (a task, a group, a member of a tag); under a group the
document id names the leaf task too ("mmlu_anatomy/12"), as ids restart in every leaf. Only
numbers are kept: rolling-likelihood metrics (bits_per_byte of the held-out text) log a
(log-likelihood, length) pair per document, which is no per-document score, so the held-out
entry has no documents file. Light: no lm_eval import, the report reads these.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable, Mapping
from pathlib import Path

import pandas as pd

from harness.errors import UserError
from harness.results import write_atomic

SUFFIX = ".documents.jsonl"
COLUMNS = ("task", "metric", "doc_id", "value")


def documents_path(out_dir: Path, entry: str) -> Path:
    return Path(out_dir) / f"{entry}{SUFFIX}"


def document_rows(samples: Mapping[str, list[dict]], leaves: Mapping[str, list[str]]) -> list[dict]:
    """The per-document rows of lm-eval's logged `samples` (leaf task -> samples), for each
    reported task and its leaf tasks (`leaves`: reported task -> leaves; a task is its own)."""
    rows = []
    for task, task_leaves in leaves.items():
        for leaf in task_leaves:
            prefix = "" if task_leaves == [task] else f"{leaf}/"
            for sample in sorted(samples.get(leaf, []), key=lambda s: (s["doc_id"], s.get("filter", "none"))):
                rows += _sample_rows(task, prefix, sample)
    return rows


def _sample_rows(task: str, prefix: str, sample: dict) -> list[dict]:
    # A metric under another filter than "none" keeps its "metric,filter" name, as plain_metrics does.
    suffix = "" if sample.get("filter", "none") == "none" else f",{sample['filter']}"
    return [{"task": task, "doc_id": f"{prefix}{sample['doc_id']}", "metric": f"{metric}{suffix}",
             "value": float(sample[metric])}
            for metric in sample["metrics"] if _is_number(sample.get(metric))]


def _is_number(value) -> bool:
    return isinstance(value, (bool, int, float)) and math.isfinite(float(value))


def write_documents(out_dir: Path, entry: str, rows: Iterable[dict]) -> None:
    """Write the rows atomically to `out_dir/<entry>.documents.jsonl`; with none, remove an
    earlier file so that no stale documents outlive their result."""
    path, rows = documents_path(out_dir, entry), list(rows)
    if not rows:
        path.unlink(missing_ok=True)
        return
    write_atomic(path, "".join(json.dumps(row) + "\n" for row in rows))


def read_documents(run_dir: Path) -> pd.DataFrame:
    """Every entry's per-document scores of a run (`run_dir/eval/*.documents.jsonl`) as one frame
    with columns task, metric, doc_id (str), value (float); empty when there are none."""
    rows = []
    for path in sorted((Path(run_dir) / "eval").glob(f"*{SUFFIX}")):
        rows += _read_file(path)
    frame = pd.DataFrame.from_records(rows, columns=list(COLUMNS))
    return frame.astype({"task": str, "metric": str, "doc_id": str, "value": float})


def _read_file(path: Path) -> list[dict]:
    rows = []
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        try:
            row = json.loads(line)
            rows.append({"task": row["task"], "metric": row["metric"], "doc_id": str(row["doc_id"]),
                         "value": float(row["value"])})
        except (ValueError, KeyError, TypeError) as error:
            raise UserError(f"line {number}: expected a JSON object with {', '.join(COLUMNS)} ({error})",
                            where=str(path)) from None
    return rows
