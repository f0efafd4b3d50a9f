"""The synthetic world's true entropy, checked against an independent estimate.

A tiny world (five people, two attributes, stories of two sentences) has a language of a few
thousand documents: enumerated exactly, their probabilities sum to one and no text is written
two ways, so the entropy by enumeration is exact. The sampler, drawing with `random`, must
then produce documents whose mean -log P matches that entropy within a statistical bound, and
whose frequencies match the enumerated probabilities.
"""

import collections
import math

import pytest

from harness.synthetic import WorldConfig, build_world, corpus_logprobs, entropy_bits_per_byte
from harness.synthetic.draft import uncorrupt
from harness.synthetic.entropy import document_logprob, enumerate_documents, parse
from harness.synthetic.generator import documents
from harness.synthetic.language import CORRUPTIONS, KINDS

TINY = WorldConfig(seed=1, entities=5, attributes=("pet", "sibling"), richness=1, max_sentences=2)
N_SAMPLES = 20_000
SIGMAS = 5.0  # the seeds are fixed, so this is a bound on a bug, not on bad luck


@pytest.fixture(scope="module")
def world():
    return build_world(TINY)


@pytest.fixture(scope="module")
def language(world):
    """(every document with its log-probability, the probabilities offered at every decision)."""
    decisions = {}
    documents = {}
    for text, choices in enumerate_documents(world, decisions):
        assert text not in documents, f"written two ways: {text!r}"  # the grammar is unambiguous
        documents[text] = sum(math.log(c.probability) for c in choices)
    return documents, decisions


@pytest.fixture(scope="module")
def samples(world):
    return corpus_logprobs(world, N_SAMPLES, seed=0)


@pytest.fixture(scope="module")
def traces(world):
    return [tuple(c.index for c in d.trace) for d in documents(world, N_SAMPLES, seed=1, record=True)]


def moments(language, f):
    """(mean, variance) of f(text, logprob) under the language's distribution."""
    mean = math.fsum(math.exp(lp) * f(t, lp) for t, lp in language.items())
    return mean, math.fsum(math.exp(lp) * (f(t, lp) - mean) ** 2 for t, lp in language.items())


def kind_of(text):
    if "\nAnswer: " in text:
        return "quiz"
    prefixes = {"claim": "fact_check", "review": "review", "premise": "entailment", "check": "check"}
    return prefixes.get(text.split(" ", 1)[0], "story")


def test_every_decision_offers_probabilities_summing_to_one(language):
    _, decisions = language
    assert len(decisions) > 1000
    assert all(abs(math.fsum(p) - 1.0) < 1e-12 and min(p) >= 0 for p in decisions.values())


def test_the_tiny_language_has_probabilities_summing_to_one(language):
    documents, _ = language
    assert 1000 < len(documents) < 20_000
    assert math.fsum(math.exp(lp) for lp in documents.values()) == pytest.approx(1.0, abs=1e-12)
    assert {kind_of(t) for t in documents} == set(KINDS)


def test_parsing_gives_each_document_its_enumerated_probability(world, language):
    documents, _ = language
    for text, logprob in documents.items():
        assert document_logprob(world, text) == pytest.approx(logprob, rel=1e-12, abs=1e-12)


def test_sampled_documents_are_in_the_language_with_their_recorded_probability(language, samples):
    documents, _ = language
    assert all(documents[text] == pytest.approx(lp, rel=1e-12) for text, lp in samples)


def test_sampled_mean_of_minus_log_p_is_the_enumerated_entropy(language, samples):
    documents, _ = language
    entropy, variance = moments(documents, lambda t, lp: -lp)
    mean = math.fsum(-documents[text] for text, _ in samples) / len(samples)
    assert abs(mean - entropy) < SIGMAS * math.sqrt(variance / len(samples))
    assert entropy > 3.0  # a language with choices in it, not a handful of texts


