"""The whole path on a tiny suite: real Ray, real DeepSpeed (two workers, ZeRO-2), real lm-eval.

One suite, run twice: the first run trains, evaluates (zero-shot, held-out bits per byte,
fine-tuning) both objectives and writes the report; the second finds every run finished and
retrains nothing. Then `harness eval` evaluates a finished run on a stock lm-eval task, offline:
from a bundle, or failing fast without one.
"""

from __future__ import annotations

import gzip
import json
import math
import os
import shlex
import shutil
import stat
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
import yaml
from huggingface_hub import ModelCard

from conftest import REPO
from stock_hub import write_stock_hub

SUITE = {
    "name": "tiny_e2e",
    "objectives": ["clm", "mlm"], "sizes": ["tiny"], "seeds": [0],
    "data": {"synthetic": {"entities": 12, "documents": 800, "seed": 1}, "seq_len": 32,
             "val_fraction": 0.1, "eval_examples": 40},
    "budget": {"flops": 3.0e10},
    "train": {"micro_batch_size": 8, "lr": 3e-3, "log_every": 10, "eval_every": 50,
              "checkpoint_every": 40, "zero_stage": 2},
    "resources": {"workers_per_run": 2, "cpus_per_worker": 1},
    "eval": {"tasks": ["synthetic_hellaswag", "synthetic_glue"], "limit": 20, "batch_size": 32,
             "finetune": {"tasks": ["synthetic_sst2"], "seeds": [0, 1], "max_steps": 15, "lr": 1e-3},
             "aggregate": {"name": "e2e", "version": 1,
                           "tasks": {"synthetic_hellaswag": "acc_norm", "synthetic_glue": "acc"}}},
}


def _harness(*args: str, cwd: Path = REPO, rc: int = 0, env: dict | None = None) -> subprocess.CompletedProcess:
    # umask 022 whatever the caller's: the results tree is checked for group and other read access
    done = subprocess.run([sys.executable, "-m", "harness.cli", *args], capture_output=True,
                          text=True, cwd=cwd, timeout=900, env={**os.environ, **(env or {})}, umask=0o022)
    assert done.returncode == rc, done.stdout[-3000:] + done.stderr[-3000:]
    return done


@pytest.fixture(scope="session")
def trained_suite(tmp_path_factory):
    """The tiny suite, trained and evaluated once for every test of this module:
    (suite file, results root, stdout of the first `harness run`)."""
    root = tmp_path_factory.mktemp("e2e")
    suite_path, results = root / "tiny_e2e.yaml", root / "results"
    tracking = {"mlflow": {"uri": (root / "mlruns").as_uri(), "experiment": "e2e"}}
    suite_path.write_text(yaml.safe_dump({**SUITE, "tracking": tracking}))
    first = _harness("run", str(suite_path), "--results", str(results))
    return suite_path, results, first


