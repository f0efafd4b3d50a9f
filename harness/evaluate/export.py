"""The harness's own tasks as a folder lm-eval's command line reads (`harness eval export-tasks`).

The shipped templates (harness/evaluate/templates) name their data files relative to a data
folder the harness fills in, and the copies the harness evaluates with
(results/_data/<hash>/tasks/lm_eval/) name them by absolute path inside the suite's cache. Neither
is meant for `lm_eval --include_path`. `export_tasks` writes a folder that is:

    DIR/synthetic_glue.yaml ...          one task each, prompts and metrics as shipped
    DIR/data/synthetic_glue/train.jsonl  the data files they read, copied from a run's data
    DIR/harness_task_data.py             reads those files relative to its own folder

Each YAML names its data relative to DIR and reads it through lm-eval's `custom_dataset:
!function harness_task_data.load` (lm-eval imports a `!function` module from beside the YAML),
so the folder works from any working directory, and keeps working when moved or copied whole.
It needs nothing of the harness: lm-eval and `datasets` only.

Light: yaml only (transformers is imported to name a model's [EOS], `hf_model_args`).
"""

from __future__ import annotations

import shlex
from collections.abc import Sequence
from pathlib import Path

import yaml

from harness.errors import UserError
from harness.evaluate.tasks import SHIPPED_TASKS, TEMPLATES
from harness.results import write_atomic

LOADER = "harness_task_data"  # the module beside the YAMLs; a name no lm-eval task folder uses
LOADER_SOURCE = '''"""Reads the data files of the task YAMLs beside this file, written by `harness eval
export-tasks`. Their names are relative to this folder, so that lm-eval finds them from any
working directory (`lm_eval --include_path THIS_FOLDER ...`) and the folder can be moved whole."""

from pathlib import Path

import datasets

HERE = Path(__file__).resolve().parent


def load(data_files, **metadata):
    """lm-eval's `custom_dataset`: called with the task's metadata (unused here) and its
    dataset_kwargs, whose `data_files` map each split to a JSON-lines file under this folder."""
    return datasets.load_dataset("json", data_files={split: str(HERE / name) for split, name in data_files.items()})
'''


def export_tasks(tasks_dir: Path, out: Path, tasks: Sequence[str] | None = None) -> list[str]:
    """Write the shipped tasks (`tasks`, default all) with their data from `tasks_dir` (a run's
    prepared task data) into `out`, as the module docstring lays out; returns the tasks written."""
    tasks_dir, out = Path(tasks_dir), Path(out)
    tasks = list(SHIPPED_TASKS if tasks is None else tasks)
    for task in tasks:
        _check_exportable(task, tasks_dir)
    write_atomic(out / f"{LOADER}.py", LOADER_SOURCE)
    for task in tasks:
        config = yaml.safe_load((TEMPLATES / f"{task}.yaml").read_text())
        files = {}
        for split, name in config["dataset_kwargs"]["data_files"].items():
            files[split] = f"data/{task}/{name}"
            write_atomic(out / files[split], (tasks_dir / task / name).read_bytes())
        write_atomic(out / f"{task}.yaml", _task_yaml(task, config, files))
    return tasks


def _check_exportable(task: str, tasks_dir: Path) -> None:
    if task not in SHIPPED_TASKS:
        raise UserError(f"'{task}' is not one of the harness's own tasks ({', '.join(SHIPPED_TASKS)}); "
                        "lm-eval's stock tasks need no export", where="--tasks")
    config = yaml.safe_load((TEMPLATES / f"{task}.yaml").read_text())
    for name in config["dataset_kwargs"]["data_files"].values():
        if not (path := tasks_dir / task / name).is_file():
            raise UserError(f"data of task '{task}' is missing; `harness run` (or `harness data "
                            "prepare`) of the run's suite writes it again", where=str(path))


def _task_yaml(task: str, config: dict, files: dict[str, str]) -> str:
    """The task's YAML: the template's settings, its data read by the loader beside it."""
    config = {key: value for key, value in config.items() if key not in ("task", "dataset_path")}
    config["dataset_kwargs"] = {"data_files": files}
    header = (f"# Written by `harness eval export-tasks` from the harness's {task}.yaml. The data files\n"
              f"# are named relative to this folder and read by {LOADER}.py beside this file, so the\n"
              f"# folder works from any working directory: lm_eval --include_path THIS_FOLDER ...\n")
    # `!function` is lm-eval's YAML tag, which yaml.safe_dump cannot write: that line is written as text.
    return (header + yaml.safe_dump({"task": task}, sort_keys=False)
            + f"custom_dataset: !function {LOADER}.load\n" + yaml.safe_dump(config, sort_keys=False))


def hf_model_args(model_dir: Path) -> dict:
    """The model arguments the harness gives lm-eval's `hf` model for a causal model saved in
    `model_dir`: no [BOS] before the text, as in training, and an empty context conditioned on
    [EOS], the document separator the model saw (whatever the tokenizer calls its BOS)."""
    import transformers

    eos = transformers.AutoTokenizer.from_pretrained(model_dir).eos_token_id
    # An absolute path: lm-eval asks the hub for the revision of a name that looks like a repository id.
    return {"pretrained": str(Path(model_dir).resolve()), "dtype": "float32", "add_bos_token": False,
            "prefix_token_id": eos}


def lm_eval_command(model_dir: Path, out: Path, tasks: Sequence[str], *, batch_size: int, seed: int,
                    limit: int | None = None, num_fewshot: int | None = None,
                    scoring_args: dict | None = None) -> str:
    """The `lm_eval` command line that scores a causal run on the exported tasks as the harness
    does: the same model arguments (`hf_model_args` and the run's `scoring_args`, such as the
    context it was trained on, `max_length`), batch size, seeds, limit and few-shot count."""
    args = hf_model_args(model_dir) | dict(scoring_args or {})
    model_args = ",".join(f"{key}={value}" for key, value in args.items())
    parts = ["lm_eval", "--model", "hf", "--model_args", model_args, "--include_path", str(Path(out).resolve()),
             "--tasks", ",".join(tasks), "--batch_size", str(batch_size), "--seed", ",".join([str(seed)] * 4)]
    if limit is not None:
        parts += ["--limit", str(limit)]
    if num_fewshot is not None:
        parts += ["--num_fewshot", str(num_fewshot)]
    return shlex.join(parts)
