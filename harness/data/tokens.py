"""The token files: every document tokenized once with `datasets.map` (batched, `num_proc`
processes), then written split by split as one flat array of ids (uint16 where the vocabulary
fits, else uint32), each document ended by [EOS], read later through np.memmap."""

from __future__ import annotations

import hashlib
import logging
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path

import numpy as np
from tokenizers import Tokenizer

from harness.data.sources.common import TEXT
from harness.runtime import quiet

MAP_BATCH = 1000      # documents per datasets.map call
WRITE_BATCH = 10_000  # documents per write of the token file


def token_dtype(vocab_size: int) -> str:
    return "uint16" if vocab_size <= 2**16 else "uint32"


@dataclass
class Encode:
    """The datasets.map function: each document's token ids, its [EOS], and its size in bytes.

    It holds the tokenizer's path, not the tokenizer, so that it pickles small to every process
    and each loads the tokenizer once."""

    tokenizer_file: str
    eos: int

    @cached_property
    def tokenizer(self) -> Tokenizer:
        tokenizer = Tokenizer.from_file(self.tokenizer_file)
        # A document that says "[MASK]" or "<extra_id_0>" holds text, not the special token.
        tokenizer.encode_special_tokens = True
        return tokenizer

    def __call__(self, texts: list[str]) -> dict:
        encodings = self.tokenizer.encode_batch_fast(texts, add_special_tokens=False)
        return {"ids": [e.ids + [self.eos] for e in encodings],
                "bytes": [len(t.encode("utf-8")) + 1 for t in texts]}


def tokenize(documents, tokenizer_dir: Path, dtype: str, eos: int, num_proc: int, scratch: Path):
    """The documents' token ids, in order, tokenized in batches by `num_proc` processes."""
    import datasets  # heavy, and only a build tokenizes (training reads the files)
    features = datasets.Features({"ids": datasets.List(datasets.Value(dtype)),
                                  "bytes": datasets.Value("int64")})
    encode = Encode(str(Path(tokenizer_dir) / "tokenizer.json"), eos)
    with quiet(logging.ERROR, ("datasets",)):
        return documents.map(
            encode, batched=True, batch_size=MAP_BATCH, input_columns=[TEXT], remove_columns=documents.column_names,
            num_proc=num_proc if num_proc > 1 else None, features=features,
            cache_file_name=str(Path(scratch) / "tokens.arrow"),
            # Fresh scratch every build: no cache to match, so datasets need not hash `encode`.
            new_fingerprint=hashlib.sha256(f"{tokenizer_dir}{dtype}".encode()).hexdigest()[:16])


@dataclass(frozen=True)
class SplitStats:
    documents: int
    tokens: int
    bytes: int


def write_shards(documents, n_train: int, tokenizer_dir: Path, dtype: str, eos: int,
                 paths: tuple[Path, Path], num_proc: int, scratch: Path) -> tuple[SplitStats, SplitStats]:
    """Tokenize every document once, then write the training split (the first `n_train`) to
    `paths[0]` and the validation split (the rest) to `paths[1]`."""
    tokenized = tokenize(documents, tokenizer_dir, dtype, eos, num_proc, scratch)
    rows = (range(n_train), range(n_train, len(documents)))
    train, val = (write_split(tokenized.select(r), path) for r, path in zip(rows, paths))
    return train, val


def write_split(tokenized, tokens_path: Path) -> SplitStats:
    """Write a split's token file, batch by batch."""
    n_tokens = n_bytes = 0
    with open(tokens_path, "wb") as tokens:
        for table in tokenized.with_format("arrow").iter(batch_size=WRITE_BATCH):
            flat = _flatten(table.column("ids"))
            tokens.write(flat.tobytes())
            n_tokens += len(flat)
            n_bytes += int(np.sum(table.column("bytes").to_numpy()))
    return SplitStats(len(tokenized), n_tokens, n_bytes)


def _flatten(column) -> np.ndarray:
    """All ids in order of an Arrow column of id lists."""
    return column.combine_chunks().flatten().to_numpy()
