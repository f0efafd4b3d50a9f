"""Several nodes: a real Ray cluster on this machine (tests/ray_cluster.py), with token
authentication, given suites by `harness submit` to its dashboard (a Ray Job) or joined by
`harness run --address` in a subprocess.

The cluster (one for the module): a head with no CPU and the dashboard, where the job's driver and
every run's Ray Train controller live, and two worker nodes of one CPU each, so that a one-worker
run fills a node.
Node "b" runs in a mount namespace of its own, where an empty folder hides the folder `hidden`
(as root; elsewhere test 1 is skipped).

1. A suite whose results folder is under `hidden` stops before any run starts (exit 2), naming
   node b and the path; the same cluster then runs a suite with its results elsewhere:
2. `harness submit` of a two-run suite returns at once; a second submit while the job lives is
   refused, naming it; `harness jobs status|logs|list` follow the job to its end; the two runs,
   trained at once, land on different nodes (train.json records each rank's node); the cluster's
   token is nowhere in the results;
   a raw Ray job running `harness run` with a relative results folder is refused;
3. last (the cluster loses a node): the node of a training run is killed after the run's first
   checkpoint; Ray Train restarts the run's worker on the other node, from that checkpoint.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest
import yaml

from conftest import REPO
from harness import cli
from harness.nodes import runs_that_fit
from harness.schema import ResourcesConfig
from ray_cluster import RayCluster

SUITE = {
    "name": "nodes", "objectives": ["clm", "mlm"], "sizes": ["tiny"], "seeds": [0],
    "data": {"synthetic": {"entities": 12, "documents": 600, "seed": 3}, "seq_len": 32,
             "val_fraction": 0.1, "eval_examples": 40},
    "budget": {"tokens": 20 * 8 * 32, "min_steps": 10},
    "train": {"micro_batch_size": 8, "log_every": 5, "eval_every": 20, "checkpoint_every": 10, "val_batches": 2},
    "resources": {"workers_per_run": 1, "cpus_per_worker": 1},
    "eval": {"tasks": ["synthetic_sst2"], "limit": 10, "bits_per_byte": False, "finetune": {"tasks": []}},
}
# One run, long enough to lose its node mid-training.
PREEMPTED = {**SUITE, "name": "preempted", "objectives": ["clm"], "budget": {"tokens": 300 * 8 * 32, "min_steps": 10}}


# --- without a cluster ----------------------------------------------------------------------------


def test_a_results_uri_is_refused_before_anything_is_written(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(SystemExit) as exit:
        cli.main(["run", str(REPO / "suites" / "clm_vs_mlm.yaml"), "--results", "s3://bucket/results"])
    assert exit.value.code == 2
    error = capsys.readouterr().err.strip().splitlines()[-1]
    assert error.startswith("harness run: error: argument --results: 's3://bucket/results' is a URI; give a folder path")
    assert "every node mounts" in error and list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("nodes, per_run, expected", [
    ([{"CPU": 0}, {"CPU": 1}, {"CPU": 1}], {"workers_per_run": 1}, 2),           # the module's cluster
    ([{"CPU": 3}, {"CPU": 1}], {"workers_per_run": 1, "cpus_per_worker": 2}, 1),  # 4 CPUs, one 2-CPU worker fits
    ([{"CPU": 4}, {"CPU": 2}, {"CPU": 1}], {"workers_per_run": 2, "cpus_per_worker": 2}, 1),
    ([{"CPU": 8, "GPU": 1}, {"CPU": 8, "GPU": 2}], {"workers_per_run": 1, "use_gpu": True, "cpus_per_worker": 4}, 3),
    ([{"CPU": 1}], {"workers_per_run": 2}, 1),                                     # never none: it waits instead
])
def test_runs_are_counted_node_by_node(nodes, per_run, expected):
    assert runs_that_fit(nodes, ResourcesConfig.model_validate(per_run)) == expected


# --- the cluster -----------------------------------------------------------------------------------


CAN_HIDE = os.geteuid() == 0 and shutil.which("unshare") is not None  # a mount namespace needs root


def _hide(folder: Path, empty: Path) -> list[str]:
    """A command line that runs the rest of its arguments in a private mount namespace where
    `folder` shows the (empty) folder `empty`: that node cannot see what is in `folder`."""
    return ["unshare", "--mount", "--propagation", "private", "sh", "-c",
            'mount --bind "$0" "$1" && shift && exec "$@"', str(empty), str(folder)]


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    hidden, empty = tmp_path_factory.mktemp("hidden"), tmp_path_factory.mktemp("empty")
    ray = RayCluster()
    try:
        started = time.time()
        ray.env["PYTHONPATH"] = ""  # a submitted job runs the code it carries
        ray.env["PATH"] = f"{Path(sys.executable).parent}:{os.environ['PATH']}"  # and this environment's python
        ray.start_head(num_cpus=0, dashboard=True)
        ray.add_node(num_cpus=1, name="a")
        ray.add_node(num_cpus=1, name="b", wrap=_hide(hidden, empty) if CAN_HIDE else [])
        ids = {node.name: ray.node_ids()[node.node_manager_port] for node in ray.nodes}
        print(f"\ncluster of 3 nodes started in {time.time() - started:.1f} s: {ids}")
        yield ray, ids, hidden
    finally:
        ray.stop()


@pytest.fixture(scope="module")
def results(tmp_path_factory):
    """The results root the module's suites share (their prepared data, too)."""
    return tmp_path_factory.mktemp("results")