@pytest.mark.e2e
def test_tiny_suite_end_to_end_then_rerun_retrains_nothing(trained_suite, tmp_path):
    suite_path, results, first = trained_suite
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
            result = json.loads((run / "eval" / f"{task}.json").read_text())
            row = result["harness"]["tasks"][task]
            assert result["harness"]["scoring"] == scoring and math.isclose(row["chance"], chance)
            assert 0 <= row["metrics"]["acc"] <= 1 and result["n-samples"][task]["effective"] == 20
        # bits per byte on held-out text: causal LM defines a likelihood, masked LM does not
        heldout = run / "eval" / "harness_heldout.json"
        assert heldout.exists() == (train["objective"] == "clm")
        if heldout.exists():
            bpb = json.loads(heldout.read_text())["harness"]["tasks"]["harness_heldout"]["metrics"]["bits_per_byte"]
            assert 0 < bpb < 8
        finetune = json.loads((run / "finetune" / "synthetic_sst2.json").read_text())
        assert [r["seed"] for r in finetune["runs"]] == [0, 1] and finetune["metric"] == "acc"
        assert finetune["head"] == ("last-token" if train["objective"] == "clm" else "first-token")
        # what it ran with, and its model card with every result, scoring method named
        assert train["deepspeed_config"]["zero_optimization"] == {"stage": 2} and train["environment"]["versions"]["deepspeed"]
        card = {(r.dataset_type, r.metric_type): r for r in ModelCard.load(run / "model" / "README.md").data.eval_results}
        assert card["synthetic_glue", "acc"].metric_config == scoring
        assert card["synthetic_sst2", "acc"].metric_value == finetune["median"]["acc"]

    report = (suite_dir / "report.md").read_text()
    assert "| clm " in report and "| mlm " in report and "pseudo-loglikelihood" in report
    assert "## Data" in report and "Entropy floor" in report and "## Environment" in report
    for section in ("Zero-shot", "Fine-tuning", "Aggregate"):
        assert f"## {section}" in report
    assert "2 to train" in first.stdout

    stamps = {p: p.stat().st_mtime_ns for run in runs for p in run.rglob("*") if p.is_file()}
    second = _harness("run", str(suite_path), "--results", str(results))
    assert "2 runs: 2 done" in second.stdout and "started" not in second.stdout
    assert stamps == {p: p.stat().st_mtime_ns for run in runs for p in run.rglob("*") if p.is_file()}
    assert pd.read_csv(suite_dir / "summary.csv").equals(summary)

    # `harness eval` on a finished run, offline: a stock task fails fast without a bundle ...
    clm_run = next(run for run in runs if run.name.startswith("clm-"))
    refused = _harness("eval", str(clm_run), "--tasks", "hellaswag", rc=2)
    assert "task 'hellaswag' cannot be loaded" in refused.stderr
    assert "harness eval bundle hellaswag --out DIR" in refused.stderr
    assert not (clm_run / "eval" / "hellaswag.json").exists()
    # ... and completes from one (made from the stand-in hub, lm-eval's stock processing)
    hub, bundle = tmp_path / "hub", tmp_path / "bundle"
    rows = write_stock_hub(hub)
    _harness("eval", "bundle", "hellaswag", "--out", str(bundle), cwd=hub,
             env={"HF_DATASETS_CACHE": str(tmp_path / "hf_cache")})
    done = _harness("eval", str(clm_run), "--tasks", "hellaswag", "--bundle", str(bundle))
    assert "hellaswag: acc" in done.stdout
    result = json.loads((clm_run / "eval" / "hellaswag.json").read_text())
    assert result["n-samples"]["hellaswag"]["effective"] == len(rows["hellaswag"]["validation"])
    assert result["configs"]["hellaswag"]["dataset_path"] == "parquet"
    assert "hellaswag" in (suite_dir / "report.md").read_text()
    assert "hellaswag" in {r.dataset_type for r in ModelCard.load(clm_run / "model" / "README.md").data.eval_results}


@pytest.mark.e2e
def test_the_report_opens_with_the_answer(trained_suite):
    """The headline first: overall, the aggregate, fine-tuning and held-out text, each in words;
    report.html, the plots and summary.parquet beside report.md."""
    _, results, _ = trained_suite
    suite_dir = results / SUITE["name"]
    report = (suite_dir / "report.md").read_text()
    assert report.startswith("# ") and report.split("\n\n", 2)[1] == "## Headline"
    headline = report.split("## Headline\n\n", 1)[1].split("\n## ", 1)[0]
    for outcome in ("**Overall**", "**aggregate e2e-v1**", "**synthetic_sst2 (fine-tuned)**",
                    "**Held-out text, bits per byte**"):
        assert outcome in headline
    assert "not resolved with 1 seed" in headline and "different scoring methods" in headline
    assert (suite_dir / "report.html").exists() and (suite_dir / "plots" / "val_loss.png").exists()
    assert (suite_dir / "summary.parquet").exists()


@pytest.mark.e2e
def test_eval_writes_only_into_the_run_directory_it_is_given(trained_suite, tmp_path):
    """A copied run is evaluated in the copy; its original is never touched."""
    _, results, _ = trained_suite
    original = next(p for p in (results / "tiny_e2e").iterdir() if p.name.startswith("clm-"))
    copy = tmp_path / "copied" / "tiny_e2e" / original.name
    shutil.copytree(original, copy)
    before = {p: p.read_bytes() for p in original.rglob("*") if p.is_file()}
    _harness("eval", str(copy), "--tasks", "synthetic_glue", "--limit", "5",
             "--finetune", "synthetic_cola")
    assert {p: p.read_bytes() for p in original.rglob("*") if p.is_file()} == before
    assert not (original / "finetune" / "synthetic_cola.json").exists()
    result = json.loads((copy / "eval" / "synthetic_glue.json").read_text())
    assert result["n-samples"]["synthetic_glue"]["effective"] == 5
    assert (copy / "finetune" / "synthetic_cola.json").exists()


