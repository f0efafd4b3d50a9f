"""Experiment tracking driven directly, with no training: rows go in, and each tracker's own
reader gets them back (TensorBoard's event accumulator, MLflow's client, W&B's protobuf records).

The W&B offline file (RUN/wandb/offline-run-*/run-<id>.wandb) is a LevelDB-style log of W&B's
`Record` protobufs. wandb 0.31 ships no Python reader for it (its reader is in the Go core), so
`wandb_history` below undoes the framing and W&B's own `Record` type parses every record.
"""

from __future__ import annotations

import logging
import struct
from pathlib import Path

import pytest
import yaml
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from harness.data.entry import PreparedData
from harness.errors import UserError
from harness.jobs import TrainJob
from harness.pipeline import prepare_and_plan
from harness.results import RunDir
from harness.schema import ResourcesConfig, Suite, TrackingConfig, TrainConfig
from harness.suite import load_suite
from harness.tracking import Tracker, TensorBoard, open_tracker, remembered

# As the training loop writes them: a train row every 10 steps, a validation row after it every 20.
ROWS = sorted([{"kind": "train", "step": s, "steps": 50, "loss": 6.0 - s / 10, "accuracy": s / 100, "lr": 1e-3}
               for s in (10, 20, 30, 40, 50)] + [{"kind": "val", "step": s, "val_loss": 6.5 - s / 10} for s in (20, 40)],
              key=lambda row: (row["step"], row["kind"]))


def job(tmp_path: Path, tracking: dict | None = None) -> TrainJob:
    data = PreparedData(
        root=tmp_path, tokenizer_dir=tmp_path, train_tokens=tmp_path / "t.bin", val_tokens=tmp_path / "v.bin",
        dtype="uint16", vocab_size=512, n_train_tokens=9_000, n_val_tokens=1_000, n_val_bytes=4_100,
        special_tokens={"[EOS]": 2}, tasks_dir=tmp_path, n_train_documents=50, n_val_documents=5,
        n_train_bytes=36_000, source="synthetic world", tokenizer="bpe", val_fraction=0.1)
    return TrainJob(
        run_id="clm-tiny-s3-0123abcd", suite="tracked", objective="clm", objective_config={"k": 2},
        size="tiny", seed=3, steps=50, warmup_steps=2, flops_per_step=2.0e9, tokens_per_step=512,
        params=1000, params_trained=1000, seq_len=32, block_length=32, run_dir=tmp_path / "run", data=data,
        train=TrainConfig(lr=2e-3), resources=ResourcesConfig(), tracking=TrackingConfig(**(tracking or {})))


def log_all(plan: TrainJob, rows: list[dict], after_step: int = 0, failed: bool = False) -> None:
    tracker = open_tracker(plan, RunDir(plan.run_dir), after_step)
    for row in rows:
        tracker.log(row)
    tracker.close(failed=failed)


def tensorboard_points(run_dir: Path) -> dict[str, list[tuple[int, float]]]:
    events = EventAccumulator(str(run_dir / "tensorboard"))
    events.Reload()
    return {tag: [(e.step, e.value) for e in events.Scalars(tag)] for tag in events.Tags()["scalars"]}


def expected(rows: list[dict], kind: str, key: str) -> list[tuple[int, float]]:
    return [(r["step"], pytest.approx(r[key])) for r in rows if r["kind"] == kind]


def test_tensorboard_holds_every_row_at_its_step(tmp_path):
    plan = job(tmp_path)
    log_all(plan, ROWS)
    points = tensorboard_points(plan.run_dir)
    assert set(points) == {"train/loss", "train/accuracy", "train/lr", "val/val_loss"}
    assert points["train/loss"] == expected(ROWS, "train", "loss")
    assert points["val/val_loss"] == expected(ROWS, "val", "val_loss")


