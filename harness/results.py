"""Where a suite's results live, and writes that never leave a half-written file.

    <results>/<suite>/<run_id>/run.yaml        resolved config of the run
    <results>/<suite>/<run_id>/metrics.jsonl   one line per logged step (train and validation)
    <results>/<suite>/<run_id>/checkpoints/step<N>/  a DeepSpeed checkpoint; its MANIFEST.json
                                               (sha256 of every file) is written last, after
                                               every rank saved. The newest complete one resumes
                                               (`latest` is not trusted); two are kept
    <results>/<suite>/<run_id>/model/          final model + tokenizer, Hugging Face format, and its
                                               model card, README.md (harness.export.card)
    <results>/<suite>/<run_id>/train.json      training summary, written once the model is saved
    <results>/<suite>/<run_id>/eval/<entry>.json     lm-eval's results for one task, group or tag
    <results>/<suite>/<run_id>/eval/<entry>.samples/ lm-eval's per-sample records, one gzipped
                                               file per task (harness.evaluate.samples)
    <results>/<suite>/<run_id>/finetune/<task>.json  the fine-tuning track, one classification task
    <results>/<suite>/<run_id>/DONE            written when nothing is left to do
    <results>/<suite>/<run_id>/FAILED          what failed in the latest attempt (harness.schedule)
    <results>/<suite>/<run_id>/logs/           each worker's and each unit's whole output
    <results>/<suite>/<run_id>/heartbeat.json  the training's last sign of life (harness.train.attempts)
    <results>/<suite>/<run_id>/attempts.jsonl  each attempt at training the run (harness.train.attempts)
    <results>/<suite>/suite.json               the suite's name, profile, description and current runs
    <results>/<suite>/.lock                    held by the one command writing here
    <results>/<suite>/summary.csv, report.md

Every file and folder gets the permissions the process's umask gives, as `open` and `mkdir`
would (0644 and 0755 under umask 022): results on shared storage are for colleagues too. The
temporary files and folders here are made so (`write_atomic`, `staging_dir`), never with
mkstemp's 0600 or mkdtemp's 0700; what a library writes privately is opened up with
`open_to_umask`.
"""

from __future__ import annotations

import hashlib
import json
import os
import secrets
import shutil
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import yaml



SUITE_RECORD = "suite.json"


def write_atomic(path: Path, text: str | bytes) -> None:
    """Write `text` (or bytes) to a temporary file beside `path`, then rename it into place. The
    file gets the permissions the umask gives, as `open` would (mkstemp's 0600 would hide results
    on shared storage from colleagues)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = _create_beside(path)
    try:
        with os.fdopen(fd, "wb" if isinstance(text, bytes) else "w") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def _create_beside(path: Path) -> tuple[int, Path]:
    """A new, uniquely named hidden file beside `path`, open for writing."""
    while True:
        tmp = path.parent / f".{path.name}.{secrets.token_hex(6)}.tmp"
        try:
            return os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666), tmp  # umask applies
        except FileExistsError:
            continue


def process_umask() -> int:
    """The process's umask: read from /proc where Linux shows it (setting it, even to restore it
    at once, races other threads creating files), else set and restored."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def open_to_umask(folder: Path) -> None:
    """Give `folder`, and every file and folder in it, the mode `open` and `mkdir` would have
    given (0o666 and 0o777 less the umask): for what libraries write through private temporary
    files, such as safetensors (0.8 and later write weights 0600, whatever the umask)."""
    mask = process_umask()
    for path in [Path(folder), *Path(folder).rglob("*")]:
        if not path.is_symlink():
            os.chmod(path, (0o777 if path.is_dir() else 0o666) & ~mask)


def hash_file(path: Path, digest=None):
    """`digest` (a new sha256 when None) updated with the bytes of `path`, read in 1 MiB chunks."""
    digest = hashlib.sha256() if digest is None else digest
    with Path(path).open("rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest


def file_sha256(path: Path) -> str:
    return hash_file(path).hexdigest()


def write_json(path: Path, data: Any) -> None:
    write_atomic(path, json.dumps(data, indent=2, sort_keys=True, default=str) + "\n")


def write_yaml(path: Path, data: Any) -> None:
    write_atomic(path, yaml.safe_dump(data, sort_keys=False))


def read_yaml(path: Path) -> Any:
    return yaml.safe_load(Path(path).read_text())


def read_json(path: Path) -> Any:
    return json.loads(Path(path).read_text())


def staging_dir(final: Path) -> Path:
    """A new, uniquely named hidden folder beside `final`, to fill and then move into place with
    `replace_dir`. It gets the permissions the umask gives, as `mkdir` would (mkdtemp's 0700
    would hide the folder's content from colleagues once renamed)."""
    final.parent.mkdir(parents=True, exist_ok=True)
    while True:
        folder = final.parent / f".{final.name}.{secrets.token_hex(6)}.tmp"
        try:
            folder.mkdir(mode=0o777)  # the umask applies
            return folder
        except FileExistsError:
            continue


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
        """'done', 'trained' (evaluation pending), 'partial' (a checkpoint save started: the run
        resumes, or the preflight says why it cannot) or 'new'."""
        if self.done.exists():
            return "done"
        if self.train_json.exists():
            return "trained"
        if self.checkpoint_started:  # even with no `latest`: a partial run never restarts silently
            return "partial"
        return "new"

    @property
    def checkpoint_started(self) -> bool:
        """Whether a checkpoint save ever started: a checkpoint folder (complete or not) or
        DeepSpeed's `latest` pointer."""
        checkpoints = self.checkpoints
        return (checkpoints / "latest").exists() or (checkpoints.is_dir() and any(
            p.is_dir() for p in checkpoints.iterdir()))

    def read_metrics(self) -> list[dict]:
        return read_jsonl(self.metrics) if self.metrics.exists() else []


def read_jsonl(path: Path) -> list[dict]:
    """Rows of a JSON-lines file; a last line cut short by a crash is dropped."""
    rows = []
    for line in Path(path).read_text().splitlines():
        try:
            rows.append(json.loads(line))
        except json.JSONDecodeError:
            continue
    return rows


def utc_now() -> str:
    """Now, in UTC, to the second (ISO 8601): the time stamp of the run records."""
    return datetime.now(timezone.utc).isoformat(timespec="seconds")
