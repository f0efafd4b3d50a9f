"""Where a result came from: the versions of the libraries, the harness's commit, the hardware.

Every run's train.json keeps this under `environment`, the report shows it (its Environment
section), each model card names the commit, and `harness --version` prints the first line:

    {"versions": {"python": "3.11.9", "harness": "0.1.0", "torch": "2.13.0+cpu", ...},
     "commit": "1ade991c4f0e...", "dirty": false,
     "hardware": {"platform": "Linux x86_64", "cpu": "AMD EPYC", "cpus": 2, "gpus": []}}

Only what two identical runs on the same machine at the same commit share goes in: no host
names, dates, process ids or paths, so two fresh clones give byte-identical records.

The commit comes from git, run on the source tree this package was imported from. Where that is
no repository (a Ray Jobs `working_dir` upload, a copy shipped to a cluster's nodes, an installed
wheel), the submitting side's commit travels in the environment variables HARNESS_COMMIT and
HARNESS_DIRTY (harness.submit and harness.schedule set them, `commit_env`); else it is "unknown".

Light on purpose: versions come from package metadata (importlib.metadata), so nothing here
imports torch or the others, except `gpus`, which asks torch for its devices where torch is
installed.
"""

from __future__ import annotations

import os
import platform
import subprocess
import tomllib
from importlib import metadata
from pathlib import Path

PACKAGE_DIR = Path(__file__).resolve().parent
DISTRIBUTION = "objective-harness"
# The libraries whose versions decide what a run computes: {name shown: distribution}.
LIBRARIES = {"torch": "torch", "transformers": "transformers", "deepspeed": "deepspeed", "ray": "ray",
             "lm_eval": "lm-eval", "datasets": "datasets"}
COMMIT_VAR, DIRTY_VAR = "HARNESS_COMMIT", "HARNESS_DIRTY"
UNKNOWN = "unknown"


def environment() -> dict:
    """The whole record: versions, commit, dirty (None when unknown) and hardware."""
    return {"versions": versions(), **commit(), "hardware": hardware()}


# --- versions ------------------------------------------------------------------------------------


def versions() -> dict[str, str]:
    """Python's, the harness's and each library's version ("not installed" where one is missing)."""
    found = {"python": platform.python_version(), "harness": harness_version()}
    for name, distribution in LIBRARIES.items():
        try:
            found[name] = metadata.version(distribution)
        except metadata.PackageNotFoundError:
            found[name] = "not installed"
    return found


def harness_version() -> str:
    """The version in the pyproject.toml beside the imported source tree (the code that runs),
    else the installed distribution's, else "unknown"."""
    pyproject = PACKAGE_DIR.parent / "pyproject.toml"
    try:
        project = tomllib.loads(pyproject.read_text())["project"]
        if project.get("name") == DISTRIBUTION:
            return str(project["version"])
    except (OSError, KeyError, tomllib.TOMLDecodeError):
        pass
    try:
        return metadata.version(DISTRIBUTION)
    except metadata.PackageNotFoundError:
        return UNKNOWN


# --- the commit ----------------------------------------------------------------------------------


def commit() -> dict:
    """{"commit": sha, "dirty": bool} of the source tree, from git; else from HARNESS_COMMIT and
    HARNESS_DIRTY; else {"commit": "unknown", "dirty": None}."""
    return git_commit(PACKAGE_DIR) or _commit_from_env() or {"commit": UNKNOWN, "dirty": None}


def git_commit(package_dir: Path) -> dict | None:
    """The commit checked out where `package_dir` lives and whether the tree differs from it
    (a changed tracked file, or a new file git does not ignore). None when git is missing or
    `package_dir` is no tracked part of a repository (a copy inside some other repository's
    ignored folder, such as a virtual environment, is not)."""
    if _git(package_dir, "ls-files", "--error-unmatch", "__init__.py") is None:
        return None
    sha = _git(package_dir, "rev-parse", "HEAD")
    status = _git(package_dir, "status", "--porcelain") if sha else None
    if status is None:
        return None
    return {"commit": sha.strip(), "dirty": bool(status.strip())}


def _git(where: Path, *args: str) -> str | None:
    """git's output, or None when it fails or is not installed. No optional locks: `git status`
    must not take the index lock of a repository someone is working in."""
    try:
        done = subprocess.run(["git", "-C", str(where), *args], capture_output=True, text=True, timeout=30,
                              env={**os.environ, "GIT_OPTIONAL_LOCKS": "0"})
    except (OSError, subprocess.SubprocessError):
        return None
    return done.stdout if done.returncode == 0 else None


def _commit_from_env() -> dict | None:
    sha = os.environ.get(COMMIT_VAR, "").strip()
    if not sha:
        return None
    dirty = os.environ.get(DIRTY_VAR, "").strip()
    return {"commit": sha, "dirty": {"1": True, "0": False}.get(dirty)}


def commit_env() -> dict[str, str]:
    """HARNESS_COMMIT and HARNESS_DIRTY for processes that run this code without its repository
    (a Ray job's working_dir, the copies shipped to a cluster's nodes); {} when the commit is
    unknown here."""
    found = commit()
    if found["commit"] == UNKNOWN:
        return {}
    env = {COMMIT_VAR: found["commit"]}
    if found["dirty"] is not None:
        env[DIRTY_VAR] = "1" if found["dirty"] else "0"
    return env


def version_line() -> str:
    """`harness --version`: "harness 0.1.0 (commit 1ade991c4f0e, dirty)"."""
    found = commit()
    sha = found["commit"] if found["commit"] == UNKNOWN else found["commit"][:12]
    return f"harness {harness_version()} (commit {sha}{', dirty' if found['dirty'] else ''})"


# --- hardware ------------------------------------------------------------------------------------


def hardware() -> dict:
    """The platform, the CPU model, the logical CPUs and the GPUs this process sees."""
    return {"platform": f"{platform.system()} {platform.machine()}", "cpu": cpu_model(),
            "cpus": os.cpu_count(), "gpus": gpus()}


def cpu_model(cpuinfo: Path = Path("/proc/cpuinfo")) -> str:
    """The CPU's name: Linux's /proc/cpuinfo ("model name", or "Hardware" / "Processor" on some
    ARM boards), else what the platform module says, else "unknown"."""
    try:
        lines = cpuinfo.read_text(errors="replace").splitlines()
    except OSError:
        lines = []
    for key in ("model name", "Hardware", "Processor"):
        for line in lines:
            name, colon, value = line.partition(":")
            if colon and name.strip() == key and value.strip():
                return value.strip()
    return platform.processor() or platform.machine() or UNKNOWN


def gpus() -> list[str]:
    """The name of each CUDA device this process sees, through torch; [] without torch or CUDA."""
    try:
        import torch
    except ImportError:
        return []
    if not torch.cuda.is_available():
        return []
    return [torch.cuda.get_device_name(index) for index in range(torch.cuda.device_count())]