def test_a_resumed_run_leaves_no_tensorboard_point_past_its_step(tmp_path):
    plan = job(tmp_path)
    log_all(plan, ROWS, failed=True)  # crashed after step 50; its checkpoint was at step 30
    again = [{**r, "loss": r.get("loss", 0) + 1, "val_loss": r.get("val_loss", 0) + 1}
             for r in ROWS if r["step"] > 30]
    log_all(plan, again, after_step=30)
    kept = [r for r in ROWS if r["step"] <= 30]
    points = tensorboard_points(plan.run_dir)
    assert points["train/loss"] == expected(kept, "train", "loss") + expected(again, "train", "loss")
    assert points["val/val_loss"] == expected(kept, "val", "val_loss") + expected(again, "val", "val_loss")


def test_mlflow_file_store_gets_one_tagged_run_continued_on_resume(tmp_path, caplog):
    from mlflow.tracking import MlflowClient
    store = tmp_path / "mlruns"
    plan = job(tmp_path, {"mlflow": {"uri": str(store), "experiment": "unit"}})
    assert plan.tracking.mlflow.uri == store.as_uri()  # a plain path is a file store, made absolute
    with caplog.at_level(logging.WARNING, logger="harness.tracking"):
        upto30 = [r for r in ROWS if r["step"] <= 30]
        log_all(plan, upto30, failed=True)  # crashed after step 30; its checkpoint was at step 20
        log_all(plan, [r for r in ROWS if r["step"] > 20], after_step=20)  # step 30 again, then on
    assert not caplog.records  # the file store never falls back silently

    client = MlflowClient(tracking_uri=plan.tracking.mlflow.uri)
    runs = client.search_runs([client.get_experiment_by_name("unit").experiment_id])
    assert len(runs) == 1 and runs[0].info.run_id == remembered(RunDir(plan.run_dir), "mlflow")["run_id"]
    run = runs[0]
    assert run.info.run_name == plan.run_id and run.info.status == "FINISHED"
    assert {k: run.data.tags[k] for k in ("objective", "size", "seed", "run_id", "suite", "budget")} == {
        "objective": "clm", "size": "tiny", "seed": "3", "run_id": plan.run_id, "suite": "tracked",
        "budget": "1e+11"}  # no budget in this plan: 50 steps x 2e9 FLOPs
    assert run.data.params["train.lr"] == "0.002" and run.data.params["objective.k"] == "2"
    history = client.get_metric_history(run.info.run_id, "train/loss")
    assert [(m.step, m.value) for m in history] == expected(ROWS, "train", "loss")
    val = client.get_metric_history(run.info.run_id, "val/val_loss")
    assert [(m.step, m.value) for m in val] == expected(ROWS, "val", "val_loss")


def test_an_unreachable_tracker_is_warned_about_once_and_dropped(tmp_path, caplog, monkeypatch):
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_TIMEOUT", "2")
    plan = job(tmp_path, {"mlflow": {"uri": "http://127.0.0.1:9", "experiment": "unit"}})  # discard port
    with caplog.at_level(logging.WARNING, logger="harness.tracking"):
        log_all(plan, ROWS)
    assert [r.getMessage()[:32] for r in caplog.records] == ["tracking.mlflow could not start "]
    assert tensorboard_points(plan.run_dir)["train/loss"] == expected(ROWS, "train", "loss")


def test_a_tracker_failing_midway_is_dropped_after_one_warning(tmp_path, caplog):
    class Flaky:
        key, calls = "wandb", 0

        def log(self, step, values):
            Flaky.calls += 1
            raise ConnectionError("connection reset")

    tracker = Tracker(TensorBoard(tmp_path / "tensorboard", 0), [Flaky()])
    with caplog.at_level(logging.WARNING, logger="harness.tracking"):
        for row in ROWS:
            tracker.log(row)
        tracker.close()
    assert Flaky.calls == 1 and len(caplog.records) == 1 and "connection reset" in caplog.text
    assert tensorboard_points(tmp_path)["train/loss"] == expected(ROWS, "train", "loss")


