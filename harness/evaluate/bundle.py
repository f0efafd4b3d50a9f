"""Offline bundles of lm-eval's stock tasks: their data stored once, their prompts kept as they are.

Where the hub can be reached, `make_bundle(["mmlu", "hellaswag"], Path("bundle"))` (the command
`harness eval bundle mmlu hellaswag --out bundle`) stores the splits each task reads:

    bundle/manifest.json                    lm-eval version, tasks, groups, files with their sha256
    bundle/data/hellaswag/train.parquet     one parquet file per split a task reads
    bundle/data/hellaswag/validation.parquet
    bundle/lm_eval/hellaswag.yaml           task YAMLs for this machine, rewritten at each use

Anywhere, offline too, `bundle_include(Path("bundle"))` checks the files against the manifest,
writes the YAMLs and returns `bundle/lm_eval/` for `TaskManager(include_path=...,
include_defaults=False)`. A task's YAML includes the stock one and changes only where the rows
come from:

    include: /.../site-packages/lm_eval/tasks/hellaswag/hellaswag.yaml
    task: hellaswag
    dataset_path: parquet
    dataset_name: null
    dataset_kwargs:
      data_files: {train: /.../bundle/data/hellaswag/train.parquet, validation: /.../validation.parquet}
      cache_dir: /.../bundle/.cache

so lm-eval's own prompt, choices, metrics and `!function` processing (found next to the stock
YAML, as `utils.process_docs` is for HellaSwag) run on the stored rows. A group such as `mmlu`
is its stock YAML included as it is: its members (groups, tags, tasks) resolve to the bundle's
own tasks, the only ones the bundle's index holds. A tag such as `glue` needs no file: the
stored tasks keep their stock `tag:` (so in a bundle a tag covers the stored tasks that carry
it, all of them when the tag itself was bundled). The manifest names stock YAMLs relative to lm-eval's
`tasks/` directory and data files relative to the bundle, so a bundle copied to another machine
is pointed at that machine's lm-eval install and at its own new place when it is used.
"""

from __future__ import annotations

import functools
import importlib.metadata
import json
import shutil
from collections.abc import Callable, Sequence
from pathlib import Path

import yaml

from harness.errors import UserError, did_you_mean
from harness.results import file_sha256, replace_dir, write_atomic, write_json
from harness.runtime import quiet

MANIFEST = "manifest.json"
FORMAT = 1
SPLIT_KEYS = ("training_split", "validation_split", "test_split", "fewshot_split")
MAKE_HINT = "make one where the network is with `harness eval bundle TASKS --out DIR`"


def make_bundle(tasks: Sequence[str], out: Path, progress: Callable[[str], None] = print) -> dict:
    """Store the data of `tasks` (stock task, group or tag names) under `out`; return the manifest.

    Each task's dataset is read as lm-eval reads it (`datasets.load_dataset` of its stock
    `dataset_path` and `dataset_name`), so this needs the network or a local Hugging Face cache.
    """
    tasks = [tasks] if isinstance(tasks, str) else list(tasks)
    if not tasks:
        raise UserError("no tasks to bundle; name lm-eval tasks, groups or tags (`lm-eval ls tasks`)")
    out = Path(out).resolve()
    index = _stock_index()
    leaves, groups = resolve_tasks(tasks, index)
    manifest = {
        "format": FORMAT,
        "lm_eval": _lm_eval_version(),
        "requested": tasks,
        "tasks": {name: _store_task(name, index[name], out, progress) for name in leaves},
        "groups": {name: {"yaml": _stock_relative(index[name].yaml_path)} for name in groups},
    }
    write_json(out / MANIFEST, manifest)
    bundle_include(out)
    return manifest


def bundle_include(bundle_dir: Path) -> Path:
    """Check the bundle's files against its manifest and write its lm-eval YAMLs for this machine.

    Returns `bundle_dir/lm_eval/`. A file is rewritten only when its text changes, and a YAML
    the manifest no longer names is removed.
    """
    bundle_dir = Path(bundle_dir).resolve()
    manifest = read_manifest(bundle_dir)
    _check_data(bundle_dir, manifest)
    wanted = {f"{name}.yaml": _task_yaml(name, entry, bundle_dir, manifest)
              for name, entry in manifest["tasks"].items()}
    wanted |= {f"{name}.yaml": _group_yaml(name, entry, bundle_dir, manifest)
               for name, entry in manifest["groups"].items()}
    include = bundle_dir / "lm_eval"
    for file_name, text in wanted.items():
        _write_if_changed(include / file_name, text)
    for stale in include.glob("*.yaml"):
        if stale.name not in wanted:
            stale.unlink(missing_ok=True)
    return include


