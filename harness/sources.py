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
field, an unreachable hub, a file that is empty, binary or not in its encoding, records without
text) is one `UserError` naming the suite key and what to do. `datasets` is imported inside the
functions: the command line imports this module to validate suites.
"""

from __future__ import annotations

import codecs
import contextlib
import glob
import os
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_serializer, model_validator

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
# A NUL byte this early marks a binary file (git's test); text files are then read in chunks.
BINARY_HEAD_BYTES = 8000
READ_CHUNK = 1 << 20
COUNT_BATCH = 10_000  # records per batch when counting those without text
NO_TEXT = "(missing, null or blank)"  # what `_non_empty` drops


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
    encoding: str = "utf-8"
    """The encoding of text and JSONL files ("latin-1", "cp1252", ...); Parquet is always UTF-8."""
    skip_missing: bool = False
    """Skip JSONL lines and Parquet rows whose text field is missing, null or blank, with a notice
    that counts them; otherwise such records are an error that counts them per file."""

    @field_validator("encoding")
    @classmethod
    def _known_encoding(cls, name: str) -> str:
        try:
            return codecs.lookup(name).name  # one spelling per codec: "UTF8" and "utf-8" hash alike
        except LookupError:
            raise ValueError(f"unknown encoding '{name}'; give a Python codec name such as utf-8, "
                             "latin-1 or cp1252") from None

    @model_serializer(mode="wrap")
    def _without_new_defaults(self, handler):
        # Settings added after suites were in use are left out at their defaults, so that the
        # cache keys and run ids of existing suites stay what they were.
        data = handler(self)
        for key, default in (("encoding", "utf-8"), ("skip_missing", False)):
            if data.get(key) == default:
                del data[key]
        return data


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
    source = cfg.files
    paths = expand_paths(source.paths)
    fmt = file_format(paths, source.format)
    if fmt == "parquet":
        _check_parquet(paths, source.text_field)
    else:
        check_text_files(paths, source.encoding)
    if fmt == "text":
        dataset = _load_files(paths, fmt, source, scratch / "datasets")
        documents = _text_column(dataset, TEXT, "data.files.text_field")
    else:
        documents = _records(paths, fmt, source, scratch)
    return _first(documents, source.max_documents)


def _load_files(paths: list[Path], fmt: str, source: FilesSource, cache_dir: Path) -> datasets.Dataset:
    import datasets
    options = {"sample_by": source.sample_by} if fmt == "text" else {}
    if fmt != "parquet":
        options["encoding"] = source.encoding
    return datasets.load_dataset(BUILDERS[fmt], data_files=[str(p) for p in paths], split="train",
                                 cache_dir=str(cache_dir), **options)


# ---------------------------------------------------------------- records without text


def _records(paths: list[Path], fmt: str, source: FilesSource, scratch: Path) -> datasets.Dataset:
    """The text field of every JSONL line or Parquet row, read as one dataset. When some records
    lack text, the files are read again one by one to count them per file (which also reads
    files whose columns differ): an error, or a notice with data.files.skip_missing."""
    from datasets.exceptions import DatasetGenerationError
    try:
        dataset = _load_files(paths, fmt, source, scratch / "datasets")
        documents = _text_column(dataset, source.text_field, "data.files.text_field")
        if not _count_without_text(documents):
            return documents
    except DatasetGenerationError:
        pass  # the files differ in their columns, or one cannot be read: each is read alone below
    files = [_read_one(path, fmt, source, scratch / "files" / str(i)) for i, path in enumerate(paths)]
    _refuse_or_notice([f for f in files if f.without_text], fmt, source)
    return _concatenate([f.texts for f in files if f.texts is not None])


@dataclass(frozen=True)
class _FileRecords:
    path: Path
    texts: datasets.Dataset | None
    """Its text column; None when no record has the field."""
    records: int
    without_text: int
    columns: list[str]


def _read_one(path: Path, fmt: str, source: FilesSource, cache_dir: Path) -> _FileRecords:
    from datasets.exceptions import DatasetGenerationError
    try:
        dataset = _load_files([path], fmt, source, cache_dir)
    except DatasetGenerationError as error:
        raise UserError(f"cannot read {path} as {fmt} ({_root_cause(error)})",
                        where="data.files.paths") from None
    n, feature = len(dataset), dataset.features.get(source.text_field)
    if feature is None or getattr(feature, "dtype", None) == "null":  # absent, or null everywhere
        return _FileRecords(path, None, n, n, dataset.column_names)
    texts = _text_column(dataset, source.text_field, "data.files.text_field")
    return _FileRecords(path, texts, n, _count_without_text(texts), dataset.column_names)


def _count_without_text(documents: datasets.Dataset) -> int:
    return sum(len(batch[TEXT]) - sum(_non_empty(batch[TEXT]))
               for batch in documents.iter(batch_size=COUNT_BATCH))


def _refuse_or_notice(lacking: list[_FileRecords], fmt: str, source: FilesSource) -> None:
    """Records without text stop the build, unless the suite says to skip them."""
    if not lacking:
        return
    unit = "rows" if fmt == "parquet" else "lines"
    counts = [f"{f.without_text} of {f.records} {unit} of {f.path}"
              + (f" (its fields: {', '.join(f.columns)})" if f.texts is None else "") for f in lacking]
    more = f" and {len(counts) - 5} more files" if len(counts) > 5 else ""
    what = f"{', '.join(counts[:5])}{more} lack field '{source.text_field}' {NO_TEXT}"
    if not source.skip_missing:
        raise UserError(f"{what}; fix the files, set data.files.text_field to the field that holds "
                        "the text, or set data.files.skip_missing: true to skip such records",
                        where="data.files.text_field")
    skipped = sum(f.without_text for f in lacking)
    notice(f"skipped {skipped} {unit}: {what}", where="data.files.skip_missing")


def _concatenate(parts: list[datasets.Dataset]) -> datasets.Dataset:
    import datasets
    if not parts:
        raise UserError("no file holds the text field; name the field that holds the text",
                        where="data.files.text_field")
    # One string type for all: Parquet files may hold large_string, JSONL string.
    return datasets.concatenate_datasets([p.cast_column(TEXT, datasets.Value("string")) for p in parts])


def _root_cause(error: BaseException) -> str:
    while error.__cause__ is not None or error.__context__ is not None:
        error = error.__cause__ or error.__context__
    return f"{type(error).__name__}: {error}"


def notice(message: str, where: str) -> None:
    """Something the user should know that does not stop the build (stderr, like errors)."""
    print(f"notice: {where}: {message}", file=sys.stderr, flush=True)


# ---------------------------------------------------------------- files that are not text


def check_text_files(paths: list[Path], encoding: str) -> None:
    """Refuse, naming it, a text or JSONL file that `datasets` would fail on with a traceback:
    an empty one, a binary one, or one not in `encoding`."""
    for path in paths:
        _check_text_file(path, encoding)


def _check_text_file(path: Path, encoding: str) -> None:
    import fsspec
    decoder = codecs.getincrementaldecoder(encoding)()
    offset, blank = 0, True
    with fsspec.open(str(path), "rb", compression="infer") as f:  # a .gz file: its content
        while chunk := f.read(READ_CHUNK):
            if offset == 0 and _looks_binary(chunk, encoding):
                raise UserError(f"{path} is binary, not text (it holds NUL bytes); list only text "
                                "files", where="data.files.paths")
            text = _decode(decoder, chunk, offset, path, encoding)
            blank = blank and (not text or text.isspace())
            offset += len(chunk)
    _decode(decoder, b"", offset, path, encoding, final=True)  # a character cut off at the end
    if blank:
        raise UserError(f"{path} is empty (it holds no text); fill it, or leave it out of the list",
                        where="data.files.paths")


def _looks_binary(head: bytes, encoding: str) -> bool:
    # UTF-16 and UTF-32 text holds NUL bytes; in any other encoding text does not.
    wide = codecs.lookup(encoding).name.startswith(("utf-16", "utf-32"))
    return not wide and b"\0" in head[:BINARY_HEAD_BYTES]


def _decode(decoder, chunk: bytes, offset: int, path: Path, encoding: str, final: bool = False) -> str:
    """`chunk`, the bytes of `path` from `offset` on, decoded; a byte not in `encoding` is an error
    that gives its offset in the file."""
    held = len(decoder.getstate()[0])  # the start of a character cut by the previous chunk
    try:
        return decoder.decode(chunk, final=final)
    except UnicodeDecodeError as e:
        at, byte = offset - held + e.start, e.object[e.start]
        raise UserError(f"{path} is not valid {encoding} at byte {at} (0x{byte:02x}); if the file is in "
                        "another encoding, set data.files.encoding to it (e.g. latin-1 or cp1252)",
                        where="data.files.encoding") from None


def _check_parquet(paths: list[Path], field: str) -> None:
    # Checked on the schemas before `datasets` reads anything, whose own errors would be Arrow's.
    import pyarrow.parquet as pq
    schemas = []
    for path in paths:
        if path.stat().st_size == 0:
            raise UserError(f"{path} is empty; fill it, or leave it out of the list",
                            where="data.files.paths")
        try:
            schemas.append(pq.read_schema(path).names)
        except (OSError, ValueError) as e:  # pyarrow's ArrowInvalid is a ValueError
            raise UserError(f"{path} is not a Parquet file ({e})", where="data.files.paths") from None
    if not any(field in names for names in schemas):
        raise UserError(_missing_field(field, schemas[0], paths[0]), where="data.files.text_field")


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
