"""A text being written (`Draft`): every random decision goes through `Draft.choose`, which
records the option taken and its probability (a `Choice`).

`make_rng` gives each (world, purpose, seed) its own stream. A corrupted sentence (see
`language.CORRUPTIONS`) is rewritten word by word as it is written; `uncorrupt` inverts it.
"""

from __future__ import annotations

import bisect
import contextlib
import itertools
import math
import random
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import TypeVar

from harness.synthetic.world import Entity, World

T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class Choice:
    """One random decision: which option was taken, and the probability it had."""

    index: int
    probability: float


class Draft:
    """A text being written: it draws every random choice, records it, and collects the text.

    `logprob` sums the natural log of every choice's probability; `trace` (when `record`) keeps
    the choices. The person a document is about (`subject`) is drawn at their first mention, so
    a document that never names them makes no choice that its text does not show.
    """

    def __init__(self, rng: random.Random | None, world: World | None = None, record: bool = False):
        self.rng = rng
        self.world = world
        self.trace: list[Choice] | None = [] if record else None
        self.logprob = 0.0
        self.entity: Entity | None = None
        self._out: list[str] = []
        self._rewrite: _Corruption | None = None

    def choose(self, options: Sequence[T], weights: Sequence[float] | None = None,
               says: Callable[[T], str] | None = None) -> T:
        """One option, uniformly or in proportion to `weights`.

        `says(option)` is text that the draft writes next when it takes `option`: a parse uses it
        to skip options that the document does not continue with. It must hold exactly.
        """
        i, p = self._draw(options, weights, says)
        self.logprob += math.log(p)
        if self.trace is not None:
            self.trace.append(Choice(i, p))
        return options[i]

    def flip(self, probability: float) -> bool:
        return self.choose(_BOOLS, (probability, 1.0 - probability))

    def subject(self) -> Entity:
        """The person the text is about (drawn now, if not named yet)."""
        if self.entity is None:
            self.entity = self.choose(self.world.entities)
        return self.entity

    def name_subject(self) -> None:
        """Write the subject's name, drawing the subject here at their first mention."""
        if self.entity is None:
            self.entity = self.choose(self.world.entities, says=_name)
        self.write(self.entity.name)

    def write(self, text: str) -> None:
        if self._rewrite is not None:
            text = self._rewrite.feed(text)
        if text:
            self._emit(text)

    @contextlib.contextmanager
    def rewritten(self, corruption: str | None) -> Iterator[None]:
        """The sentence written inside comes out corrupted (see CORRUPTIONS)."""
        if corruption is None:
            yield
            return
        self._rewrite = _Corruption(corruption)
        yield
        rewrite, self._rewrite = self._rewrite, None
        self._emit(rewrite.close())

    def text(self) -> str:
        return "".join(self._out)

    def _draw(self, options: Sequence, weights: Sequence[float] | None,
              says: Callable[[T], str] | None) -> tuple[int, float]:
        n = len(options)
        if weights is None:
            return int(self.rng.random() * n), 1.0 / n
        cumulative = list(itertools.accumulate(weights))
        i = bisect.bisect_right(cumulative, self.rng.random() * cumulative[-1])
        return i, weights[i] / cumulative[-1]

    def _emit(self, text: str) -> None:
        self._out.append(text)


_BOOLS = (True, False)


def _name(entity: Entity) -> str:
    return entity.name


def make_rng(world_seed: int, purpose: str, seed: int) -> random.Random:
    """A generator per (world, purpose, seed): the corpus and every task draw from their own
    stream, so evaluation rows never replay the training documents' choices."""
    # A str seed is hashed with SHA-512 by `random`, the same on every run and platform.
    return random.Random(f"{world_seed}/{purpose}/{seed}")


class _Corruption:
    """Rewrites the words of one sentence as they arrive, holding back only the words it has yet
    to move, so a parse can reject a wrong branch early.

    >>> c = _Corruption("swap_last"); c.feed("lamo lives in ") + c.feed("rome .") + c.close()
    'lamo lives rome in .'
    """

    def __init__(self, kind: str):
        self.kind = kind
        self.words: list[str] = []
        self.partial = ""
        self.sent = 0

    def feed(self, text: str) -> str:
        *complete, self.partial = (self.partial + text).split(" ")
        self.words += complete
        return self._release(final=False)

    def close(self) -> str:
        self.words.append(self.partial)
        return self._release(final=True)

    def _release(self, final: bool) -> str:
        """The words, not sent yet, whose place in the corrupted sentence is known."""
        n = len(self.words)
        if final:
            out = corrupt(self.kind, self.words)
        elif self.kind == "swap_last":
            out = self.words[:max(0, n - 2)]  # the last two so far may be the last two
        elif n >= 2:
            out = corrupt(self.kind, self.words)  # only the first two words move
        else:
            out = [] if self.kind == "swap_first" else self.words
        new, space = out[self.sent:], " " if self.sent else ""
        self.sent = len(out)
        return space + " ".join(new) if new else ""


def corrupt(kind: str, words: Sequence[str]) -> list[str]:
    """The words of a sentence (ending with ".") under one of CORRUPTIONS."""
    if kind == "swap_first":
        return [words[1], words[0], *words[2:]]
    if kind == "swap_last":
        return [*words[:-3], words[-2], words[-3], words[-1]]
    return [words[0], words[1], *words[1:]]


def uncorrupt(kind: str, words: Sequence[str]) -> list[str] | None:
    """The words that `corrupt(kind, ...)` turns into `words`, or None when there are none."""
    if len(words) < 3 or words[-1] != ".":
        return None
    if kind == "swap_first":
        return [words[1], words[0], *words[2:]]
    if kind == "swap_last":
        return [*words[:-3], words[-2], words[-3], words[-1]]
    if len(words) >= 4 and words[1] == words[2]:
        return [words[0], *words[2:]]
    return None
