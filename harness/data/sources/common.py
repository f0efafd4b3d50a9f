"""What every source shares: the one text column, its checks, and the read that drops empty
documents. `datasets` is imported inside the functions that read (the suite schema imports the
sources to validate a suite)."""

from __future__ import annotations

import importlib
import logging
from pathlib import Path
from typing import TYPE_CHECKING

from harness.errors import UserError
from harness.runtime import quiet

if TYPE_CHECKING:
    import datasets

TEXT = "text"  # the documents dataset's text column (every source has it)
MIRROR_HINT = ("prepare an offline mirror with `harness data prepare SUITE.yaml --out DIR` on a machine "
               "with network, then set `data: {source: prepared, prepared: {dir: DIR}}`")


def read_documents(cfg, scratch: Path) -> datasets.Dataset:
    """The corpus of `cfg` (a data config with `read`) as a Dataset with the column "text":
    non-empty documents, in order. `scratch` takes `datasets`' Arrow copies of local files; the
    caller deletes it."""
    # Heavy, so imported here; and before quiet(), which quiets only the libraries already imported.
    importlib.import_module("datasets")
    with quiet(logging.ERROR, ("datasets",)):
        documents = cfg.read(Path(scratch))
        # Whitespace-only documents teach nothing and would be a lone [EOS].
        return documents.filter(non_empty, batched=True, input_columns=[TEXT],
                                cache_file_name=str(Path(scratch) / "documents.arrow"))


def non_empty(texts: list[str | None]) -> list[bool]:
    return [bool(t and not t.isspace()) for t in texts]


def text_column(dataset, field: str, where: str):
    """`dataset` with only its text field, named "text"; a missing or non-text field is an error."""
    names = list(dataset.column_names or [])
    if not names:  # a stream whose schema is not known until it is read
        names = list(next(iter(dataset)).keys())
    if field not in names:
        raise UserError(missing_field(field, names, "the dataset"), where=where)
    feature = (dataset.features or {}).get(field)
    if feature is not None and getattr(feature, "dtype", None) not in ("string", "large_string"):
        raise UserError(f"field '{field}' holds {feature}, not text; name a text field",
                        where=where)
    dataset = dataset.select_columns([field])
    return dataset.rename_column(field, TEXT) if field != TEXT else dataset


def missing_field(field: str, names: list[str], what: object) -> str:
    return f"no field '{field}' in {what}; its fields are: {', '.join(names) or '(none)'}"


def first(dataset: datasets.Dataset, n: int | None) -> datasets.Dataset:
    return dataset if n is None or n >= len(dataset) else dataset.select(range(n))


def file_stats(paths: list[Path]) -> list:
    """The size and modification time of every file: a source's fingerprint, so that an edited
    file is read again rather than served stale from the cache."""
    return [[str(p.resolve()), p.stat().st_size, p.stat().st_mtime_ns] for p in paths]
