"""Where lm-eval's tasks come from, and the preflight that proves they load.

Where tasks come from, first match wins:
- the harness's own tasks, shipped as YAML templates in `tasks/` (`SHIPPED_TASKS`);
  `materialize_tasks` points copies of them at the local data files under `tasks_dir`;
- an offline bundle (`harness eval bundle`, harness.evaluate.bundle): stock tasks reading
  stored copies of their data;
- lm-eval's stock task registry, which reads the Hugging Face hub (or its local cache).

`task_manager` builds lm-eval's TaskManager over those; `check_tasks` is the preflight run
before any training: every entry must load, data and all.

lm_eval is imported inside the functions: importing it takes seconds, and the report imports
this module only to read `HELDOUT_TASK`.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import yaml

from harness.errors import UserError, did_you_mean
from harness.evaluate.bundle import bundle_include, bundle_tasks
from harness.results import write_atomic
from harness.runtime import quiet

TEMPLATES = Path(__file__).parent / "templates"  # the shipped task YAMLs
SHIPPED_TASKS = tuple(sorted(path.stem for path in TEMPLATES.glob("*.yaml")))
HELDOUT_TASK = "harness_heldout"  # the validation documents, scored for bits per byte
BUNDLE_HINT = ("offline, evaluate it from a bundle: make one where the network is with "
               "`harness eval bundle {task} --out DIR`, then set `eval.bundle: DIR` in the suite "
               "(or pass --bundle DIR)")


def check_tasks(tasks: Sequence[str], tasks_dir: Path, bundle: Path | None = None) -> None:
    """Preflight, before any training: every entry is known and loads, data and all.

    The harness's own tasks need only their data files. Any other entry is built as lm-eval
    builds it (its dataset is read: from the bundle, a local Hugging Face cache or the hub);
    one that cannot be loaded is a UserError saying how to evaluate it offline.
    """
    tasks = list(tasks)
    if not tasks:
        raise UserError(f"no tasks to evaluate; known: {', '.join(SHIPPED_TASKS)} and lm-eval's own tasks",
                        where="eval.tasks")
    shipped = [task for task in tasks if task in SHIPPED_TASKS]
    for task in shipped:
        _check_task_data(task, Path(tasks_dir))
    bundled = set(_bundle_tasks(bundle))
    others = [task for task in tasks if task not in SHIPPED_TASKS]
    # At most two task indexes: the bundle's tasks, and lm-eval's stock ones for the rest.
    for batch in ([t for t in others if t in bundled], [t for t in others if t not in bundled]):
        if batch:
            _check_loads(batch, tasks_dir, bundle)


def _check_loads(tasks: list[str], tasks_dir: Path, bundle: Path | None) -> None:
    # Built before `quiet`: building it imports lm_eval and datasets, whose levels and progress
    # bars `quiet` then sets aside and restores.
    manager = task_manager(tasks_dir, bundle, tasks, {})
    check_names(tasks, manager)
    with quiet():
        for task in tasks:
            try:
                manager.load([task])  # builds every task under the name: its dataset is read
            except Exception as e:  # datasets says ConnectionError, FileNotFoundError, ValueError, ...
                reason = str(e).strip().splitlines()[0][:300] if str(e).strip() else type(e).__name__
                raise UserError(f"task '{task}' cannot be loaded ({reason}); "
                                + BUNDLE_HINT.format(task=task), where="eval.tasks") from None


def materialize_tasks(tasks_dir: Path) -> Path:
    """Write the shipped task YAMLs, pointed at the data under `tasks_dir`, into `tasks_dir/lm_eval/`.

    Returns that directory, for lm-eval's `TaskManager(include_path=...)`. The data files are
    made absolute (`tasks_dir/<task>/<split>.jsonl`), and `datasets` caches its Arrow copies
    under `tasks_dir/datasets_cache` rather than in the user's home.
    """
    tasks_dir = Path(tasks_dir).resolve()
    include = tasks_dir / "lm_eval"
    include.mkdir(parents=True, exist_ok=True)
    for template in sorted(TEMPLATES.glob("*.yaml")):
        config = yaml.safe_load(template.read_text())
        config["dataset_kwargs"] = _local_dataset_kwargs(config, tasks_dir)
        header = f"# Written by harness.evaluate.tasks.materialize_tasks from {template.name}; edits are lost.\n"
        write_atomic(include / template.name, header + yaml.safe_dump(config, sort_keys=False))
    return include


def _local_dataset_kwargs(config: dict, tasks_dir: Path) -> dict:
    data_dir = tasks_dir / config["task"]
    files = config["dataset_kwargs"]["data_files"]
    return {
        "data_files": {split: str(data_dir / name) for split, name in files.items()},
        "cache_dir": str(tasks_dir / "datasets_cache"),
    }


def _bundle_tasks(bundle: Path | None) -> list[str]:
    return [] if bundle is None else bundle_tasks(Path(bundle))


def task_manager(tasks_dir: Path, bundle: Path | None, tasks: Sequence[str], metadata: dict):
    """A TaskManager over the shipped tasks, and either the bundle's (when it holds every name
    asked for) or lm-eval's stock ones (indexing those thousands of YAML files takes seconds).
    Never both: a bundle holding only sst2 would redefine the stock tag `glue` as sst2 alone."""
    from lm_eval.tasks import TaskManager

    include = [materialize_tasks(tasks_dir)]
    others = [task for task in tasks if task not in SHIPPED_TASKS]
    use_bundle = bool(others) and set(others) <= set(_bundle_tasks(bundle))
    if use_bundle:
        include.append(bundle_include(Path(bundle)))
    stock = bool(others) and not use_bundle
    # model_args as metadata, as simple_evaluate does when it builds the manager itself.
    return TaskManager(include_path=[str(p) for p in include], include_defaults=stock, metadata=dict(metadata))


def check_names(tasks: Sequence[str], manager) -> None:
    """Every name is a task, group or tag `manager` knows; else a UserError with the nearest names."""
    for task in tasks:
        if task not in manager.all_tasks:
            raise UserError(
                f"unknown task '{task}'{did_you_mean(task, manager.all_tasks)}; known: "
                f"{', '.join(SHIPPED_TASKS)} and lm-eval's own tasks (`lm-eval ls tasks`)",
                where="eval.tasks")


def _check_task_data(task: str, tasks_dir: Path) -> None:
    config = yaml.safe_load((TEMPLATES / f"{task}.yaml").read_text())
    for name in config["dataset_kwargs"]["data_files"].values():
        if not (path := tasks_dir / task / name).is_file():
            raise UserError(f"{path}: data for task '{task}' is missing (the data step writes it)")
