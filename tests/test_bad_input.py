"""Every bad input is one message naming the file or key and what was expected, exit code 2,
before Ray starts, and leaves nothing written.

The command-line cases run the real `harness validate` in a subprocess: a refusal there is the
exit code, the message on stderr and the absence of a traceback and of any results folder.
"""

from __future__ import annotations

import gzip
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from harness import cli
from harness.data.config import FilesData
from harness.data.prepare import BASE_SPECIAL_TOKENS, prepare
from harness.data.sampler import BlockSampler
from harness.data.sources.common import read_documents
from harness.errors import UserError
from harness.pipeline import special_tokens
from harness import plan
from harness.results import write_atomic
from harness.suite import load_suite

from conftest import REPO

SPECIALS = list(BASE_SPECIAL_TOKENS)
LINES = [f"the cat {i} sat on mat {i % 7} ." for i in range(40)]


def corpus(folder: Path, n_files: int = 5) -> str:
    """A few small text files; returns their glob."""
    folder.mkdir(parents=True, exist_ok=True)
    for i in range(n_files):
        (folder / f"part{i}.txt").write_text("\n".join(f"{line} {i}" for line in LINES) + "\n")
    return str(folder / "*.txt")


def files_config(paths: list[str], **files) -> FilesData:
    return FilesData(files={"paths": paths, **files}, synthetic={"entities": 10, "documents": 50},
                     tokenizer={"vocab_size": 200}, seq_len=16, eval_examples=8)


def write_suite(path: Path, paths: list[str], **top) -> Path:
    suite = {"name": "bad_input", "objectives": ["clm"], "sizes": ["tiny"], "budget": {"tokens": 2.0e4},
             "train": {"micro_batch_size": 2}, "resources": {"workers_per_run": 2},
             "data": {"source": "files", "files": {"paths": paths}, "tokenizer": {"vocab_size": 200},
                      "seq_len": 16, "eval_examples": 8},
             "eval": {"tasks": ["synthetic_glue"], "bits_per_byte": False, "finetune": {"tasks": []}}}
    path.write_text(yaml.safe_dump({**suite, **top}))
    return path


def harness(*args: str) -> subprocess.CompletedProcess:
    """The command line in its own process."""
    return subprocess.run([sys.executable, "-m", "harness.cli", *args], capture_output=True, text=True,
                          cwd=REPO, timeout=300)


def main(capsys, *args: str) -> subprocess.CompletedProcess:
    """The command line in this process (faster): anything but a UserError would escape it."""
    returncode = cli.main(list(args))
    return subprocess.CompletedProcess(args, returncode, *capsys.readouterr())


def assert_refused(done: subprocess.CompletedProcess, where: str, *phrases: str) -> None:
    assert done.returncode == 2, done.stderr[-3000:]
    assert "Traceback" not in done.stderr
    assert done.stderr.startswith(f"error: {where}: "), done.stderr
    assert done.stderr.count("\n") == 1  # one line
    for phrase in phrases:
        assert phrase in done.stderr, done.stderr


@pytest.fixture
def cache_root(tmp_path):
    root = tmp_path / "cache"
    yield root
    assert not root.exists()  # a refused build leaves no folder behind, not even an empty one


# ---------------------------------------------------------------- 1. files that are not text


def test_cli_refuses_a_binary_file_naming_it_and_writes_nothing(tmp_path, capsys):
    paths = [corpus(tmp_path / "corpus"), str(tmp_path / "image.txt")]
    (tmp_path / "image.txt").write_bytes(bytes(range(256)) * 4)
    results = tmp_path / "results"
    done = main(capsys, "validate", str(write_suite(tmp_path / "suite.yaml", paths)), "--results", str(results))
    assert_refused(done, "data.files.paths", f"{tmp_path / 'image.txt'} is binary, not text")
    assert not results.exists()


LATIN = "café crème , déjà vu .\n" * 30
BAD_TEXT = {  # name: (bytes of the file, where, what the message says)
    "empty": (b"", "data.files.paths", "is empty"),
    "only blank lines": (b"\n  \n\t\n", "data.files.paths", "is empty"),
    "binary": (b"PK\x03\x04\x00\x00" + bytes(range(256)), "data.files.paths", "is binary, not text"),
    "latin-1": (("x" * 2_000_000 + LATIN).encode("latin-1"), "data.files.encoding",
                "is not valid utf-8 at byte 2000003 (0xe9); if the file is in another encoding, set "
                "data.files.encoding"),
    "cut off at the end": ("été".encode()[:-1], "data.files.encoding", "is not valid utf-8 at byte 3 (0xc3)"),
    # "é" straddles the first 1 MiB read, then a byte that is never UTF-8
    "across reads": (b"x" * (2**20 - 1) + "é".encode() + b"\xff", "data.files.encoding",
                     f"is not valid utf-8 at byte {2**20 + 1} (0xff)"),
}


