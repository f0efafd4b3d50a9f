"""Failures the user sees: what failed is kept in the run directory (RUN/FAILED, RUN/logs/) and
named by the report; an embedded Ray that does not start is started once more; a cluster that
wants a token says which variables to set.

Everything is real: Ray (one embedded start for the module, which is itself the retry test), Ray
Train workers driving DeepSpeed engines at the tiny size, `ray start --head` with token
authentication, and `harness` commands in subprocesses. The failures are real too: token files
deleted after planning, an unknown fine-tuning task, a port held by the test.
"""

from __future__ import annotations

import dataclasses
import io
import os
import shutil
import socket
import subprocess
import sys
from datetime import datetime, timezone
from pathlib import Path

import psutil
import pytest
import ray
import yaml

from conftest import REPO
from ray_cluster import RayCluster
from harness import pipeline, schedule
from harness.errors import UserError
from harness.jobs import RunPlan
from harness.plan import plan_suite
from harness.progress import Progress
from harness.report import write_report
from harness.results import read_yaml
from harness.schema import Suite
from harness.suite import load_suite
from harness.units import FinetuneUnit, RunWork
from test_report import markdown_table, row

SUITE = {
    "name": "demo", "description": "Causal LM against masked LM, at the tiny size.",
    "objectives": ["clm", "mlm"], "sizes": ["tiny"], "seeds": [0],
    "data": {"synthetic": {"entities": 12, "documents": 600, "seed": 3}, "seq_len": 32,
             "val_fraction": 0.1, "eval_examples": 40},
    "budget": {"tokens": 20 * 8 * 32, "min_steps": 10},
    "train": {"micro_batch_size": 8, "log_every": 5, "eval_every": 20, "checkpoint_every": 10, "val_batches": 2},
    "resources": {"workers_per_run": 1},
    "eval": {"tasks": ["synthetic_glue"], "limit": 20, "finetune": {"tasks": []}},
}


def _ray_children() -> list[psutil.Process]:
    return [p for p in psutil.Process().children(recursive=True) if p.name() == "gcs_server"]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# --- starting Ray -------------------------------------------------------------------------------


def test_a_start_that_fails_twice_is_a_user_error_and_leaves_nothing_running():
    assert not ray.is_initialized()  # runs before the module's Ray starts
    held = socket.socket()
    held.bind(("127.0.0.1", 0))
    held.listen()
    unusable = {**schedule.FIRST_START, "dashboard_port": held.getsockname()[1]}
    said = []
    before = {p.pid for p in psutil.Process().children(recursive=True)}
    with pytest.raises(UserError) as err:
        schedule.start_embedded(schedule.runtime_env(False), first=unusable, retry=unusable, log=said.append)
    held.close()
    assert err.value.where == "ray (embedded)"
    assert "did not start, twice" in err.value.message and "already occupied" in err.value.message
    assert "--address auto" in err.value.message  # what to try
    assert len(said) == 1 and "starting it again" in said[0]
    assert not ray.is_initialized()
    assert {p.pid for p in psutil.Process().children(recursive=True)} <= before


@pytest.fixture(scope="module")
def ray_started():
    """The module's Ray, started as `harness run` starts it, with a first attempt that times out
    after spawning its GCS: Ray is given no time at all to wait for the GCS port."""
    said = []
    with pytest.MonkeyPatch.context() as env:
        env.setenv("RAY_gcs_server_port_wait_time_s", "0")
        schedule.start_embedded(schedule.runtime_env(False), log=said.append)
        left_set = os.environ["RAY_gcs_server_port_wait_time_s"]
    yield {"said": said, "gcs": _ray_children(), "wait_after": left_set}
    ray.shutdown()


def test_embedded_start_that_times_out_is_cleaned_up_and_retried_with_longer_waits(ray_started):
    assert len(ray_started["said"]) == 1
    assert "Timed out waiting for file" in ray_started["said"][0] and "starting it again" in ray_started["said"][0]
    assert ray.is_initialized() and ray.cluster_resources().get("CPU", 0) >= 1
    assert len(ray_started["gcs"]) == 1  # the failed attempt's GCS was stopped
    assert ray_started["wait_after"] == "0"  # the user's setting is back after the retry


# --- joining a cluster that wants a token --------------------------------------------------------
# Placed before the module's Ray runs training: joining a second cluster on this host after this
# process's own cluster has run Ray Train jobs fails to connect here (the same at the commit
# before the layered-house change), a host-level interaction left for the clusters issue.


@pytest.fixture(scope="module")
def token_cluster():
    """`ray start --head` with token authentication (a token of its own), on its own ports and
    temp dir, in its own process group (tests/ray_cluster.py); stopped by that group after."""
    cluster = RayCluster()
    try:
        cluster.start_head(num_cpus=1)
        yield {"address": cluster.address, "token": cluster.env["RAY_AUTH_TOKEN"]}
    finally:
        cluster.stop()


