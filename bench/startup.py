"""Where a run's wall time goes before (and around) training: start-up, measured end to end.

Runs `harness run` on a small suite in a fresh results folder (a subprocess, as a user would),
stamping each line it prints as it arrives, then reads what every run recorded in train.json:
`startup` (when its attempt was handed to Ray, and the parts of its start-up, see
harness.train.startup) and `wall_time_s` (training proper).

It prints:
1. the time from `harness run` to the first optimizer step, broken down: the command's own
   start (imports, data, planning), Ray's start, then the first run's parts (worker group,
   imports, model, deepspeed import, comm op load, engine, resume, data, first step);
2. the same parts for each additional run (the median over them), which is what every run of a
   long suite pays;
3. per run, the share of its wall time (handed to Ray -> train.json written) that is not training.

    python bench/startup.py                       # 4 tiny runs (clm, mlm x 2 seeds), 2 workers each
    python bench/startup.py --size mini --flops 6e12 --seeds 1
    python bench/startup.py --results results/clm_vs_mlm   # read a finished suite instead (parts 2, 3)

The data are prepared before the clock starts (`harness data prepare`), so part 1 measures a
suite whose data are cached, as in every run after the first.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import yaml

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from harness.train.startup import PARTS  # noqa: E402  (imports nothing heavy)

SUITE = {
    "name": "startup",
    "data": {"source": "synthetic", "synthetic": {"entities": 40, "documents": 6000, "seed": 0},
             "tokenizer": {"kind": "bpe", "vocab_size": 1024}, "seq_len": 128, "val_fraction": 0.05},
    "train": {"micro_batch_size": 16, "lr": 2.0e-3, "zero_stage": 2},
    "eval": {"tasks": ["synthetic_glue"], "batch_size": 64},
}


def machine() -> str:
    load = ", load average %.1f" % os.getloadavg()[0] if hasattr(os, "getloadavg") else ""
    return f"{platform.machine()}, {os.cpu_count()} cores{load}, python {platform.python_version()}"


def write_suite(folder: Path, args) -> Path:
    suite = SUITE | {"objectives": args.objectives, "sizes": [args.size], "seeds": list(range(args.seeds)),
                     "budget": {"flops": args.flops}, "resources": {"workers_per_run": args.workers}}
    path = folder / "startup.yaml"
    path.write_text(yaml.safe_dump(suite))
    return path


def harness(*args: str) -> list[str]:
    return [sys.executable, "-m", "harness.cli", *args]


def run_stamped(command: list[str]) -> tuple[float, list[tuple[float, str]]]:
    """Run `command`, echoing its output; (when it began, [(arrival time, line)])."""
    lines: list[tuple[float, str]] = []
    began = time.time()
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)

    def read():
        for line in process.stdout:
            lines.append((time.time(), line.rstrip("\n")))
            print(f"    | {line}", end="", flush=True)
    reader = threading.Thread(target=read)
    reader.start()
    process.wait()
    reader.join()
    if process.returncode != 0:
        sys.exit(f"`{' '.join(command)}` failed with exit code {process.returncode}")
    return began, lines


def runs_of(suite_dir: Path) -> list[dict]:
    """Each trained run's start-up (from when its attempt was handed to Ray: submitted, or taken
    by a worker group that had finished its previous run), training time and finish, in order."""
    runs = []
    for train_json in suite_dir.glob("*/train.json"):
        train = json.loads(train_json.read_text())
        if "began" not in train.get("startup", {}):
            continue  # trained before start-up was recorded
        runs.append({"run_id": train["run_id"], "began": train["startup"]["began"], "startup": train["startup"],
                     "training_s": train["wall_time_s"], "finished": train_json.stat().st_mtime})
    return sorted(runs, key=lambda run: run["began"])


def parts_table(runs: list[dict]) -> None:
    """The start-up parts of the first run and the median of the others."""
    later = runs[1:]
    print(f"  {'part':<14}{'first run':>11}{'others (median, min-max)':>30}")
    for part in (*PARTS, "total"):
        def seconds(run):
            startup = run["startup"]
            return startup["to_first_step_s"] if part == "total" else startup["parts_s"].get(part, 0.0)
        first = f"{seconds(runs[0]):>10.1f}s"
        rest = [seconds(run) for run in later]
        other = f"{statistics.median(rest):>10.1f}s  ({min(rest):.1f}-{max(rest):.1f})" if rest else ""
        print(f"  {part:<14}{first}{other:>30}")


def shares(runs: list[dict]) -> list[float]:
    """Per run, the share of its wall time (handed to Ray -> train.json written) not spent training."""
    print(f"\n  {'run':<34}{'wall':>8}{'training':>10}{'not training':>14}")
    out = []
    for run in runs:
        wall = run["finished"] - run["began"]
        share = 1 - run["training_s"] / wall
        out.append(share)
        print(f"  {run['run_id']:<34}{wall:>7.1f}s{run['training_s']:>9.1f}s{share:>13.0%}")
    return out


def command_parts(began: float, lines: list[tuple[float, str]], first: dict) -> None:
    """`harness run` -> Ray started -> the first run's first step."""
    ray_line = next(((t, line) for t, line in lines if "ray: started" in line or "ray: joined" in line), None)
    first_step = first["began"] + first["startup"]["to_first_step_s"]
    print(f"\n  harness run -> first optimizer step: {first_step - began:.1f}s")
    if ray_line:
        ray_s = float(ray_line[1].split(" in ")[-1].split()[0])
        print(f"    command start, data, planning   {ray_line[0] - ray_s - began:>6.1f}s")
        print(f"    Ray start                       {ray_s:>6.1f}s")
        print(f"    Ray ready -> first run handed   {first['began'] - ray_line[0]:>6.1f}s")
    print(f"    first run's start-up            {first['startup']['to_first_step_s']:>6.1f}s  (parts below)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--objectives", nargs="+", default=["clm", "mlm"])
    parser.add_argument("--size", default="tiny")
    parser.add_argument("--seeds", type=int, default=2)
    parser.add_argument("--flops", type=float, default=3e11, help="training FLOPs of each run")
    parser.add_argument("--workers", type=int, default=2, help="workers per run")
    parser.add_argument("--results", type=Path, help="read this finished suite folder instead of running one")
    args = parser.parse_args()
    print(f"# start-up of `harness run`; {machine()}; {time.strftime('%Y-%m-%d')}")
    if args.results:
        runs = runs_of(args.results)
        began, lines = None, []
    else:
        work = Path(tempfile.mkdtemp(prefix="startup-bench-"))
        suite = write_suite(work, args)
        subprocess.run(harness("data", "prepare", str(suite), "--results", str(work / "results")),
                       check=True, stdout=subprocess.DEVNULL)
        began, lines = run_stamped(harness("run", str(suite), "--results", str(work / "results")))
        runs = runs_of(work / "results" / "startup")
    if not runs:
        sys.exit("no run with a recorded start-up (train.json `startup`) was found")
    if began is not None:
        command_parts(began, lines, runs[0])
    print(f"\n  start-up parts, {len(runs)} runs (harness.train.startup says what each part is):")
    parts_table(runs)
    share = shares(runs)
    later = [run["startup"]["to_first_step_s"] for run in runs[1:]] or [runs[0]["startup"]["to_first_step_s"]]
    print(f"\nnot training, median share of a run's wall time: {statistics.median(share):.0%}")
    print(f"start-up per additional run (median): {statistics.median(later):.1f}s")


if __name__ == "__main__":
    main()
