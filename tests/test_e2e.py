"""The whole path on a tiny suite: real Ray, real DeepSpeed (two workers, ZeRO-2), real lm-eval.

One suite, run twice: the first run trains and evaluates both objectives and writes the report;
the second finds every run finished and retrains nothing.
"""

from __future__ import annotations

import math
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
import yaml

from conftest import REPO

SUITE = {
    "name": "tiny_e2e",
    "objectives": ["clm", "mlm"], "sizes": ["tiny"], "seeds": [0],
    "data": {"synthetic": {"entities": 12, "documents": 800, "seed": 1}, "seq_len": 32,
             "val_fraction": 0.1, "eval_examples": 40},
    "budget": {"flops": 3.0e10},
    "train": {"micro_batch_size": 8, "lr": 3e-3, "log_every": 10, "eval_every": 50,
              "checkpoint_every": 40, "zero_stage": 2},
    "resources": {"workers_per_run": 2, "cpus_per_worker": 1},
    "eval": {"tasks": ["synthetic_hellaswag", "synthetic_glue"], "limit": 20, "batch_size": 32},
}


def _harness(*args: str) -> subprocess.CompletedProcess:
    done = subprocess.run([sys.executable, "-m", "harness.cli", *args], capture_output=True,
                          text=True, cwd=REPO, timeout=900)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    return done


@pytest.mark.e2e
def test_tiny_suite_end_to_end_then_rerun_retrains_nothing(tmp_path):
    suite_path, results = tmp_path / "tiny_e2e.yaml", tmp_path / "results"
    suite_path.write_text(yaml.safe_dump(SUITE))
    first = _harness("run", str(suite_path), "--results", str(results))
    suite_dir = results / "tiny_e2e"

    summary = pd.read_csv(suite_dir / "summary.csv")
    assert sorted(summary["objective"]) == ["clm", "mlm"]
    flops = summary.set_index("objective")["flops_spent_mean"]
    assert abs(flops["clm"] - flops["mlm"]) / flops.max() < 0.01
    assert (flops - 3.0e10).abs().max() / 3.0e10 < 0.01
    assert (summary["val_loss_mean"] < summary["uniform_loss_mean"]).all()

    runs = sorted(p for p in suite_dir.iterdir() if (p / "run.yaml").exists())
    assert len(runs) == 2
    for run in runs:
        train = yaml.safe_load((run / "train.json").read_text())
        assert (train["world_size"], train["zero_stage"]) == (2, 2)
        assert train["optimizer"] == "DeepSpeedZeroOptimizer"
        assert (run / "DONE").exists() and (run / "model" / "config.json").exists()
        scoring = "loglikelihood" if train["objective"] == "clm" else "pseudo-loglikelihood"
        for task, chance in (("synthetic_hellaswag", 0.25), ("synthetic_glue", 0.5)):
            result = yaml.safe_load((run / "eval" / f"{task}.json").read_text())
            assert result["scoring"] == scoring and math.isclose(result["chance"], chance)
            assert 0 <= result["metrics"]["acc"] <= 1 and result["n-samples"][task]["effective"] == 20

    report = (suite_dir / "report.md").read_text()
    assert "| clm " in report and "| mlm " in report and "pseudo-loglikelihood" in report
    assert "## Data" in report and "Entropy floor of the validation text" in report
    assert "2 to train" in first.stdout

    stamps = {p: p.stat().st_mtime_ns for run in runs for p in run.rglob("*") if p.is_file()}
    second = _harness("run", str(suite_path), "--results", str(results))
    assert "2 runs: 2 done" in second.stdout and "started" not in second.stdout
    assert stamps == {p: p.stat().st_mtime_ns for run in runs for p in run.rglob("*") if p.is_file()}
    assert pd.read_csv(suite_dir / "summary.csv").equals(summary)