@pytest.mark.parametrize("name", BAD_TEXT)
@pytest.mark.parametrize("suffix", [".txt", ".jsonl.gz"])
def test_a_file_that_is_not_text_is_one_error_naming_it(name, suffix, tmp_path, cache_root):
    content, where, phrase = BAD_TEXT[name]
    bad = tmp_path / f"bad{suffix}"
    bad.write_bytes(gzip.compress(content) if suffix.endswith(".gz") else content)
    good = tmp_path / f"good{suffix}"
    text = "".join(json.dumps({"text": line}) + "\n" for line in LINES) if "jsonl" in suffix else "\n".join(LINES)
    good.write_bytes(gzip.compress(text.encode()) if suffix.endswith(".gz") else text.encode())
    with pytest.raises(UserError) as error:
        prepare(files_config([str(good), str(bad)]), SPECIALS, cache_root)
    assert error.value.where == where
    assert error.value.message.startswith(f"{bad} {phrase}")


def test_the_encoding_setting_reads_latin1_text_and_jsonl(tmp_path):
    (tmp_path / "latin.txt").write_bytes(LATIN.encode("latin-1"))
    rows = "".join(json.dumps({"text": line}, ensure_ascii=False) + "\n" for line in LATIN.splitlines())
    (tmp_path / "latin.jsonl").write_bytes(rows.encode("latin-1"))
    for name in ("latin.txt", "latin.jsonl"):
        cfg = files_config([str(tmp_path / name)], encoding="latin-1")
        texts = read_documents(cfg, tmp_path / f"scratch-{name}")["text"]
        assert texts == LATIN.splitlines()
    suite = write_suite(tmp_path / "suite.yaml", [str(tmp_path / "latin.txt")])
    with pytest.raises(UserError, match="unknown encoding 'klingon'") as error:
        load_suite(suite, overrides=["data.files.encoding=klingon"])
    assert error.value.where == "--set data.files.encoding"


def test_the_new_settings_at_their_defaults_keep_existing_cache_keys(tmp_path):
    from harness.data.prepare import cache_key
    cfg = files_config([corpus(tmp_path / "corpus")])
    assert "encoding" not in cfg.model_dump()["files"] and "skip_missing" not in cfg.model_dump()["files"]
    latin = files_config(cfg.files.paths, encoding="LATIN1")
    assert latin.files.encoding == "iso8859-1" and cache_key(latin, SPECIALS) != cache_key(cfg, SPECIALS)


# ---------------------------------------------------------------- 2. records without text


