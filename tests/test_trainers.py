"""harness.trainers.RunQueue's bookkeeping, as the scheduler and the trainers' workers use it
(the class itself, without Ray: tests/test_faults.py, test_failures.py and test_cluster.py run it
as an actor under real Ray Train restarts, failures and lost nodes)."""

from __future__ import annotations

from harness.trainers import RunQueue

Queue = RunQueue.__ray_actor_class__  # the plain class behind the actor


def _jobs(*names: str) -> list[dict]:
    return [{"run_id": name, "run_dir": f"/results/suite/{name}"} for name in names]


def test_trainers_take_runs_in_order_and_a_restarted_trainer_gets_its_own_run_back():
    queue = Queue(_jobs("a", "b", "c"))
    queue.register("t0")
    queue.register("t1")
    assert queue.take("t0")["job"]["run_id"] == "a" and queue.take("t1")["job"]["run_id"] == "b"
    assert queue.take("t0")["job"]["run_id"] == "a"  # its workers restarted: the same run, resumed
    assert queue.current_run("t0") == {"run_id": "a", "run_dir": "/results/suite/a"}
    queue.done("t0", "a")
    assert queue.current_run("t0") is None and queue.take("t0")["job"]["run_id"] == "c"
    events, waiting = queue.drain()
    assert [(kind, trainer, run) for kind, trainer, run, _ in events] == [
        ("started", "t0", "a"), ("started", "t1", "b"), ("finished", "t0", "a"), ("started", "t0", "c")]
    assert waiting == 0 and queue.drain() == ([], 0)  # drained once
    queue.done("t0", "c")
    assert queue.take("t0") is None  # nothing left: the trainer's workers return


def test_a_trainer_is_free_since_its_start_or_its_last_run():
    queue = Queue(_jobs("a", "b"))
    queue.register("t0")
    registered = queue.take("t0")["since"]
    queue.done("t0", "a")
    assert queue.take("t0")["since"] >= registered > 0


def test_a_failed_trainer_fails_its_run_or_else_the_next_one_waiting():
    queue = Queue(_jobs("a", "b", "c"))
    queue.take("t0")
    assert queue.release("t0") == "a"  # the run it was on
    assert queue.release("t1") == "b"  # it failed before taking one: the next run waiting
    assert queue.take("t2")["job"]["run_id"] == "c" and queue.release("t2") == "c"
    assert queue.release("t3") is None and queue.drain()[1] == 0
