"""Evaluation never unpickles what it reads: lm-eval's response cache holds JSON
(harness.evaluate.cache), and a model folder is loaded from safetensors weights only
(harness.evaluate.weights.safetensors_weights), by evaluation and by the fine-tuning track alike.

Each attack plants a pickle whose `__reduce__` creates a marker file when it is loaded (the
first test shows that it does); the others check that the marker never appears, and that the
results are those of an untouched evaluation.
"""

from __future__ import annotations

import doctest
import json
import os
import pickle
import shutil
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import transformers
import yaml
from sqlitedict import SqliteDict

import harness.evaluate.cache
from harness.data.entry import PreparedData
from harness.errors import UserError
from harness.evaluate.adapters import CausalLM
from harness.evaluate.cache import JsonResponses
from harness.evaluate.finetune import finetune_model
from harness.evaluate.run import evaluate_entry
from harness.evaluate.tasks import HELDOUT_TASK
from harness.evaluate.weights import model_sha256, safetensors_weights
from harness.jobs import RunPlan
from harness.schema import EvalConfig, FinetuneConfig, ResourcesConfig, TrainConfig
from tiny_lm import tiny_config, train_tokenizer

REPO = Path(__file__).resolve().parents[1]
TASK = "synthetic_hellaswag"


class Poison:
    """Unpickled, it creates `marker` and passes for `answer` (a cached answer, say)."""

    def __init__(self, marker: Path, answer=(0.0, True)):
        self.marker, self.answer = marker, answer

    def __reduce__(self):
        return eval, (f"(open({str(self.marker)!r}, 'w').close(), {self.answer!r})[1]",)


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory) -> Path:
    """A tiny causal decoder, initialized from scratch and saved with its tokenizer as a run saves it."""
    root = tmp_path_factory.mktemp("trusted") / "model"
    tokenizer = train_tokenizer()
    torch.manual_seed(0)
    transformers.ModernBertDecoderForCausalLM(transformers.ModernBertDecoderConfig(**tiny_config(tokenizer))).save_pretrained(root)
    tokenizer.save_pretrained(root)
    return root


@pytest.fixture(scope="module")
def tasks_dir(tmp_path_factory) -> Path:
    """A few rows of a multiple-choice task, the held-out text and a fine-tuning task."""
    root = tmp_path_factory.mktemp("tasks")
    hellaswag = [
        {"ctx": "alice lives in paris . alice works as a", "endings": ["baker .", "a baker as .", "farmer .", "paris in ."], "label": 0},
        {"ctx": "bob lives in rome . bob works as a", "endings": ["nurse .", "rome .", "farmer .", "as a ."], "label": 2},
        {"ctx": "carol lives in oslo . carol works as a", "endings": ["lima .", "pilot .", "baker .", "works ."], "label": 2},
    ]
    heldout = [{"text": "alice lives in paris . alice works as a baker ."}, {"text": "dave lives in lima ."}]
    sst2 = [{"sentence": "alice lives in paris .", "label": 1}, {"sentence": "bob lives in lima .", "label": 0}]
    for task, rows in {TASK: hellaswag, HELDOUT_TASK: heldout, "synthetic_sst2": sst2}.items():
        (root / task).mkdir()
        for split in ("train", "validation"):
            (root / task / f"{split}.jsonl").write_text("".join(json.dumps(row) + "\n" for row in rows))
    return root


def evaluate(model_dir: Path, tasks_dir: Path, out: Path, entry: str = TASK, **kwargs) -> dict:
    return evaluate_entry(model_dir, "loglikelihood", entry, tasks_dir=tasks_dir, out_dir=out, batch_size=4, **kwargs)


def tables(db: Path) -> list[str]:
    with sqlite3.connect(db) as con:
        return [name for (name,) in con.execute("SELECT name FROM sqlite_master WHERE type = 'table'")]


def stored(db: Path) -> dict[str, object]:
    """Every (key, value) of every table of an SQLite file."""
    with sqlite3.connect(db) as con:
        return {key: value for table in tables(db) for key, value in con.execute(f"SELECT key, value FROM {table}")}


def overwrite_values(db: Path, value) -> None:
    with sqlite3.connect(db) as con:
        for table in tables(db):
            con.execute(f"UPDATE {table} SET value = ?", (value,))


def test_docstring_examples():
    assert doctest.testmod(harness.evaluate.cache).failed == 0


