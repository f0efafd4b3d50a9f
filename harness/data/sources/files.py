"""The files source: local text, JSONL or Parquet files and globs, read by `datasets`' own builders.

Every failure the user can cause (a glob matching nothing, a missing text field, a file that is
empty, binary or not in its encoding, records without text) is one `UserError` naming the suite
key and what to do. `datasets` is imported inside the functions that read.
"""

from __future__ import annotations

import codecs
import glob
import os
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_serializer

from harness.data.sources.common import TEXT, file_stats, first, missing_field, non_empty, text_column
from harness.errors import UserError

if TYPE_CHECKING:
    import datasets

FORMATS = {".txt": "text", ".text": "text", ".md": "text", ".jsonl": "jsonl", ".json": "jsonl",
           ".ndjson": "jsonl", ".parquet": "parquet"}
COMPRESSIONS = (".gz", ".bz2", ".xz", ".zst")
BUILDERS = {"text": "text", "jsonl": "json", "parquet": "parquet"}  # format -> datasets builder
# A NUL byte this early marks a binary file (git's test); text files are then read in chunks.
BINARY_HEAD_BYTES = 8000
READ_CHUNK = 1 << 20
COUNT_BATCH = 10_000  # records per batch when counting those without text
NO_TEXT = "(missing, null or blank)"  # what `non_empty` drops


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


# ---------------------------------------------------------------- reading


def read(source: FilesSource, scratch: Path) -> datasets.Dataset:
    """The files' documents, in the order of `expand_paths`, the first `max_documents` of them."""
    paths = expand_paths(source.paths)
    fmt = file_format(paths, source.format)
    if fmt == "parquet":
        _check_parquet(paths, source.text_field)
    else:
        check_text_files(paths, source.encoding)
    if fmt == "text":
        dataset = _load_files(paths, fmt, source, scratch / "datasets")
        documents = text_column(dataset, TEXT, "data.files.text_field")
    else:
        documents = _records(paths, fmt, source, scratch)
    return first(documents, source.max_documents)


def _load_files(paths: list[Path], fmt: str, source: FilesSource, cache_dir: Path) -> datasets.Dataset:
    import datasets  # heavy: only a build reads
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
    from datasets.exceptions import DatasetGenerationError  # heavy: only a build reads
    try:
        dataset = _load_files(paths, fmt, source, scratch / "datasets")
        documents = text_column(dataset, source.text_field, "data.files.text_field")
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
    from datasets.exceptions import DatasetGenerationError  # heavy: only a build reads
    try:
        dataset = _load_files([path], fmt, source, cache_dir)
    except DatasetGenerationError as error:
        raise UserError(f"cannot read {path} as {fmt} ({_root_cause(error)})",
                        where="data.files.paths") from None
    n, feature = len(dataset), dataset.features.get(source.text_field)
    if feature is None or getattr(feature, "dtype", None) == "null":  # absent, or null everywhere
        return _FileRecords(path, None, n, n, dataset.column_names)
    texts = text_column(dataset, source.text_field, "data.files.text_field")
    return _FileRecords(path, texts, n, _count_without_text(texts), dataset.column_names)


def _count_without_text(documents: datasets.Dataset) -> int:
    return sum(len(batch[TEXT]) - sum(non_empty(batch[TEXT]))
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
    import datasets  # heavy: only a build reads
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
    import fsspec  # heavy (it comes with datasets): only a build reads
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
    import pyarrow.parquet as pq  # heavy: only a build reads
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
        raise UserError(missing_field(field, schemas[0], paths[0]), where="data.files.text_field")


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


# ---------------------------------------------------------------- identity


def fingerprint(source: FilesSource) -> list:
    """Every file read: its size and modification time."""
    return file_stats(expand_paths(source.paths))


def describe(source: FilesSource) -> str:
    return f"files: {', '.join(source.paths)}"
