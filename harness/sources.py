"""Where a suite's documents come from: every source is read through Hugging Face `datasets`.

`read_documents(cfg, scratch)` returns a `datasets.Dataset` with one column, "text", holding the
corpus's non-empty documents in their order. The sources (the suite's `data.source`):

    synthetic   the generated world of harness.synthetic (the default: offline, known entropy)
    hf          a dataset by hub name ("roneneldan/TinyStories"), a local directory written by
                `Dataset.save_to_disk`, or a local directory of data files; streamed when asked
    files       local text, JSONL or Parquet files and globs, read by `datasets`' own builders
    prepared    a directory written by `harness data prepare` (harness.data opens it; nothing
                is read here)

Every failure the user can cause (a missing dataset, a glob matching nothing, a missing text
field, an unreachable hub) is one `UserError` naming the suite key and what to do. `datasets`
is imported inside the functions: the command line imports this module to validate suites.
"""

from __future__ import annotations

import contextlib
import glob
import os
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from harness.errors import UserError

if TYPE_CHECKING:
    import datasets

    from harness.data import DataConfig

TEXT = "text"  # the documents dataset's text column (every source has it)
LOGPROB = "logprob"  # synthetic source only: log P(document) under the generator
MIRROR_HINT = ("prepare an offline mirror with `harness data prepare SUITE.yaml --out DIR` on a machine "
               "with network, then set `data: {source: prepared, prepared: {dir: DIR}}`")
FORMATS = {".txt": "text", ".text": "text", ".md": "text", ".jsonl": "jsonl", ".json": "jsonl",
           ".ndjson": "jsonl", ".parquet": "parquet"}
COMPRESSIONS = (".gz", ".bz2", ".xz", ".zst")
BUILDERS = {"text": "text", "jsonl": "json", "parquet": "parquet"}  # format -> datasets builder
# Files that `save_to_disk` writes: such a directory is read with `load_from_disk`.
SAVED_MARKERS = ("state.json", "dataset_dict.json")
SYNTHETIC_CORPUS_SEED = 0


class HFSource(BaseModel):
    """A Hugging Face dataset: on the hub, saved with `save_to_disk`, or a local data directory."""

    model_config = ConfigDict(extra="forbid", use_attribute_docstrings=True)

    path: str
    """Hub name ("HuggingFaceFW/fineweb-edu"), or a local directory (`save_to_disk` or data files)."""
    name: str | None = None
    """The dataset's configuration ("wikitext-103-raw-v1", "sample-10BT"), where it has several."""
    split: str = "train"
    """The split the corpus is read from; validation documents are held out of it."""
    text_field: str = "text"
    """The field holding each document's text."""
    streaming: bool = False
    """Read the dataset as a stream instead of downloading it whole (needs max_documents)."""
    max_documents: int | None = Field(default=None, ge=2)
    """Read at most this many documents (the first ones); required when streaming."""
    revision: str | None = None
    """A hub revision (branch, tag or commit) to pin the dataset to."""

    @model_validator(mode="after")
    def _stream_has_an_end(self):
        if self.streaming and self.max_documents is None:
            raise ValueError("streaming needs max_documents: the corpus is read up to it")
        return self


class FilesSource(BaseModel):
    """Local text, JSONL or Parquet files."""

    model_config = ConfigDict(extra="forbid", use_attribute_docstrings=True)

    paths: list[str] = Field(min_length=1)
    """Files or globs ("corpus/*.jsonl", "**/*.parquet"), relative to the working directory."""
    format: Literal["auto", "text", "jsonl", "parquet"] = "auto"
    """File format; "auto" tells it from the extension (.txt, .jsonl/.json, .parquet, maybe .gz)."""
    text_field: str = "text"
    """The field holding each document's text (JSONL and Parquet)."""
    sample_by: Literal["line", "paragraph", "document"] = "line"
    """What one document of a text file is: a line, a paragraph (blank-line separated), the file."""
    max_documents: int | None = Field(default=None, ge=2)
    """Read at most this many documents (the first ones)."""


class PreparedSource(BaseModel):
    """A directory written by `harness data prepare`: shards, tokenizer and evaluation data."""

    model_config = ConfigDict(extra="forbid", use_attribute_docstrings=True)

    dir: str
    """The directory `harness data prepare SUITE.yaml --out DIR` wrote (relative: to the working
    directory)."""


# ---------------------------------------------------------------- reading


def read_documents(cfg: DataConfig, scratch: Path) -> datasets.Dataset:
    """The corpus of `cfg` as a Dataset with one column, "text": non-empty documents, in order.

    `scratch` takes `datasets`' Arrow copies of local files; the caller deletes it.
    """
    readers = {"synthetic": _synthetic, "hf": _hf, "files": _files}
    with quiet_datasets():
        documents = readers[cfg.source](cfg, Path(scratch))
        # Whitespace-only documents teach nothing and would be a lone [EOS].
        return documents.filter(_non_empty, batched=True, input_columns=[TEXT],
                                cache_file_name=str(Path(scratch) / "documents.arrow"))