@pytest.mark.e2e
def test_training_metrics_reach_tensorboard_and_mlflow(trained_suite, monkeypatch):
    """Every metrics.jsonl row of every run is in the run's TensorBoard events at its step, and
    in the suite's MLflow file store: one MLflow run per harness run, tagged."""
    from mlflow.tracking import MlflowClient
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    monkeypatch.setenv("MLFLOW_ALLOW_FILE_STORE", "true")  # MLflow 3 reads file stores only when asked
    suite_path, results, _ = trained_suite
    runs = sorted(p for p in (results / "tiny_e2e").iterdir() if (p / "run.yaml").exists())
    client = MlflowClient(tracking_uri=(suite_path.parent / "mlruns").as_uri())
    tracked = client.search_runs([client.get_experiment_by_name("e2e").experiment_id])
    assert sorted(r.info.run_name for r in tracked) == [run.name for run in runs]
    for run in runs:
        rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
        train = [(r["step"], pytest.approx(r["loss"])) for r in rows if r["kind"] == "train"]
        val = [(r["step"], pytest.approx(r["val_loss"])) for r in rows if r["kind"] == "val"]
        assert train and val
        events = EventAccumulator(str(run / "tensorboard"))
        events.Reload()
        assert [(e.step, e.value) for e in events.Scalars("train/loss")] == train
        assert [(e.step, e.value) for e in events.Scalars("val/val_loss")] == val
        mlflow_run = next(r for r in tracked if r.info.run_name == run.name)
        objective, size, seed = run.name.split("-")[:3]
        assert {k: mlflow_run.data.tags[k] for k in ("objective", "size", "seed", "run_id", "suite")} == {
            "objective": objective, "size": size, "seed": seed.removeprefix("s"), "run_id": run.name,
            "suite": "tiny_e2e"}
        assert mlflow_run.info.status == "FINISHED" and "budget" in mlflow_run.data.tags
        history = client.get_metric_history(mlflow_run.info.run_id, "train/loss")
        assert [(m.step, m.value) for m in history] == train


