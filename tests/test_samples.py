"""Per-sample records (harness.evaluate.samples), `harness eval worst` (harness.evaluate.worst),
the exported task folder (harness.evaluate.export), and the permissions of what they write.

The samples file is checked against the file lm-eval's own EvaluationTracker writes for the same
records; the exported tasks are loaded by lm-eval's own TaskManager from another working
directory, and again after the folder moved.
"""

from __future__ import annotations

import gzip
import json
import os
import stat
from types import SimpleNamespace

import numpy as np
import pytest
from lm_eval.loggers.evaluation_tracker import EvaluationTracker

from harness.cli import main
from harness.errors import UserError
from harness.evaluate.export import LOADER, export_tasks
from harness.evaluate.samples import (
    encode_samples,
    read_samples,
    remove_samples,
    samples_dir,
    task_sample_files,
    write_samples,
)
from harness.evaluate.worst import gold_indices, kind_of, worst, worst_of_run
from harness.jobs import EvalJob
from harness.results import RunDir, replace_dir, staging_dir, write_atomic, write_json
from harness.schema import EvalConfig
from harness.units import EvalUnit


def _choice_sample(doc_id: int, lls: list[float], gold: int, context: str = "claim : x . verdict :",
                   choices=(" false", " true")) -> dict:
    """A multiple-choice sample as lm-eval's evaluator logs it (before its tracker writes it)."""
    return {
        "doc_id": doc_id, "doc": {"sentence": f"x é {doc_id}", "label": gold}, "target": gold,
        "arguments": [(context, choice) for choice in choices],
        "resps": [[(ll, False)] for ll in lls], "filtered_resps": [(ll, False) for ll in lls],
        "filter": "none", "metrics": ["acc"], "doc_hash": "d" * 64, "prompt_hash": "p" * 64,
        "target_hash": "t" * 64, "acc": float(max(range(len(lls)), key=lls.__getitem__) == gold),
    }


def encode_samples_line(sample: dict) -> str:
    """The line the samples file holds for one sample."""
    return gzip.decompress(encode_samples([sample])).decode()


def test_the_samples_file_holds_exactly_what_lm_evals_tracker_writes(tmp_path):
    samples = [_choice_sample(0, [-1.5, -0.25], 1), _choice_sample(1, [np.float32(-0.5), -3.0], 1)]
    samples[1]["acc"] = np.float64(0.0)  # numpy values are written as numbers, as lm-eval does
    kept = json.loads(json.dumps(samples, default=str))
    ours = encode_samples(samples)
    assert json.loads(json.dumps(samples, default=str)) == kept  # the samples given are unchanged

    tracker = EvaluationTracker(output_path=str(tmp_path / "results.json"))
    tracker.date_id = "now"
    tracker.save_results_samples(task_name="synthetic_glue", samples=samples)
    assert gzip.decompress(ours) == (tmp_path / "samples_synthetic_glue_now.jsonl").read_bytes()
    # a gzip stream without a file name (flags 0) and with time stamp 0: identical runs, identical bytes
    assert ours[3] == 0 and ours[4:8] == b"\0\0\0\0" and encode_samples(kept) == ours
    record = json.loads(gzip.decompress(ours).splitlines()[0])
    assert record["arguments"]["gen_args_1"] == {"arg_0": "claim : x . verdict :", "arg_1": " true"}
    assert record["filtered_resps"] == [["-1.5", "False"], ["-0.25", "False"]] and record["target"] == "1"


