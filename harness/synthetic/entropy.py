"""The exact probability of a text, and the entropy floor it gives.

The grammar is unambiguous: `parse` finds every sequence of choices that writes a given text,
by replaying the generator (`_Replay`, a `Draft` that takes its choices from a list) and dropping
a branch as soon as it writes text the document does not hold, and insists on exactly one. So
`document_logprob` is exact (natural log), and `entropy_bits_per_byte` is the floor under any
model's bits per byte on the text. `enumerate_documents` lists the whole language of a tiny world.
"""

from __future__ import annotations

import contextlib
import itertools
import math
from collections.abc import Callable, Iterator, Sequence
from typing import TypeVar

from harness.synthetic.draft import Choice, Draft, uncorrupt
from harness.synthetic.generator import write_document
from harness.synthetic.world import World

T = TypeVar("T")


def _probabilities(n: int, weights: Sequence[float] | None) -> tuple[float, ...]:
    """The probability of each option, computed exactly as `Draft._draw` does."""
    if weights is None:
        return (1.0 / n,) * n
    total = list(itertools.accumulate(weights))[-1]
    return tuple(w / total for w in weights)


class _Frontier(Exception):
    """A replay asked for a choice beyond the ones it was given: the probability of each option,
    and which options can continue the target."""

    def __init__(self, probabilities: tuple[float, ...], viable: list[bool]):
        self.probabilities = probabilities
        self.viable = viable


class _Mismatch(Exception):
    """A replay wrote text that the target does not hold at that place."""


class _Replay(Draft):
    """Takes its choices from `indices`, stops at the first one beyond them (`_Frontier`), and,
    given a `target`, stops as soon as it writes text that the target does not hold (`_Mismatch`)."""

    def __init__(self, world: World, indices: tuple[int, ...], target: str | None = None):
        super().__init__(None, world, record=True)
        self.indices = indices
        self.target = target
        self._at = 0

    def _draw(self, options: Sequence, weights: Sequence[float] | None,
              says: Callable[[T], str] | None) -> tuple[int, float]:
        n = len(options)
        k = len(self.trace)
        if k < len(self.indices):
            i = self.indices[k]
            return i, _probabilities(n, weights)[i] if weights is not None else 1.0 / n
        p = _probabilities(n, weights)
        viable = [q > 0 for q in p]
        if says is not None and self.target is not None and self._rewrite is None:
            viable = [v and self.target.startswith(says(o), self._at) for v, o in zip(viable, options)]
        raise _Frontier(p, viable)

    def _emit(self, text: str) -> None:
        if self.target is not None:
            if not self.target.startswith(text, self._at):
                raise _Mismatch
            self._at += len(text)
        self._out.append(text)

    @contextlib.contextmanager
    def rewritten(self, corruption: str | None) -> Iterator[None]:
        """Against a target, the sentence inside is checked against the target's sentence
        uncorrupted (the corruptions are invertible), so that pruning works inside it too."""
        if corruption is None or self.target is None:
            with super().rewritten(corruption):
                yield
            return
        start, end = self._at, self.target.find(" .", self._at) + len(" .")
        original = uncorrupt(corruption, self.target[start:end].split(" ")) if end > start else None
        if original is None:
            raise _Mismatch
        target, n_out = self.target, len(self._out)
        self.target = target[:start] + " ".join(original)
        yield
        if self._at != len(self.target):
            raise _Mismatch
        self.target, self._at = target, end
        self._out[n_out:] = [target[start:end]]


def _search(world: World, target: str | None = None,
            decisions: dict[tuple[int, ...], tuple[float, ...]] | None = None
            ) -> Iterator[tuple[str, list[Choice]]]:
    """Every (text, choices) the generator can write (only those writing `target`, when given),
    depth first. Sound pruning: text once written is never taken back."""
    stack: list[tuple[int, ...]] = [()]
    while stack:
        indices = stack.pop()
        draft = _Replay(world, indices, target)
        try:
            write_document(draft)
        except _Frontier as frontier:
            if decisions is not None:
                decisions[indices] = frontier.probabilities
            viable = frontier.viable
            stack.extend(indices + (i,) for i in reversed(range(len(viable))) if viable[i])
            continue
        except _Mismatch:
            continue
        text = draft.text()
        if target is None or text == target:
            yield text, draft.trace


def derivations(world: World, text: str) -> list[list[Choice]]:
    """Every sequence of choices with which the generator writes `text` (one: the grammar is
    unambiguous; none: `text` is not a document of this world)."""
    return [choices for _, choices in _search(world, text)]


def parse(world: World, text: str) -> list[Choice]:
    """The choices that wrote `text`; ValueError unless there is exactly one way."""
    found = derivations(world, text)
    if len(found) != 1:
        raise ValueError(f"{len(found)} derivations (expected exactly one) of {text[:120]!r}")
    return found[0]


def regenerate(world: World, choices: Sequence[Choice]) -> str:
    """The document written by `choices` (as `parse` returns them)."""
    draft = _Replay(world, tuple(c.index for c in choices))
    try:
        write_document(draft)
    except _Frontier:
        raise ValueError(f"the document needs more than {len(choices)} choices") from None
    if len(draft.trace) != len(choices):
        raise ValueError(f"the document takes {len(draft.trace)} of the {len(choices)} choices")
    return draft.text()


def document_logprob(world: World, text: str) -> float:
    """log P(text) in nats, exact: the sum of its choices' log-probabilities."""
    logps = [sum(math.log(c.probability) for c in choices) for choices in derivations(world, text)]
    if not logps:
        raise ValueError(f"not a document of this world's language: {text[:120]!r}")
    if len(logps) == 1:
        return logps[0]
    top = max(logps)
    return top + math.log(sum(math.exp(lp - top) for lp in logps))


def enumerate_documents(world: World, decisions: dict[tuple[int, ...], tuple[float, ...]] | None = None
                        ) -> Iterator[tuple[str, list[Choice]]]:
    """Every document of the world's language with its choices: only for tiny worlds.

    `decisions`, when given, receives every decision met: the indices of the choices that lead
    to it -> the probability of each of its options.
    """
    return _search(world, None, decisions)


def entropy_bits_per_byte(world: World, documents: Sequence[str],
                          logprobs: Sequence[float] | None = None) -> float:
    """Bits of the generating process per byte of `documents`: sum of -log2 P(doc) over sum of
    UTF-8 bytes, plus one per document for its end (as the data layer counts bytes).

    The entropy floor: a model's bits per byte on these documents cannot beat it on average.
    `logprobs` (from `corpus_logprobs`) spare parsing each document.
    """
    if logprobs is None:
        logprobs = [document_logprob(world, doc) for doc in documents]
    n_bytes = sum(len(doc.encode("utf-8")) + 1 for doc in documents)
    return -math.fsum(logprobs) / math.log(2) / n_bytes