def test_entropy_bits_per_byte_of_a_sample_matches_enumeration(world, language, samples):
    documents, _ = language
    entropy, _ = moments(documents, lambda t, lp: -lp / math.log(2))
    length, _ = moments(documents, lambda t, lp: len(t.encode()) + 1)
    floor = entropy / length
    texts, logprobs = zip(*samples)
    estimate = entropy_bits_per_byte(world, texts, logprobs)
    # Delta method: the ratio of two sample means has variance Var(X - floor * Y) / (n E[Y]^2).
    _, spread = moments(documents, lambda t, lp: -lp / math.log(2) - floor * (len(t.encode()) + 1))
    assert abs(estimate - floor) < SIGMAS * math.sqrt(spread / len(samples)) / length
    assert entropy_bits_per_byte(world, texts[:300]) == pytest.approx(
        entropy_bits_per_byte(world, texts[:300], logprobs[:300]), rel=1e-12)


def test_sampled_frequencies_match_the_enumerated_probabilities(language, samples):
    """Pearson's chi-squared over groups of documents (kind x length, expected count >= 20)."""
    documents, _ = language
    group = lambda text: (kind_of(text), len(text.split()))  # noqa: E731
    expected = collections.Counter()
    for text, lp in documents.items():
        expected[group(text)] += math.exp(lp) * len(samples)
    observed = collections.Counter(group(text) for text, _ in samples)
    small = {g for g, e in expected.items() if e < 20}
    merge = lambda g: "rest" if g in small else g  # noqa: E731
    e, o = collections.Counter(), collections.Counter()
    for g in expected:
        e[merge(g)] += expected[g]
        o[merge(g)] += observed[g]
    chi2 = sum((o[g] - e[g]) ** 2 / e[g] for g in e)
    df = len(e) - 1
    assert df >= 10
    assert chi2 < df + SIGMAS * math.sqrt(2 * df)


def test_each_decision_is_drawn_with_the_probabilities_it_records(language, traces):
    """Pearson's chi-squared, summed over every decision the samples met often enough: the options
    taken there against the probabilities the enumeration gives them. (A sampler leaning 5%
    towards the first option of its uniform draws fails this by about 8 standard deviations.)"""
    _, decisions = language
    taken = collections.defaultdict(collections.Counter)
    for indices in traces:
        for k, i in enumerate(indices):
            taken[indices[:k]][i] += 1
    assert set(taken) <= set(decisions)
    chi2, df = 0.0, 0
    for node, counts in taken.items():
        n, p = sum(counts.values()), decisions[node]
        if len(p) > 1 and n * min(p) >= 10:
            chi2 += sum((counts[i] - n * q) ** 2 / (n * q) for i, q in enumerate(p))
            df += len(p) - 1
    assert df > 300
    assert chi2 < df + SIGMAS * math.sqrt(2 * df)


def test_acceptability_never_calls_a_sentence_both_ways(language):
    """Corrupted sentences are never sentences of the language, and each undoes to one."""
    documents, _ = language
    checked = {True: set(), False: set()}
    for text in documents:
        if kind_of(text) == "check":
            sentence, verdict = text.removeprefix("check : ").removesuffix(" .").split(" acceptable : ")
            checked[verdict == "yes"].add(sentence)
    assert checked[True] and checked[False] and not checked[True] & checked[False]
    for sentence in checked[False]:
        originals = [" ".join(o) for k in CORRUPTIONS if (o := uncorrupt(k, sentence.split(" ")))]
        assert sum(o in checked[True] for o in originals) == 1


def test_parse_of_a_larger_world_is_unique(samples):
    """Items beyond one per document, longer stories and more people than the tiny world."""
    world = build_world(WorldConfig(seed=4, entities=9, attributes=("city", "sibling", "month"), max_sentences=6))
    for text, logprob in corpus_logprobs(world, 120, seed=2):
        choices = parse(world, text)
        assert sum(math.log(c.probability) for c in choices) == pytest.approx(logprob, rel=1e-12)