def test_write_samples_replaces_the_folder_whole_and_reads_back(tmp_path):
    write_samples(tmp_path, "glue", {"synthetic_sst2": [_choice_sample(0, [-1, -2], 0)],
                                     "synthetic_cola": [_choice_sample(0, [-1, -2], 1)]})
    folder = write_samples(tmp_path, "glue", {"synthetic_sst2": [_choice_sample(i, [-1, -2], 0) for i in range(3)]})
    assert folder == samples_dir(tmp_path, "glue") == tmp_path / "glue.samples"
    assert sorted(p.name for p in folder.iterdir()) == ["synthetic_sst2.jsonl.gz"]  # no stale task
    assert [r["doc_id"] for r in read_samples(folder / "synthetic_sst2.jsonl.gz")] == [0, 1, 2]
    assert [p.name for p in tmp_path.iterdir()] == ["glue.samples"]  # no staging folder left
    # a task is found under whichever entry evaluated it; an entry (a tag) gives all of its tasks
    assert task_sample_files(tmp_path, "synthetic_sst2") == [folder / "synthetic_sst2.jsonl.gz"]
    assert task_sample_files(tmp_path, "glue") == [folder / "synthetic_sst2.jsonl.gz"]
    remove_samples(tmp_path, "glue")
    assert not folder.exists()


def test_missing_and_broken_samples_are_user_errors_naming_the_file(tmp_path):
    with pytest.raises(UserError) as missing:
        task_sample_files(tmp_path / "eval", "synthetic_glue")
    assert missing.value.where == str(tmp_path / "eval" / "synthetic_glue.samples" / "synthetic_glue.jsonl.gz")
    assert "eval.log_samples" in missing.value.message and "--log-samples" in missing.value.message
    broken = tmp_path / "broken.jsonl.gz"
    broken.write_bytes(b"not gzip")
    with pytest.raises(UserError) as bad:
        read_samples(broken)
    assert bad.value.where == str(broken)


def test_worst_multiple_choice_is_ordered_by_the_gold_choices_margin():
    margins = {0: 2.0, 1: -3.0, 2: -0.5, 3: -3.0, 4: 1.0}  # gold minus the best wrong choice
    records = [("synthetic_hellaswag", json.loads(encode_samples_line(_choice_sample(
        doc, [-5.0, -5.0 + margin, -5.5, -9.0], 1, choices=(" a", " b", " c", " d")))))
        for doc, margin in margins.items()]
    examples, scored = worst(records, 3)
    assert scored == 5 and [e.doc_id for e in examples] == ["1", "3", "2"]  # ties by document
    assert [-e.badness for e in examples] == [-3.0, -3.0, -0.5]
    assert examples[0].summary == "margin -3.000: gold ' b' below ' a'"
    shown = "\n".join(examples[0].lines)
    assert "gold" in shown and "chosen" in shown and "-8.000  ' b'" in shown


def test_worst_reads_targets_and_the_other_output_types():
    assert gold_indices("2", ["a", "b", "c"]) == [2] and gold_indices("[0, 2]", ["a", "b", "c"]) == [0, 2]
    assert gold_indices("yes", [" no", " yes"]) == [1] and gold_indices("maybe", ["no", "yes"]) == []
    rolling = {"doc_id": 0, "arguments": {"gen_args_0": {"arg_0": "ab"}}, "filtered_resps": ["-2.0"],
               "bits_per_byte": [-2.0, 2], "metrics": ["bits_per_byte"]}
    dense = {**rolling, "doc_id": 1, "bits_per_byte": [-8.0, 2]}
    generated = {"doc_id": 0, "arguments": {"gen_args_0": {"arg_0": "Q:", "arg_1": {"until": ["\n"]}}},
                 "filtered_resps": ["4"], "target": "5", "metrics": ["exact_match"], "exact_match": 0.0}
    single = {"doc_id": 0, "arguments": {"gen_args_0": {"arg_0": "the cat", "arg_1": " sat"}},
              "filtered_resps": [["-4.5", "False"]]}
    assert [kind_of(r) for r in (rolling, generated, single)] == ["loglikelihood_rolling", "generate_until", "loglikelihood"]
    examples, _ = worst([("t", rolling), ("t", dense)], 2)
    assert [e.doc_id for e in examples] == ["1", "0"]  # 5.771 bits per byte before 1.443
    assert examples[0].summary == f"{8 / 2 / np.log(2):.3f} bits per byte over 2 bytes"
    assert worst([("t", generated)], 1)[0][0].summary == "exact_match 0.000"
    assert worst([("t", single)], 1)[0][0].summary == "log-likelihood -4.500 of the target (greedy: False)"


