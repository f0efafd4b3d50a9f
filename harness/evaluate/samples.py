"""lm-eval's per-sample records of an evaluation, kept gzipped beside its result.

lm-eval logs, for every document it scores, what it asked the model and what came back: the
document, the requests (the prompt and each continuation), the model's answers (a
log-likelihood and an is-greedy flag per choice), the target, each metric's value on the
document and the hashes of document, prompt and target. The harness keeps them for each entry
of `eval.tasks` (`eval.log_samples`), one file per task evaluated:

    eval/<entry>.samples/<task>.jsonl.gz     one JSON line per document (and filter)

A task's file holds exactly the lines lm-eval's own `--log_samples` writes
(`samples_<task>_<date>.jsonl`, by its EvaluationTracker): requests as {"gen_args_<i>":
{"arg_<j>": ...}}, answers and target as text ("-4.8125", "False"), non-ASCII kept. So the files
read with the tools that read lm-eval's, once un-gzipped. The entry names the folder, since one
entry (a group such as `mmlu`, a tag such as `glue`) evaluates many tasks; no date is in any
name, and the gzip stream has no file name and time stamp 0, so that two identical evaluations
write identical bytes. The folder is written whole, then renamed into place, before the result
JSON (whose existence marks the entry done).

Light: json and gzip only, no lm_eval (`harness eval worst` reads these without it).
"""

from __future__ import annotations

import gzip
import json
import shutil
import zlib
from collections.abc import Iterable, Mapping
from pathlib import Path

from harness.errors import UserError
from harness.results import replace_dir, staging_dir, write_atomic

FOLDER_SUFFIX = ".samples"
FILE_SUFFIX = ".jsonl.gz"
GZIP_LEVEL = 6  # zlib's default; 9 took half again the time for files 0.4% smaller on these records
LOG_SAMPLES_HINT = ("samples are kept when the suite's `eval.log_samples` is true (the default); "
                    "evaluate the task again to write them: `harness eval RUN_DIR --tasks TASK --log-samples`")


def samples_dir(out_dir: Path, entry: str) -> Path:
    """The folder of an entry's samples: `out_dir/<entry>.samples/`."""
    return Path(out_dir) / f"{entry}{FOLDER_SUFFIX}"


def lm_eval_record(sample: Mapping) -> dict:
    """One logged sample as lm-eval's EvaluationTracker writes it to its samples file: the
    requests' arguments numbered ({"gen_args_0": {"arg_0": context, "arg_1": continuation}}),
    answers and target turned to text, every other key as it is (in its order). The sample
    given is left unchanged (the tracker changes its own in place)."""
    record = dict(sample)
    record["arguments"] = {f"gen_args_{i}": {f"arg_{j}": arg for j, arg in enumerate(args)}
                           for i, args in enumerate(sample["arguments"])}
    record["resps"] = _as_text(sample["resps"])
    record["filtered_resps"] = _as_text(sample["filtered_resps"])
    record["target"] = str(sample["target"])
    return record


def _as_text(value):
    """Lists and tuples kept (nested), every leaf as str(): how lm-eval sanitizes answers."""
    if isinstance(value, list):
        return [_as_text(item) for item in value]
    if isinstance(value, tuple):
        return tuple(_as_text(item) for item in value)
    return str(value)


def _jsonable(value):
    """What json cannot write itself, as lm-eval's `handle_non_serializable` writes it: numpy
    numbers as numbers, sets as lists, anything else as its str()."""
    if hasattr(value, "item") and hasattr(value, "dtype"):  # a numpy scalar
        return value.item()
    if isinstance(value, set):
        return list(value)
    return str(value)


def encode_samples(samples: Iterable[Mapping]) -> bytes:
    """The gzipped JSON lines of lm-eval's samples file; no file name, time stamp 0."""
    lines = "".join(json.dumps(lm_eval_record(sample), default=_jsonable, ensure_ascii=False) + "\n"
                    for sample in samples)
    return gzip.compress(lines.encode("utf-8"), compresslevel=GZIP_LEVEL, mtime=0)


def write_samples(out_dir: Path, entry: str, samples: Mapping[str, list[dict]]) -> Path:
    """Write one file per task of lm-eval's `samples` (task -> logged samples) into
    `out_dir/<entry>.samples/`, replacing that folder whole; returns it."""
    final = samples_dir(out_dir, entry)
    staging = staging_dir(final)
    try:
        for task, rows in sorted(samples.items()):
            write_atomic(staging / f"{task}{FILE_SUFFIX}", encode_samples(rows))
        replace_dir(staging, final)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return final


def remove_samples(out_dir: Path, entry: str) -> None:
    """Remove an entry's samples (an evaluation that keeps none must leave no stale ones)."""
    shutil.rmtree(samples_dir(out_dir, entry), ignore_errors=True)


def read_samples(path: Path) -> list[dict]:
    """The records of one samples file; a file that is not gzipped JSON lines is a UserError."""
    try:
        with gzip.open(path, "rt", encoding="utf-8") as f:
            return [json.loads(line) for line in f if line.strip()]
    except FileNotFoundError:
        raise UserError("no such samples file", where=str(path)) from None
    except (OSError, EOFError, zlib.error, UnicodeDecodeError, json.JSONDecodeError) as error:
        raise UserError(f"not a gzipped samples file of lm-eval records ({error})", where=str(path)) from None


def task_sample_files(eval_dir: Path, task: str) -> list[Path]:
    """The samples files of `task` in a run's `eval/`: the task's own file under whichever entry
    evaluated it, else every file of the entry named `task` (a group or a tag). A UserError,
    naming the file looked for and how to get it, when there is none."""
    eval_dir = Path(eval_dir)
    own = sorted(eval_dir.glob(f"*{FOLDER_SUFFIX}/{task}{FILE_SUFFIX}"))
    files = own or sorted(samples_dir(eval_dir, task).glob(f"*{FILE_SUFFIX}"))
    if not files:
        expected = samples_dir(eval_dir, task) / f"{task}{FILE_SUFFIX}"
        known = sorted(path.name.removesuffix(FILE_SUFFIX) for path in eval_dir.glob(f"*{FOLDER_SUFFIX}/*{FILE_SUFFIX}"))
        stored = f"; stored: {', '.join(known)}" if known else ""
        raise UserError(f"no samples of task '{task}' in this run{stored}; {LOG_SAMPLES_HINT}",
                        where=str(expected))
    return files
