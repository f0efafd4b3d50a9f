"""The words of the synthetic language, and the fixed probabilities of its grammar (data only).

Which of these a world uses depends on its config (see `world.make_grammar`); `vocabulary()`
lists them all, so that no generated name collides with a word.
"""

from __future__ import annotations

from dataclasses import dataclass

MAX_RICHNESS = 3

@dataclass(frozen=True)
class Attribute:
    """One kind of fact: every person has exactly one value of each attribute.

    `values` is None when the value is another person (a relation). Every template holds
    "{e}" (the person) before "{v}" (the value), which is its last slot, so a sentence cut just
    before "{v}" still names whom it is about. `questions` ask for the value (quiz documents).
    Richness keeps a prefix of `templates` and `questions`.
    """

    name: str
    values: tuple[str, ...] | None
    templates: tuple[str, ...]
    questions: tuple[str, ...] = ()


ATTRIBUTES: tuple[Attribute, ...] = (
    Attribute(
        "city",
        ("paris", "london", "rome", "berlin", "madrid", "vienna", "oslo", "lisbon", "dublin",
         "prague", "athens", "cairo"),
        ("{e} lives in {v} .", "{e} has a home in {v} .", "the home of {e} is in {v} .",
         "{e} resides in {v} ."),
        ("where does {e} live ?", "in which city does {e} live ?"),
    ),
    Attribute(
        "profession",
        ("baker", "doctor", "farmer", "teacher", "painter", "singer", "pilot", "lawyer", "nurse",
         "tailor", "miner", "cook"),
        ("{e} works as a {v} .", "{e} is a {v} by trade .", "the job of {e} is {v} .",
         "{e} earns a living as a {v} ."),
        ("what is the job of {e} ?", "what does {e} do for a living ?"),
    ),
    Attribute(
        "food",
        ("bread", "rice", "soup", "cheese", "apples", "pasta", "fish", "beans", "cake", "noodles"),
        ("{e} likes to eat {v} .", "the favourite food of {e} is {v} .",
         "{e} often cooks {v} for dinner .", "{e} eats {v} most days ."),
        ("what does {e} like to eat ?", "what is the favourite food of {e} ?"),
    ),
    Attribute(
        "colour",
        ("red", "blue", "green", "yellow", "purple", "orange", "black", "white"),
        ("the favourite colour of {e} is {v} .", "{e} likes the colour {v} .",
         "{e} wears {v} clothes .", "{e} painted the door {v} ."),
        ("what is the favourite colour of {e} ?", "which colour does {e} like ?"),
    ),
    Attribute(
        "pet",
        ("cat", "dog", "horse", "rabbit", "parrot", "goat"),
        ("{e} has a pet {v} .", "the pet of {e} is a {v} .", "{e} keeps a {v} at home .",
         "{e} feeds the {v} every morning ."),
        ("what pet does {e} have ?", "which animal does {e} keep ?"),
    ),
    Attribute(
        "friend",
        None,
        ("the friend of {e} is {v} .", "{e} is friends with {v} .", "{e} often visits {v} .",
         "{e} meets {v} for lunch ."),
        ("who is the friend of {e} ?", "whom does {e} often visit ?"),
    ),
    Attribute(
        "sibling",
        None,
        ("the sibling of {e} is {v} .", "{e} has a sibling called {v} .", "{e} grew up with {v} .",
         "{e} shares a family with {v} ."),
        ("who is the sibling of {e} ?", "who did {e} grow up with ?"),
    ),
    Attribute(
        "month",
        ("january", "february", "march", "april", "may", "june", "july", "august", "september",
         "october", "november", "december"),
        ("{e} was born in {v} .", "the birthday of {e} is in {v} .",
         "{e} has a birthday in {v} .", "{e} celebrates a birthday in {v} ."),
        ("when was {e} born ?", "in which month was {e} born ?"),
    ),
)
ATTRIBUTE_NAMES = tuple(a.name for a in ATTRIBUTES)

# Sentences that state no fact: they teach grammar and make documents less regular.
FILLERS: tuple[str, ...] = (
    "the weather was fine .",
    "it was a quiet day .",
    "nothing much happened .",
    "the story goes on .",
    "{e} went for a walk .",
    "{e} read a book in the evening .",
    "{e} was happy that day .",
    "{e} took the train to work .",
    "the days grew longer .",
    "{e} wrote a letter .",
)


@dataclass(frozen=True)
class SentimentForm:
    """A sentence with a polarity: "{w}" is a word from `positive` or `negative`, "{o}" an object."""

    template: str
    positive: tuple[str, ...]
    negative: tuple[str, ...]


SENTIMENT_FORMS: tuple[SentimentForm, ...] = (
    SentimentForm("{e} {w} the {o} .", ("loves", "enjoys", "adores", "admires"),
                  ("hates", "dislikes", "dreads", "resents")),
    SentimentForm("{e} thinks the {o} is {w} .", ("wonderful", "lovely", "pleasant", "splendid"),
                  ("awful", "dreary", "terrible", "horrible")),
)
OBJECTS: tuple[str, ...] = ("rain", "sea", "market", "music", "winter", "garden", "theatre", "harbour")

# Document kinds; the last four are the formats of synthetic_mmlu, _sst2, _rte and _cola.
KINDS = ("story", "fact_check", "quiz", "review", "entailment", "check")
# Corruptions of an unacceptable sentence, each invertible: swap the first two words, swap the
# last two before ".", or write the second word twice.
CORRUPTIONS = ("swap_first", "swap_last", "repeat_second")
PLAIN_SENTENCES = ("fact", "filler", "sentiment")
LETTERS = "ABCD"
FORMAT_WORDS = ("claim", "verdict", "true", "false", "review", "sentiment", "positive", "negative",
                "premise", "hypothesis", "entailed", "yes", "no", "check", "acceptable", ":", ".", "?")

CONSONANTS = tuple("bdfgklmnprstvz")
VOWELS = tuple("aeiou")
NAME_SYLLABLES: tuple[int, ...] = (2, 3)
MIN_STORY_SENTENCES = 2
MAX_ITEMS = 4  # claims, questions, reviews, ... in one document of a task format
ASIDE_PROBABILITY = 0.2  # a story sentence is a filler or a feeling rather than a fact
SENTIMENT_PROBABILITY = 0.5  # an aside is a feeling rather than a filler
POSITIVE_PROBABILITY = 0.5
CLAIM_TRUE_PROBABILITY = 0.5
ENTAILED_PROBABILITY = 0.5
CONTRADICTION_PROBABILITY = 0.5  # a hypothesis not entailed contradicts, else is about another fact
ACCEPTABLE_PROBABILITY = 0.5


def vocabulary() -> set[str]:
    """Every word the language uses besides names, so that no name collides with one."""
    texts = [t for a in ATTRIBUTES for t in a.templates + a.questions] + list(FILLERS)
    texts += [f.template for f in SENTIMENT_FORMS]
    words = {w for t in texts for w in t.split()} | set(FORMAT_WORDS) | set(OBJECTS)
    words |= {w for f in SENTIMENT_FORMS for w in f.positive + f.negative}
    return words | {v for a in ATTRIBUTES for v in a.values or ()}
