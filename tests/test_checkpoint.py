"""Checkpoints of real tiny runs: sealed by a manifest written last, resumed from the newest
complete one whatever `latest` says, and never able to run code. A planted pickle is refused
both by the preflight and by the worker's resume, and its side effect never happens."""

from __future__ import annotations

import io
import json
import shutil
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from safetensors.torch import load_file

from harness.train import checkpoint
from harness.errors import UserError
from harness.pipeline import _pending
from harness.plan import plan_suite
from harness.progress import Progress
from harness.results import RunDir
from harness.schema import Suite
from children import spawn

MODEL_STATES = "mp_rank_00_model_states.pt"
PARTITION = "zero_pp_rank_0_mp_rank_00_optim_states.pt"


def _plan(tiny_data, results: Path):
    suite = Suite.model_validate({
        "name": "ckpt", "objectives": ["mlm"], "sizes": ["tiny"], "seeds": [0],
        "data": {"synthetic": {"entities": 12, "documents": 600, "seed": 3}, "seq_len": 32,
                 "val_fraction": 0.1, "eval_examples": 40},
        "budget": {"tokens": 40 * 8 * 32, "min_steps": 10},  # 20 optimizer steps
        "train": {"micro_batch_size": 8, "grad_accum": 2, "log_every": 5, "eval_every": 20,
                  "checkpoint_every": 5, "val_batches": 2},
        "resources": {"workers_per_run": 1}})
    return plan_suite(suite, tiny_data, results)[0]


def _train(plan_dict: dict, crash_at_step: int | None, record: str | None, error: str) -> None:
    """Child process: train. Each step run is noted in `record` with the checkpoint folders seen
    as it begins; with crash_at_step, die abruptly when that step begins; a UserError's text goes
    to `error` and the exit status is 2, as from the command line."""
    import os

    import harness.train.worker as train
    step_fn = train._train_step
    folders = Path(plan_dict["run_dir"]) / "checkpoints"

    def watched(engine, objective, sampler, plan, step, rank):
        if step == crash_at_step:
            os._exit(3)  # no clean-up, as when a node is lost
        if record:
            with open(record, "a") as f:
                f.write(json.dumps({"step": step, "checkpoints": sorted(os.listdir(folders)) if folders.is_dir() else []}) + "\n")
        return step_fn(engine, objective, sampler, plan, step, rank)
    train._train_step = watched
    try:
        train.train_worker(plan_dict)
    except UserError as e:
        Path(error).write_text(str(e))
        sys.exit(e.exit_code)


def _in_child(plan, tmp_path: Path, crash_at_step: int | None = None) -> SimpleNamespace:
    """Run `plan` in a spawned process; its exit code, the steps it ran, and any UserError text."""
    record, error = tmp_path / "steps.jsonl", tmp_path / "error.txt"
    args = (plan.train_job().model_dump(mode="json"), crash_at_step, str(record), str(error))
    exitcode = spawn(_train, *args)
    steps = [json.loads(line) for line in record.read_text().splitlines()] if record.exists() else []
    return SimpleNamespace(exitcode=exitcode, steps=steps,
                           error=error.read_text() if error.exists() else "")


@pytest.fixture(scope="module")
def runs(tiny_data, tmp_path_factory):
    """An uninterrupted run, and one that died as step 16 began (checkpoints at 5, 10 and 15)."""
    root = tmp_path_factory.mktemp("ckpt")
    whole, crashed = _plan(tiny_data, root / "whole"), _plan(tiny_data, root / "crashed")
    assert whole.steps == 20
    assert _in_child(whole, root / "whole").exitcode == 0
    assert _in_child(crashed, root / "crashed", crash_at_step=16).exitcode == 3
    return SimpleNamespace(whole=Path(whole.run_dir), crashed=crashed)


def _copy(runs, tmp_path: Path):
    """A fresh copy of the crashed run, and its plan."""
    plan = runs.crashed.model_copy(update={"run_dir": tmp_path / "results" / runs.crashed.run_id})
    shutil.copytree(runs.crashed.run_dir, plan.run_dir)
    return plan, RunDir(Path(plan.run_dir))