def _suite_file(folder: Path, suite: dict) -> Path:
    path = folder / f"{suite['name']}.yaml"
    path.write_text(yaml.safe_dump(suite))
    return path


def _run(cluster: RayCluster, suite: Path, results: Path, **popen) -> subprocess.CompletedProcess | subprocess.Popen:
    """`harness run SUITE --address ... --results ...` in a subprocess with the cluster's token;
    with `popen` arguments, started and returned at once."""
    command = [sys.executable, "-m", "harness.cli", "run", str(suite), "--address", cluster.address,
               "--results", str(results)]
    env = {k: v for k, v in {**os.environ, "PYTHONPATH": str(REPO), **cluster.env}.items() if v is not None}
    if popen:
        return subprocess.Popen(command, cwd=REPO, env=env, text=True, **popen)
    return subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True, timeout=600)


@pytest.mark.skipif(not CAN_HIDE, reason="hiding a folder from one node takes root (unshare --mount)")
def test_a_node_that_cannot_see_the_results_folder_stops_the_suite_naming_it(cluster, tmp_path):
    ray, ids, hidden = cluster
    results = hidden / "results"
    started = time.time()
    done = _run(ray, _suite_file(tmp_path, SUITE), results)
    print(f"\nrefused in {time.time() - started:.1f} s")
    assert done.returncode == 2, done.stdout[-3000:] + done.stderr[-3000:]
    assert "Traceback" not in done.stderr
    error = done.stderr.strip().splitlines()[-1]
    assert error.startswith("error: --results: the results folder is not shared with every node of the cluster: "
                            f"node {ids['b']} ("), error
    assert f") cannot see {results}/.storage-check-" in error and "every node mounts" in error
    blind = error.split(" (a file the driver, on node ")[0]
    assert ids["a"] not in blind and ids["head"] not in blind and f"the driver, on node {ids['head']}, wrote" in error
    assert not list(results.glob(".storage-check-*"))  # the token file is removed
    runs = [p for p in (results / "nodes").iterdir() if p.is_dir()]
    assert len(runs) == 2 and all(sorted(p.name for p in run.iterdir()) == ["run.yaml"] for run in runs)


def _harness(ray: RayCluster, *args: str) -> subprocess.CompletedProcess:
    env = {k: v for k, v in {**os.environ, "PYTHONPATH": str(REPO), **ray.env}.items() if v is not None}
    return subprocess.run([sys.executable, "-m", "harness.cli", *args], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=300)


def _wait_for_end(ray: RayCluster, job_id: str, lock: Path, timeout_s: float = 900) -> tuple[str, list[str]]:
    """Poll `harness jobs status` until the job ends; the lock records seen meanwhile."""
    deadline, holders = time.time() + timeout_s, []
    while time.time() < deadline:
        if lock.is_file():
            holders.append(lock.read_text())
        state = _harness(ray, "jobs", "status", job_id, "--address", ray.dashboard).stdout.split()
        if state[1:2] and state[1] in ("SUCCEEDED", "FAILED", "STOPPED"):
            return state[1], holders
        time.sleep(2)
    raise TimeoutError(f"job {job_id} did not end within {timeout_s:.0f} s")