def test_joining_a_token_cluster_without_the_token_says_what_to_set(token_cluster, cli_suite):
    path, results = cli_suite
    address = token_cluster["address"]
    # Ray's own retry window, shortened so that the test is quick (about 20 s by default).
    done = _harness("run", str(path), "--results", str(results), "--address", address,
                    env={"RAY_AUTH_MODE": "disabled", "RAY_AUTH_TOKEN": None, "RAY_AUTH_TOKEN_PATH": None,
                         "RAY_gcs_server_port_wait_time_s": "3"})
    assert done.returncode == 2, done.stdout[-2000:] + done.stderr[-2000:]
    assert "Traceback" not in done.stderr
    error = done.stderr.strip().splitlines()[-1]
    assert error.startswith(f"error: --address: the Ray cluster at {address} requires token authentication")
    assert "RAY_AUTH_MODE is 'disabled'" in error
    for advice in ("RAY_AUTH_MODE=token", "RAY_AUTH_TOKEN ", "RAY_AUTH_TOKEN_PATH", "ray get-auth-token"):
        assert advice in error

    # The advice works: with those variables set, the same join succeeds.
    joined = subprocess.run(
        [sys.executable, "-c", "import sys; from harness import schedule; "
         f"schedule.join({address!r}, schedule.runtime_env(False)); print('joined')"],
        capture_output=True, text=True, cwd=REPO, timeout=300,
        env={**os.environ, "PYTHONPATH": str(REPO), "RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN": token_cluster["token"]})
    assert joined.stdout.strip().endswith("joined"), joined.stderr[-2000:]


# --- a failed run, in its directory and in the report ------------------------------------------


def test_failed_runs_are_recorded_with_worker_logs_reported_and_cleared_by_a_later_success(
        ray_started, tiny_data, tmp_path):
    tokens = tmp_path / "tokens" / "train.bin"
    tokens.parent.mkdir()
    shutil.copy(tiny_data.train_tokens, tokens)
    suite_dir = tmp_path / "results" / "demo"
    plans = plan_suite(Suite.model_validate(SUITE), dataclasses.replace(tiny_data, train_tokens=tokens), suite_dir)
    clm, mlm = plans
    work = [dataclasses.replace(w, units=[]) for w in pipeline._pending(plans, Progress(io.StringIO()))]
    tokens.rename(tokens.with_suffix(".away"))  # deleted after planning: every worker fails

    out = io.StringIO()
    outcome = schedule.execute(work, pipeline.mark_done, Progress(out), poll_s=1)
    assert outcome.finished == [] and set(outcome.failed) == {f"train {clm.run_id}", f"train {mlm.run_id}"}
    failed_lines = [line for line in out.getvalue().splitlines() if "FAILED" in line]
    assert len(failed_lines) == 2 and all(len(line) < 500 for line in failed_lines)
    assert all("FileNotFoundError" in line and "/FAILED and logs/" in line for line in failed_lines)

    failure = _only_failure(clm)
    assert (failure["failed"], failure["error"], failure["after_step"], failure["steps"]) == (
        "train", "FileNotFoundError", 0, clm.steps)
    assert failure["message"].startswith("FileNotFoundError: [Errno 2]") and "train.bin" in failure["message"]
    tail = failure["error_tail"].splitlines()
    assert 5 < len(tail) <= 30 and any("in train_worker" in line for line in tail)
    when = datetime.fromisoformat(failure["when"])
    assert when.tzinfo == timezone.utc and abs((datetime.now(timezone.utc) - when).total_seconds()) < 3600
    log = Path(clm.run_dir) / "logs" / "worker-0.log"
    assert failure["logs"] == [str(log)]
    text = log.read_text()  # the worker's whole output: DeepSpeed's lines, then the traceback, once
    assert "DeepSpeed" in text and text.count("in train_worker") == 1 and text.count("FileNotFoundError:") == 1

    report = write_report(suite_dir, "Suite demo")[1].read_text()
    assert "**Partial results: 0 of 2 planned runs are done.** 2 failed" in report
    failed = markdown_table(report, "Failed runs")
    assert {r["run"] for r in failed} == {clm.run_id, mlm.run_id}
    assert row(failed, run=clm.run_id)["at step"] == f"0 of {clm.steps}"
    assert row(failed, run=clm.run_id)["logs"] == f"{clm.run_id}/logs/worker-0.log"
    training = markdown_table(report, "Training")
    assert row(training, objective="clm")["seeds"] == "0 of 1"
    assert row(training, objective="mlm")["val loss [95% CI]"] == "failed"
    assert row(markdown_table(report, "Unfinished runs"), run=mlm.run_id)["state"] == (
        f"training failed at step 0 of {mlm.steps}")

    # Again with the tokens back: clm trains (its training failure is gone), then a unit fails.
    tokens.with_suffix(".away").rename(tokens)
    retry = RunWork(clm.run_id, clm.run_dir, clm.steps, clm.train_job(), [FinetuneUnit(clm.eval_job(), "no_such_task")])
    outcome = schedule.execute([retry], pipeline.mark_done, Progress(io.StringIO()), poll_s=1)
    assert list(outcome.failed) == [f"finetune {clm.run_id} no_such_task"]
    failure = _only_failure(clm)
    assert (failure["failed"], failure["error"], failure["after_step"]) == ("finetune no_such_task", "UserError", clm.steps)
    assert "unknown fine-tuning task 'no_such_task'" in Path(failure["logs"][0]).read_text()
    assert not (Path(clm.run_dir) / "DONE").exists()
    report = write_report(suite_dir, "Suite demo")[1].read_text()
    training = markdown_table(report, "Training")
    assert row(training, objective="clm")["seeds"] == "1" and row(training, objective="mlm")["seeds"] == "0 of 1"
    assert row(markdown_table(report, "Unfinished runs"), run=clm.run_id)["state"] == (
        "trained; failed: finetune no_such_task")

    # The task leaves the suite: nothing is left to do for clm, which is done, and FAILED goes.
    no_units = clm.eval.model_copy(update={"tasks": [], "bits_per_byte": False,
                                           "finetune": clm.eval.finetune.model_copy(update={"tasks": []})})
    pipeline._pending([clm.model_copy(update={"eval": no_units})], Progress(io.StringIO()))
    assert (Path(clm.run_dir) / "DONE").exists() and not (Path(clm.run_dir) / "FAILED").exists()
    report = write_report(suite_dir, "Suite demo")[1].read_text()
    assert "**Partial results: 1 of 2 planned runs are done.** 1 failed" in report
    assert [r["run"] for r in markdown_table(report, "Failed runs")] == [mlm.run_id]