class _Poison:
    """Unpickled, it creates `marker`."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return open, (str(self.marker), "w")


@pytest.mark.e2e
def test_run_refuses_pickled_weights_in_a_trained_run_before_ray_starts(trained_suite, tmp_path):
    """A pytorch_model.bin planted in a finished run's model folder stops `harness run` with one
    message naming it, before any cluster resource is taken; the pickle never runs."""
    import pickle

    suite_path, results, _ = trained_suite
    copy = tmp_path / "results"
    shutil.copytree(results / "tiny_e2e", copy / "tiny_e2e", ignore=shutil.ignore_patterns(".lock"))
    run = next(p for p in (copy / "tiny_e2e").iterdir() if p.name.startswith("clm-"))
    marker, planted = tmp_path / "marker", run / "model" / "pytorch_model.bin"
    planted.write_bytes(pickle.dumps(_Poison(marker)))
    # a task not evaluated yet, so that the run has work pending
    done = _harness("run", str(suite_path), "--results", str(copy), "--set",
                    "eval.tasks=[synthetic_hellaswag, synthetic_glue, synthetic_cola]", rc=2)
    assert str(planted) in done.stderr and "Traceback" not in done.stderr
    assert "started" not in done.stdout and not marker.exists()
    assert not (run / "eval" / "synthetic_cola.json").exists()


LM_EVAL_RECORD_KEYS = {"doc_id", "doc", "target", "arguments", "resps", "filtered_resps", "filter", "metrics",
                       "doc_hash", "prompt_hash", "target_hash"}  # and each metric's value


def _runs(results: Path) -> dict[str, Path]:
    return {p.name.split("-")[0]: p for p in (results / SUITE["name"]).iterdir() if (p / "run.yaml").exists()}


@pytest.mark.e2e
def test_every_evaluated_task_keeps_lm_evals_samples_and_eval_worst_ranks_them(trained_suite):
    """eval/<entry>.samples/<task>.jsonl.gz for every task evaluated, in lm-eval's samples
    format, one record per document; `harness eval worst` prints the n worst, ordered."""
    _, results, _ = trained_suite
    for objective, run in _runs(results).items():
        entries = [*SUITE["eval"]["tasks"], *(["harness_heldout"] if objective == "clm" else [])]
        assert {f"{e}.samples" for e in entries} <= {p.name for p in (run / "eval").glob("*.samples")}
        for entry in entries:
            path = run / "eval" / f"{entry}.samples" / f"{entry}.jsonl.gz"
            records = [json.loads(line) for line in gzip.decompress(path.read_bytes()).decode().splitlines()]
            written = json.loads((run / "eval" / f"{entry}.json").read_text())
            assert len(records) == written["n-samples"][entry]["effective"] == (20 if entry in SUITE["eval"]["tasks"] else len(records))
            assert [r["doc_id"] for r in records] == list(range(len(records)))
            for record in records:
                assert set(record) == LM_EVAL_RECORD_KEYS | set(record["metrics"])
                assert all(key.startswith("gen_args_") for key in record["arguments"])
                assert all(isinstance(resp[0], str) for resp in record["filtered_resps"]) or entry == "harness_heldout"
    shown = _harness("eval", "worst", str(_runs(results)["clm"]), "--task", "synthetic_hellaswag", "-n", "5").stdout
    heads = [line for line in shown.splitlines() if line.startswith("#")]
    assert [line.split(" ")[0] for line in heads] == ["#1", "#2", "#3", "#4", "#5"]
    margins = [float(line.split("margin ")[1].split(":")[0]) for line in heads]
    assert margins == sorted(margins) and shown.count("  prompt:") == 5
    missing = _harness("eval", "worst", str(_runs(results)["clm"]), "--task", "synthetic_cola", rc=2)
    assert "synthetic_cola.samples/synthetic_cola.jsonl.gz" in missing.stderr and "eval.log_samples" in missing.stderr


@pytest.mark.e2e
def test_the_results_tree_is_readable_by_group_and_others(trained_suite):
    """Under umask 022 every file the suite wrote is group/other readable and every folder
    group/other listable: results on shared storage are for colleagues too."""
    _, results, _ = trained_suite
    closed = [f"{oct(stat.S_IMODE(p.lstat().st_mode))} {p.relative_to(results)}"
              for p in [results, *results.rglob("*")] if not p.is_symlink()
              and stat.S_IMODE(p.lstat().st_mode) & (0o055 if p.is_dir() else 0o044) != (0o055 if p.is_dir() else 0o044)]
    assert closed == []


@pytest.mark.e2e
def test_lm_evals_own_cli_on_exported_tasks_gives_the_harness_scores(trained_suite, tmp_path):
    """The exported tasks and the printed `lm_eval` command, run in an interpreter that cannot
    import the project: acc and acc_norm equal the harness's stored scores, and lm-eval's own
    samples file holds the records the harness kept."""
    import transformers
    from isolated import run_isolated

    _, results, _ = trained_suite
    clm = _runs(results)["clm"]
    exported = _harness("eval", "export-tasks", str(tmp_path / "tasks"), "--run", str(clm)).stdout
    command = shlex.split(exported.rsplit("\n", 2)[-2].strip())
    eos = transformers.AutoTokenizer.from_pretrained(clm / "model").eos_token_id
    assert command[command.index("--model_args") + 1] == (
        f"pretrained={(clm / 'model').resolve()},dtype=float32,add_bos_token=False,prefix_token_id={eos},"
        f"max_length={SUITE['data']['seq_len']}")  # the context the model was trained on
    tasks = SUITE["eval"]["tasks"]
    assert command[command.index("--tasks") + 1:][:7] == [",".join(tasks), "--batch_size", "32", "--seed", "0,0,0,0", "--limit", "20"]
    out = tmp_path / "lm_eval_out"
    argv = [*command, "--output_path", str(out / "results.json"), "--log_samples"]
    done = run_isolated(f"import sys\nsys.argv = {argv!r}\nfrom lm_eval.__main__ import cli_evaluate\ncli_evaluate()\n",
                        tmp_path / "home", cwd=tmp_path)  # another working directory than the export's
    assert done.returncode == 0, done.stderr[-3000:]
    theirs = json.loads(next(out.glob("results_*.json")).read_text())
    for task in tasks:
        ours = json.loads((clm / "eval" / f"{task}.json").read_text())
        metrics = [metric for metric in ("acc,none", "acc_norm,none") if metric in ours["results"][task]]
        assert "acc,none" in metrics and all(theirs["results"][task][m] == ours["results"][task][m] for m in metrics)
        their_samples = [json.loads(line) for line in next(out.glob(f"samples_{task}_*.jsonl")).read_text().splitlines()]
        our_samples = [json.loads(line) for line in gzip.decompress(
            (clm / "eval" / f"{task}.samples" / f"{task}.jsonl.gz").read_bytes()).decode().splitlines()]
        # The same records; the log-likelihoods to float32 rounding: lm-eval's run batches both
        # tasks' requests together, the harness each task's alone, so the batches' shapes differ.
        assert [_without_answers(r) for r in our_samples] == [_without_answers(r) for r in their_samples]
        assert [_answers(r) for r in our_samples] == [pytest.approx(_answers(r), rel=1e-5) for r in their_samples]


def _without_answers(record: dict) -> dict:
    return {key: value for key, value in record.items() if key not in ("resps", "filtered_resps")}


def _answers(record: dict) -> list[float]:
    return [float(answer[0]) for answer in record["filtered_resps"]]