def _non_empty(texts: list[str | None]) -> list[bool]:
    return [bool(t and not t.isspace()) for t in texts]


def _synthetic(cfg: DataConfig, scratch: Path) -> datasets.Dataset:
    import datasets

    from harness.synthetic import build_world, corpus_logprobs
    world = build_world(cfg.synthetic)
    # Each document's log-probability, as the generator recorded it, travels with its text:
    # the data layer's entropy floor needs it, and generating the corpus twice would be waste.
    texts, logprobs = zip(*corpus_logprobs(world, cfg.synthetic.documents, SYNTHETIC_CORPUS_SEED))
    return datasets.Dataset.from_dict({TEXT: list(texts), LOGPROB: list(logprobs)})


def _hf(cfg: DataConfig, scratch: Path) -> datasets.Dataset:
    source = cfg.hf
    local = Path(source.path).expanduser()
    if any((local / marker).is_file() for marker in SAVED_MARKERS):
        dataset = _from_disk(source, local)
    else:
        dataset = _from_hub(source, scratch)
    dataset = _text_column(dataset, source.text_field, "data.hf.text_field")
    if source.streaming:
        return _materialize(dataset, source.max_documents, scratch)
    return _first(dataset, source.max_documents)


def _from_disk(source: HFSource, directory: Path) -> datasets.Dataset:
    import datasets
    saved = datasets.load_from_disk(str(directory))
    if isinstance(saved, datasets.DatasetDict):
        if source.split not in saved:
            raise UserError(f"no split '{source.split}' in {directory}; its splits are: "
                            f"{', '.join(saved)}", where="data.hf.split")
        saved = saved[source.split]
    return saved.to_iterable_dataset() if source.streaming else saved


def _from_hub(source: HFSource, scratch: Path) -> datasets.Dataset | datasets.IterableDataset:
    """load_dataset, with its failures turned into messages that say what to do."""
    import datasets
    # A local directory is read into scratch: the shards are the copy worth keeping. A hub
    # dataset goes to the user's Hugging Face cache, where a later prepare finds it again.
    local = Path(source.path).expanduser().is_dir()
    try:
        return datasets.load_dataset(source.path, source.name, split=source.split,
                                     streaming=source.streaming, revision=source.revision,
                                     cache_dir=str(scratch / "datasets") if local else None)
    except Exception as error:  # noqa: BLE001 - re-raised below unless it is the user's to fix
        raise _hub_error(error, source) from None


def _hub_error(error: Exception, source: HFSource) -> Exception:
    from datasets.exceptions import DatasetNotFoundError
    text = str(error)
    if unreachable(error):
        return UserError(f"cannot reach the Hugging Face hub for '{source.path}' ({text}), and it is "
                         f"not in the local cache; {MIRROR_HINT}", where="data.hf.path")
    if isinstance(error, (DatasetNotFoundError, FileNotFoundError)):
        return UserError(f"no dataset '{source.path}' on the hub or on disk ({text}); check the name, "
                         "or give a directory written by `save_to_disk` or holding data files",
                         where="data.hf.path")
    if isinstance(error, ValueError) and "split" in text.lower():
        return UserError(f"{text}; set data.hf.split to one of them", where="data.hf.split")
    if isinstance(error, ValueError) and ("config" in text.lower()):
        return UserError(f"{text}; set data.hf.name to one of them", where="data.hf.name")
    return error


def unreachable(error: BaseException) -> bool:
    """A failure to reach the hub (offline mode, no network), however deeply it is wrapped."""
    from huggingface_hub.errors import LocalEntryNotFoundError, OfflineModeIsEnabled
    while error is not None:
        if isinstance(error, (ConnectionError, TimeoutError, OfflineModeIsEnabled, LocalEntryNotFoundError)):
            return True
        if type(error).__name__ in {"ConnectError", "ConnectTimeout", "ReadTimeout"}:  # httpx
            return True
        error = error.__cause__ or error.__context__
    return False


def _files(cfg: DataConfig, scratch: Path) -> datasets.Dataset:
    import datasets
    source = cfg.files
    paths = expand_paths(source.paths)
    fmt = file_format(paths, source.format)
    if fmt == "parquet":
        _check_parquet_field(paths, source.text_field)
    options = {"sample_by": source.sample_by} if fmt == "text" else {}
    dataset = datasets.load_dataset(BUILDERS[fmt], data_files=[str(p) for p in paths], split="train",
                                    cache_dir=str(scratch / "datasets"), **options)
    field = TEXT if fmt == "text" else source.text_field
    return _first(_text_column(dataset, field, "data.files.text_field"), source.max_documents)