@pytest.fixture(scope="module")
def two_runs(cluster, results, tmp_path_factory):
    """The two-run suite, submitted as a Ray Job: (submit, refused second submit, final state,
    lock records seen while it ran, the job's logs, suite folder)."""
    ray, _, _ = cluster
    suite = _suite_file(tmp_path_factory.mktemp("suite"), SUITE)
    started = time.time()
    first = _harness(ray, "submit", str(suite), "--results", str(results), "--address", ray.dashboard)
    assert first.returncode == 0, first.stdout[-3000:] + first.stderr[-3000:]
    job_id = re.search(r"as Ray job (\S+);", first.stdout).group(1)
    second = _harness(ray, "submit", str(suite), "--results", str(results), "--address", ray.dashboard)
    state, holders = _wait_for_end(ray, job_id, results / "nodes" / ".lock")
    logs = _harness(ray, "jobs", "logs", job_id, "--address", ray.dashboard).stdout
    print(f"\ntwo-run suite submitted and finished in {time.time() - started:.1f} s")
    return {"first": first, "second": second, "job_id": job_id, "state": state, "holders": holders,
            "logs": logs, "suite_dir": results / "nodes"}


def test_a_submitted_suite_runs_after_the_submitter_exits_and_the_second_submit_is_refused(cluster, two_runs):
    ray, _, _ = cluster
    job_id, logs = two_runs["job_id"], two_runs["logs"]
    assert f"harness jobs logs --follow {job_id}" in two_runs["first"].stdout  # the submitter has exited
    second = two_runs["second"]
    assert second.returncode == 2 and f"Ray job {job_id}" in second.stderr, second.stderr[-2000:]
    assert two_runs["state"] == "SUCCEEDED", logs[-4000:]
    assert re.search(r"train +clm-tiny-s0-[\w.]+-\w+ started", logs) and "report: " in logs
    holders = [json.loads(h) for h in two_runs["holders"] if h.strip()]
    assert holders and all(h.get("ray_job") == job_id for h in holders)  # the lock names the job
    token = ray.env["RAY_AUTH_TOKEN"]
    for path in two_runs["suite_dir"].parent.rglob("*"):
        assert not path.is_file() or token.encode() not in path.read_bytes(), path
    assert token not in logs
    listed = _harness(ray, "jobs", "list", "--address", ray.dashboard).stdout
    assert job_id in listed and str(two_runs["suite_dir"].parent) in listed


def test_the_runs_of_a_suite_land_on_different_nodes_and_say_where(cluster, two_runs):
    _, ids, _ = cluster
    suite_dir = two_runs["suite_dir"]
    assert two_runs["state"] == "SUCCEEDED", two_runs["logs"][-4000:]
    assert f"results folder {suite_dir.parent}: seen by all 3 nodes" in two_runs["logs"]
    trained = [json.loads(path.read_text()) for path in sorted(suite_dir.glob("*/train.json"))]
    assert [t["objective"] for t in trained] == ["clm", "mlm"]
    workers = [t["workers"] for t in trained]
    assert all(len(w) == 1 and w[0]["rank"] == 0 and w[0]["node_ip"] and w[0]["host"] for w in workers)
    assert {w[0]["node_id"] for w in workers} == {ids["a"], ids["b"]}  # one run on each worker node
    assert all((suite_dir / t["run_id"] / "DONE").exists() for t in trained)
    for t in trained:  # each unit computed on the one CPU it reserved (eval.cpus)
        assert "computing on 1 threads (eval.cpus: 1)" in (suite_dir / t["run_id"] / "logs" / "eval-synthetic_sst2.log").read_text()
    summary = pd.read_csv(suite_dir / "summary.csv")
    assert len(summary) == 2 and not [c for c in summary.columns if "workers" in c or "node" in c]


RAW_JOB = """
import sys, time
from pathlib import Path
from harness import submit
jobs = submit.client(sys.argv[1])
suite = submit.stage(Path(sys.argv[2]), Path(sys.argv[3]))
job_id = jobs.submit_job(entrypoint=f"python -m harness.cli run {suite}", runtime_env={"working_dir": sys.argv[3]})
while str(jobs.get_job_status(job_id)) not in ("SUCCEEDED", "FAILED", "STOPPED"):
    time.sleep(1)
print("JOB", job_id, jobs.get_job_status(job_id))
print(jobs.get_job_logs(job_id))
"""