def _preflight(plan) -> str:
    out = io.StringIO()
    _pending([plan], Progress(out))
    return out.getvalue()


def _losses(run_dir: Path) -> dict[int, float]:
    rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    return {r["step"]: r["loss"] for r in rows if r["kind"] == "train"}


def _assert_same_model(a: Path, b: Path) -> None:
    assert _losses(a) == _losses(b)
    wa, wb = load_file(a / "model" / "model.safetensors"), load_file(b / "model" / "model.safetensors")
    assert wa.keys() == wb.keys() and all(torch.equal(wa[k], wb[k]) for k in wa)


def _snapshot(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def test_every_saved_checkpoint_is_sealed_and_the_newest_two_are_kept(runs):
    run = RunDir(Path(runs.crashed.run_dir))
    assert [f.name for f in checkpoint.folders(run.checkpoints)] == ["step15", "step10"]
    for folder in checkpoint.folders(run.checkpoints):
        manifest = json.loads((folder / checkpoint.MANIFEST).read_text())
        assert manifest["step"] == int(folder.name[4:])
        assert sorted(manifest["files"]) == sorted(p.name for p in folder.glob("*.pt"))
        assert {MODEL_STATES, PARTITION} <= set(manifest["files"])
        assert checkpoint.problem(folder) is None
    assert run.state == "partial"


def test_without_latest_the_run_resumes_from_its_newest_complete_checkpoint(runs, tmp_path):
    plan, run = _copy(runs, tmp_path)
    (run.checkpoints / "latest").unlink()
    assert run.state == "partial"
    assert "1 to resume, 0 to train" in _preflight(plan)
    child = _in_child(plan, tmp_path)
    assert child.exitcode == 0, child.error
    assert [s["step"] for s in child.steps] == list(range(15, 20))  # resumed, not restarted
    assert {"step10", "step15"} <= set(child.steps[0]["checkpoints"])  # nothing complete deleted
    _assert_same_model(run.root, runs.whole)


def _tear(folder: Path, how: str) -> Path:
    """Damage a checkpoint as a crash or a bad copy would; return the file named in the notes."""
    if how == "unsealed":
        (folder / checkpoint.MANIFEST).unlink()
        return folder / checkpoint.MANIFEST
    path = folder / (PARTITION if how == "truncated" else MODEL_STATES)
    if how == "truncated":
        path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    else:
        path.unlink()
    return path


@pytest.mark.parametrize("how", ["truncated", "missing", "unsealed"])
def test_the_preflight_passes_over_a_torn_newest_checkpoint(runs, tmp_path, how):
    plan, run = _copy(runs, tmp_path)
    named = _tear(run.checkpoints / "step15", how)
    out = _preflight(plan)
    assert "not resuming from step15" in out and str(named) in out and "resuming from step10" in out
    assert "1 to resume" in out and "delete" not in out


def test_a_torn_newest_checkpoint_resumes_from_the_one_before(runs, tmp_path):
    plan, run = _copy(runs, tmp_path)
    _tear(run.checkpoints / "step15", "truncated")
    child = _in_child(plan, tmp_path)
    assert child.exitcode == 0, child.error
    assert [s["step"] for s in child.steps] == list(range(10, 20))
    assert {"step10", "step15.untrusted"} <= set(child.steps[0]["checkpoints"])  # set aside, kept
    _assert_same_model(run.root, runs.whole)


def test_no_complete_checkpoint_is_a_user_error_and_nothing_is_deleted(runs, tmp_path):
    plan, run = _copy(runs, tmp_path)
    for folder in checkpoint.folders(run.checkpoints):
        _tear(folder, "unsealed")
    before = _snapshot(run.checkpoints), run.metrics.read_bytes()
    with pytest.raises(UserError, match="no complete checkpoint") as info:
        _preflight(plan)
    assert info.value.where == str(run.checkpoints) and info.value.exit_code == 2
    child = _in_child(plan, tmp_path)
    assert child.exitcode == 2 and child.error.startswith(f"{run.checkpoints}: no complete checkpoint")
    assert not child.steps
    assert (_snapshot(run.checkpoints), run.metrics.read_bytes()) == before


class _Plant:
    """Pickles to a call of open(marker, "w"): unpickling it creates the marker file."""

    def __init__(self, marker: Path):
        self.marker = str(marker)

    def __reduce__(self):
        return (open, (self.marker, "w"))


def _plant(path: Path, marker: Path) -> None:
    torch.save({"module": _Plant(marker), "global_steps": 15}, path)  # a well-formed torch zip


def test_the_planted_pickle_would_run_if_loaded_as_deepspeed_does(tmp_path):
    """The control for the next test: the plant does create its marker when unpickled freely."""
    _plant(tmp_path / "plant.pt", tmp_path / "marker")
    torch.load(tmp_path / "plant.pt", weights_only=False)
    assert (tmp_path / "marker").exists()


@pytest.mark.parametrize("manifest", ["stale", "forged"])
def test_a_planted_pickle_is_refused_and_never_runs(runs, tmp_path, manifest):
    plan, run = _copy(runs, tmp_path)
    marker = tmp_path / "marker"
    for folder in checkpoint.folders(run.checkpoints):
        _plant(folder / MODEL_STATES, marker)
        if manifest == "forged":  # digests that match the plant: only the weights-only load stands
            checkpoint.seal(folder, int(folder.name[4:]))
    planted = run.checkpoints / "step15" / MODEL_STATES
    with pytest.raises(UserError) as info:
        _preflight(plan)
    assert str(planted) in str(info.value) and info.value.exit_code == 2
    assert ("io.open" in str(info.value)) == (manifest == "forged")
    child = _in_child(plan, tmp_path)
    assert child.exitcode == 2 and str(planted) in child.error and not child.steps
    assert not marker.exists()


class _Stop(Exception):
    pass


def _stop_and_resume(plan_dicts: list[dict], out: str) -> None:
    """Child process: for each plan, stop as step 6 begins (a checkpoint was saved at step 5),
    check the run as the preflight does, then resume it; note the first step each resume runs."""
    import harness.train.worker as train
    step_fn, stopping, first = train._train_step, [True], {}

    def watched(engine, objective, sampler, plan, step, rank):
        if stopping[0] and step == 6:
            raise _Stop
        first.setdefault(plan.train.zero_stage, (step, type(engine.optimizer).__name__))
        return step_fn(engine, objective, sampler, plan, step, rank)
    train._train_step = watched
    for plan in plan_dicts:
        stopping[0] = True
        with pytest.raises(_Stop):
            train.train_worker(plan)
        first.pop(plan["train"]["zero_stage"])
        run = RunDir(Path(plan["run_dir"]))
        assert checkpoint.problem(run.checkpoints / "step5") is None  # sealed by its manifest
        checkpoint.check_resumable(run.checkpoints, 1, plan["train"]["zero_stage"])
        stopping[0] = False
        train.train_worker(plan)
    Path(out).write_text(json.dumps(first))


def test_every_zero_stage_resumes_through_the_weights_only_loader(runs, tmp_path):
    """The allow-list covers what DeepSpeed stores under ZeRO 0 to 3 (stage 2 is tested above)."""
    def at(stage):
        train = runs.crashed.train.model_copy(update={"zero_stage": stage})
        plan = runs.crashed.model_copy(update={"run_dir": tmp_path / f"zero{stage}", "steps": 8, "train": train})
        return plan.train_job().model_dump(mode="json")
    out = tmp_path / "first_steps.json"
    assert spawn(_stop_and_resume, [at(s) for s in (0, 1, 3)], str(out)) == 0
    first = json.loads(out.read_text())
    assert {stage: step for stage, (step, _) in first.items()} == {"0": 5, "1": 5, "3": 5}
    assert first["3"][1] == "DeepSpeedZeroOptimizer_Stage3"
