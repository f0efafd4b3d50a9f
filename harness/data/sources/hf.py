"""The hf source: a dataset by hub name ("roneneldan/TinyStories"), a local directory written by
`Dataset.save_to_disk`, or a local directory of data files; streamed when asked. Every failure
the user can cause (a missing dataset, split or text field, an unreachable hub) is one
`UserError` naming the suite key and what to do."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

from pydantic import BaseModel, ConfigDict, Field, model_validator

from harness.data.sources.common import MIRROR_HINT, TEXT, file_stats, first, text_column
from harness.errors import UserError

if TYPE_CHECKING:
    import datasets

# Files that `save_to_disk` writes: such a directory is read with `load_from_disk`.
SAVED_MARKERS = ("state.json", "dataset_dict.json")


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


def read(source: HFSource, scratch: Path) -> datasets.Dataset:
    """The dataset's text column, its first `max_documents` documents."""
    local = Path(source.path).expanduser()
    if any((local / marker).is_file() for marker in SAVED_MARKERS):
        dataset = _from_disk(source, local)
    else:
        dataset = _from_hub(source, scratch)
    dataset = text_column(dataset, source.text_field, "data.hf.text_field")
    if source.streaming:
        return _materialize(dataset, source.max_documents, scratch)
    return first(dataset, source.max_documents)


def _from_disk(source: HFSource, directory: Path) -> datasets.Dataset:
    import datasets  # heavy: only a build reads
    saved = datasets.load_from_disk(str(directory))
    if isinstance(saved, datasets.DatasetDict):
        if source.split not in saved:
            raise UserError(f"no split '{source.split}' in {directory}; its splits are: "
                            f"{', '.join(saved)}", where="data.hf.split")
        saved = saved[source.split]
    return saved.to_iterable_dataset() if source.streaming else saved


def _from_hub(source: HFSource, scratch: Path) -> datasets.Dataset | datasets.IterableDataset:
    """load_dataset, with its failures turned into messages that say what to do."""
    import datasets  # heavy: only a build reads
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
    from datasets.exceptions import DatasetNotFoundError  # heavy: only a failed build gets here
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
    from huggingface_hub.errors import LocalEntryNotFoundError, OfflineModeIsEnabled  # only on failure
    while error is not None:
        if isinstance(error, (ConnectionError, TimeoutError, OfflineModeIsEnabled, LocalEntryNotFoundError)):
            return True
        if type(error).__name__ in {"ConnectError", "ConnectTimeout", "ReadTimeout"}:  # httpx
            return True
        error = error.__cause__ or error.__context__
    return False


def _materialize(stream: datasets.IterableDataset, n: int, scratch: Path) -> datasets.Dataset:
    """The first `n` documents of a stream, written to Arrow in `scratch` (not held in memory)."""
    import datasets  # heavy: only a build reads
    return datasets.Dataset.from_generator(
        _take, gen_kwargs={"stream": stream, "n": n}, cache_dir=str(scratch / "stream"),
        features=datasets.Features({TEXT: datasets.Value("string")}))


def _take(stream, n: int) -> Iterator[dict]:
    for example in stream.take(n):
        yield {TEXT: example[TEXT]}


def fingerprint(source: HFSource) -> list:
    """The files of a local dataset directory (a hub dataset: nothing beyond its settings)."""
    root = Path(source.path).expanduser()
    if not root.is_dir():
        return []
    return file_stats(sorted(p for p in root.rglob("*") if p.is_file()))


def describe(source: HFSource) -> str:
    return "hf:" + "/".join(x for x in (source.path, source.name, source.split) if x) + f" [{source.text_field}]"
