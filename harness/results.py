"""Where a suite's results live, and writes that never leave a half-written file.

    <results>/<suite>/<run_id>/run.yaml        resolved config of the run
    <results>/<suite>/<run_id>/metrics.jsonl   one line per logged step (train and validation)
    <results>/<suite>/<run_id>/checkpoints/    DeepSpeed checkpoints (resume from the latest)
    <results>/<suite>/<run_id>/model/          final model + tokenizer, Hugging Face format
    <results>/<suite>/<run_id>/train.json      training summary, written once the model is saved
    <results>/<suite>/<run_id>/eval/<entry>.json     lm-eval's results for one task, group or tag
    <results>/<suite>/<run_id>/finetune/<task>.json  the fine-tuning track, one classification task
    <results>/<suite>/<run_id>/DONE            written when nothing is left to do
    <results>/<suite>/<run_id>/FAILED          what failed in the latest attempt (harness.schedule)
    <results>/<suite>/<run_id>/logs/           each worker's and each unit's whole output
    <results>/<suite>/summary.csv, report.md
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
import zipfile
from pathlib import Path
from typing import Any

import yaml

from harness.errors import UserError


def write_atomic(path: Path, text: str) -> None:
    """Write `text` to a temporary file beside `path`, then rename it into place."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def write_json(path: Path, data: Any) -> None:
    write_atomic(path, json.dumps(data, indent=2, sort_keys=True, default=str) + "\n")


def write_yaml(path: Path, data: Any) -> None:
    write_atomic(path, yaml.safe_dump(data, sort_keys=False))


def read_yaml(path: Path) -> Any:
    return yaml.safe_load(Path(path).read_text())


def read_json(path: Path) -> Any:
    return json.loads(Path(path).read_text())


def replace_dir(staging: Path, final: Path) -> None:
    """Move a fully written directory into place, replacing any older one."""
    if final.exists():
        old = final.with_name(f".{final.name}.old")
        shutil.rmtree(old, ignore_errors=True)
        final.rename(old)
        staging.rename(final)
        shutil.rmtree(old, ignore_errors=True)
    else:
        staging.rename(final)


class RunDir:
    """The files of one run, and what state they say the run is in."""

    def __init__(self, root: Path):
        self.root = Path(root)

    run_yaml = property(lambda self: self.root / "run.yaml")
    metrics = property(lambda self: self.root / "metrics.jsonl")
    checkpoints = property(lambda self: self.root / "checkpoints")
    model = property(lambda self: self.root / "model")
    train_json = property(lambda self: self.root / "train.json")
    eval_dir = property(lambda self: self.root / "eval")
    finetune_dir = property(lambda self: self.root / "finetune")
    done = property(lambda self: self.root / "DONE")
    failed = property(lambda self: self.root / "FAILED")
    logs = property(lambda self: self.root / "logs")

    @property
    def state(self) -> str:
        """'done', 'trained' (evaluation pending), 'partial' (resumable) or 'new'."""
        if self.done.exists():
            return "done"
        if self.train_json.exists():
            return "trained"
        if (self.checkpoints / "latest").exists():
            return "partial"
        return "new"

    def read_metrics(self) -> list[dict]:
        return read_jsonl(self.metrics) if self.metrics.exists() else []

    def check_checkpoint(self, world_size: int, zero_stage: int) -> None:
        """Refuse, before any training starts, a checkpoint that cannot be resumed.

        Cheap structural checks only: `latest` names a saved tag holding model states and, under
        ZeRO, one optimizer partition per worker, and every file is a complete torch archive (a
        save cut short leaves a truncated zip).
        """
        hint = f"; delete {self.checkpoints} to train this run from the start"
        tag = (self.checkpoints / "latest").read_text().strip()
        folder = self.checkpoints / tag
        if not tag or not folder.is_dir():
            raise UserError(f"corrupt checkpoint: 'latest' names '{tag}', which is not there{hint}",
                            where=str(self.checkpoints))
        files = sorted(folder.glob("*.pt"))
        partitions = [f for f in files if "optim_states" in f.name]
        if not any("model_states" in f.name for f in files):
            raise UserError(f"corrupt checkpoint: no model states{hint}", where=str(folder))
        if zero_stage >= 1 and len(partitions) != world_size:
            raise UserError(f"corrupt checkpoint: {len(partitions)} optimizer partitions for "
                            f"{world_size} workers{hint}", where=str(folder))
        for path in files:
            if not zipfile.is_zipfile(path):
                raise UserError(f"corrupt checkpoint: not a complete torch archive{hint}", where=str(path))


def read_jsonl(path: Path) -> list[dict]:
    """Rows of a JSON-lines file; a last line cut short by a crash is dropped."""
    rows = []
    for line in Path(path).read_text().splitlines():
        try:
            rows.append(json.loads(line))
        except json.JSONDecodeError:
            continue
    return rows
