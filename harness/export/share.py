"""`harness export RUN_DIR --out DIR [--push REPO_ID] [--private]`: a trained run's model, ready to share.

DIR receives a copy of RUN/model/ (weights, tokenizer, config, the modelling code and extra heads
where the folder has them) with a model card written for it (harness.export.card; with --push, its
loading example names the repository). The copy is made beside DIR and renamed into place, so
DIR is either the whole export or untouched. DIR may be new, empty, or an earlier export, never
any other folder: it is replaced.

With --push, DIR is then uploaded to the Hugging Face Hub with huggingface_hub's HfApi
(`create_repo`, then `upload_folder`: one commit). Everything the upload needs (a reachable hub,
a token, a valid repository id) is checked before DIR is written, and one that is missing is a
UserError naming it.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

from huggingface_hub import HfApi

from harness.errors import UserError
from harness.evaluate.weights import safetensors_weights
from harness.export.card import CARD_NAME, HARNESS_TAG, card_text
from harness.failures import last_line
from harness.results import RunDir, replace_dir, write_atomic

OFFLINE_VARS = ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE")


def export_run(run_dir: Path, out: Path, push: str | None = None, private: bool = False) -> list[Path]:
    """Copy the run's model folder, with its card, to `out`; with `push`, upload it to that Hub
    repository. Returns the files of the export, relative to `out`."""
    run = finished_run(run_dir)
    out = Path(out).resolve()
    check_out(out, run)
    token = hub_token(push) if push else None
    copy_model(run, out, push)
    if push:
        upload(out, push, private, token, commit_message=f"{run.root.name}, exported by objective-harness")
    return sorted(path.relative_to(out) for path in out.rglob("*") if path.is_file())


def finished_run(run_dir: Path) -> RunDir:
    """A run that finished training, whose model folder holds safetensors weights only."""
    run = RunDir(Path(run_dir).resolve())
    if not run.run_yaml.is_file():
        raise UserError("not a run directory (run.yaml is missing)", where=str(run_dir))
    if not run.train_json.is_file() or not run.model.is_dir():
        raise UserError("this run has not finished training (train.json or model/ is missing); "
                        "`harness run` its suite first", where=str(run_dir))
    safetensors_weights(run.model)  # a pickle-based weights file is refused, naming it
    return run


def check_out(out: Path, run: RunDir) -> None:
    """DIR must be new, empty or an earlier export: it is replaced, and must hold nothing else."""
    model = run.model.resolve()
    if out == model or model in out.parents or out in model.parents:
        raise UserError(f"--out must lie outside the run's model folder and the folders above it ({model})",
                        where="--out")
    if out.exists() and not out.is_dir():
        raise UserError("exists and is not a folder; give a new or empty folder", where=str(out))
    if out.is_dir() and any(out.iterdir()) and not is_export(out):
        raise UserError("exists and holds files that are not an export of this harness; the export "
                        "replaces the folder, so give a new or empty folder, or an earlier export",
                        where=str(out))


def is_export(folder: Path) -> bool:
    """Whether `folder` holds an earlier export: a model card tagged by this harness."""
    from huggingface_hub import ModelCard

    card = folder / CARD_NAME
    try:
        return HARNESS_TAG in (ModelCard.load(card).data.tags or []) if card.is_file() else False
    except (ValueError, OSError):
        return False


def hub_token(repo_id: str) -> str:
    """The token an upload uses, after checking that the hub may be reached and `repo_id` is a
    repository id; each problem is one UserError (--push), before anything is written."""
    from huggingface_hub import get_token, is_offline_mode
    from huggingface_hub.utils import HFValidationError, validate_repo_id

    if is_offline_mode() or any(os.environ.get(name, "").upper() in ("1", "ON", "YES", "TRUE") for name in OFFLINE_VARS):
        raise UserError("the Hugging Face Hub is switched off here (HF_HUB_OFFLINE or TRANSFORMERS_OFFLINE is "
                        "set): push from a machine with network and without it, or export without --push and "
                        "upload the folder later (`hf upload REPO_ID DIR`)", where="--push")
    try:
        validate_repo_id(repo_id)
    except HFValidationError as e:
        raise UserError(f"{repo_id!r} is not a Hub repository id (expected NAME or OWNER/NAME): {last_line(e)}",
                        where="--push") from None
    token = get_token()
    if not token:
        raise UserError("no Hugging Face token: log in with `hf auth login`, or set HF_TOKEN to a token with "
                        "write access", where="--push")
    return token


def copy_model(run: RunDir, out: Path, repo_id: str | None) -> None:
    """The model folder with its card, assembled beside `out` and renamed into place. Hidden
    files (a write in progress) stay behind."""
    staging = out.parent / f".{out.name}.export.tmp"
    shutil.rmtree(staging, ignore_errors=True)
    try:
        shutil.copytree(run.model, staging, ignore=shutil.ignore_patterns(".*"))
        write_atomic(staging / CARD_NAME, card_text(run.root, repo_id))
        replace_dir(staging, out)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise


def upload(folder: Path, repo_id: str, private: bool, token: str, commit_message: str) -> None:
    """Create the Hub repository (kept if it exists) and upload `folder` in one commit."""
    api = HfApi(token=token)
    try:
        api.create_repo(repo_id, repo_type="model", private=private, exist_ok=True)
        api.upload_folder(folder_path=str(folder), repo_id=repo_id, repo_type="model",
                          commit_message=commit_message)
    except Exception as e:  # the hub's errors: refused token, no permission, network
        raise UserError(f"the upload to {repo_id} failed: {last_line(e)}; the export in {folder} is complete, "
                        f"push it again with the same command", where="--push") from None


def describe(out: Path, files: list[Path]) -> str:
    """One line on what was exported: how many files, how many bytes, where."""
    size = sum((out / path).stat().st_size for path in files)
    return f"exported {len(files)} files ({size:,} bytes) to {out}"
