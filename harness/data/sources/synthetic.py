"""The synthetic source: the documents of the generated world (harness.synthetic), offline and
with a known entropy."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from harness.data.sources.common import TEXT
from harness.synthetic import WorldConfig, build_world, corpus_logprobs

if TYPE_CHECKING:
    import datasets

LOGPROB = "logprob"  # this source only: log P(document) under the generator
CORPUS_SEED = 0


def read(world: WorldConfig, scratch: Path) -> datasets.Dataset:
    """The world's documents, each with its log-probability as the generator recorded it: the
    data layer's entropy floor needs it, and generating the corpus twice would be waste."""
    import datasets  # heavy: only a build reads

    texts, logprobs = zip(*corpus_logprobs(build_world(world), world.documents, CORPUS_SEED))
    return datasets.Dataset.from_dict({TEXT: list(texts), LOGPROB: list(logprobs)})


def describe(world: WorldConfig) -> str:
    return f"synthetic world (seed {world.seed}, {world.entities} entities, {world.documents} documents)"