def jsonl_with_gaps(path: Path, n: int = 300) -> Path:
    """n lines; every third lacks text: no field, null, "" or blanks, in turn."""
    gaps = [{"body": "elsewhere"}, {"text": None}, {"text": ""}, {"text": "  \n"}]
    rows = [gaps[(i // 3) % 4] if i % 3 == 0 else {"text": f"document {i} is here ."} for i in range(n)]
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))
    return path


def test_cli_refuses_jsonl_lines_without_text_with_counts(tmp_path, capsys):
    gaps = jsonl_with_gaps(tmp_path / "gaps.jsonl")
    results = tmp_path / "results"
    done = main(capsys, "validate", str(write_suite(tmp_path / "suite.yaml", [str(gaps)])), "--results", str(results))
    assert_refused(done, "data.files.text_field", f"100 of 300 lines of {gaps} lack field 'text'",
                   "data.files.skip_missing: true")
    assert not results.exists()


def test_skip_missing_skips_them_with_a_notice(tmp_path, capfd):
    gaps = jsonl_with_gaps(tmp_path / "gaps.jsonl")
    other = tmp_path / "other.jsonl"  # a file without the field at all: read on its own
    other.write_text("".join(json.dumps({"body": f"b{i}", "n": i}) + "\n" for i in range(7)))
    cfg = files_config([str(gaps), str(other)], skip_missing=True)
    texts = read_documents(cfg, tmp_path / "scratch")["text"]
    assert texts == [f"document {i} is here ." for i in range(300) if i % 3]
    err = capfd.readouterr().err
    assert err.startswith("notice: data.files.skip_missing: skipped 107 lines: 100 of 300 lines of "
                          f"{gaps}, 7 of 7 lines of {other} (its fields: body, n) lack field 'text'")


def test_parquet_rows_without_text_are_counted_per_file(tmp_path, cache_root):
    import datasets
    datasets.Dataset.from_dict({"text": ["a .", None, "b .", " "]}).to_parquet(str(tmp_path / "a.parquet"))
    datasets.Dataset.from_dict({"text": [f"c {i} ." for i in range(9)]}).to_parquet(str(tmp_path / "b.parquet"))
    paths = [str(tmp_path / "b.parquet"), str(tmp_path / "a.parquet")]
    with pytest.raises(UserError) as error:
        prepare(files_config(paths), SPECIALS, cache_root)
    assert error.value.message.startswith(f"2 of 4 rows of {tmp_path / 'a.parquet'} lack field 'text'")
    texts = read_documents(files_config(paths, skip_missing=True), tmp_path / "scratch")["text"]
    assert texts == [f"c {i} ." for i in range(9)] + ["a .", "b ."]


# ---------------------------------------------------------------- 3. a validation split too small


def test_cli_refuses_a_validation_split_smaller_than_one_batch_per_worker(tmp_path, capsys):
    suite = write_suite(tmp_path / "suite.yaml", [corpus(tmp_path / "corpus")],
                        data={"source": "files", "files": {"paths": [corpus(tmp_path / "corpus")]},
                              "tokenizer": {"vocab_size": 200}, "seq_len": 16, "val_fraction": 0.01})
    done = main(capsys, "validate", str(suite), "--results", str(tmp_path / "results"))
    assert_refused(done, "data.val_fraction", "holds 1 block of 16 tokens", "needs at least 4",
                   "train.val_batches (4)", "raise data.val_fraction (now 0.01)")
    assert not (tmp_path / "results" / "bad_input").exists()  # no run was planned or written


def test_the_check_agrees_with_what_the_workers_read(tmp_path):
    """At the boundary the check passes exactly when BlockSampler.val_batches gives every worker
    a batch (it raises in the workers otherwise)."""
    path = write_suite(tmp_path / "suite.yaml", [corpus(tmp_path / "corpus")])
    suite = load_suite(path)
    data = prepare(suite.data, special_tokens(suite), tmp_path / "cache")
    blocks = data.n_val_tokens // suite.data.seq_len
    assert blocks >= 3
    for workers, batch in [(1, blocks), (1, blocks + 1), (2, blocks // 2), (2, blocks // 2 + 1)]:
        planned = load_suite(path, overrides=[f"resources.workers_per_run={workers}",
                                              f"train.micro_batch_size={batch}"])
        sampler = BlockSampler(data.val_tokens, data.dtype, suite.data.seq_len, seed=0)
        if workers * batch <= blocks:
            plan.check_validation_split(planned, data)
            assert all(len(sampler.val_batches(4, batch, rank, workers)) >= 1 for rank in range(workers))
        else:
            with pytest.raises(UserError, match="needs at least") as error:
                plan.check_validation_split(planned, data)
            assert error.value.where == "data.val_fraction"
            with pytest.raises(UserError):
                sampler.val_batches(4, batch, 0, workers)


# ---------------------------------------------------------------- 4. a results folder that cannot be written


@pytest.mark.parametrize("command", [["validate"], ["run"], ["data", "prepare"]])
def test_cli_refuses_results_under_a_file_before_preparing_data(tmp_path, capsys, command):
    (tmp_path / "taken").write_text("a file where a folder should be")
    suite = write_suite(tmp_path / "suite.yaml", [corpus(tmp_path / "corpus")])
    done = main(capsys, *command, str(suite), "--results", str(tmp_path / "taken" / "results"))
    assert_refused(done, "--results", f"cannot write in {tmp_path / 'taken' / 'results'} (Not a directory")


@pytest.fixture
def immutable(tmp_path):
    """A folder that not even root can write in (chattr +i), made writable again afterwards."""
    folder = tmp_path / "immutable"
    folder.mkdir()
    if shutil.which("chattr") is None or subprocess.run(["chattr", "+i", str(folder)]).returncode:
        pytest.skip("chattr +i is not available on this file system")
    yield folder
    subprocess.run(["chattr", "-i", str(folder)], check=True)


def test_an_unwritable_results_folder_is_refused_before_preparing_data(tmp_path, immutable, capsys):
    suite = write_suite(tmp_path / "suite.yaml", [corpus(tmp_path / "corpus")])
    for results in (immutable, immutable / "results"):
        assert cli.main(["validate", str(suite), "--results", str(results)]) == 2
        err = capsys.readouterr().err
        assert err.startswith(f"error: --results: cannot write in {results} (Operation not permitted")


# ---------------------------------------------------------------- 5. YAML tags in --set


def test_cli_refuses_a_python_tag_in_set_and_runs_nothing(tmp_path):
    marker = tmp_path / "MARKER"
    suite = write_suite(tmp_path / "suite.yaml", [corpus(tmp_path / "corpus")])
    done = harness("validate", str(suite), "--results", str(tmp_path / "results"),
                   "--set", f"train.lr=!!python/object/apply:os.system ['touch {marker}']")
    assert_refused(done, "--set train.lr", "is not a plain YAML value", "python/object/apply:os.system")
    assert not marker.exists() and not (tmp_path / "results").exists()


@pytest.mark.parametrize("item", ["a=!!binary xx", "train.lr=!!python/name:os.system", "sizes=[tiny"])
def test_an_unreadable_set_value_names_the_option(item, tmp_path):
    suite = write_suite(tmp_path / "suite.yaml", ["x"])
    with pytest.raises(UserError, match="is not a plain YAML value") as error:
        load_suite(suite, overrides=[item])
    assert error.value.where == f"--set {item.partition('=')[0]}"


# ---------------------------------------------------------------- 6. suite names that are not one folder


@pytest.mark.parametrize("name", ["../../escape", "a/b", "..", ".hidden", "a\\b", "_data", ""])
def test_a_suite_name_must_be_one_folder_name(name, tmp_path):
    suite = write_suite(tmp_path / "suite.yaml", ["x"], name=name)
    with pytest.raises(UserError, match="(cannot name the results folder|is reserved)") as error:
        load_suite(suite)
    assert error.value.where == f"{suite}: name"
    with pytest.raises(UserError) as error:
        load_suite(write_suite(tmp_path / "ok.yaml", ["x"]), overrides=[f"name={name}"])
    assert error.value.where == "--set name"


def test_cli_refuses_an_escaping_name_and_writes_nothing(tmp_path):
    suite = write_suite(tmp_path / "suite.yaml", [corpus(tmp_path / "corpus")], name="../../escape")
    done = harness("run", str(suite), "--results", str(tmp_path / "a" / "b" / "results"))
    assert_refused(done, f"{suite}: name", "'../../escape' cannot name the results folder")
    assert not (tmp_path / "a").exists() and not (tmp_path / "escape").exists()


def test_the_name_taken_from_the_file_follows_the_same_rule(tmp_path):
    raw = yaml.safe_load(write_suite(tmp_path / "x.yaml", ["x"]).read_text())
    del raw["name"]
    (tmp_path / "ok-name.v2.yaml").write_text(yaml.safe_dump(raw))
    assert load_suite(tmp_path / "ok-name.v2.yaml").name == "ok-name.v2"
    (tmp_path / "my suite.yaml").write_text(yaml.safe_dump(raw))
    with pytest.raises(UserError, match="the suite has no `name`, and its file's name") as error:
        load_suite(tmp_path / "my suite.yaml")
    assert error.value.where == f"{tmp_path / 'my suite.yaml'}: name"


# ---------------------------------------------------------------- 7. permissions follow the umask


@pytest.mark.parametrize("umask", [0o022, 0o002])
def test_written_files_and_data_folders_follow_the_umask(umask, tmp_path):
    before = os.umask(umask)
    try:
        write_atomic(tmp_path / "results" / "run.yaml", "a: 1\n")
        data = prepare(files_config([corpus(tmp_path / "corpus")]), SPECIALS, tmp_path / "cache")
    finally:
        os.umask(before)
    assert (tmp_path / "results" / "run.yaml").stat().st_mode & 0o777 == 0o666 & ~umask
    assert data.root.stat().st_mode & 0o777 == 0o777 & ~umask
    assert (data.root / "meta.json").stat().st_mode & 0o777 == 0o666 & ~umask
    assert not [p for p in (tmp_path / "results").iterdir() if p.name.endswith(".tmp")]