def bundle_tasks(bundle_dir: Path) -> list[str]:
    """The names the bundle can evaluate: the requested names, then every stored task and group."""
    manifest = read_manifest(Path(bundle_dir).resolve())
    return list(dict.fromkeys([*manifest["requested"], *manifest["tasks"], *manifest["groups"]]))


def read_manifest(bundle_dir: Path) -> dict:
    path = bundle_dir / MANIFEST
    if not path.is_file():
        raise UserError(f"no bundle manifest here; {MAKE_HINT}", where=str(path))
    try:
        manifest = json.loads(path.read_text())
        complete = {"format", "lm_eval", "requested", "tasks", "groups"} <= set(manifest)
    except (json.JSONDecodeError, UnicodeDecodeError, TypeError):
        complete = False
    if not complete or manifest["format"] != FORMAT:
        raise UserError(f"not a bundle manifest (format {FORMAT}); {MAKE_HINT}", where=str(path))
    return manifest


# -- which stock tasks a name stands for -------------------------------------------------------


@functools.lru_cache(maxsize=1)
def _stock_index() -> dict:
    """lm-eval's index of its own tasks, groups and tags (built once: it takes seconds)."""
    from lm_eval.tasks import TaskManager

    with quiet():
        return TaskManager(include_defaults=True).task_index


def resolve_tasks(names: Sequence[str], index: dict) -> tuple[list[str], list[str]]:
    """The stock tasks and groups that `names` reach, in order: a group through its members
    (groups, tags, tasks), a tag through its tasks. For ["mmlu"]: the 57 subject tasks, and the
    groups mmlu, mmlu_stem, mmlu_other, mmlu_social_sciences, mmlu_humanities.
    """
    from lm_eval.tasks._index import Kind

    leaves, groups = {}, {}

    def visit(name: str, parent: str | None) -> None:
        entry = index.get(name)
        if entry is None:
            raise UserError(_unknown(name, parent, index), where=parent)
        if entry.kind is Kind.PY_TASK:
            raise UserError(f"task '{name}' is a Python class; a bundle holds YAML tasks only", where=parent)
        if entry.kind is Kind.TASK:
            leaves[name] = True
        elif entry.kind is Kind.TAG:
            for task in sorted(entry.tags):
                visit(task, name)
        elif name not in groups:  # a group, met for the first time
            groups[name] = True
            for member in _as_list(entry.cfg.get("task")):
                visit(_member_name(member, name), name)

    for name in names:
        visit(name, None)
    return list(leaves), list(groups)


def _unknown(name: str, parent: str | None, index: dict) -> str:
    if parent is None:
        return f"unknown task '{name}'{did_you_mean(name, index)}; see `lm-eval ls tasks`"
    return f"group '{parent}' lists '{name}', which is no stock task; an inline task cannot be bundled"


def _member_name(member: str | dict, group: str) -> str:
    """A group member's name; a member that redefines its dataset cannot be bundled."""
    if isinstance(member, str):
        return member
    name = member.get("task", member.get("group"))
    if not isinstance(name, str) or any(key.startswith("dataset_") for key in member):
        raise UserError(f"group '{group}' defines a member inline ({str(member)[:80]}); a bundle "
                        "holds groups of named stock tasks only", where=group)
    return name


def _as_list(value) -> list:
    return value if isinstance(value, list) else [value]


# -- storing a task's data ---------------------------------------------------------------------


def _store_task(name: str, entry, out: Path, progress: Callable[[str], None]) -> dict:
    """Fetch the task's dataset and write the splits it reads to out/data/<task>/<split>.parquet."""
    config = entry.cfg
    splits = list(dict.fromkeys(config[key] for key in SPLIT_KEYS if config.get(key) is not None))
    dataset = _fetch(name, config)
    missing = [split for split in splits if split not in dataset]
    if missing:
        raise UserError(f"dataset '{config['dataset_path']}' has no split {', '.join(missing)} "
                        f"(its splits: {', '.join(dataset)})", where=name)
    staging = out / "data" / f".{name}.partial"
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir(parents=True)
    with quiet():
        for split in splits:
            dataset[split].to_parquet(staging / f"{split}.parquet")
    replace_dir(staging, out / "data" / name)
    stored = {split: _file_record(out, f"data/{name}/{split}.parquet", dataset[split].num_rows)
              for split in splits}
    rows = ", ".join(f"{split} {record['rows']}" for split, record in stored.items())
    progress(f"{name}: {_dataset_label(config)} -> {rows} rows")
    return {
        "yaml": _stock_relative(entry.yaml_path),
        "dataset_path": config["dataset_path"],
        "dataset_name": config.get("dataset_name"),
        "splits": stored,
    }


