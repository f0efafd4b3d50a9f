"""The suite's `data` section: where the text comes from, the tokenizer, and the training blocks.

`DataConfig` is a union tagged by `source`, one class per source:

    data: {source: synthetic, ...}              SyntheticData (the default when `source` is left out)
    data: {source: hf, hf: {...}, ...}          HFData
    data: {source: files, files: {...}, ...}    FilesData
    data: {source: prepared, prepared: {...}}   MirrorData: a directory of `harness data prepare`

Every class shares the settings of `_Data`, among them the `synthetic` world, which makes the
evaluation tasks whatever the source. A class has its source's section and no other: a section
of another source is an unknown key (left null, it is no section at all). Nothing here imports
torch, transformers or datasets: the suite schema is validated without them.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Literal

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field

from harness.data.sources import files as files_source
from harness.data.sources import hf as hf_source
from harness.data.sources import synthetic as synthetic_source
from harness.data.sources.files import FilesSource
from harness.data.sources.hf import HFSource
from harness.synthetic import WorldConfig

if TYPE_CHECKING:
    import datasets

SOURCES = ("synthetic", "hf", "files", "prepared")
# The sources whose settings are a section named after them.
SECTIONS = ("hf", "files", "prepared")


class TokenizerConfig(BaseModel):
    """The suite's one tokenizer: trained on a sample of the training documents, or pretrained."""

    model_config = ConfigDict(extra="forbid", use_attribute_docstrings=True)

    kind: Literal["bpe", "wordpiece", "unigram"] = "bpe"
    """Model trained with `tokenizers`: byte-pair encoding, WordPiece or Unigram, within words."""
    vocab_size: int = Field(default=1024, ge=64)
    """Largest vocabulary, special tokens included; at least 64 more than the special tokens."""
    sample_documents: int = Field(default=50_000, ge=1)
    """Training documents the tokenizer is trained on (evenly spaced over the training split)."""
    pretrained: str | None = None
    """A pretrained tokenizer by hub name or local path, used instead of training one (kind,
    vocab_size and sample_documents are then unused); missing special tokens are added to it."""


class PreparedSource(BaseModel):
    """A directory written by `harness data prepare`: shards, tokenizer and evaluation data."""

    model_config = ConfigDict(extra="forbid", use_attribute_docstrings=True)

    dir: str
    """The directory `harness data prepare SUITE.yaml --out DIR` wrote (relative: to the working
    directory)."""


class _Data(BaseModel):
    """Where the text comes from and how it is cut into training blocks."""

    model_config = ConfigDict(extra="forbid", use_attribute_docstrings=True)

    source: str
    """Corpus source: "synthetic" (the generated world of harness.synthetic), "hf" (a Hugging
    Face dataset), "files" (local text/JSONL/Parquet) or "prepared" (an offline mirror)."""
    synthetic: WorldConfig = Field(default_factory=WorldConfig)
    """The synthetic world: the corpus when source is "synthetic", and the evaluation tasks always."""
    tokenizer: TokenizerConfig = Field(default_factory=TokenizerConfig)
    """The tokenizer every objective of the suite shares."""
    seq_len: int = Field(default=128, ge=2)
    """Tokens per training block."""
    val_fraction: float = Field(default=0.05, gt=0.0, lt=1.0)
    """Share of documents held out for validation; no training block reads them."""
    eval_examples: int = Field(default=200, ge=2)
    """Rows per evaluation task split."""
    num_proc: int = Field(default=1, ge=1, exclude=True)
    """Processes that tokenize (datasets.map); changes no result, so no hash or run id sees it."""

    def identity(self, mode: Literal["python", "json"] = "python") -> dict:
        """The settings as run ids and prepared entries have always recorded them: what the section
        dumped to when one class held every source (each source's section, null where unused, in
        that order), so that they stay what they were. num_proc is left out: it changes no result."""
        dumped = self.model_dump(mode=mode)
        return {**{key: dumped.pop(key, None) for key in ("source", "synthetic", *SECTIONS)}, **dumped}

    def fingerprint(self) -> list:
        """What identifies the content beyond the settings: here nothing (the sources that read
        local files list them, so that an edited file is read again rather than served stale)."""
        return []


class SyntheticData(_Data):
    """The corpus is the synthetic world's documents."""

    source: Literal["synthetic"] = "synthetic"

    def read(self, scratch: Path) -> datasets.Dataset:
        return synthetic_source.read(self.synthetic, scratch)

    def describe(self) -> str:
        return synthetic_source.describe(self.synthetic)


class HFData(_Data):
    """The corpus is a Hugging Face dataset."""

    source: Literal["hf"] = "hf"
    hf: HFSource
    """The Hugging Face dataset."""

    def read(self, scratch: Path) -> datasets.Dataset:
        return hf_source.read(self.hf, scratch)

    def fingerprint(self) -> list:
        return hf_source.fingerprint(self.hf)

    def describe(self) -> str:
        return hf_source.describe(self.hf)


class FilesData(_Data):
    """The corpus is local files."""

    source: Literal["files"] = "files"
    files: FilesSource
    """The local files."""

    def read(self, scratch: Path) -> datasets.Dataset:
        return files_source.read(self.files, scratch)

    def fingerprint(self) -> list:
        return files_source.fingerprint(self.files)

    def describe(self) -> str:
        return files_source.describe(self.files)


class MirrorData(_Data):
    """Corpus, tokenizer, validation split and task files come prepared (an offline mirror):
    harness.data.prepare opens the directory as it is. Of the shared settings only seq_len is
    used; the others would build an entry."""

    source: Literal["prepared"] = "prepared"
    prepared: PreparedSource
    """The directory of `harness data prepare`."""


def _source_and_its_section(data):
    """`source` defaults to synthetic, a source named needs its section, and a null section of
    another source is no section (the dump of old named every source's)."""
    if not isinstance(data, dict):
        return data
    source = data.get("source", "synthetic")
    if source not in SOURCES:
        raise ValueError(f"unknown source {source!r}; expected one of: {', '.join(SOURCES)}")
    if source in SECTIONS and data.get(source) is None:
        raise ValueError(f"source '{source}' needs a `{source}` section")
    unused = {key for key in SECTIONS if key != source and key in data and data[key] is None}
    return {"source": source, **{key: value for key, value in data.items() if key not in unused}}


DataConfig = Annotated[SyntheticData | HFData | FilesData | MirrorData,
                       Field(discriminator="source"), BeforeValidator(_source_and_its_section)]
"""The suite's `data` section: the class of its source (a pydantic field type; validate a mapping
with `pydantic.TypeAdapter(DataConfig)`)."""