def test_harness_eval_worst_prints_n_examples_and_says_how_to_get_samples(tmp_path, capsys):
    run = tmp_path / "run"
    (run / "eval").mkdir(parents=True)
    (run / "run.yaml").write_text("{}\n")
    assert main(["eval", "worst", str(run), "--task", "synthetic_glue"]) == 2
    assert "eval.log_samples" in capsys.readouterr().err
    write_samples(run / "eval", "synthetic_glue", {"synthetic_glue": [
        _choice_sample(doc, [-1.0, -1.0 - doc], 0) for doc in range(5)]})
    assert main(["eval", "worst", str(run), "--task", "synthetic_glue", "-n", "2"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("synthetic_glue: the 2 worst of 5 documents")
    assert [line.split(":")[0] for line in out.splitlines() if line.startswith("#")] == [
        "#1 synthetic_glue doc 0", "#2 synthetic_glue doc 1"]  # margins 0 then 1
    assert out == worst_of_run(run / "eval", "synthetic_glue", 2)


def test_a_unit_wanting_samples_is_not_current_without_them(tmp_path):
    def unit(log_samples: bool) -> EvalUnit:
        job = EvalJob(run_id="r", run_dir=tmp_path, seed=0, steps=1, architecture="decoder",
                      scoring="loglikelihood", defines_likelihood=True, scoring_args={}, seq_len=32,
                      tasks_dir=tmp_path, eval=EvalConfig(log_samples=log_samples), use_gpu=False)
        return EvalUnit(job, "synthetic_glue")

    write_json(tmp_path / "eval" / "synthetic_glue.json", {"harness": {"request": unit(True).request()}})
    assert unit(False).is_current() and not unit(True).is_current()
    write_samples(tmp_path / "eval", "synthetic_glue", {"synthetic_glue": []})
    assert unit(True).is_current()


@pytest.fixture
def task_data(tmp_path):
    """Rows of two shipped tasks, as the data step writes them."""
    rows = {"synthetic_glue": [{"sentence": f"alice lives in city{i} .", "label": i % 2} for i in range(4)],
            "synthetic_hellaswag": [{"ctx": "bob works as a", "endings": ["baker .", "as .", "a .", "x ."],
                                     "label": 0}]}
    for task, task_rows in rows.items():
        for split in ("train", "validation"):
            write_atomic(tmp_path / "data" / task / f"{split}.jsonl", "".join(json.dumps(r) + "\n" for r in task_rows))
    return tmp_path / "data", rows


def test_exported_tasks_load_in_lm_evals_task_manager_from_anywhere(task_data, tmp_path, monkeypatch):
    from lm_eval.tasks import TaskManager

    data, rows = task_data
    out = tmp_path / "exported"
    assert export_tasks(data, out, list(rows)) == list(rows)
    assert sorted(p.name for p in out.iterdir()) == ["data", f"{LOADER}.py", "synthetic_glue.yaml", "synthetic_hellaswag.yaml"]
    assert str(tmp_path) not in (out / "synthetic_glue.yaml").read_text()  # nothing absolute
    moved = tmp_path / "elsewhere" / "tasks"
    for folder in (out, moved):
        if folder == moved:
            moved.parent.mkdir()
            out.rename(moved)
        monkeypatch.chdir(tmp_path / "elsewhere" if folder == moved else data)
        manager = TaskManager(include_path=str(folder), include_defaults=False)
        tasks = manager.load(list(rows))["tasks"]
        for name, task_rows in rows.items():
            assert [dict(doc) for doc in tasks[name].validation_docs()] == task_rows
    with pytest.raises(UserError, match="not one of the harness's own tasks"):
        export_tasks(data, tmp_path / "x", ["hellaswag"])
    with pytest.raises(UserError) as missing:
        export_tasks(data, tmp_path / "x", ["synthetic_mmlu"])
    assert missing.value.where == str(data / "synthetic_mmlu" / "train.jsonl")


@pytest.fixture(params=[0o022, 0o077], ids=["umask022", "umask077"])
def umask(request):
    """The process's umask set for one test, then restored."""
    before = os.umask(request.param)
    yield request.param
    os.umask(before)


def _mode(path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory):
    """A tiny decoder and a folder holding its tokenizer, as a trained run's export gets them."""
    import transformers

    from tiny_lm import tiny_config, train_tokenizer

    tokenizer, folder = train_tokenizer(), tmp_path_factory.mktemp("tokenizer")
    tokenizer.save_pretrained(folder)
    config = transformers.ModernBertDecoderConfig(**tiny_config(tokenizer))
    return transformers.ModernBertDecoderForCausalLM(config), SimpleNamespace(tokenizer_dir=folder)


def test_every_writer_follows_the_umask(umask, task_data, tiny_model, tmp_path):
    """Files get 0o666 less the umask and folders 0o777 less it (0644 and 0755 under 022), as open()
    and mkdir() give: never mkstemp's 0600 or mkdtemp's 0700 under a umask that grants more, nor
    the 0600 safetensors gives the exported weights."""
    from harness.data.prepare import make_temp_dir
    from harness.lock import SuiteLock
    import torch

    from harness.train.worker import _save_model
    from objectives.base import Export

    data, rows = task_data
    root = tmp_path / "written"
    extra = {"pair_head.safetensors": {"weight": torch.zeros(2, 4)}}  # an extra module, as NSP keeps
    _save_model(Export(tiny_model[0], extra), RunDir(root / "run"), tiny_model[1])
    assert (root / "run" / "model" / "model.safetensors").is_file()
    assert (root / "run" / "model" / "pair_head.safetensors").is_file()
    write_atomic(root / "a" / "file.json", "{}")
    staging = staging_dir(root / "folder")
    write_atomic(staging / "inner.txt", "x")
    replace_dir(staging, root / "folder")
    write_samples(root / "eval", "synthetic_glue", {"synthetic_glue": [_choice_sample(0, [-1, -2], 0)]})
    export_tasks(data, root / "exported", list(rows))
    make_temp_dir(root, prefix="cache-")
    with SuiteLock(root / "suite", "test"):
        lock_mode = _mode(root / "suite" / ".lock")
    written = [p for p in root.rglob("*")]
    assert {oct(_mode(p)) for p in written if p.is_file()} == {oct(0o666 & ~umask)}
    assert {oct(_mode(p)) for p in written if p.is_dir()} == {oct(0o777 & ~umask)}
    assert lock_mode == 0o666 & ~umask


def test_eval_subcommands_have_their_own_parsers_and_eval_run_dir_keeps_its_own():
    from harness.cli_eval import eval_subcommand

    for argv, prog, given in ((["eval", "bundle", "mmlu", "--out", "b"], "harness eval bundle", {"tasks": ["mmlu"]}),
                              (["eval", "worst", "r", "--task", "t"], "harness eval worst", {"n": 10, "task": "t"}),
                              (["eval", "export-tasks", "d", "--run", "r"], "harness eval export-tasks", {"tasks": None})):
        parser, rest = eval_subcommand(argv, "epilog")
        args = parser.parse_args(rest)
        assert parser.prog == prog and rest == argv[2:]
        assert {key: getattr(args, key) for key in given} == given
    assert eval_subcommand(["eval", "results/s/run", "--tasks", "worst"], "epilog") is None
    parser, rest = eval_subcommand(["eval", "worst", "r", "--task", "t", "-n", "0"], "epilog")
    with pytest.raises(SystemExit):  # -n must be above 0
        parser.parse_args(rest)