def test_harness_run_in_a_ray_job_refuses_a_relative_results_path(cluster, tmp_path):
    """What a new user tries: `ray job submit --working-dir . -- harness run SUITE` (the results
    would stay in Ray's temporary copy of the working directory)."""
    ray, _, _ = cluster
    staged = tmp_path / "staged"
    staged.mkdir()
    env = {k: v for k, v in {**os.environ, "PYTHONPATH": str(REPO), **ray.env}.items() if v is not None}
    done = subprocess.run([sys.executable, "-c", RAW_JOB, ray.dashboard, str(_suite_file(tmp_path, SUITE)), str(staged)],
                          capture_output=True, text=True, timeout=400, cwd=REPO, env=env)
    assert done.returncode == 0, done.stderr[-3000:]
    job_id, state = done.stdout.split("JOB ", 1)[1].split()[:2]
    assert state == "FAILED"
    assert f"error: --results: this `harness run` is Ray job {job_id}" in done.stdout, done.stdout[-3000:]
    assert "absolute path" in done.stdout and "Traceback" not in done.stdout


# --- last: the cluster loses a node --------------------------------------------------------------


def test_a_run_whose_node_is_lost_resumes_on_the_other_node(cluster, results, tmp_path):
    ray, ids, _ = cluster
    run = _run(ray, _suite_file(tmp_path, PREEMPTED), results, stdout=(tmp_path / "out").open("w"),
               stderr=subprocess.STDOUT)
    try:
        run_dir = _wait_for_checkpoint(results / "preempted", run)
        lost = _node_of_worker(ray, run_dir / "logs" / "worker-0.log")
        at_step = (run_dir / "checkpoints" / "latest").read_text().strip()
        killed = time.time()
        ray.kill(lost)
        run.wait(timeout=600)
    finally:
        if run.poll() is None:
            run.kill()
    out = (tmp_path / "out").read_text()
    assert run.returncode == 0, out[-4000:]
    survivor = ids["a" if lost.name == "b" else "b"]
    train = json.loads((run_dir / "train.json").read_text())
    assert [w["node_id"] for w in train["workers"]] == [survivor]
    log = (run_dir / "logs" / "worker-0.log").read_text()
    starts = _starts(log)
    assert len(starts) == 2  # the first worker, then the one Ray Train started on the other node
    rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows if r["kind"] == "train"] == list(range(5, train["steps"] + 1, 5))
    seen = {what: f"{when - killed:.1f} s" for what, when in _ray_saw(ray).items()}
    print(f"\nnode {lost.name} killed (checkpoint {at_step} written); then {seen}; the run's worker restarted "
          f"{starts[1] - killed:.1f} s later on the other node; the suite ended {time.time() - killed:.1f} s after the kill")


def _ray_saw(ray: RayCluster) -> dict[str, float]:
    """When (epoch seconds) Ray Train decided to restart the worker group, and when the GCS marked
    the node dead, from the head node's logs (for the figures the test prints; {} if not found)."""
    from datetime import datetime
    logs, found = ray.temp / "ray" / "session_latest" / "logs", {}
    patterns = {"Ray Train restarts the workers": ("train/ray-train-app-controller-*.log", r'"asctime": "([^"]+)", '
                                                   r'"levelname": "INFO", "message": "\[FailurePolicy\] RETRY'),
                "the GCS marks the node dead": ("gcs_server.out", r"^\[([^\]]+?) [IW] .*has been marked dead")}
    for what, (glob, pattern) in patterns.items():
        for path in logs.glob(glob):
            match = re.search(pattern, path.read_text(errors="replace"), re.M)
            if match:
                found[what] = datetime.strptime(match.group(1), "%Y-%m-%d %H:%M:%S,%f").timestamp()
    return found


def _wait_for_checkpoint(suite_dir: Path, run: subprocess.Popen, timeout_s: float = 300) -> Path:
    """The run folder, once its first checkpoint is sealed (DeepSpeed's `latest` written)."""
    deadline = time.time() + timeout_s
    while time.time() < deadline:
        assert run.poll() is None, "harness run ended before the run's first checkpoint"
        found = list(suite_dir.glob("*/checkpoints/latest"))
        if found:
            return found[0].parent.parent
        time.sleep(0.2)
    raise TimeoutError("no checkpoint")


def _node_of_worker(ray: RayCluster, log: Path):
    """The node whose process group holds the worker that wrote `log` (its first line names its
    process: harness.trainers.output_to)."""
    pid = int(re.search(r"process (\d+) ---", log.read_text()).group(1))
    session = os.getsid(pid)
    return next(node for node in ray.nodes if node.process.pid == session)


def _starts(log: str) -> list[float]:
    """When each worker process began writing the log (its header lines)."""
    from datetime import datetime
    return [datetime.fromisoformat(when).timestamp() for when in re.findall(r"^--- (\S+), process \d+ ---$", log, re.M)]