def test_the_poison_runs_when_unpickled(tmp_path):
    """The control: loading the planted pickle does create the marker."""
    marker = tmp_path / "ran"
    assert pickle.loads(pickle.dumps(Poison(marker))) == (0.0, True)
    assert marker.exists()


def test_a_poisoned_response_cache_is_never_unpickled(model_dir, tasks_dir, tmp_path):
    """Poisoned answers under every key the evaluation asks for, in lm-eval's own (pickle) cache
    file at the path it had, and as pickles in the harness's cache file: nothing runs, and the
    answers are computed again."""
    truth = evaluate(model_dir, tasks_dir, tmp_path / "truth")
    cache, marker = tmp_path / "cache", tmp_path / "ran"
    first = evaluate(model_dir, tasks_dir, tmp_path / "first", cache_dir=cache)
    assert first["tasks"] == truth["tasks"]
    keys = {key for db in cache.iterdir() for key in stored(db)}
    assert len(keys) == 12  # 3 documents x 4 endings
    for db in cache.iterdir():
        overwrite_values(db, pickle.dumps(Poison(marker)))
    with SqliteDict(cache / f"hf-{model_sha256(model_dir)[:16]}_rank0.db") as old:  # lm-eval's own, pickling
        for key in keys:
            old[key] = Poison(marker)
        old.commit()
    again = evaluate(model_dir, tasks_dir, tmp_path / "again", cache_dir=cache)
    assert not marker.exists()
    assert again["tasks"] == truth["tasks"]


def test_the_cache_holds_json_and_its_answers_are_served(model_dir, tasks_dir, tmp_path):
    """Every stored answer is JSON text; a second evaluation reads them (an edited answer shows),
    and an unedited cache gives the uncached scores."""
    truth = evaluate(model_dir, tasks_dir, tmp_path / "truth", entry=HELDOUT_TASK)["tasks"][HELDOUT_TASK]["metrics"]
    cache = tmp_path / "cache"
    cached = evaluate(model_dir, tasks_dir, tmp_path / "first", entry=HELDOUT_TASK, cache_dir=cache)
    assert cached["tasks"][HELDOUT_TASK]["metrics"] == truth and truth["bits_per_byte"] > 0
    assert not list((tmp_path / "truth").glob("*.documents.jsonl"))  # a rolling likelihood has no per-document score
    (db,) = cache.iterdir()
    values = stored(db)
    assert len(values) == 2 and all(isinstance(json.loads(value), float) for value in values.values())
    overwrite_values(db, "0.0")  # log P(text) = 0: a text the model is certain of
    hit = evaluate(model_dir, tasks_dir, tmp_path / "hit", entry=HELDOUT_TASK, cache_dir=cache)
    assert hit["tasks"][HELDOUT_TASK]["metrics"]["bits_per_byte"] == 0.0


def test_the_json_store_reads_plain_data_only(tmp_path):
    responses = JsonResponses(tmp_path / "responses.db")
    responses["pair"], responses["text"], responses["object"] = (-1.5, True), "paris", object()
    responses.commit()
    assert (responses["pair"], responses["text"]) == ((-1.5, True), "paris")
    assert "object" not in responses  # not data: never stored
    with sqlite3.connect(tmp_path / "responses.db") as con:
        con.execute("INSERT INTO responses VALUES ('blob', ?), ('dict', '{\"a\": 1}')", (pickle.dumps((1.0, True)),))
    assert "blob" not in responses and "dict" not in responses
    eager = JsonResponses(tmp_path / "eager.db", commit_every_s=0)
    eager["pair"] = (-2.0, False)  # committed at once: another reader sees it
    assert JsonResponses(tmp_path / "eager.db")["pair"] == (-2.0, False)
    (tmp_path / "garbage.db").write_bytes(b"not sqlite" * 100)
    with pytest.raises(UserError, match="not a response cache the harness wrote") as error:
        JsonResponses(tmp_path / "garbage.db")
    assert error.value.where == str(tmp_path / "garbage.db")


def planted_model(model_dir: Path, root: Path, marker: Path, safetensors: bool, name: str = "pytorch_model.bin") -> Path:
    """A copy of the model folder with a poisoned pickle beside (or instead of) its safetensors."""
    folder = root / "model"
    shutil.copytree(model_dir, folder)
    (folder / name).write_bytes(pickle.dumps(Poison(marker, {})))
    if not safetensors:
        (folder / "model.safetensors").unlink()
    return folder


