"""Where an attempt's start-up goes: from the driver handing the run to Ray to the end of the
first optimizer step, in parts. Rank 0 keeps it in train.json as `startup`, out of the report's
tables (it is wall time, like `wall_time_s`); bench/startup.py reads it.

    worker_group   the run submitted (or the attempt before ended) -> the training function
                   starts: Ray Train's controller, its placement group, the worker processes and
                   their process group
    imports        the trainer's modules: torch, transformers, the objectives
    model          the model built (its initial weights)
    deepspeed      `import deepspeed`
    comm           DeepSpeed's communication backend: on CPUs, its shared-memory op loaded from
                   the environment's build cache (built by `make`, not here)
    engine         deepspeed.initialize: the optimizer, ZeRO's partitions
    resume         the checkpoint chosen and loaded (an instant on a fresh start)
    data           the token files mapped, the first batch checked, the validation blocks read
    first_step     the first optimizer step

Times are each process's own clock; `worker_group` compares the driver's record (to the second,
in RUN/attempts.jsonl) with the worker's, so it is as good as the two clocks agree (the same
clock on one machine).
"""

from __future__ import annotations

import time
from datetime import datetime

PARTS = ("worker_group", "imports", "model", "deepspeed", "comm", "engine", "resume", "data", "first_step")


class Startup:
    """Marks, in order, the end of each part of PARTS after `worker_group`."""

    def __init__(self, began: float | None, entered: float | None = None):
        self.began = began  # when the attempt was handed to Ray (None: a lone process, no record)
        self.ends = {"worker_group": time.time() if entered is None else entered}

    def mark(self, part: str) -> None:
        assert part in PARTS and part not in self.ends, part
        self.ends[part] = time.time()

    def step_done(self) -> None:
        """After each optimizer step: the first one ends the start-up."""
        if "first_step" not in self.ends:
            self.mark("first_step")

    def record(self) -> dict:
        """{"began": when the attempt was handed to Ray (unix time), "parts_s": seconds per part,
        "to_first_step_s": their sum} (from the start of the training function where the
        attempt's beginning is not known)."""
        ends = sorted(self.ends.items(), key=lambda item: PARTS.index(item[0]))
        parts, before = {}, self.began
        for part, end in ends:
            if before is not None:
                parts[part] = round(max(end - before, 0.0), 3)
            before = end
        began = self.began if self.began is not None else self.ends["worker_group"]
        return {"began": round(began, 3), "parts_s": parts, "to_first_step_s": round(sum(parts.values()), 3)}


def attempt_began(rows: list[dict]) -> float | None:
    """When the current attempt was handed to Ray, from RUN/attempts.jsonl's rows: the latest
    `submitted` (a `harness run`) or `ended` (Ray Train then restarts the workers); None without
    either."""
    marks = [row["when"] for row in rows if row.get("event") in ("submitted", "ended") and row.get("when")]
    return datetime.fromisoformat(marks[-1]).timestamp() if marks else None
