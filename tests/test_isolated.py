"""The isolated interpreter of tests/isolated.py really cannot import the project."""

from __future__ import annotations

from isolated import run_isolated


def test_the_isolated_interpreter_cannot_import_the_project_but_can_import_its_dependencies(tmp_path):
    done = run_isolated(
        "import yaml\n"
        "for name in ('harness', 'objectives', 'harness.models.encdec'):\n"
        "    try:\n"
        "        __import__(name)\n"
        "    except ModuleNotFoundError:\n"
        "        print('blocked', name)\n"
        "    else:\n"
        "        print('imported', name)\n", tmp_path)
    assert done.returncode == 0, done.stderr
    assert done.stdout.split("\n")[:3] == ["blocked harness", "blocked objectives", "blocked harness.models.encdec"]
