"""Ray: where runs are scheduled. The only module that imports ray.

`harness run` starts an embedded local Ray (dashboard bound to 127.0.0.1) unless it is given
the address of an existing cluster. Each training run is one Ray Train TorchTrainer (its workers
drive DeepSpeed, see harness.train), launched from a Ray task so that several runs can proceed at
once where the cluster has room. After training, each unit of evaluation (one lm-eval task,
group or tag, the held-out bits per byte, one fine-tuning task) is a Ray task of its own, so
units of one run and of different runs proceed in parallel where resources allow. At most as many runs are in
flight as the cluster can hold, so no trainer sits waiting for workers.
"""

from __future__ import annotations

import os
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import ray

import harness
import objectives
from harness.plan import RunPlan
from harness.progress import Progress, duration


def connect(address: str | None, use_gpu: bool) -> None:
    """Start an embedded Ray, or join the cluster at `address` ('auto' or HOST:PORT)."""
    env = {"env_vars": {"DS_ACCELERATOR": "cuda" if use_gpu else "cpu", "PYTHONUNBUFFERED": "1"}}
    if address:
        # Ship this checkout's packages, so that cluster nodes run the same code as the driver.
        env["py_modules"] = [os.path.dirname(harness.__file__), os.path.dirname(objectives.__file__)]
        ray.init(address=address, runtime_env=env, log_to_driver=False)
    else:
        ray.init(include_dashboard=True, dashboard_host="127.0.0.1", runtime_env=env,
                 log_to_driver=False, configure_logging=False)


def shutdown() -> None:
    ray.shutdown()


@ray.remote(num_cpus=0)
def _fit(plan: dict) -> None:
    from ray.train import FailureConfig, RunConfig, ScalingConfig
    from ray.train.torch import TorchConfig, TorchTrainer

    from harness.train import train_worker

    res = plan["resources"]
    trainer = TorchTrainer(
        train_worker, train_loop_config=plan,
        scaling_config=ScalingConfig(num_workers=res["workers_per_run"], use_gpu=res["use_gpu"],
                                     resources_per_worker={"CPU": res["cpus_per_worker"]}),
        torch_config=TorchConfig(backend="nccl" if res["use_gpu"] else "gloo"),
        run_config=RunConfig(name=plan["run_id"], storage_path=str(Path(plan["run_dir"]).parent / "_ray"),
                             failure_config=FailureConfig(max_failures=0)))
    trainer.fit()


@ray.remote
def _unit(plan: dict, kind: str, name: str, run_unit: Callable[[dict, str, str], dict]) -> dict:
    return run_unit(plan, kind, name)


@dataclass
class Outcome:
    finished: list[str] = field(default_factory=list)
    failed: dict[str, str] = field(default_factory=dict)  # "run_id" or "run_id kind name" -> why


def execute(work: list[tuple[RunPlan, bool, list[tuple[str, str]]]],
            run_unit: Callable[[dict, str, str], dict], on_done: Callable[[RunPlan], None],
            progress: Progress, poll_s: float = 10.0) -> Outcome:
    """Train the runs that need it (as many at once as the cluster holds), then submit each run's
    evaluation units as Ray tasks, all at once: Ray runs them in parallel as resources allow.
    `on_done(plan)` once every unit of a run has succeeded."""
    trainings = deque(plan for plan, trains, _ in work if trains)
    units = {plan.run_id: list(pending) for plan, _, pending in work}
    left = {plan.run_id: len(pending) for plan, _, pending in work}
    broken: set[str] = set()
    in_flight: dict = {}
    outcome = Outcome()
    slots = _slots(work[0][0].resources) if work else 1

    def submit_units(plan: RunPlan) -> None:
        if not units[plan.run_id]:
            on_done(plan)
            outcome.finished.append(plan.run_id)
        for kind, name in units[plan.run_id]:
            ref = _unit.options(**_unit_resources(plan)).remote(plan.to_dict(), kind, name, run_unit)
            in_flight[ref] = (plan, kind, name, time.time())
            progress.event(f"{kind:<8} {plan.run_id} {name} started")

    for plan, trains, _ in work:
        if not trains:
            submit_units(plan)
    while trainings or in_flight:
        while trainings and sum(kind == "train" for _, kind, _, _ in in_flight.values()) < slots:
            plan = trainings.popleft()
            in_flight[_fit.remote(plan.to_dict())] = (plan, "train", "", time.time())
            progress.event(f"train    {plan.run_id} started")
        ready, _ = ray.wait(list(in_flight), num_returns=1, timeout=poll_s)
        for ref in ready:
            plan, kind, name, t0 = in_flight.pop(ref)
            what = f"{kind:<8} {plan.run_id} {name}".rstrip()
            try:
                ray.get(ref)
            except Exception as e:  # a failed run or unit must not stop the others
                outcome.failed[" ".join(what.split())] = _short(e)
                progress.event(f"{what} FAILED after {duration(time.time() - t0)}: {_short(e)}")
                broken.add(plan.run_id)
                continue
            progress.event(f"{what} finished in {duration(time.time() - t0)}")
            if kind == "train":
                submit_units(plan)
                continue
            left[plan.run_id] -= 1
            if left[plan.run_id] == 0 and plan.run_id not in broken:
                on_done(plan)
                outcome.finished.append(plan.run_id)
        for plan, kind, _, _ in in_flight.values():
            if kind == "train":
                progress.training(plan.run_id, Path(plan.run_dir))
    return outcome


def _unit_resources(plan: RunPlan) -> dict:
    """Each evaluation or fine-tuning task: eval.cpus CPUs, and one GPU where runs train on GPUs."""
    return {"num_cpus": plan.eval["cpus"], "num_gpus": 1 if plan.resources["use_gpu"] else 0}


def _slots(resources: dict) -> int:
    """How many runs the cluster holds at once (at least one)."""
    total = ray.cluster_resources()
    if resources["use_gpu"]:
        return max(1, int(total.get("GPU", 0)) // resources["workers_per_run"])
    need = resources["workers_per_run"] * resources["cpus_per_worker"]
    return max(1, int(total.get("CPU", 0)) // need)


def _short(error: Exception) -> str:
    text = str(error).strip().splitlines()
    return text[-1][:300] if text else type(error).__name__
