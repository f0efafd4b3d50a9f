"""harness.provenance: versions, the harness's commit (from git, else from the submitting side's
environment variables, else "unknown") and the hardware; `harness --version`; and the commit
handed to processes that run the code without its repository (harness.submit, harness.schedule).

Real git on small repositories made here; the one stand-in is for joining a Ray cluster (a
network service): `schedule.join` is replaced to see the runtime_env it would send."""

from __future__ import annotations

import importlib.util
import json
import os
import re
import shutil
import socket
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

from harness import provenance
from harness.cli import main

GIT = ["git", "-c", "user.name=t", "-c", "user.email=t@example.invalid", "-c", "commit.gpgsign=false"]
needs_git = pytest.mark.skipif(shutil.which("git") is None, reason="git is not installed")


def _git(where: Path, *args: str) -> str:
    return subprocess.run([*GIT, "-C", str(where), *args], check=True, capture_output=True, text=True).stdout


def _repository(root: Path, package: str = "pkg") -> Path:
    """A repository with one committed package (its __init__.py); returns the package folder."""
    (root / package).mkdir(parents=True)
    (root / package / "__init__.py").write_text('"""a package"""\n')
    (root / ".gitignore").write_text("venv/\n")
    _git(root, "init", "-q")
    _git(root, "add", "-A")
    _git(root, "commit", "-qm", "first")
    return root / package


@pytest.fixture
def no_commit_vars(monkeypatch):
    for name in (provenance.COMMIT_VAR, provenance.DIRTY_VAR):
        monkeypatch.delenv(name, raising=False)


def test_the_record_names_versions_commit_and_hardware_and_nothing_of_the_host(no_commit_vars):
    record = provenance.environment()
    assert list(record) == ["versions", "commit", "dirty", "hardware"]
    assert set(record["versions"]) == {"python", "harness", "torch", "transformers", "deepspeed", "ray",
                                       "lm_eval", "datasets"}
    assert record["versions"]["python"] == ".".join(map(str, sys.version_info[:3]))
    assert record["versions"]["torch"].split("+")[0] == __import__("torch").__version__.split("+")[0]
    assert "not installed" not in record["versions"].values()
    assert record["hardware"]["cpus"] == os.cpu_count() and isinstance(record["hardware"]["gpus"], list)
    text = json.dumps(record)
    assert socket.gethostname() not in text and str(Path.home()) not in text and str(Path.cwd()) not in text


@needs_git
def test_the_commit_of_a_repository_and_whether_its_tree_changed(tmp_path):
    package = _repository(tmp_path)
    head = _git(tmp_path, "rev-parse", "HEAD").strip()
    assert provenance.git_commit(package) == {"commit": head, "dirty": False}
    (tmp_path / "notes.txt").write_text("new, not ignored")  # an untracked file counts
    assert provenance.git_commit(package) == {"commit": head, "dirty": True}
    (tmp_path / "notes.txt").unlink()
    (package / "__init__.py").write_text("changed = True\n")  # so does a changed tracked file
    assert provenance.git_commit(package) == {"commit": head, "dirty": True}
    _git(tmp_path, "checkout", "-q", "--", ".")
    (tmp_path / "venv").mkdir()  # an ignored file does not
    (tmp_path / "venv" / "x").write_text("ignored")
    assert provenance.git_commit(package) == {"commit": head, "dirty": False}


@needs_git
def test_no_commit_outside_a_repository_or_in_an_ignored_copy(tmp_path):
    assert provenance.git_commit(tmp_path) is None  # no repository
    _repository(tmp_path / "repo")
    installed = tmp_path / "repo" / "venv" / "site-packages" / "pkg"  # inside a repository, ignored
    installed.mkdir(parents=True)
    (installed / "__init__.py").write_text("")
    assert provenance.git_commit(installed) is None


def test_without_git_the_commit_comes_from_the_environment_else_unknown(tmp_path, monkeypatch, no_commit_vars):
    monkeypatch.setattr(provenance, "PACKAGE_DIR", tmp_path)  # a Ray job's working_dir: no repository
    assert provenance.commit() == {"commit": "unknown", "dirty": None}
    assert provenance.commit_env() == {}
    assert re.fullmatch(r"harness \S+ \(commit unknown\)", provenance.version_line())
    monkeypatch.setenv(provenance.COMMIT_VAR, "0123456789abcdef0123")
    assert provenance.commit() == {"commit": "0123456789abcdef0123", "dirty": None}
    monkeypatch.setenv(provenance.DIRTY_VAR, "1")
    assert provenance.commit() == {"commit": "0123456789abcdef0123", "dirty": True}
    assert provenance.commit_env() == {"HARNESS_COMMIT": "0123456789abcdef0123", "HARNESS_DIRTY": "1"}
    assert provenance.version_line().endswith("(commit 0123456789ab, dirty)")


