"""Python code run as a user without this project would run it: the project cannot be imported.

`run_isolated(code)` starts this venv's interpreter in isolated mode (`-I`: no PYTHONPATH, no
current directory, no user site) with a finder at the front of `sys.meta_path` that refuses
`harness` and `objectives`, and every `sys.path` entry inside the repository (but outside the
venv) removed. The venv's
installed packages (torch, transformers, lm-eval, ...) import as usual; an exported model that
still needed the harness would fail to load, which is what the export tests look for.

Transformers copies a model's own code (`trust_remote_code`) into its modules cache: the caller's
`home` becomes HF_HOME, so that nothing is shared with other tests or the user's cache.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from conftest import REPO

BLOCKED = ("harness", "objectives")

_PRELUDE = f"""
import sys

class _ProjectBlocked:
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in {BLOCKED!r}:
            raise ModuleNotFoundError(f"No module named {{name!r}} (blocked: an isolated interpreter)", name=name)
        return None

sys.meta_path.insert(0, _ProjectBlocked())
# the repository's own folders go; the venv's site-packages (which may lie inside it) stay
sys.path[:] = [p for p in sys.path if not p.startswith({str(REPO)!r}) or p.startswith(sys.prefix)]
"""


def run_isolated(code: str, home: Path, *, cwd: Path | None = None, timeout: float = 600,
                 env: dict | None = None) -> subprocess.CompletedProcess:
    """Run `code` in an isolated interpreter (see the module docstring); returns the finished
    process (text output). `cwd` defaults to `home`, outside the repository."""
    home = Path(home)
    home.mkdir(parents=True, exist_ok=True)
    environment = {**os.environ, "HF_HOME": str(home / "hf"), "HF_HUB_OFFLINE": "1",
                   "HF_DATASETS_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false", **(env or {})}
    environment.pop("PYTHONPATH", None)
    return subprocess.run([sys.executable, "-I", "-c", _PRELUDE + code], capture_output=True, text=True,
                          cwd=cwd or home, env=environment, timeout=timeout)
