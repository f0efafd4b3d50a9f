"""Training checkpoints: trusted only once complete, and loaded without running any code.

    checkpoints/step<N>/                 one DeepSpeed checkpoint: model states, and under ZeRO one
                                         optimizer partition per worker
    checkpoints/step<N>/MANIFEST.json    {"step": N, "files": {name: sha256}}, written last
    checkpoints/step<N>.untrusted/       a newer folder that failed its check, set aside on resume
    checkpoints/latest                   DeepSpeed's pointer; never trusted here

A checkpoint is complete when its manifest is there and every file matches it: rank 0 writes the
manifest after every rank saved, so a save cut short leaves a folder without one. A run resumes
from its newest complete checkpoint, whatever `latest` says. The newest two complete ones are
kept, so a torn newest one still leaves one to resume from.

Files are verified against the manifest before anything unpickles them, and are then unpickled
with torch's weights-only loader, which builds tensors, containers and the few DeepSpeed types in
`allowed_types` and nothing else: a forged manifest still cannot make a load run code.
"""

from __future__ import annotations

import os
import pickle
import re
import shutil
from pathlib import Path

from harness.errors import UserError
from harness.results import RunDir, file_sha256, read_json, write_json

MANIFEST = "MANIFEST.json"
KEEP = 2  # complete checkpoints kept: the newest may be torn later, the one before it still resumes
_TAG = re.compile(r"step(\d+)")


def tag_of(step: int) -> str:
    return f"step{step}"


def folders(checkpoints: Path) -> list[Path]:
    """Checkpoint folders, newest first."""
    if not checkpoints.is_dir():
        return []
    found = [p for p in checkpoints.iterdir() if p.is_dir() and _TAG.fullmatch(p.name)]
    return sorted(found, key=lambda p: int(_TAG.fullmatch(p.name)[1]), reverse=True)


# --- writing -----------------------------------------------------------------------------------


def seal(folder: Path, step: int) -> None:
    """Write the manifest of a checkpoint every rank has finished saving (rank 0 only)."""
    write_json(folder / MANIFEST, {"step": step, "files": {
        _name(p, folder): _synced_sha256(p) for p in _files(folder)}})


def prune(checkpoints: Path) -> None:
    """Delete complete checkpoints older than the newest KEEP; folders without a manifest stay."""
    complete = [f for f in folders(checkpoints) if (f / MANIFEST).exists()]
    for old in complete[KEEP:]:
        shutil.rmtree(old)


def set_aside(folder: Path) -> Path:
    """Move a folder that failed its check out of the way, keeping it for inspection."""
    target, n = folder.with_name(f"{folder.name}.untrusted"), 1
    while target.exists():
        target, n = folder.with_name(f"{folder.name}.untrusted.{n}"), n + 1
    folder.rename(target)
    return target


def _files(folder: Path) -> list[Path]:
    return sorted(p for p in folder.rglob("*") if p.is_file() and p != folder / MANIFEST)


def _name(path: Path, folder: Path) -> str:
    return path.relative_to(folder).as_posix()


def _synced_sha256(path: Path) -> str:
    # torch.save does not fsync: the data must be on disk before the manifest is
    with path.open("rb") as f:
        os.fsync(f.fileno())
    return file_sha256(path)


# --- checking ----------------------------------------------------------------------------------


def problem(folder: Path) -> str | None:
    """Why `folder` is not a complete checkpoint, naming the file; None when every file matches."""
    manifest = folder / MANIFEST
    if not manifest.is_file():
        return f"{manifest} is missing (the save did not finish)"
    try:
        listed = dict(read_json(manifest)["files"])
    except (ValueError, KeyError, TypeError):
        return f"{manifest} is not a manifest"
    present = {_name(p, folder): p for p in _files(folder)}
    missing, extra = sorted(listed.keys() - present.keys()), sorted(present.keys() - listed.keys())
    if missing:
        return f"{folder / missing[0]} is listed in {MANIFEST} but missing"
    if extra:
        return f"{folder / extra[0]} is not listed in {MANIFEST}"
    for name, path in present.items():
        if file_sha256(path) != listed[name]:
            return f"{path} does not match its sha256 in {MANIFEST}"
    return None


