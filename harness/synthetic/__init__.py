"""A small synthetic world, the language that talks about it, and the tasks asked of it.

The world is a set of people, each with one value per attribute: a home city, a profession, a
favourite food and colour, a pet, a friend, a sibling and a birth month. Every document is about
one person, in lowercase words with " ." as its own word. Most documents are short stories of
facts, fillers and feelings:

    lamo lives in paris . the weather was fine . lamo works as a baker . lamo hates the rain .

The others are written in the formats of the downstream tasks, so that a model which learned
the language can answer each task zero-shot:

    claim : lamo lives in rome . verdict : false .                            synthetic_glue
    where does lamo live ?\\nA. rome\\nB. paris\\nC. oslo\\nD. cairo\\nAnswer: B    synthetic_mmlu
    review : lamo loves the sea . sentiment : positive .                      synthetic_sst2
    premise : lamo lives in paris . hypothesis : lamo has a home in paris . entailed : yes .
                                                                              synthetic_rte
    check : lives lamo in paris . acceptable : no .                           synthetic_cola

(synthetic_hellaswag continues a story cut before a fact's value.) `TASKS` maps each task to
its rows; `TASK_SPLITS` gives the seed of each split.

**Known entropy.** Every random decision goes through `Draft.choose`, which records the option
taken and its probability (a `Choice`). The grammar is unambiguous: `parse` finds every sequence
of choices that writes a given text, by replaying the generator and dropping a branch as soon
as it writes text the document does not hold, and insists on exactly one. So
`document_logprob` is exact (natural log), and `entropy_bits_per_byte` is the floor under any
model's bits per byte on the text. `enumerate_documents` lists the whole language of a tiny world.

The world is fixed for a suite: the entropy is that of the documents given the world. Nothing
here depends on numpy or torch.

    language.py   the words and the fixed probabilities of the grammar (data only)
    world.py      WorldConfig; Entity, Grammar (the words a config keeps) and World
    draft.py      Draft and Choice: every random decision, recorded; corrupted sentences
    generator.py  build_world, then the sentences and documents: stream, documents, corpus
    entropy.py    the parser (derivations, parse, regenerate) and the exact entropy
    tasks.py      the six tasks' row builders, TASKS and TASK_SPLITS
"""

from pathlib import Path

from harness.synthetic.entropy import entropy_bits_per_byte
from harness.synthetic.generator import build_world, corpus, corpus_logprobs
from harness.synthetic.tasks import TASK_SPLITS, TASKS
from harness.synthetic.world import World, WorldConfig

__all__ = ["TASKS", "TASK_SPLITS", "World", "WorldConfig", "build_world", "corpus", "corpus_logprobs",
           "entropy_bits_per_byte", "generator_source"]


def generator_source() -> str:
    """The source of every module of this package, in file-name order: the corpus and the tasks
    are functions of it, so the data layer hashes it into the key of its cache."""
    return "".join(path.read_text(encoding="utf-8") for path in sorted(Path(__file__).parent.glob("*.py")))
