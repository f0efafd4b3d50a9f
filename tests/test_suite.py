"""Suite loading: strict keys, profiles, overrides, and one clear message with exit code 2."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from harness.cli import main
from harness.errors import UserError
from harness.suite import load_suite

from conftest import REPO

BASE = {"name": "t", "objectives": ["clm", "mlm"], "budget": {"flops": 1e12},
        "profiles": {"gpu": {"sizes": ["small"], "resources": {"use_gpu": True}}}}


def _write(tmp_path: Path, data: dict) -> Path:
    path = tmp_path / "suite.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


def test_profile_and_overrides_stack_in_order(tmp_path):
    path = _write(tmp_path, BASE)
    suite = load_suite(path, "gpu", ["train.lr=3e-4", "sizes=[tiny, mini]"])
    assert suite.train.lr == 3e-4 and suite.sizes == ["tiny", "mini"]
    assert suite.resources.use_gpu and suite.profile == "gpu"
    assert load_suite(path).sizes == ["tiny"] and not load_suite(path).resources.use_gpu


@pytest.mark.parametrize("mutate, where, expected", [
    (lambda d: d["train"].update(lrr=1), "suite.yaml: train.lrr", "unknown key; expected one of: micro_batch_size"),
    (lambda d: d.update(objectives=["clm", "mlmm"]), "suite.yaml: objectives[1].name", "did you mean 'mlm'"),
    (lambda d: d["train"].update(zero_stage=5), "suite.yaml: train.zero_stage", "0, 1, 2 or 3"),
    (lambda d: d["train"].update(micro_batch_size="many"), "suite.yaml: train.micro_batch_size", "integer"),
    (lambda d: d["profiles"]["gpu"].update(trian={}), "suite.yaml: profiles.gpu.trian", "unknown key"),
    (lambda d: d.update(objectives=[{"name": "mlm", "config": {"mask_rat": 0.2}}]),
     "suite.yaml: objectives[0].config.mask_rat", "expected one of: label_smoothing, z_loss, mask_rate"),
    (lambda d: d["budget"].update(tokens=5), "suite.yaml: budget", "exactly one of 'flops' or 'tokens'"),
    (lambda d: d["train"].update(schedule="wsd", warmup_fraction=0.5, decay_fraction=0.6),
     "suite.yaml: train.decay_fraction", "warmup_fraction (0.5) + decay_fraction (0.6) exceed the run"),
    (lambda d: d["train"].update(schedule="linear"), "suite.yaml: train.schedule", "'cosine' or 'wsd'"),
])
def test_bad_suites_name_file_key_and_expectation(tmp_path, mutate, where, expected):
    data = yaml.safe_load(yaml.safe_dump(BASE))
    data["train"] = {}
    mutate(data)
    with pytest.raises(UserError) as info:
        load_suite(_write(tmp_path, data))
    assert str(info.value).startswith(str(tmp_path / where)), str(info.value)
    assert expected in str(info.value)


def test_override_errors_name_the_option(tmp_path):
    with pytest.raises(UserError, match=r"^--set train.lrr: unknown key"):
        load_suite(_write(tmp_path, BASE), overrides=["train.lrr=1"])
    with pytest.raises(UserError, match="no profile 'gpuu'"):
        load_suite(_write(tmp_path, BASE), "gpuu")


def test_cli_reports_a_typo_with_exit_code_2_and_no_traceback(tmp_path):
    path = _write(tmp_path, {**BASE, "train": {"lrr": 1}})
    done = subprocess.run([sys.executable, "-m", "harness.cli", "run", str(path),
                           "--results", str(tmp_path / "results")],
                          capture_output=True, text=True, cwd=REPO)
    assert done.returncode == 2
    assert done.stderr.strip() == (f"error: {path}: train.lrr: unknown key; expected one of: "
                                   "micro_batch_size, grad_accum, lr, warmup_fraction, min_lr_ratio, "
                                   "schedule, decay_fraction, weight_decay, betas, grad_clip, zero_stage, precision, log_every, "
                                   "eval_every, val_batches, checkpoint_every, step_timeout_s")
    assert not (tmp_path / "results").exists()  # nothing was started or written


def test_invalid_yaml_and_missing_file(tmp_path, capsys):
    bad = tmp_path / "bad.yaml"
    bad.write_text("objectives: [clm\n")
    assert main(["validate", str(bad)]) == 2
    assert f"error: {bad}: not valid YAML" in capsys.readouterr().err
    assert main(["validate", str(tmp_path / "none.yaml")]) == 2


@pytest.mark.parametrize("suite", sorted((REPO / "suites").glob("*.yaml")), ids=lambda p: p.name)
def test_every_shipped_suite_validates_in_every_profile(suite):
    raw = yaml.safe_load(suite.read_text())
    for profile in ["default", *(raw.get("profiles") or {})]:
        assert load_suite(suite, profile).profile == profile


def test_two_configs_of_one_objective_get_distinct_labels(tmp_path):
    data = {**BASE, "objectives": ["mlm", {"name": "mlm", "config": {"mask_rate": 0.3}}]}
    assert [o.display for o in load_suite(_write(tmp_path, data)).objectives] == ["mlm", "mlm(mask_rate=0.3)"]
    data["objectives"].append({"name": "mlm", "config": {"mask_rate": 0.3}})
    with pytest.raises(UserError, match=r"objectives\[2\]: 'mlm\(mask_rate=0.3\)' is already objectives\[1\]"):
        load_suite(_write(tmp_path, data))


def test_a_list_of_budgets_is_sorted_and_split_into_single_budgets(tmp_path):
    suite = load_suite(_write(tmp_path, {**BASE, "budget": {"flops": ["3e12", 1e12, 1.0e13], "min_steps": 7}}))
    assert suite.budget.flops == [1e12, 3e12, 1e13] and suite.budget.unit == "flops"
    singles = suite.budget.budgets
    assert [b.flops for b in singles] == [1e12, 3e12, 1e13]
    assert all(b.tokens is None and b.min_steps == 7 and b.amount == b.flops for b in singles)
    one = load_suite(_write(tmp_path, {**BASE, "budget": {"tokens": 2e6}})).budget
    assert one.unit == "tokens" and [b.model_dump() for b in one.budgets] == [one.model_dump()]


@pytest.mark.parametrize("budget, where, expected", [
    ({"flops": [1e12, 3e12, 1e12]}, "budget.flops[2]", "1e+12 is already budget.flops[0]"),
    ({"tokens": [2e6, -1]}, "budget.tokens[1]", "greater than 0 (got -1)"),
    ({"flops": []}, "budget.flops", "non-empty list"),
    ({"flops": "many"}, "budget.flops", "greater than 0 (got 'many')"),
    ({"flops": [1e12], "tokens": [2e6]}, "budget", "exactly one of 'flops' or 'tokens'"),
])
def test_bad_budget_lists_name_the_entry(tmp_path, budget, where, expected):
    with pytest.raises(UserError) as info:
        load_suite(_write(tmp_path, {**BASE, "budget": budget}))
    assert str(info.value).startswith(f"{tmp_path / 'suite.yaml'}: {where}:"), str(info.value)
    assert expected in str(info.value)
