"""`include:` in a suite: shared settings in one file, merged under the suite, strict as ever."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from harness.cli import main
from harness.errors import UserError
from harness.suite import load_suite

from conftest import REPO

SHARED = {"train": {"lr": 3e-3, "micro_batch_size": 8}, "seeds": [0, 1],
          "profiles": {"gpu": {"sizes": ["small"], "train": {"lr": 1e-3}}}}


def _write(path: Path, data: dict) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(data))
    return path


def test_included_settings_merge_under_the_suite_and_its_profiles(tmp_path):
    _write(tmp_path / "common" / "shared.yaml", SHARED)
    suite = _write(tmp_path / "s.yaml", {"include": "common/shared.yaml", "objectives": ["clm"],
                                         "budget": {"flops": 1e12}, "train": {"lr": 5e-3}})
    loaded = load_suite(suite)
    assert loaded.train.lr == 5e-3 and loaded.train.micro_batch_size == 8 and loaded.seeds == [0, 1]
    gpu = load_suite(suite, "gpu")  # the included profile applies over the merged base
    assert gpu.sizes == ["small"] and gpu.train.lr == 1e-3 and gpu.train.micro_batch_size == 8


def test_later_includes_win_and_includes_nest(tmp_path):
    _write(tmp_path / "a.yaml", {"include": "b.yaml", "seeds": [1]})
    _write(tmp_path / "b.yaml", {"seeds": [2], "sizes": ["mini"]})
    _write(tmp_path / "c.yaml", {"seeds": [3]})
    suite = _write(tmp_path / "s.yaml", {"include": ["a.yaml", "c.yaml"], "objectives": ["clm"],
                                         "budget": {"flops": 1e12}})
    loaded = load_suite(suite)
    assert loaded.seeds == [3] and loaded.sizes == ["mini"]


def test_a_typo_in_an_included_file_names_that_file_and_key(tmp_path):
    shared = _write(tmp_path / "shared.yaml", {"train": {"lrr": 1}})
    suite = _write(tmp_path / "s.yaml", {"include": "shared.yaml", "objectives": ["clm"],
                                         "budget": {"flops": 1e12}})
    with pytest.raises(UserError) as e:
        load_suite(suite)
    assert e.value.where == f"{shared.resolve()}: train.lrr" and "unknown key" in e.value.message


@pytest.mark.parametrize("include, expected", [
    ("missing.yaml", "no such file to include"),
    (["s.yaml"], "include cycle"),
    ({"file": "x.yaml"}, "expected a file name or a list of file names"),
])
def test_bad_includes_are_one_clear_error(tmp_path, include, expected):
    suite = _write(tmp_path / "s.yaml", {"include": include, "objectives": ["clm"], "budget": {"flops": 1e12}})
    with pytest.raises(UserError) as e:
        load_suite(suite)
    assert expected in e.value.message and e.value.where == f"{suite}: include"


def test_an_indirect_cycle_is_refused_through_the_cli(tmp_path, capsys):
    _write(tmp_path / "a.yaml", {"include": "b.yaml"})
    _write(tmp_path / "b.yaml", {"include": "a.yaml"})
    suite = _write(tmp_path / "s.yaml", {"include": "a.yaml", "objectives": ["clm"], "budget": {"flops": 1e12}})
    assert main(["validate", str(suite), "--results", str(tmp_path / "results")]) == 2
    err = capsys.readouterr().err
    assert "include cycle" in err and "a.yaml -> " in err
    assert not (tmp_path / "results").exists()


def test_shipped_suites_share_one_base():
    """Six shipped suites take their shared settings from one file instead of repeating them."""
    includers = [p for p in (REPO / "suites").glob("*.yaml") if "include" in yaml.safe_load(p.read_text())]
    assert len(includers) >= 6
    for path in includers:
        suite = load_suite(path)
        assert suite.data.seq_len == 128 and suite.resources.workers_per_run == 2
        assert load_suite(path, "gpu").resources.use_gpu
