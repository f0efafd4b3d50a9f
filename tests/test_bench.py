"""The training benchmarks run, at toy sizes and a few steps, and say something sane: the
single-process part of bench/step_parity.py and the CPU path of bench/gpu_mfu.py (--toy), each as
a user runs it (a subprocess). What is asserted is the output's structure and its arithmetic,
never a speed: the machine these tests run on is shared."""

from __future__ import annotations

import math
import os
import re
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def _run(script: str, *args: str) -> list[str]:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")]),
           "DS_ACCELERATOR": "cpu"}
    done = subprocess.run([sys.executable, str(REPO / "bench" / script), *args], capture_output=True, text=True,
                          timeout=300, cwd=REPO, env=env)
    assert done.returncode == 0, done.stderr[-3000:]
    return done.stdout.splitlines()


def _number(text: str) -> float:
    return float(text.replace(",", ""))


def test_step_parity_compares_the_harness_step_with_a_bare_loop_doing_the_same_work():
    lines = _run("step_parity.py", "--objectives", "clm", "--sizes", "tiny", "--rounds", "2",
                 "--round-steps", "1", "--warmup", "1", "--no-workers")
    assert lines[0].startswith("machine: ") and "threads" in lines[0]
    row = next(line.split() for line in lines if line.startswith("clm "))
    # clm tiny, median (range, rounds), harness steps/s, loss gap
    assert row[:2] == ["clm", "tiny"] and row[4:6] == ["2", "rounds)"]
    median, steps_per_s, loss_gap = float(row[2]), float(row[6]), float(row[7])
    assert math.isfinite(median) and median > 0 and steps_per_s > 0
    # Same model, batches, optimizer and schedule: both paths' losses agree to float rounding
    # (ZeRO's flat buffers sum and update in another order than per-parameter tensors do).
    assert loss_gap < 1e-4
    last = re.fullmatch(r"harness/bare step throughput: (\d+\.\d\d)", lines[-1])
    assert last and float(last[1]) == median  # clm mini was not asked for: the last line is clm tiny's


def test_gpu_mfu_toy_runs_on_the_cpu_and_counts_what_the_formula_counts():
    lines = _run("gpu_mfu.py", "--toy", "--rounds", "2", "--round-steps", "2", "--warmup", "1",
                 "--peak-size", "512")
    assert lines[0].startswith("machine: ") and "no GPU" in lines[0]
    assert any(line.startswith("peak: torch.mm's fp32 FLOP/s at 512 x 512") for line in lines)
    rows = {line.split()[0]: line.split() for line in lines[lines.index(next(
        line for line in lines if line.startswith("row "))) + 1:]}
    assert set(rows) == {"clm", "electra", "span_corruption"}
    for name, row in rows.items():
        # name, params, tokens/s, (a) FLOP/token, MFU (a), (b) FLOP/token, MFU (b) median (range, n), (b)/(a)
        tokens_s, formula, mfu_a, counted, mfu_b = (_number(row[i]) for i in (2, 3, 4, 5, 6))
        assert all(math.isfinite(x) and x > 0 for x in (tokens_s, formula, mfu_a, counted, mfu_b)), row
        assert abs(float(row[-1]) - counted / formula) < 2e-3  # the printed ratio is of the printed counts
    # clm is the decoder the formula describes: (a) = 6N + 12·L·H·Q·T per token, the toy's
    # attention term 12 * 2 layers * 2 heads * 32 wide * 64 tokens. torch's counter counts every
    # matmul of forward and backward (6 FLOPs per weight per token) but, on the CPU, not the
    # attention kernel; and the norms' few weights take part in no matmul. So the count is 6N
    # less the norms' share (under 5% at width 64), and never more than 6N.
    attention = 12 * 2 * 2 * 32 * 64
    six_n = _number(rows["clm"][3]) - attention
    assert 0.95 * six_n <= _number(rows["clm"][5]) <= six_n * 1.001
