"""lm-eval's response cache (`eval.cache: true`), stored as JSON text instead of pickles.

lm-eval's `CachingLM` keeps each answer (request hash -> answer) in a SqliteDict, which pickles
the answer on write and unpickles it on read: whoever can write the cache file can make the
evaluation run code. The answers are plain data, a float, a boolean, a string or tuples of
those (loglikelihood: (log P, is_greedy); loglikelihood_rolling: log P; generate_until: text),
so the harness keeps lm-eval's caching logic (`JsonCachingLM`, the same keys and lookups) over a
store that holds JSON text only (`JsonResponses`):

    key                                  value (TEXT)
    9f2c...e1  (hash of the request)     [-4.8125, false]

A stored value that is not JSON text of such data (a pickle, say, which SQLite hands back as a
BLOB) is a miss: the model answers again and the entry is rewritten. Nothing read from the file
is ever executed. `json_response_cache()` makes lm-eval's `simple_evaluate(use_cache=...)` build
this cache in place of its own.
"""

from __future__ import annotations

import contextlib
import json
import sqlite3
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import lm_eval.api.model as lm_eval_model

from harness.errors import UserError

Answer = float | int | bool | str | tuple


def is_plain(value: Any) -> bool:
    """Whether `value` is data an answer may be: a number, a boolean, a string, or a list or
    tuple of those (nested).

    >>> is_plain((-4.5, False)), is_plain({"a": 1}), is_plain(None)
    (True, False, False)
    """
    if isinstance(value, (list, tuple)):
        return all(is_plain(item) for item in value)
    return isinstance(value, (bool, int, float, str))


def encode_answer(answer: Any) -> str | None:
    """The JSON text of an answer; None for anything else (it is then not cached)."""
    return json.dumps(answer) if is_plain(answer) else None


def decode_answer(stored: Any) -> Answer | None:
    """The answer stored as JSON text, its lists tuples again as lm-eval returns them; None (a
    miss) for anything else, a BLOB such as a pickle included, which is never read.

    >>> decode_answer('[-4.5, false]'), decode_answer(b'\\x80\\x04K\\x01.'), decode_answer('{"a": 1}')
    ((-4.5, False), None, None)
    """
    if not isinstance(stored, str):
        return None
    try:
        answer = json.loads(stored)
    except (ValueError, RecursionError):
        return None
    return _tuples(answer) if is_plain(answer) else None


def _tuples(value: Any) -> Answer:
    return tuple(_tuples(item) for item in value) if isinstance(value, list) else value


class JsonResponses:
    """The mapping lm-eval's `CachingLM` and `CacheHook` use (`in`, `[]`, `[]=`, `commit`), kept as
    JSON text in one SQLite table. A key whose value does not decode is not `in` it.

    Writes are committed at least every `commit_every_s` seconds, so that an evaluation cut short
    keeps most of its answers (lm-eval's store committed each one; that is one disk sync per
    request)."""

    def __init__(self, path: str | Path, commit_every_s: float = 10.0) -> None:
        self.path = Path(path)
        self.commit_every_s = commit_every_s
        self._committed = time.monotonic()
        self._db = sqlite3.connect(self.path)
        try:
            self._db.execute("CREATE TABLE IF NOT EXISTS responses (key TEXT PRIMARY KEY, value TEXT NOT NULL)")
        except sqlite3.DatabaseError as e:
            raise UserError(f"not a response cache the harness wrote ({e}); delete it to start the cache "
                            "afresh", where=str(self.path)) from None

    def _get(self, key: str) -> Answer | None:
        row = self._db.execute("SELECT value FROM responses WHERE key = ?", (key,)).fetchone()
        return None if row is None else decode_answer(row[0])

    def __contains__(self, key: str) -> bool:
        return self._get(key) is not None

    def __getitem__(self, key: str) -> Answer:
        if (answer := self._get(key)) is None:
            raise KeyError(key)
        return answer

    def __setitem__(self, key: str, answer: Any) -> None:
        if (text := encode_answer(answer)) is not None:
            self._db.execute("INSERT OR REPLACE INTO responses (key, value) VALUES (?, ?)", (key, text))
        if time.monotonic() - self._committed > self.commit_every_s:
            self.commit()

    def commit(self) -> None:
        self._db.commit()
        self._committed = time.monotonic()


class JsonCachingLM(lm_eval_model.CachingLM):
    """lm-eval's `CachingLM`, its answers in `JsonResponses` rather than a pickling SqliteDict."""

    def __init__(self, lm, cache_db: str) -> None:
        # CachingLM.__init__ would open the pickling store; this sets what it sets, but the store.
        self.lm = lm
        self.cache_db = cache_db
        self.dbdict = JsonResponses(cache_db)
        lm.set_cache_hook(self.get_cache_hook())


@contextlib.contextmanager
def json_response_cache() -> Iterator[None]:
    """While active, `simple_evaluate(use_cache=PREFIX)` caches in `JsonCachingLM` (it builds
    `lm_eval.api.model.CachingLM(lm, PREFIX + "_rank0.db")` when it starts)."""
    original, lm_eval_model.CachingLM = lm_eval_model.CachingLM, JsonCachingLM
    try:
        yield
    finally:
        lm_eval_model.CachingLM = original
