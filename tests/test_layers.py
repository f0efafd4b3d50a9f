"""The shape of the house: import contracts that can fail, no import cycles, small files and
functions, and a suite schema that loads without torch."""

from __future__ import annotations

import ast
import os
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

from conftest import REPO

PACKAGES = ("harness", "objectives")
MAX_FILE_LINES = 450
MAX_FUNCTION_LINES = 40
EXEMPT_FUNCTIONS = {("harness/cli.py", "_parser")}  # the command line's declaration, one flag a line
LINT_IMPORTS = Path(sys.executable).with_name("lint-imports")


def _lint_imports(root: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(root)}
    return subprocess.run([str(LINT_IMPORTS), "--no-cache"], cwd=root, env=env, capture_output=True,
                          text=True, timeout=120)


def _contracts() -> list[dict]:
    return tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["importlinter"]["contracts"]


def test_the_import_contracts_hold():
    result = _lint_imports(REPO)
    assert result.returncode == 0, result.stdout[-3000:]
    assert "broken" not in result.stdout.lower().replace("0 broken", "")


def test_every_module_of_harness_has_a_layer():
    layers = next(c for c in _contracts() if c["type"] == "layers")["layers"]
    named = {name.strip() for layer in layers for name in layer.split("|")}
    modules = {f"harness.{p.stem}" for p in (REPO / "harness").iterdir()
               if (p.suffix == ".py" and p.stem != "__init__") or (p / "__init__.py").exists()}
    assert modules - named == set(), "add these modules to the layers contract in pyproject.toml"


@pytest.mark.parametrize("file, line, contract", [
    ("objectives/clm.py", "import harness.data.sampler", "Objectives import nothing of harness"),
    ("harness/plan.py", "import ray", "Only harness.schedule imports ray"),
    ("harness/models/sizes.py", "import harness.plan", "Layers, one way only"),
])
def test_a_wrong_import_breaks_a_contract(tmp_path, file, line, contract):
    for name in (*PACKAGES, "pyproject.toml"):
        source = REPO / name
        copy = shutil.copytree if source.is_dir() else shutil.copy
        copy(source, tmp_path / name, **({"ignore": shutil.ignore_patterns("__pycache__")} if source.is_dir() else {}))
    target = tmp_path / file
    target.write_text(target.read_text() + f"\n{line}  # a deliberate breach\n")
    result = _lint_imports(tmp_path)
    assert result.returncode != 0
    broken = result.stdout.split("Broken contracts")[-1]
    assert contract in broken and file.removesuffix(".py").replace("/", ".") in broken


def _python_files() -> list[Path]:
    return sorted(p for package in PACKAGES for p in (REPO / package).rglob("*.py"))


def _module_name(path: Path) -> str:
    parts = path.relative_to(REPO).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _top_level_imports(path: Path) -> set[str]:
    """Modules of this project imported when `path` is imported (function bodies and
    `if TYPE_CHECKING:` blocks aside)."""
    found = set()
    for node in ast.parse(path.read_text()).body:
        if isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found |= {node.module} | {f"{node.module}.{alias.name}" for alias in node.names}
    return {name for name in found if name.split(".")[0] in PACKAGES}


def test_no_module_level_import_cycle():
    modules = {_module_name(p): p for p in _python_files()}
    edges = {name: {m for m in _top_level_imports(path) if m in modules and m != name}
             for name, path in modules.items()}
    state: dict[str, str] = {}

    def visit(name: str, chain: list[str]) -> None:
        state[name] = "open"
        for target in sorted(edges[name]):
            assert state.get(target) != "open", f"import cycle: {' -> '.join([*chain, name, target])}"
            if target not in state:
                visit(target, [*chain, name])
        state[name] = "done"

    for name in sorted(modules):
        if name not in state:
            visit(name, [])


def test_files_and_functions_are_short():
    long_files, long_functions = [], []
    for path in _python_files():
        text, where = path.read_text(), str(path.relative_to(REPO))
        if len(text.splitlines()) > MAX_FILE_LINES:
            long_files.append(f"{where}: {len(text.splitlines())} lines")
        for node in ast.walk(ast.parse(text)):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) and (where, node.name) not in EXEMPT_FUNCTIONS:
                if (length := node.end_lineno - node.lineno + 1) > MAX_FUNCTION_LINES:
                    long_functions.append(f"{where}:{node.lineno} {node.name}: {length} lines")
    assert long_files == [] and long_functions == []


def test_loading_a_suite_imports_neither_torch_nor_transformers():
    """`harness validate` and every command's first step parse the suite: that must stay fast."""
    code = ("import sys; from harness.suite import load_suite; "
            "[load_suite(p, profile) for p in sys.argv[1:] for profile in ('default', 'gpu')]; "
            "print(sorted(m for m in ('torch', 'transformers', 'datasets', 'deepspeed', 'ray', 'lm_eval') "
            "if m in sys.modules))")
    suites = [str(p) for p in sorted((REPO / "suites").glob("*.yaml"))]
    out = subprocess.run([sys.executable, "-c", code, *suites], cwd=REPO, capture_output=True, text=True,
                         timeout=120, check=True).stdout
    assert out.strip() == "[]"