def wandb_history(run_dir: Path) -> list[dict]:
    """Every history record of the run's offline W&B files, as {key: value} with `_step`."""
    from wandb.proto import wandb_internal_pb2
    rows = []
    for file in sorted(run_dir.glob("wandb/offline-run-*/run-*.wandb")):
        for payload in _leveldb_records(file.read_bytes()):
            record = wandb_internal_pb2.Record()
            record.ParseFromString(payload)
            if record.WhichOneof("record_type") == "history":
                rows.append({item.key or "/".join(item.nested_key): float(item.value_json)
                             for item in record.history.item})
    return rows


def _leveldb_records(data: bytes, block: int = 32_768):
    """The payloads of a LevelDB log (7-byte header: crc, length, type; FULL=1 FIRST=2 MIDDLE=3
    LAST=4; no header across a 32 KiB block), after W&B's 7-byte file header."""
    assert data[:4] == b":W&B"
    pos, pending = 7, b""
    while pos + 7 <= len(data):
        if block - pos % block < 7:
            pos += block - pos % block
            continue
        _, length, kind = struct.unpack("<IHB", data[pos:pos + 7])
        pending += data[pos + 7:pos + 7 + length]
        pos += 7 + length
        if kind in (1, 4):
            yield pending
            pending = b""
        if kind == 0:
            break


def test_wandb_offline_run_holds_the_metrics_under_the_run_directory(tmp_path, monkeypatch):
    monkeypatch.setenv("WANDB_MODE", "offline")
    plan = job(tmp_path, {"wandb": {"project": "unit", "mode": "offline"}})
    log_all(plan, ROWS)
    history = wandb_history(plan.run_dir)
    by_step = {}
    for row in history:
        by_step.setdefault(int(row["_step"]), {}).update(row)
    assert [(s, by_step[s]["train/loss"]) for s in sorted(by_step)] == expected(ROWS, "train", "loss")
    assert {s: by_step[s]["val/val_loss"] for s in (20, 40)} == {
        r["step"]: pytest.approx(r["val_loss"]) for r in ROWS if r["kind"] == "val"}
    assert remembered(RunDir(plan.run_dir), "wandb")["run_id"] == plan.run_id


def test_a_suite_names_its_trackers_strictly(tmp_path, monkeypatch):
    import importlib.util

    def load(tracking: dict):
        suite = tmp_path / "s.yaml"
        suite.write_text(yaml.safe_dump({"name": "t", "objectives": ["clm"], "budget": {"flops": 1e12},
                                         "tracking": tracking}))
        return load_suite(suite)

    monkeypatch.chdir(tmp_path)
    loaded = load({"mlflow": {"uri": "runs"}, "wandb": {"project": "p"}})
    assert loaded.tracking.mlflow.uri == (tmp_path / "runs").as_uri() and loaded.tracking.wandb.mode == "offline"
    with pytest.raises(UserError, match="unknown key; expected one of: mlflow, wandb") as e:
        load({"mlfow": {"uri": "runs"}})
    assert "tracking.mlfow" in e.value.where
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "wandb" else real(name, *a))
    with pytest.raises(UserError, match=r"pip install objective-harness\[tracking\]") as e:
        load({"wandb": {"project": "p"}})
    assert "tracking.wandb" in e.value.where


def test_tracking_changes_no_run_id_and_reaches_the_training_job(tmp_path):
    base = {"name": "identity", "objectives": ["clm"], "sizes": ["tiny"], "seeds": [0],
            "budget": {"tokens": 2e4, "min_steps": 5}, "train": {"micro_batch_size": 4},
            "data": {"synthetic": {"entities": 8, "documents": 200, "seed": 5}, "seq_len": 32},
            "resources": {"workers_per_run": 1}, "eval": {"tasks": ["synthetic_glue"]}}
    _, plain = prepare_and_plan(Suite.model_validate(base), tmp_path)
    tracking = {"mlflow": {"uri": str(tmp_path / "mlruns")}}
    _, tracked = prepare_and_plan(Suite.model_validate({**base, "tracking": tracking}), tmp_path)
    assert [p.run_id for p in tracked] == [p.run_id for p in plain]
    assert tracked[0].train_job().tracking.mlflow.uri == (tmp_path / "mlruns").as_uri()
    assert tracked[0].train_job().suite == "identity"
