"""Ray: where runs are scheduled. The only module that imports ray.

`harness run` starts an embedded local Ray (dashboard bound to 127.0.0.1) unless it is given
the address of an existing cluster. Each training run is one Ray Train TorchTrainer (its workers
drive DeepSpeed, see harness.train), launched from a Ray task so that several runs can proceed at
once where the cluster has room; each evaluation is a Ray task. At most as many runs are in
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
def _evaluate(plan: dict, evaluate: Callable[[dict], dict]) -> dict:
    return evaluate(plan)


@dataclass
class Outcome:
    finished: list[str] = field(default_factory=list)
    failed: dict[str, str] = field(default_factory=dict)


def execute(work: list[tuple[RunPlan, str]], evaluate: Callable[[dict], dict],
            on_done: Callable[[RunPlan], None], progress: Progress, poll_s: float = 10.0) -> Outcome:
    """Run each (plan, first stage) pair: 'train' then 'eval', or 'eval' alone."""
    queue, in_flight, outcome = deque(work), {}, Outcome()
    slots = _slots(work[0][0].resources) if work else 1
    started: dict[str, float] = {}
    while queue or in_flight:
        while queue and len(in_flight) < slots:
            plan, stage = queue.popleft()
            in_flight[_submit(plan, stage, evaluate)] = (plan, stage)
            started[plan.run_id] = time.time()
            progress.event(f"{'train' if stage == 'train' else 'eval '} {plan.run_id} started")
        ready, _ = ray.wait(list(in_flight), num_returns=1, timeout=poll_s)
        for ref in ready:
            plan, stage = in_flight.pop(ref)
            took = duration(time.time() - started[plan.run_id])
            try:
                ray.get(ref)
            except Exception as e:  # a failed run must not stop the others
                outcome.failed[plan.run_id] = f"{stage}: {_short(e)}"
                progress.event(f"{stage} {plan.run_id} FAILED after {took}: {_short(e)}")
                continue
            progress.event(f"{stage} {plan.run_id} finished in {took}")
            if stage == "train":
                queue.appendleft((plan, "eval"))
            else:
                on_done(plan)
                outcome.finished.append(plan.run_id)
        for plan, stage in in_flight.values():
            if stage == "train":
                progress.training(plan.run_id, Path(plan.run_dir))
    return outcome


def _submit(plan: RunPlan, stage: str, evaluate):
    if stage == "train":
        return _fit.remote(plan.to_dict())
    return _evaluate.options(num_cpus=plan.eval["cpus"]).remote(plan.to_dict(), evaluate)


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
