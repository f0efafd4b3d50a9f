"""Training on one process (no Ray): a run killed after a checkpoint resumes to exactly the
model an uninterrupted run reaches, reading the same blocks and logging each step once.

The run here uses the wsd schedule, a LambdaLR the harness hands DeepSpeed (harness.train.lr),
and is killed in its decay: the schedule's state must come back from the checkpoint too.
DeepSpeed's own cosine schedule resumes in tests/test_checkpoint.py."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from harness import provenance
from harness.plan import plan_suite
from harness.schema import Suite
from harness.train.lr import wsd_factor
from harness.train.startup import PARTS
from harness.train.worker import deepspeed_config
from children import spawn


def _plan(tiny_data, results: Path, objective: str):
    suite = Suite.model_validate({
        "name": "resume", "objectives": [objective], "sizes": ["tiny"], "seeds": [0],
        "data": {"synthetic": {"entities": 12, "documents": 600, "seed": 3}, "seq_len": 32,
                 "val_fraction": 0.1, "eval_examples": 40},
        "budget": {"tokens": 40 * 8 * 32, "min_steps": 10},
        "train": {"micro_batch_size": 8, "grad_accum": 2, "log_every": 5, "eval_every": 20,
                  "checkpoint_every": 10, "val_batches": 2,
                  "schedule": "wsd", "warmup_fraction": 0.1, "decay_fraction": 0.3},  # decay: steps 14-19
        "resources": {"workers_per_run": 1}})
    # budget.tokens counts grad_accum micro-steps too: 40 * 8 * 32 tokens are 20 optimizer steps
    return plan_suite(suite, tiny_data, results)[0]


def _train(plan_dict: dict, crash_at_step: int | None, record: str | None) -> None:
    """Child process: train, noting each step index run in `record`; with crash_at_step, die
    abruptly when that step begins."""
    import os

    import harness.train.worker as train
    step_fn = train._train_step

    def watched(engine, objective, sampler, plan, step, rank):
        if step == crash_at_step:
            os._exit(3)  # no clean-up, as when a node is lost
        if record:
            with open(record, "a") as f:
                f.write(f"{step}\n")
        return step_fn(engine, objective, sampler, plan, step, rank)
    train._train_step = watched
    train.train_worker(plan_dict)


def _in_child(plan_dict: dict, crash_at_step: int | None = None, record: Path | None = None) -> int:
    args = (plan_dict, crash_at_step, str(record) if record else None)
    return spawn(_train, *args)


def _rows(run_dir: Path) -> list[dict]:
    return [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]


def test_resume_after_a_crash_matches_an_uninterrupted_run(tiny_data, tmp_path):
    whole = _plan(tiny_data, tmp_path / "whole", "mlm")
    broken = _plan(tiny_data, tmp_path / "broken", "mlm")
    assert whole.steps == 20
    assert _in_child(whole.train_job().model_dump(mode="json")) == 0

    # Die six steps after the checkpoint at step 10 (step 15 is logged), then run it again.
    assert _in_child(broken.train_job().model_dump(mode="json"), crash_at_step=16) == 3
    run = Path(broken.run_dir)
    assert (run / "checkpoints" / "latest").read_text().strip() == "step10"
    assert max(r["step"] for r in _rows(run)) > 10  # rows past the checkpoint were logged
    assert not (run / "model").exists() and not (run / "train.json").exists()
    record = tmp_path / "steps_run_after_resume.txt"
    assert _in_child(broken.train_job().model_dump(mode="json"), record=record) == 0
    assert record.read_text().split() == [str(i) for i in range(10, 20)]  # resumed, not restarted

    steps = [r["step"] for r in _rows(run) if r["kind"] == "train"]
    assert steps == list(range(5, 21, 5))  # each step logged once
    def losses(rows):
        return {r["step"]: r["loss"] for r in rows if r["kind"] == "train"}
    assert losses(_rows(run)) == losses(_rows(Path(whole.run_dir)))
    # The learning rate logged after step k is the one of step k + 1 (0-based k): wsd's, resumed too.
    lrs = {r["step"]: r["lr"] for r in _rows(run) if r["kind"] == "train"}
    expected = {k: whole.train.lr * wsd_factor(k, steps=20, warmup=2, decay=6, min_ratio=whole.train.min_lr_ratio)
                for k in lrs}
    assert whole.warmup_steps == 2 and lrs == pytest.approx(expected, rel=1e-12)
    assert lrs == {r["step"]: r["lr"] for r in _rows(Path(whole.run_dir)) if r["kind"] == "train"}
    a = load_file(Path(whole.run_dir) / "model" / "model.safetensors")
    b = load_file(run / "model" / "model.safetensors")
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    assert not (run / "checkpoints").exists()  # removed once the model is saved
    # A lone process (no Ray) records its host; the node is Ray's to name (tests/test_cluster.py).
    train = json.loads((run / "train.json").read_text())
    assert [(w["rank"], w["node_id"], w["node_ip"], bool(w["host"])) for w in train["workers"]] == [(0, None, None, True)]
    # What it ran with (versions, commit, hardware: this process's, the same code and machine) and
    # the DeepSpeed config the engine was given (no scheduler under wsd: the harness's LambdaLR).
    assert train["environment"] == provenance.environment()
    assert train["deepspeed_config"] == deepspeed_config(broken.train_job()) and "scheduler" not in train["deepspeed_config"]
    # Its start-up, in parts: a lone process has no worker group; every later part was timed.
    startup = train["startup"]
    assert set(startup["parts_s"]) == set(PARTS) - {"worker_group"} and all(s >= 0 for s in startup["parts_s"].values())
    assert startup["to_first_step_s"] == pytest.approx(sum(startup["parts_s"].values()), abs=0.01)
    assert startup["parts_s"]["resume"] > 0 and startup["began"] <= (run / "train.json").stat().st_mtime