def expand_paths(patterns: list[str]) -> list[Path]:
    """Every file the patterns name, in pattern order then sorted; a pattern naming none is an error."""
    paths: list[Path] = []
    for i, pattern in enumerate(patterns):
        matches = sorted(Path(p) for p in glob.glob(os.path.expanduser(pattern), recursive=True))
        files = [p.resolve() for p in matches if p.is_file()]
        if not files:
            raise UserError(f"'{pattern}' matches no file (relative to {Path.cwd()}); give existing "
                            "files or globs", where=f"data.files.paths[{i}]")
        paths += [p for p in files if p not in paths]
    return paths


def file_format(paths: list[Path], fmt: str) -> str:
    """The one format of `paths`: `fmt` unless "auto", else told from the extensions."""
    if fmt != "auto":
        return fmt
    found = {_extension_format(p) for p in paths}
    if None in found:
        unknown = next(p for p in paths if _extension_format(p) is None)
        raise UserError(f"cannot tell the format of {unknown} from its extension; set data.files.format "
                        "to text, jsonl or parquet", where="data.files.format")
    if len(found) > 1:
        raise UserError(f"the files mix formats ({', '.join(sorted(found))}); list one format, or "
                        "set data.files.format", where="data.files.paths")
    return found.pop()


def _extension_format(path: Path) -> str | None:
    suffixes = [s for s in path.suffixes if s not in COMPRESSIONS]
    return FORMATS.get(suffixes[-1].lower()) if suffixes else None


def _check_parquet_field(paths: list[Path], field: str) -> None:
    # Checked on the schema before `datasets` reads anything, whose own error would be Arrow's.
    import pyarrow.parquet as pq
    names = pq.read_schema(paths[0]).names
    if field not in names:
        raise UserError(_missing_field(field, names, paths[0]), where="data.files.text_field")


def _missing_field(field: str, names: list[str], what: object) -> str:
    return f"no field '{field}' in {what}; its fields are: {', '.join(names) or '(none)'}"


def _text_column(dataset, field: str, where: str):
    """`dataset` with only its text field, named "text"; a missing or non-text field is an error."""
    names = list(dataset.column_names or [])
    if not names:  # a stream whose schema is not known until it is read
        names = list(next(iter(dataset)).keys())
    if field not in names:
        raise UserError(_missing_field(field, names, "the dataset"), where=where)
    feature = (dataset.features or {}).get(field)
    if feature is not None and getattr(feature, "dtype", None) not in ("string", "large_string"):
        raise UserError(f"field '{field}' holds {feature}, not text; name a text field",
                        where=where)
    dataset = dataset.select_columns([field])
    return dataset.rename_column(field, TEXT) if field != TEXT else dataset


def _first(dataset: datasets.Dataset, n: int | None) -> datasets.Dataset:
    return dataset if n is None or n >= len(dataset) else dataset.select(range(n))


def _materialize(stream: datasets.IterableDataset, n: int, scratch: Path) -> datasets.Dataset:
    """The first `n` documents of a stream, written to Arrow in `scratch` (not held in memory)."""
    import datasets
    return datasets.Dataset.from_generator(
        _take, gen_kwargs={"stream": stream, "n": n}, cache_dir=str(scratch / "stream"),
        features=datasets.Features({TEXT: datasets.Value("string")}))


def _take(stream, n: int) -> Iterator[dict]:
    for example in stream.take(n):
        yield {TEXT: example[TEXT]}


# ---------------------------------------------------------------- identity


def fingerprint(cfg: DataConfig) -> list:
    """What identifies the source's content beyond its settings: the size and modification time
    of every local file it reads, so that an edited file is read again rather than served stale."""
    if cfg.source == "files":
        return _stats(expand_paths(cfg.files.paths))
    if cfg.source == "hf" and Path(cfg.hf.path).expanduser().is_dir():
        root = Path(cfg.hf.path).expanduser()
        return _stats(sorted(p for p in root.rglob("*") if p.is_file()))
    return []


def _stats(paths: list[Path]) -> list:
    return [[str(p.resolve()), p.stat().st_size, p.stat().st_mtime_ns] for p in paths]


def describe(cfg: DataConfig) -> str:
    """One line naming the source, for the data card."""
    if cfg.source == "synthetic":
        s = cfg.synthetic
        return f"synthetic world (seed {s.seed}, {s.entities} entities, {s.documents} documents)"
    if cfg.source == "hf":
        h = cfg.hf
        return "hf:" + "/".join(x for x in (h.path, h.name, h.split) if x) + f" [{h.text_field}]"
    return f"files: {', '.join(cfg.files.paths)}"


@contextlib.contextmanager
def quiet_datasets():
    """No progress bars or info logs from `datasets` while the harness reads through it."""
    import datasets
    was_disabled = datasets.are_progress_bars_disabled()
    level = datasets.logging.get_verbosity()
    datasets.disable_progress_bars()
    datasets.logging.set_verbosity_error()
    try:
        yield
    finally:
        datasets.logging.set_verbosity(level)
        if not was_disabled:
            datasets.enable_progress_bars()
