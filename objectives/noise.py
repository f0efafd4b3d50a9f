"""Noise primitives shared by the denoising objectives, and `denoise`, which composes them.

Each is a pure function of a shape (or a block) and a numpy Generator, so an objective is a
short composition of them and a test can check their statistics with no model at all. As in
T5's preprocessors, span corruption, UL2's denoisers and prefix LM are each one `denoise` call
that differ only in their mask, inputs and targets functions:

    span corruption  random_spans_noise   sentinel_inputs + [EOS]  sentinel_targets + [EOS]
    prefix LM        random_prefix_noise  drop_noise_tokens        drop_nonnoise_tokens
    UL2 R and X      random_spans_noise   [mode] + sentinel_inputs sentinel_targets + [EOS]
    UL2 S            random_prefix_noise  [mode] + drop_noise_tokens  drop_nonnoise_tokens

Masked LM, NSP/SOP and ELECTRA mask tokens in place instead (`bert_noise`, BERT's 80/10/10).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np

from harness.errors import UserError

SENTINELS = tuple(f"<extra_id_{k}>" for k in range(100))  # T5's sentinel tokens, in order
# noise_mask_fn(length, rng) -> bool mask; inputs_fn and targets_fn(tokens, mask) -> tokens
NoiseMaskFn = Callable[[int, np.random.Generator], np.ndarray]
TokensFn = Callable[[np.ndarray, np.ndarray], np.ndarray]


def iid_mask(shape: tuple[int, ...], rate: float, rng: np.random.Generator,
             eligible: np.ndarray | None = None) -> np.ndarray:
    """Boolean mask selecting each eligible position independently with probability `rate`."""
    mask = rng.random(shape) < rate
    return mask if eligible is None else mask & eligible


def bert_noise(block: np.ndarray, rng: np.random.Generator, *, rate: float, split: tuple[float, ...],
               mask_id: int, special_ids: np.ndarray, vocab_size: int) -> tuple[np.ndarray, np.ndarray]:
    """(inputs, selected) of BERT's masking of a (B, T) block: each non-special position is
    selected with probability `rate`, and the selected ones split by `split` (80/10/10 in BERT)
    into [MASK], a random ordinary token, and unchanged."""
    eligible = ~np.isin(block, special_ids)
    selected = iid_mask(block.shape, rate, rng, eligible)
    to_mask, to_random, _unchanged = split_by_rates(selected, split, rng)
    inputs = block.copy()
    inputs[to_mask] = mask_id
    inputs[to_random] = random_ordinary_tokens(int(to_random.sum()), special_ids, vocab_size, rng)
    return inputs, selected


def random_ordinary_tokens(n: int, special_ids: np.ndarray, vocab_size: int,
                           rng: np.random.Generator) -> np.ndarray:
    """n tokens drawn uniformly from the vocabulary minus its special tokens."""
    ordinary = np.setdiff1d(np.arange(vocab_size), special_ids)
    return rng.choice(ordinary, size=n)


def split_by_rates(mask: np.ndarray, rates: tuple[float, ...], rng: np.random.Generator):
    """Partition the True positions of `mask` into len(rates) groups, one draw per position.

    BERT's 80/10/10 is split_by_rates(selected, (0.8, 0.1, 0.1)).
    """
    edges = np.cumsum(rates)
    if not np.isclose(edges[-1], 1.0):
        raise ValueError(f"rates must sum to 1, got {rates}")
    draw = rng.random(mask.shape)
    groups, low = [], 0.0
    for high in edges:
        groups.append(mask & (draw >= low) & (draw < high))
        low = high
    return groups


# --- span noise (T5, Raffel et al. 2020, section 3.1.4 and its preprocessors) -----------------


def span_counts(length: int, density: float, mean_span: float) -> tuple[int, int]:
    """(noise tokens, noise spans) for a sequence of `length`: T5's rounding, at least one of
    each, and at least one clean token."""
    noise = min(max(round(length * density), 1), length - 1)
    return noise, max(round(noise / mean_span), 1)


def random_spans_mask(length: int, density: float, mean_span: float, rng: np.random.Generator) -> np.ndarray:
    """Boolean noise mask of `length` with span_counts(...) noise tokens in that many spans.

    Noise and clean span lengths are uniform random compositions (every span non-empty), and the
    sequence starts with a clean span, as in T5's `random_spans_noise_mask`.
    """
    noise, spans = span_counts(length, density, mean_span)
    noise_lengths = _random_composition(noise, spans, rng)
    clean_lengths = _random_composition(length - noise, spans, rng)
    runs = np.stack([clean_lengths, noise_lengths], axis=1).reshape(-1)
    return np.repeat(np.tile([False, True], spans), runs)


def _random_composition(total: int, parts: int, rng: np.random.Generator) -> np.ndarray:
    """`total` split into `parts` positive integers, uniformly over all such splits."""
    cuts = np.sort(rng.choice(np.arange(1, total), size=parts - 1, replace=False))
    return np.diff(np.concatenate([[0], cuts, [total]]))


def replace_spans(tokens: np.ndarray, mask: np.ndarray, sentinels: np.ndarray) -> np.ndarray:
    """Each run of masked tokens replaced by one sentinel, the k-th run by sentinels[k].

    >>> replace_spans(np.array([1, 2, 3, 4, 5]), np.array([0, 1, 1, 0, 1], bool), np.array([90, 91]))
    array([ 1, 90,  4, 91])
    """
    starts = mask & ~np.concatenate([[False], mask[:-1]])
    out = tokens.copy()
    out[starts] = sentinels[np.cumsum(starts)[starts] - 1]
    return out[~mask | starts]


def span_targets(tokens: np.ndarray, mask: np.ndarray, sentinels: np.ndarray) -> np.ndarray:
    """T5's span-corruption targets: each run of masked tokens preceded by its sentinel.

        tokens  [the, cat, sat, on, the, mat]   mask [0, 1, 0, 0, 1, 1]
        inputs  [the, <s0>, sat, on, <s1>]        (replace_spans)
        targets [<s0>, cat, <s1>, the, mat]

    >>> span_targets(np.array([1, 2, 3, 4, 5]), np.array([0, 1, 1, 0, 1], bool), np.array([90, 91]))
    array([90,  2,  3, 91,  5])
    """
    starts = mask & ~np.concatenate([[False], mask[:-1]])
    return np.insert(tokens[mask], np.flatnonzero(starts[mask]), sentinels[:starts.sum()])


def prefix_split(length: int, rng: np.random.Generator) -> int:
    """A prefix length drawn uniformly from 1..length-1 (both parts non-empty)."""
    return int(rng.integers(1, length))


def span_lengths(inputs_length: int, density: float, mean_span: float) -> tuple[int, int]:
    """(raw tokens, targets length) such that span-corrupted inputs fit `inputs_length`.

    The T5 arithmetic (its `random_spans_helper`): the longest raw length whose inputs (clean
    tokens, one sentinel per span, one end token) still fit, and the targets that length gives
    (noise tokens, one sentinel per span, one end token).
    """
    def lengths(raw: int) -> tuple[int, int]:
        noise, spans = span_counts(raw, density, mean_span)
        return raw - noise + spans + 1, noise + spans + 1

    raw = inputs_length - 1
    while lengths(raw + 1)[0] <= inputs_length:
        raw += 1
    return raw, lengths(raw)[1]


# --- sentinels ------------------------------------------------------------------------------------


def sentinel_ids(special: dict[str, int], objective: str) -> np.ndarray:
    """Ids of every sentinel in SENTINELS order, from a vocabulary's special tokens; an error
    naming `objective` when the vocabulary lacks any (its tokenizer was prepared without them)."""
    missing = [s for s in SENTINELS if s not in special]
    if missing:
        raise ValueError(f"the vocabulary lacks {len(missing)} sentinel tokens ({missing[0]}, ...): "
                         f"its tokenizer was not prepared with {objective}'s special tokens")
    return np.array([special[s] for s in SENTINELS], dtype=np.int64)


def check_span_count(spans: int, seq_len: int, what: str) -> None:
    """A UserError when `what` makes more noise spans at seq_len than there are sentinels."""
    if spans > len(SENTINELS):
        raise UserError(f"{what} makes {spans} spans at seq_len {seq_len}, more than the "
                        f"{len(SENTINELS)} sentinels", where="data.seq_len")


# --- composition (T5's preprocessors.denoise) ------------------------------------------------------


def denoise(tokens: np.ndarray, rng: np.random.Generator, *, noise_mask_fn: NoiseMaskFn,
            inputs_fn: TokensFn, targets_fn: TokensFn) -> tuple[np.ndarray, np.ndarray]:
    """(inputs, targets) of one row: a noise mask drawn by noise_mask_fn, then what inputs_fn
    and targets_fn make of the tokens and the mask.

    >>> prefix_at_4 = lambda length, rng: np.arange(length) >= 4
    >>> denoise(np.arange(6), None, noise_mask_fn=prefix_at_4, inputs_fn=drop_noise_tokens,
    ...         targets_fn=drop_nonnoise_tokens)
    (array([0, 1, 2, 3]), array([4, 5]))
    """
    mask = noise_mask_fn(len(tokens), rng)
    return inputs_fn(tokens, mask), targets_fn(tokens, mask)


def random_spans_noise(density: float, mean_span: float) -> NoiseMaskFn:
    """The noise_mask_fn of span corruption: random_spans_mask at `density` and `mean_span`."""
    def noise_mask(length: int, rng: np.random.Generator) -> np.ndarray:
        return random_spans_mask(length, density, mean_span, rng)
    return noise_mask


def random_prefix_noise(length: int, rng: np.random.Generator) -> np.ndarray:
    """The noise_mask_fn of prefix LM: every token after a prefix_split cut is noise."""
    return np.arange(length) >= prefix_split(length, rng)


def sentinel_inputs(sentinels: np.ndarray) -> TokensFn:
    """An inputs_fn: each noise span replaced by the next sentinel (replace_spans)."""
    return lambda tokens, mask: replace_spans(tokens, mask, sentinels)


def sentinel_targets(sentinels: np.ndarray) -> TokensFn:
    """A targets_fn: each noise span after its sentinel (span_targets)."""
    return lambda tokens, mask: span_targets(tokens, mask, sentinels)


def drop_noise_tokens(tokens: np.ndarray, mask: np.ndarray) -> np.ndarray:
    return tokens[~mask]


def drop_nonnoise_tokens(tokens: np.ndarray, mask: np.ndarray) -> np.ndarray:
    return tokens[mask]


def framed(fn: TokensFn, before: Sequence[int] = (), after: Sequence[int] = ()) -> TokensFn:
    """`fn` with tokens put before and after what it returns (a mode token, an [EOS]).

    >>> framed(drop_noise_tokens, before=[7], after=[9])(np.array([1, 2, 3]), np.array([0, 1, 0], bool))
    array([7, 1, 3, 9])
    """
    def with_frame(tokens: np.ndarray, mask: np.ndarray) -> np.ndarray:
        return np.concatenate([np.asarray(before, dtype=tokens.dtype), fn(tokens, mask),
                               np.asarray(after, dtype=tokens.dtype)])
    return with_frame
