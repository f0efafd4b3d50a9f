"""`harness submit` and `harness jobs`: a suite as a Ray Job on a cluster, through Ray's Job SDK.

The submitting machine checks everything first (the suite, its data and plan, its evaluation
tasks, the address and the results path), then sends a job whose entrypoint is `harness run
... --address auto` and walks away. The job carries this checkout's packages (harness and
objectives, staged with the suite in one folder, Ray's `working_dir`) and, with `--pip`, the
requirements pyproject.toml pins: by default the cluster's nodes are taken to have the packages
already (a Ray image, a shared environment), so nothing is installed there.

Authentication: with RAY_AUTH_MODE=token, Ray's Job SDK itself sends the token (RAY_AUTH_TOKEN,
or the file RAY_AUTH_TOKEN_PATH, default ~/.ray/auth_token) as an Authorization header on every
request; it is never put on a command line, in the job's metadata or in its entrypoint.
"""

from __future__ import annotations

import functools
import ipaddress
import os
import shlex
import shutil
import sys
import tempfile
import time
import tomllib
from pathlib import Path
from urllib.parse import urlparse

import yaml

import harness
import objectives
from harness import provenance
from harness.errors import UserError
from harness.failures import last_line as _last_line
from harness.lock import LOCK_NAME, describe, is_stale, read_holder
from harness.suite import deep_merge, read_with_includes

DEFAULT_ADDRESS = "http://127.0.0.1:8265"
LIVE = ("PENDING", "RUNNING")
SHADOWRAY = ("a Ray cluster without authentication runs any code anyone who reaches its dashboard "
             "sends it (ShadowRay, CVE-2023-48022)")
RESULTS_KEY, SUITE_KEY = "harness_results", "harness_suite"


def address_of(given: str | None) -> str:
    return given or os.environ.get("RAY_ADDRESS") or DEFAULT_ADDRESS


def check_address(address: str, insecure: bool) -> None:
    """A non-loopback dashboard without token auth is refused unless `insecure`; before any
    connection is made."""
    if urlparse(address).scheme not in ("http", "https"):
        raise UserError(f"expected the cluster's dashboard address, http://HOST:8265 (got {address!r})",
                        where="--address")
    if os.environ.get("RAY_AUTH_MODE", "").lower() == "token" or insecure or _loopback(address):
        return
    raise UserError(f"refusing to submit to {address} with token authentication off: {SHADOWRAY}. "
                    "Start the cluster with RAY_AUTH_MODE=token and set RAY_AUTH_MODE=token and its "
                    "token (RAY_AUTH_TOKEN or RAY_AUTH_TOKEN_PATH) here, or pass --insecure",
                    where="--address")


def _loopback(address: str) -> bool:
    host = urlparse(address).hostname or ""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def check_results(results: str) -> Path:
    """--results: an absolute path, the same on every node. URIs are refused (see README)."""
    if "://" in results:
        raise UserError(f"{results} is a URI; give an absolute path on storage that every node of the "
                        "cluster mounts at the same place (NFS, Lustre, or the bucket mounted with a FUSE filesystem "
                        "such as s3fs or gcsfuse): the harness writes results with plain file I/O on every node",
                        where="--results")
    path = Path(results)
    if not path.is_absolute():
        raise UserError(f"{results} is relative: the job runs in a temporary copy of this checkout on "
                        "the cluster, so give an absolute path on storage that every node of the cluster "
                        "mounts at the same place, e.g. --results /shared/results", where="--results")
    return path


def client(address: str):
    from ray.job_submission import JobSubmissionClient

    try:
        return JobSubmissionClient(address)
    except Exception as e:  # no dashboard there, or a refused token
        raise UserError(f"cannot reach the Ray Jobs API at {address}: {_last_line(e)}",
                        where="--address") from None


def refuse_busy(jobs, results: Path, suite_name: str) -> None:
    """Another live job writing this suite's results (by its metadata), or a live lock holder."""
    for job in jobs:
        meta = job.metadata or {}
        if str(job.status) in LIVE and meta.get(RESULTS_KEY) == str(results) and meta.get(SUITE_KEY) == suite_name:
            raise UserError(f"Ray job {job.submission_id} ({job.status}) is already writing suite "
                            f"{suite_name} to {results}; wait for it, or `harness jobs stop "
                            f"{job.submission_id}`", where="--results")
    holder = read_holder(results / suite_name / LOCK_NAME)
    if holder is not None and not is_stale(holder):
        raise UserError(f"another {holder.get('command', 'harness')} is writing suite {suite_name} "
                        f"here: {describe(holder)}", where="--results")