def _fetch(name: str, config: dict):
    """The task's dataset, loaded as lm-eval loads it."""
    import datasets

    if "custom_dataset" in config or not config.get("dataset_path"):
        raise UserError(f"task '{name}' builds its dataset in Python; a bundle holds tasks that "
                        "read theirs with `datasets.load_dataset`", where=name)
    kwargs = {key: value for key, value in (config.get("dataset_kwargs") or {}).items()
              if key != "trust_remote_code"}  # gone from datasets 4; lm-eval drops it too
    try:
        with quiet():
            return datasets.load_dataset(config["dataset_path"], config.get("dataset_name"), **kwargs)
    except (OSError, ValueError) as error:  # ConnectionError, DatasetNotFoundError, unknown config
        raise UserError(f"cannot load dataset {_dataset_label(config)} ({error}); making a bundle "
                        "needs the network, or a local Hugging Face cache that holds it", where=name) from None


def _dataset_label(config: dict) -> str:
    name = config.get("dataset_name")
    return f"'{config['dataset_path']}'" + (f" ('{name}')" if name else "")


def _file_record(bundle_dir: Path, relative: str, rows: int) -> dict:
    return {"file": relative, "rows": rows, "sha256": file_sha256(bundle_dir / relative)}


# -- the YAMLs, for this machine ---------------------------------------------------------------


def _check_data(bundle_dir: Path, manifest: dict) -> None:
    for name, entry in manifest["tasks"].items():
        for split, record in entry["splits"].items():
            path = bundle_dir / record["file"]
            if not path.is_file():
                raise UserError(f"data of task '{name}' ({split}) is missing; {MAKE_HINT}", where=str(path))
            if file_sha256(path) != record["sha256"]:
                raise UserError(f"data of task '{name}' ({split}) differs from the one stored (sha256 "
                                f"mismatch); the file was changed or damaged; {MAKE_HINT}", where=str(path))


def _task_yaml(name: str, entry: dict, bundle_dir: Path, manifest: dict) -> str:
    config = {
        "include": str(_stock_path(entry["yaml"], name, bundle_dir, manifest)),
        "task": name,
        "dataset_path": "parquet",
        "dataset_name": None,
        "dataset_kwargs": {
            "data_files": {split: str(bundle_dir / record["file"]) for split, record in entry["splits"].items()},
            "cache_dir": str(bundle_dir / ".cache"),
        },
    }
    return _header(entry["yaml"]) + yaml.safe_dump(config, sort_keys=False)


def _group_yaml(name: str, entry: dict, bundle_dir: Path, manifest: dict) -> str:
    config = {"include": str(_stock_path(entry["yaml"], name, bundle_dir, manifest))}
    return _header(entry["yaml"]) + yaml.safe_dump(config, sort_keys=False)


def _header(stock: str) -> str:
    return f"# Written by harness.evaluate.bundle_include from {MANIFEST} (stock {stock}); edits are lost.\n"


def _stock_path(relative: str, name: str, bundle_dir: Path, manifest: dict) -> Path:
    """The stock YAML in this machine's lm-eval install."""
    path = _tasks_root() / relative
    if not path.is_file():
        raise UserError(f"'{name}' includes lm-eval's {relative}, which lm-eval {_lm_eval_version()} "
                        f"here lacks (the bundle was made with lm-eval {manifest['lm_eval']}); install "
                        f"that version, or make the bundle again with this one", where=str(bundle_dir / MANIFEST))
    return path


def _stock_relative(yaml_path: Path) -> str:
    return Path(yaml_path).resolve().relative_to(_tasks_root()).as_posix()


def _tasks_root() -> Path:
    import lm_eval.tasks

    return Path(lm_eval.tasks.__file__).resolve().parent


def _lm_eval_version() -> str:
    return importlib.metadata.version("lm_eval")


def _write_if_changed(path: Path, text: str) -> None:
    if not path.is_file() or path.read_text() != text:
        write_atomic(path, text)