@pytest.mark.parametrize("safetensors", [True, False], ids=["beside-safetensors", "alone"])
def test_pickled_weights_are_refused_by_evaluation_and_fine_tuning(model_dir, tasks_dir, tmp_path, safetensors):
    marker = tmp_path / "ran"
    folder = planted_model(model_dir, tmp_path, marker, safetensors)
    bin_file = str(folder / "pytorch_model.bin")
    refusals = {
        "evaluate_entry": lambda: evaluate(folder, tasks_dir, tmp_path / "eval"),
        "adapter": lambda: CausalLM(pretrained=str(folder)),
        "finetune_model": lambda: finetune_model(
            folder, "decoder", "synthetic_sst2", FinetuneConfig(seeds=[0], max_steps=1, batch_size=2),
            tasks_dir=tasks_dir, max_length=16, out_dir=tmp_path / "finetune", device="cpu", log=lambda _: None),
        "model_sha256": lambda: model_sha256(folder),
    }
    for name, call in refusals.items():
        with pytest.raises(UserError, match="pickle-based format.*only safetensors") as error:
            call()
        assert error.value.where == bin_file, name
    assert not marker.exists()
    assert not (tmp_path / "eval").exists() and not (tmp_path / "finetune").exists()


@pytest.mark.parametrize("name", ["pytorch_model.bin", "model.pt", "weights.PTH", "state.pkl", "last.ckpt"])
def test_every_pickle_based_weights_format_is_refused(model_dir, tmp_path, name):
    folder = planted_model(model_dir, tmp_path, tmp_path / "ran", safetensors=True, name=name)
    with pytest.raises(UserError, match=r"pickle-based format .*only safetensors") as error:
        safetensors_weights(folder)
    assert error.value.where == str(folder / name)


def test_a_folder_without_safetensors_is_refused(model_dir, tmp_path):
    assert safetensors_weights(model_dir) == [model_dir / "model.safetensors"]
    folder = tmp_path / "empty"
    folder.mkdir()
    with pytest.raises(UserError, match=r"no model weights: expected \*\.safetensors"):
        model_sha256(folder)
    with pytest.raises(UserError, match="no such model folder"):
        safetensors_weights(tmp_path / "missing")


def test_cli_eval_of_a_run_with_pickled_weights_exits_2_naming_the_file(model_dir, tasks_dir, tmp_path):
    run = tmp_path / "results" / "trust" / "clm-tiny-s0-00000000"
    marker = tmp_path / "ran"
    planted_model(model_dir, run, marker, safetensors=True)
    (run / "run.yaml").write_text(yaml.safe_dump(run_plan(run, tasks_dir)))
    (run / "train.json").write_text("{}")
    env = {**os.environ, "PYTHONPATH": str(REPO), "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1"}
    done = subprocess.run([sys.executable, "-m", "harness.cli", "eval", str(run), "--tasks", TASK],
                          cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 2, done.stderr
    assert f"error: {run / 'model' / 'pytorch_model.bin'}: a weights file in a pickle-based format" in done.stderr
    assert "Traceback" not in done.stderr
    assert not marker.exists() and not (run / "eval" / f"{TASK}.json").exists()


def run_plan(run: Path, tasks_dir: Path) -> dict:
    """run.yaml of a trained causal-LM run, as `harness run` records it (`harness eval` reads the
    scoring, the task files and the eval section)."""
    root = tasks_dir.parent
    data = PreparedData(root=root, tokenizer_dir=run / "model", train_tokens=root / "train.bin",
                        val_tokens=root / "val.bin", dtype="uint16", vocab_size=1, n_train_tokens=0,
                        n_val_tokens=0, n_val_bytes=0, special_tokens={}, tasks_dir=tasks_dir)
    return RunPlan(
        run_id=run.name, suite=run.parent.name, objective="clm", label="clm", objective_config={},
        architecture="decoder", scoring="loglikelihood", defines_likelihood=True, size="tiny", seed=0,
        steps=1, warmup_steps=0, flops_per_step=1.0, tokens_per_step=64, params=1, params_trained=1,
        seq_len=32, block_length=32, scoring_args={}, run_dir=run, data=data, train=TrainConfig(),
        resources=ResourcesConfig(), eval=EvalConfig(tasks=[TASK])).record()