def merged_suite(path: Path) -> dict:
    """The suite file with its includes merged in (profiles kept), as one mapping to ship."""
    layers = read_with_includes(path)
    raw = functools.reduce(lambda base, layer: deep_merge(base, layer[1]), reversed(layers), {})
    raw.setdefault("name", path.stem)
    return raw


def stage(suite_path: Path, into: Path) -> Path:
    """The job's working_dir: harness/, objectives/, pyproject.toml and the suite (merged)."""
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc")
    for package in (harness, objectives):
        source = Path(package.__file__).parent
        shutil.copytree(source, into / source.name, ignore=ignore)
    shutil.copy(Path(harness.__file__).parents[1] / "pyproject.toml", into / "pyproject.toml")
    suite_file = into / "suite" / f"{suite_path.stem}.yaml"
    suite_file.parent.mkdir()
    suite_file.write_text(yaml.safe_dump(merged_suite(suite_path), sort_keys=False))
    return suite_file.relative_to(into)


def requirements() -> list[str]:
    """The requirement set that pyproject.toml pins and the Makefile installs."""
    project = tomllib.loads((Path(harness.__file__).parents[1] / "pyproject.toml").read_text())
    return list(project["project"]["dependencies"])


def runtime_env(working_dir: Path, pip: bool) -> dict:
    """The job's working_dir (and pip packages), and this checkout's commit (HARNESS_COMMIT,
    HARNESS_DIRTY; harness.provenance): the working_dir is no git repository, so the job's runs
    read their commit from these. No other env_vars: `harness run` sets its own in ray.init, and
    Ray refuses a job whose driver sets a variable the job's runtime_env also sets."""
    env: dict = {"working_dir": str(working_dir)}
    if commit := provenance.commit_env():
        env["env_vars"] = commit
    if pip:
        env["pip"] = {"packages": requirements()}
    return env


def entrypoint(suite_file: Path, results: Path, profile: str, overrides: list[str]) -> str:
    words = ["python", "-m", "harness.cli", "run", str(suite_file), "--address", "auto",
             "--results", str(results), "--profile", profile]
    for item in overrides:
        words += ["--set", item]
    return shlex.join(words)


def submit(args, suite, address: str) -> str:
    """Submit the (already validated) suite; return the job id."""
    jobs = client(address)
    refuse_busy(jobs.list_jobs(), args.results, suite.name)
    with tempfile.TemporaryDirectory(prefix="harness-submit-") as tmp:
        suite_file = stage(args.suite, Path(tmp))
        return jobs.submit_job(
            entrypoint=entrypoint(suite_file, args.results, args.profile, args.overrides),
            runtime_env=runtime_env(Path(tmp), args.pip),
            metadata={RESULTS_KEY: str(args.results), SUITE_KEY: suite.name})


def follow_commands(job_id: str, address: str) -> str:
    where = f" --address {address}" if address != address_of(None) else ""
    return "\n".join(f"  harness jobs {what} {job_id}{where}" for what in ("status", "logs --follow", "stop"))


# --- harness jobs ---------------------------------------------------------------------------------


def list_jobs(address: str) -> list[str]:
    rows = []
    for job in sorted(client(address).list_jobs(), key=lambda j: j.start_time or 0):
        meta = job.metadata or {}
        started = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime((job.start_time or 0) / 1000))
        rows.append(f"{job.submission_id or job.job_id}  {job.status:<9}  {started}  "
                    f"{meta.get(SUITE_KEY, '-')}  {meta.get(RESULTS_KEY, '-')}")
    return rows


def status(address: str, job_id: str) -> str:
    info = _info(client(address), job_id)
    message = f" ({info.message})" if info.message else ""
    return f"{job_id} {info.status}{message}"


def _info(jobs, job_id: str):
    try:
        return jobs.get_job_info(job_id)
    except RuntimeError as e:  # the SDK's "Request failed with status code 404"
        raise UserError(f"no job {job_id} on this cluster ({_last_line(e)})", where="JOB") from None


def logs(address: str, job_id: str, follow: bool) -> None:
    jobs = client(address)
    _info(jobs, job_id)
    if not follow:
        sys.stdout.write(jobs.get_job_logs(job_id))
        return
    import asyncio

    async def tail() -> None:
        async for lines in jobs.tail_job_logs(job_id):
            sys.stdout.write(lines)
            sys.stdout.flush()
    asyncio.run(tail())


def stop(address: str, job_id: str) -> str:
    jobs = client(address)
    _info(jobs, job_id)
    stopped = jobs.stop_job(job_id)
    return f"{job_id}: {'stop requested' if stopped else 'not running'}"