def verify(folder: Path) -> None:
    """Refuse a checkpoint folder that is not complete; run before anything unpickles its files."""
    reason = problem(folder)
    if reason:
        raise UserError(f"refused checkpoint: {reason}", where=str(folder))


def resume_point(checkpoints: Path) -> tuple[Path | None, dict[Path, str]]:
    """The newest complete checkpoint (None when no save ever started) and, for each newer folder
    passed over, why. A run that saved but has no complete checkpoint is a user error."""
    passed = {}
    for folder in folders(checkpoints):
        reason = problem(folder)
        if reason is None:
            return folder, passed
        passed[folder] = reason
    if not RunDir(checkpoints.parent).checkpoint_started:
        return None, {}
    why = "; ".join(passed.values()) or "no checkpoint folder"
    raise UserError(f"no complete checkpoint to resume from ({why}); delete {checkpoints} to train "
                    f"this run from the start", where=str(checkpoints))


# --- loading -----------------------------------------------------------------------------------


def allowed_types() -> list[type]:
    """The non-torch types DeepSpeed stores in its checkpoints, found by saving real ones under
    ZeRO 0 to 3 in fp32 and bf16: the optimizer partitions hold a loss scaler, the ZeRO stage
    and fragment addresses. Everything else is tensors, containers, numbers and strings."""
    from deepspeed.runtime.fp16.loss_scaler import LossScaler
    from deepspeed.runtime.zero.config import ZeroStageEnum
    from deepspeed.utils.tensor_fragment import fragment_address
    return [LossScaler, ZeroStageEnum, fragment_address]


def load(path, map_location=None, mmap: bool = False):
    """torch.load with weights_only=True and the allow-list; a refusal names the file."""
    import torch
    try:
        with torch.serialization.safe_globals(allowed_types()):
            return torch.load(path, map_location=map_location, weights_only=True, mmap=mmap)
    except pickle.UnpicklingError as e:
        raise UserError(f"refused to unpickle: it needs {_unsupported(str(e))}, which no checkpoint "
                        f"the harness writes holds", where=str(path)) from None


def check_loads(folder: Path) -> None:
    """Unpickle every torch file of a folder under the allow-list, mapping tensors rather than
    reading them, so that the preflight costs little even for large checkpoints."""
    for path in sorted(folder.glob("*.pt")):
        try:
            load(path, map_location="cpu", mmap=True)
        except RuntimeError as e:  # torch's reader on a cut-short zip
            raise UserError(f"corrupt checkpoint: not a complete torch archive ({str(e).splitlines()[0]}); "
                            f"delete {folder} to resume from an older checkpoint, or "
                            f"{folder.parent} to train from the start", where=str(path)) from None


def _unsupported(message: str) -> str:
    found = re.search(r"Unsupported global: GLOBAL (\S+)", message)
    if found:
        return found[1]
    found = re.search(r"WeightsUnpickler error: ([^\n]*)", message)
    return f"something else ({found[1] if found else message.splitlines()[0]})"


def check_resumable(checkpoints: Path, world_size: int, zero_stage: int) -> list[str]:
    """Refuse, before any training starts, a run whose checkpoints cannot be resumed safely;
    return a note for each newer checkpoint folder that will be passed over.

    The newest complete checkpoint (this module) must hold model states and, under ZeRO,
    one optimizer partition per worker, and every file must unpickle under the weights-only
    allow-list (tensors are mapped, not read).
    """
    folder, passed = resume_point(checkpoints)
    if folder is None:
        return []
    hint = f"; delete {checkpoints} to train this run from the start"
    files = sorted(folder.glob("*.pt"))
    partitions = [f for f in files if "optim_states" in f.name]
    if not any("model_states" in f.name for f in files):
        raise UserError(f"corrupt checkpoint: no model states{hint}", where=str(folder))
    if zero_stage >= 1 and len(partitions) != world_size:
        raise UserError(f"corrupt checkpoint: {len(partitions)} optimizer partitions for "
                        f"{world_size} workers{hint}", where=str(folder))
    check_loads(folder)
    return [f"not resuming from {f.name}: {why}; resuming from {folder.name}" for f, why in passed.items()]
