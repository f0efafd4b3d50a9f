"""Results on disk: atomic writes, run states, torn metric lines, and checkpoint preflight."""

from __future__ import annotations

import pytest

from harness.train.checkpoint import check_resumable, seal
from harness.errors import UserError
from harness.results import RunDir, read_jsonl, write_json


def test_atomic_write_leaves_no_temporary_files(tmp_path):
    write_json(tmp_path / "a" / "x.json", {"k": 1})
    write_json(tmp_path / "a" / "x.json", {"k": 2})
    assert [p.name for p in (tmp_path / "a").iterdir()] == ["x.json"]
    assert (tmp_path / "a" / "x.json").read_text().strip().endswith("}")


def test_run_state_follows_the_files_written(tmp_path):
    run = RunDir(tmp_path)
    assert run.state == "new"
    run.checkpoints.mkdir()
    (run.checkpoints / "latest").write_text("step10")
    assert run.state == "partial"
    write_json(run.train_json, {})
    assert run.state == "trained"
    write_json(run.done, {})
    assert run.state == "done"


def test_a_torn_last_metrics_line_is_dropped(tmp_path):
    path = tmp_path / "metrics.jsonl"
    path.write_text('{"step": 1}\n{"step": 2}\n{"ste')
    assert read_jsonl(path) == [{"step": 1}, {"step": 2}]


def _checkpoint(tmp_path, files: dict[str, bytes]) -> RunDir:
    import torch
    run = RunDir(tmp_path)
    (run.checkpoints / "step10").mkdir(parents=True)
    (run.checkpoints / "latest").write_text("step10")
    for name, content in files.items():
        path = run.checkpoints / "step10" / name
        torch.save({"x": 1}, path) if content is None else path.write_bytes(content)
    seal(run.checkpoints / "step10", 10)
    return run


def test_a_sound_checkpoint_passes(tmp_path):
    run = _checkpoint(tmp_path, {"mp_rank_00_model_states.pt": None,
                                 "zero_pp_rank_0_mp_rank_00_optim_states.pt": None,
                                 "zero_pp_rank_1_mp_rank_00_optim_states.pt": None})
    check_resumable(run.checkpoints, world_size=2, zero_stage=2)


@pytest.mark.parametrize("files, message", [
    ({"mp_rank_00_model_states.pt": None, "zero_pp_rank_0_mp_rank_00_optim_states.pt": None},
     "1 optimizer partitions for 2 workers"),
    ({"zero_pp_rank_0_mp_rank_00_optim_states.pt": None, "zero_pp_rank_1_mp_rank_00_optim_states.pt": None},
     "no model states"),
    ({"mp_rank_00_model_states.pt": None, "zero_pp_rank_0_mp_rank_00_optim_states.pt": None,
      "zero_pp_rank_1_mp_rank_00_optim_states.pt": b"PK\x03\x04 truncated"},
     "not a complete torch archive"),
])
def test_a_corrupt_checkpoint_is_a_user_error_naming_the_file(tmp_path, files, message):
    run = _checkpoint(tmp_path, files)
    with pytest.raises(UserError, match=message) as info:
        check_resumable(run.checkpoints, world_size=2, zero_stage=2)
    assert str(tmp_path / "checkpoints") in str(info.value) and "delete" in str(info.value)


def test_latest_without_a_complete_checkpoint_is_a_user_error(tmp_path):
    run = RunDir(tmp_path)
    run.checkpoints.mkdir()
    (run.checkpoints / "latest").write_text("step30")
    with pytest.raises(UserError, match="no complete checkpoint to resume from"):
        check_resumable(run.checkpoints, world_size=2, zero_stage=2)
