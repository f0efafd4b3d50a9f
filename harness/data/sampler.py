"""Training and validation blocks read from a token file."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from harness.errors import UserError


class BlockSampler:
    """Windows of `seq_len` consecutive tokens from one token file (documents packed, [EOS]
    between them), read through a read-only memory map.

    `batch` draws block starts from a generator seeded by (seed, step, micro, rank), with no
    state carried between calls: resuming at step k reads what an uninterrupted run would.
    """

    def __init__(self, tokens_path: Path, dtype: str, seq_len: int, seed: int):
        self.args = (tokens_path, dtype, seq_len, seed)
        self.tokens = np.memmap(tokens_path, dtype=dtype, mode="r")
        self.seq_len = seq_len
        self.seed = seed
        if len(self.tokens) < seq_len:
            raise UserError(f"{seq_len} is longer than the {len(self.tokens)} tokens of "
                            f"{tokens_path}", where="data.seq_len")

    def __reduce__(self):
        # Pickled (e.g. to a Ray worker) as its arguments: the worker maps the file itself
        # instead of receiving a copy of every token.
        return (BlockSampler, self.args)

    def starts(self, step: int, micro: int, rank: int, batch_size: int) -> np.ndarray:
        """Token offsets of the blocks of `batch(step, micro, rank, batch_size)`."""
        rng = np.random.default_rng([self.seed, step, micro, rank])
        return rng.integers(0, len(self.tokens) - self.seq_len + 1, size=batch_size)

    def batch(self, step: int, micro: int, rank: int, batch_size: int) -> np.ndarray:
        """(batch_size, seq_len) int64 blocks at random starts."""
        return self._blocks(self.starts(step, micro, rank, batch_size))

    def val_batches(self, n_batches: int, batch_size: int, rank: int,
                    world_size: int) -> list[np.ndarray]:
        """The file's first non-overlapping blocks, dealt to ranks in turn: disjoint across ranks
        and the same on every call. Every rank gets the same number of batches (at most
        `n_batches`, fewer when the file is short) so that collective operations stay matched."""
        per_rank = len(self.tokens) // self.seq_len // world_size // batch_size
        n = min(n_batches, per_rank)
        if n == 0:
            raise UserError(f"the validation split holds fewer than {world_size * batch_size} "
                            f"blocks of {self.seq_len} tokens", where="data.val_fraction")
        blocks = np.arange(n * batch_size) * world_size + rank
        return list(self._blocks(blocks * self.seq_len).reshape(n, batch_size, self.seq_len))

    def _blocks(self, starts: np.ndarray) -> np.ndarray:
        return np.asarray(self.tokens[starts[:, None] + np.arange(self.seq_len)], dtype=np.int64)
