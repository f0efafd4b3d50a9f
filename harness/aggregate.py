"""Numbers over seeds and over tasks: bootstrap intervals, centered accuracy, versioned aggregates.

**Over pretraining seeds.** A score is trained once per seed, and the report gives the mean
with a 95% percentile-bootstrap interval of that mean (`bootstrap_ci`).

**Over tasks.** Accuracy on a two-choice task starts at 0.5 and on a four-choice task at 0.25,
so a plain mean of accuracies rewards the easy-to-guess tasks. Centered accuracy puts every
task on one scale, 0 at chance and 1 at perfect (as DCLM's CORE score does):

    centered(acc, chance) = (acc - chance) / (1 - chance)

    synthetic_hellaswag  acc_norm 0.40, chance 0.25  ->  (0.40 - 0.25) / 0.75 = 0.20
    synthetic_glue       acc      0.60, chance 0.50  ->  (0.60 - 0.50) / 0.50 = 0.20
    aggregate over the two                           ->  0.20

**Versioned aggregates.** An `Aggregate` is a named, versioned list of (task, metric). Its
key, "<name>-v<version>" (e.g. "synthetic-core-v1"), identifies the list exactly, so two
reports that quote the same key average the same tasks. A published version is never edited:
a changed list is a new version (core-v2 beside core-v1, never core-v1 changed). A suite names
a registered key in `eval.aggregate`, or defines its own inline:

    eval:
      aggregate: {name: my-core, version: 1, tasks: {hellaswag: acc_norm, piqa: acc_norm}}
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from types import MappingProxyType

import numpy as np

from harness.errors import UserError, did_you_mean

# Metrics whose chance level is the task's accuracy under a uniform guess over the choices.
ACCURACY_METRICS = ("acc", "acc_norm")


def bootstrap_ci(values: Iterable[float], level: float = 0.95, n_resamples: int = 10_000,
                 seed: int = 0) -> tuple[float, float]:
    """Percentile-bootstrap interval of the mean of `values` (one per pretraining seed).

    Resample the seeds with replacement `n_resamples` times, take each resample's mean, and
    return the (1 - level) / 2 and (1 + level) / 2 percentiles of those means. NaN (a run
    without this score) is left out. Deterministic for a given `seed`.

    One value gives (nan, nan): one seed says nothing about the spread between seeds. With 2
    or 3 seeds the interval is crude: every resample that repeats one seed has probability at
    least 1/3**3 = 3.7% > 2.5%, so the 95% interval is just (min, max) of the seeds, and it
    knows nothing of seeds that were not trained. It is still reported because it is the honest
    summary of what was observed: it shows at a glance when seeds disagree, and it narrows as
    seeds are added, without the normal approximation a t-interval would make.

    >>> bootstrap_ci([0.30, 0.34, 0.32])
    (0.3, 0.34)
    """
    sample = _finite(values)
    if len(sample) < 2:
        return math.nan, math.nan
    rng = np.random.default_rng(seed)
    means = sample[rng.integers(0, len(sample), size=(n_resamples, len(sample)))].mean(axis=1)
    tail = (1 - level) / 2 * 100
    low, high = np.percentile(means, [tail, 100 - tail])
    return float(low), float(high)


def mean_ci(values: Iterable[float], **bootstrap) -> tuple[float, float, float]:
    """(mean, ci_low, ci_high) over the finite `values`; the mean is nan when there are none."""
    sample = _finite(values)
    mean = float(sample.mean()) if len(sample) else math.nan
    return (mean, *bootstrap_ci(sample, **bootstrap))


def _finite(values: Iterable[float]) -> np.ndarray:
    sample = np.array([math.nan if v is None else v for v in values], dtype=float)
    return sample[~np.isnan(sample)]


def centered(score: float, chance: float) -> float:
    """(score - chance) / (1 - chance): 0 at chance, 1 at a perfect score, negative below chance.

    >>> centered(0.75, 0.50)
    0.5
    """
    return (score - chance) / (1 - chance)


def chance_of(metric: str, task_chance: float | None) -> float | None:
    """The chance level of `metric` on a task whose uniform guess scores `task_chance` accuracy.

    Accuracy metrics take the task's; Matthews correlation is 0 for any guess independent of the
    label; other metrics (F1, ...) have no chance level fixed by the task alone: None.
    """
    if metric in ACCURACY_METRICS:
        return task_chance
    return 0.0 if metric == "mcc" else None


@dataclass(frozen=True)
class Aggregate:
    """A named, versioned list of tasks, each read by one metric, averaged as centered scores."""

    name: str
    version: int
    tasks: Mapping[str, str]  # task -> metric

    def __post_init__(self):
        object.__setattr__(self, "tasks", MappingProxyType(dict(self.tasks)))

    @property
    def key(self) -> str:
        return f"{self.name}-v{self.version}"


# Published aggregates. Never edit one: add the changed list as a new version.
AGGREGATES: dict[str, Aggregate] = {agg.key: agg for agg in (
    # The synthetic world's six tasks (harness.synthetic.TASKS). HellaSwag-shaped endings differ
    # in length and a sum of log-probabilities favours the short ones, so it is read by
    # acc_norm (per byte), as HellaSwag is; the other five compare answers of like length.
    Aggregate("synthetic-core", 1, {
        "synthetic_hellaswag": "acc_norm", "synthetic_mmlu": "acc", "synthetic_glue": "acc",
        "synthetic_cola": "acc", "synthetic_sst2": "acc", "synthetic_rte": "acc"}),
    # lm-eval's stock multiple-choice tasks, each by the metric it is usually quoted with.
    Aggregate("core", 1, {
        "hellaswag": "acc_norm", "mmlu": "acc", "arc_easy": "acc", "arc_challenge": "acc_norm",
        "piqa": "acc_norm", "winogrande": "acc", "boolq": "acc", "copa": "acc",
        "openbookqa": "acc_norm", "commonsense_qa": "acc", "sst2": "acc", "rte": "acc"}),
)}


def resolve_aggregate(spec: str | Mapping, where: str = "eval.aggregate") -> Aggregate:
    """A registered aggregate by key ("core-v1"), or an inline {name, version, tasks}."""
    if isinstance(spec, Mapping):
        return _inline(spec, where)
    if spec not in AGGREGATES:
        raise UserError(f"unknown aggregate '{spec}'{did_you_mean(str(spec), AGGREGATES)}; "
                        f"known: {', '.join(AGGREGATES)}, or an inline {{name, version, tasks}}",
                        where=where)
    return AGGREGATES[spec]


def _inline(spec: Mapping, where: str) -> Aggregate:
    expected = "expected {name: str, version: int >= 1, tasks: {task: metric, ...}}"
    tasks, version = spec.get("tasks"), spec.get("version")
    if (set(spec) != {"name", "version", "tasks"} or not isinstance(spec["name"], str)
            or not isinstance(version, int) or isinstance(version, bool) or version < 1
            or not isinstance(tasks, Mapping) or not tasks
            or not all(isinstance(k, str) and isinstance(v, str) for k, v in tasks.items())):
        raise UserError(f"malformed inline aggregate {dict(spec)}; {expected}", where=where)
    agg = Aggregate(spec["name"], version, tasks)
    published = AGGREGATES.get(agg.key)
    if published is not None and published.tasks != agg.tasks:
        raise UserError(f"'{agg.key}' is published with other tasks and a version is never "
                        f"edited; give the changed list a new version", where=where)
    return agg


def default_aggregate(evaluated: Iterable[str]) -> Aggregate | None:
    """The registered aggregate with the most tasks, all of them among `evaluated`; else None."""
    evaluated = set(evaluated)
    covered = [agg for agg in AGGREGATES.values() if set(agg.tasks) <= evaluated]
    return max(covered, key=lambda agg: (len(agg.tasks), agg.version), default=None)


def missing_tasks(task_scores: Mapping[str, tuple[float, float]], aggregate: Aggregate) -> list[str]:
    """The aggregate's tasks that `task_scores` ({task: (score, chance)}) lacks, in its order."""
    return [task for task in aggregate.tasks if task not in task_scores]


def run_aggregate(task_scores: Mapping[str, tuple[float, float]], aggregate: Aggregate) -> float | None:
    """Mean centered score over the aggregate's tasks; None when one of them is missing.

    `task_scores` maps a task to (score of the aggregate's metric for it, chance of that metric).

    >>> agg = Aggregate("demo", 1, {"a": "acc", "b": "acc"})
    >>> round(run_aggregate({"a": (0.40, 0.25), "b": (0.60, 0.50)}, agg), 6)
    0.2
    >>> run_aggregate({"a": (0.40, 0.25)}, agg) is None
    True
    """
    if missing_tasks(task_scores, aggregate):
        return None
    return float(np.mean([centered(*task_scores[task]) for task in aggregate.tasks]))
