"""Environment: what the runs were trained with, one line per distinct environment.

Each run's train.json keeps the environment of its rank 0 (harness.provenance): the versions of
Python, the harness and its libraries, the harness's commit and whether the tree had changes, the
platform, CPU and GPUs. Runs that share all of it share a line; runs trained before the harness
recorded it say "not recorded".
"""

from __future__ import annotations

import json
from collections import Counter


def environment_section(environments: dict[str, dict | None]) -> str:
    """`environments`: train.json's `environment` by run id (SuiteResults.environments)."""
    if not environments:
        return ""
    groups: dict[str, list[str]] = {}
    for run_id, environment in environments.items():
        groups.setdefault(json.dumps(environment, sort_keys=True), []).append(run_id)
    lines = [f"- {_runs(run_ids, len(environments), len(groups))}: {_describe(json.loads(key))}"
             for key, run_ids in groups.items()]
    return ("## Environment\n\nWhat the runs were trained with, as each run's train.json records it "
            "(rank 0's view: versions, the harness's commit, hardware).\n\n" + "\n".join(lines))


def _runs(run_ids: list[str], total: int, distinct: int) -> str:
    if distinct == 1:
        return f"All {total} runs" if total > 1 else f"The run (`{run_ids[0]}`)"
    named = ", ".join(f"`{run_id}`" for run_id in run_ids)
    return f"{len(run_ids)} run{'s' * (len(run_ids) > 1)} ({named})"


def _describe(environment: dict | None) -> str:
    """One line: harness version and commit; library versions; hardware."""
    if not environment:
        return "not recorded (trained before the harness recorded its environment)"
    versions = dict(environment.get("versions") or {})
    harness = versions.pop("harness", "?")
    sha = str(environment.get("commit") or "unknown")
    changes = {True: " with uncommitted changes", False: ""}.get(environment.get("dirty"), ", changes unknown")
    commit = "commit unknown" if sha == "unknown" else f"commit `{sha[:12]}`{changes}"
    libraries = ", ".join(f"{name} {version}" for name, version in versions.items())
    return f"harness {harness}, {commit}; {libraries}; {hardware_text(environment.get('hardware') or {})}."


def hardware_text(hardware: dict) -> str:
    """"Linux x86_64, AMD EPYC, 2 logical CPUs, 4 x NVIDIA H100" (or "no GPU")."""
    gpus = Counter(hardware.get("gpus") or [])
    gpu_text = ", ".join(f"{count} x {name}" for name, count in gpus.items()) or "no GPU"
    parts = [hardware.get("platform"), hardware.get("cpu"),
             f"{hardware['cpus']} logical CPUs" if hardware.get("cpus") else None, gpu_text]
    return ", ".join(str(part) for part in parts if part)