@needs_git
def test_two_fresh_clones_give_byte_identical_records(tmp_path, no_commit_vars):
    """Each clone's own provenance module, loaded from its folder, asks git about that clone."""
    top = _git(provenance.PACKAGE_DIR, "rev-parse", "--show-toplevel").strip()
    records = []
    for name in ("a", "b"):
        clone = tmp_path / name
        subprocess.run(["git", "clone", "-q", top, str(clone)], check=True, capture_output=True)
        spec = importlib.util.spec_from_file_location(f"provenance_{name}", clone / "harness" / "provenance.py")
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        assert module.PACKAGE_DIR == clone / "harness"
        records.append(json.dumps(module.environment(), sort_keys=True))
    assert records[0] == records[1]
    record = json.loads(records[0])
    assert record["commit"] == _git(tmp_path / "a", "rev-parse", "HEAD").strip() and record["dirty"] is False


def test_the_cpu_model_from_cpuinfo(tmp_path):
    x86, arm = tmp_path / "x86", tmp_path / "arm"
    x86.write_text("processor\t: 0\nvendor_id\t: AuthenticAMD\nmodel name\t: AMD EPYC 9654 96-Core Processor\n")
    arm.write_text("processor\t: 0\nBogoMIPS\t: 108.00\n\nHardware\t: BCM2835\n")
    assert provenance.cpu_model(x86) == "AMD EPYC 9654 96-Core Processor"
    assert provenance.cpu_model(arm) == "BCM2835"
    assert provenance.cpu_model(tmp_path / "missing")  # the platform's answer, never empty


def test_version_option_prints_version_and_commit(capsys, no_commit_vars):
    with pytest.raises(SystemExit) as exit_:
        main(["--version"])
    assert exit_.value.code == 0
    printed = capsys.readouterr().out.strip()
    found = provenance.commit()
    sha = found["commit"][:12] if found["commit"] != "unknown" else "unknown"
    assert printed == f"harness {provenance.harness_version()} (commit {sha}{', dirty' if found['dirty'] else ''})"
    pyproject = tomllib.loads((provenance.PACKAGE_DIR.parent / "pyproject.toml").read_text())
    assert provenance.harness_version() == pyproject["project"]["version"]


def test_submit_and_cluster_join_hand_the_commit_to_the_job(tmp_path, monkeypatch, no_commit_vars):
    from harness import schedule, submit

    monkeypatch.setattr(provenance, "PACKAGE_DIR", tmp_path)  # no repository: the commit from the environment
    monkeypatch.setenv(provenance.COMMIT_VAR, "feedface")
    monkeypatch.setenv(provenance.DIRTY_VAR, "0")
    assert submit.runtime_env(tmp_path, pip=False)["env_vars"] == {"HARNESS_COMMIT": "feedface", "HARNESS_DIRTY": "0"}
    sent = []
    monkeypatch.setattr(schedule, "join", lambda address, env: sent.append(env))
    schedule.connect("auto", use_gpu=False)  # inside a submitted job: the job's runtime_env has them
    assert "HARNESS_COMMIT" not in sent[-1]["env_vars"] and sent[-1]["py_modules"]
    monkeypatch.delenv(provenance.COMMIT_VAR)
    monkeypatch.delenv(provenance.DIRTY_VAR)
    assert "env_vars" not in submit.runtime_env(tmp_path, pip=False)  # unknown: nothing to hand on
    if shutil.which("git"):  # `harness run --address` from a checkout: the shipped copies get its commit
        package = _repository(tmp_path / "repo")
        monkeypatch.setattr(provenance, "PACKAGE_DIR", package)
        schedule.connect("auto", use_gpu=False)
        head = _git(package, "rev-parse", "HEAD").strip()
        assert {k: sent[-1]["env_vars"].get(k) for k in ("HARNESS_COMMIT", "HARNESS_DIRTY")} == {
            "HARNESS_COMMIT": head, "HARNESS_DIRTY": "0"}