def _only_failure(plan: RunPlan) -> dict:
    recorded = read_yaml(Path(plan.run_dir) / "FAILED")
    assert recorded["run_id"] == plan.run_id and len(recorded["failures"]) == 1
    return recorded["failures"][0]


# --- the command line, when every run fails ----------------------------------------------------


def _harness(*args: str, env: dict | None = None, timeout: int = 600) -> subprocess.CompletedProcess:
    """`harness ARGS` in a subprocess; `env` adds variables (None removes one)."""
    merged = {key: value for key, value in {**os.environ, **(env or {})}.items() if value is not None}
    return subprocess.run([sys.executable, "-m", "harness.cli", *args], capture_output=True, text=True,
                          cwd=REPO, timeout=timeout, env=merged)


@pytest.fixture(scope="module")
def cli_suite(tmp_path_factory):
    """A one-run suite whose prepared data lost its validation tokens after preparation."""
    root = tmp_path_factory.mktemp("cli")
    path, results = root / "demo.yaml", root / "results"
    path.write_text(yaml.safe_dump({**SUITE, "objectives": ["clm"]}))
    data, _ = pipeline.prepare_and_plan(load_suite(path, "default", []), results)
    data.val_tokens.unlink()
    return path, results


@pytest.fixture(scope="module")
def all_failed(cli_suite):
    path, results = cli_suite
    return _harness("run", str(path), "--results", str(results)), results / "demo"


def test_when_every_run_fails_the_command_lists_them_and_exits_1_without_a_traceback(all_failed):
    done, suite_dir = all_failed
    assert done.returncode == 1, done.stdout[-3000:] + done.stderr[-3000:]
    assert "Traceback" not in done.stdout + done.stderr
    failed = [line for line in done.stdout.splitlines() if "FAILED train clm-tiny-s0-" in line]
    assert failed and all("FileNotFoundError" in line and "val.bin" in line for line in failed)
    assert "/FAILED and logs/" in failed[-1]
    report = (suite_dir / "report.md").read_text()
    assert report.startswith("# Suite demo\n\n## Headline\n\n- No run has finished: nothing to compare yet.\n\n"
                             "Caveats:\n\n- Partial: 0 of 1 planned runs are done; the answer may change.\n\n"
                             "Causal LM against masked LM, at the tiny size.\n\n"
                             "**Partial results: 0 of 1 planned runs are done.** 1 failed")
    assert "val.bin" in row(markdown_table(report, "Failed runs"), failed="train")["error"]
    assert row(markdown_table(report, "Training"), objective="clm")["seeds"] == "0 of 1"


def test_harness_report_keeps_the_description_and_says_the_report_is_partial(all_failed, tmp_path):
    _, suite_dir = all_failed
    (suite_dir / "report.md").unlink()
    done = _harness("report", str(suite_dir))
    assert done.returncode == 0, done.stderr
    assert "Partial results: 0 of 1 planned runs are done. 1 failed" in done.stdout
    report = (suite_dir / "report.md").read_text()
    assert report.startswith("# Suite demo\n\n## Headline\n\n")
    assert "\n\nCausal LM against masked LM, at the tiny size.\n\n**Partial" in report

    empty = _harness("report", str(tmp_path))
    assert empty.returncode == 2 and "no runs here" in empty.stderr and "Traceback" not in empty.stderr
