"""What the terminal shows while a suite runs: one line per event, and per training run its
step, loss, throughput and time left, read from the run's metrics.jsonl."""

from __future__ import annotations

import sys
import time
from pathlib import Path

from harness.results import RunDir


def duration(seconds: float) -> str:
    seconds = int(max(seconds, 0))
    h, rem = divmod(seconds, 3600)
    m, s = divmod(rem, 60)
    return f"{h}h{m:02d}m" if h else (f"{m}m{s:02d}s" if m else f"{s}s")


class Progress:
    """Prints events, and the latest metrics of each training run when they change."""

    def __init__(self, stream=None):
        self.stream = stream or sys.stdout
        self.t0 = time.time()
        self._last: dict[str, int] = {}

    def event(self, message: str) -> None:
        print(f"[{duration(time.time() - self.t0):>6}] {message}", file=self.stream, flush=True)

    def training(self, run_id: str, run_dir: Path) -> None:
        rows = RunDir(run_dir).read_metrics()
        train = [r for r in rows if r.get("kind") == "train"]
        if not train or self._last.get(run_id) == train[-1]["step"]:
            return
        row = train[-1]
        self._last[run_id] = row["step"]
        val = [r for r in rows if r.get("kind") == "val"]
        val_text = f"  val {val[-1]['val_loss']:.3f}" if val else ""
        left = (row["steps"] - row["step"]) * row["elapsed_s"] / max(row["step"], 1)
        self.event(f"  {run_id}  step {row['step']:>5}/{row['steps']}  loss {row['loss']:.3f}"
                   f"{val_text}  {row['tokens_per_s'] / 1e3:.1f}k tok/s  left ~{duration(left)}")
