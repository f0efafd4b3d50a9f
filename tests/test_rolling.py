"""Rolling log-likelihood in sliding windows, bits per byte through lm-eval, and harness-causal
against lm-eval's own `hf` model, on tiny models built and saved here, offline.

The references are written plainly, one forward pass per window, without lm-eval: the windows
are cut by hand (the first after [EOS], then `stride` tokens at a time after the tokens before
them), and each window's continuation is scored as its architecture reads it.
"""

from __future__ import annotations

import doctest
import json
import math
import random

import pytest
import torch
import transformers
from lm_eval import simple_evaluate
from lm_eval.api.instance import Instance
from lm_eval.api.model import CachingLM, hash_args
from lm_eval.api.registry import get_model
from lm_eval.tasks import TaskManager

import harness.evaluate.adapters
import harness.evaluate.prefix
import harness.evaluate.seq2seq
from harness.models.encdec import EncoderDecoderConfig, ModernEncoderDecoder
from harness.errors import UserError
from harness.evaluate.adapters import CausalLM, sliding_windows
from harness.evaluate.electra import DiscriminatorLM
from harness.evaluate.prefix import PrefixLM
from harness.evaluate.seq2seq import EncoderDecoderLM
from harness.evaluate.tasks import materialize_tasks
from conftest import split_tokens
from tiny_lm import MODE, SENTINEL, corpus, tiny_config, train_tokenizer

WINDOW, STRIDE = 16, 8  # small, so that the held-out texts below need several windows

HELDOUT = [  # the last one is longer than every window, and has bytes that are not characters
    "alice lives in paris .",
    "claim : bob lives in rome . verdict : true .",
    "carol lives in oslo . carol works as a nurse . dave lives in lima . dave works as a farmer .",
    "bob lives in rome . bob works as a baker . claim : alice lives in paris . verdict : false . "
    "dave works as a nurse in the café . carol lives in lima . carol works as a baker .",
]


def train_briefly(model, tokenizer, steps: int = 60) -> None:
    """A few steps of next-token training, so that some continuations are greedy."""
    ids = [t for line in corpus() for t in tokenizer.encode(line) + [tokenizer.eos_token_id]]
    blocks = torch.tensor(ids[: len(ids) // 24 * 24]).view(-1, 24)
    optimizer = torch.optim.AdamW(model.parameters(), lr=3e-3)
    generator = torch.Generator().manual_seed(0)
    model.train()
    for _ in range(steps):
        batch = blocks[torch.randint(len(blocks), (16,), generator=generator)]
        model(input_ids=batch, labels=batch).loss.backward()
        optimizer.step()
        optimizer.zero_grad()
    model.eval()


@pytest.fixture(scope="module")
def model_dirs(tmp_path_factory) -> dict[str, object]:
    """A tiny decoder (briefly trained), encoder, discriminator and encoder-decoder, saved with
    their tokenizer."""
    root = tmp_path_factory.mktemp("models")
    tokenizer = train_tokenizer()
    torch.manual_seed(0)
    config = tiny_config(tokenizer)
    built = {
        "decoder": transformers.ModernBertDecoderForCausalLM(transformers.ModernBertDecoderConfig(**config)),
        "encoder": transformers.ModernBertForMaskedLM(transformers.ModernBertConfig(**config)),
        "discriminator": transformers.ModernBertForTokenClassification(
            transformers.ModernBertConfig(**config, num_labels=1)),
        "encdec": ModernEncoderDecoder(EncoderDecoderConfig(**config)),
    }
    train_briefly(built["decoder"], tokenizer)
    for name, model in built.items():
        model.save_pretrained(root / name)
        tokenizer.save_pretrained(root / name)
    return {name: root / name for name in built}


def instances(kind: str, args: list[tuple]) -> list[Instance]:
    return [Instance(kind, {}, arg, i) for i, arg in enumerate(args)]


def rolling(lm, texts: list[str]) -> list[float]:
    return lm.loglikelihood_rolling(instances("loglikelihood_rolling", [(text,) for text in texts]), disable_tqdm=True)


# --- the windows --------------------------------------------------------------------------------


def test_sliding_windows_score_every_token_once_after_the_tokens_before_it():
    rng = random.Random(0)
    for _ in range(300):
        max_length = rng.randint(2, 40)
        stride = rng.randint(1, max_length - 1)
        first = rng.choice([None, rng.randint(1, max_length - 1)])
        tokens = [rng.randrange(5, 100) for _ in range(rng.randint(0, 120))]
        windows = sliding_windows(tokens, 0, max_length, stride, first=first)

        assert [t for _, continuation in windows for t in continuation] == tokens
        assert all(len(context) + len(continuation) <= max_length for context, continuation in windows)
        if not tokens:
            assert windows == []
            continue
        assert windows[0] == ([0], tokens[: max_length - 1 if first is None else first])
        start = len(windows[0][1])
        for context, continuation in windows[1:]:
            assert 1 <= len(continuation) <= stride
            # as much of the text right before the continuation as the window holds
            assert context == tokens[max(start + len(continuation) - max_length, 0) : start]
            start += len(continuation)


def test_sliding_windows_refuse_a_stride_the_window_cannot_hold():
    with pytest.raises(ValueError, match="scores 1 to 7 at a time"):
        sliding_windows([1, 2, 3], 0, max_length=8, stride=8)


def test_worked_examples_in_the_docstrings():
    for module in (harness.evaluate.adapters, harness.evaluate.prefix, harness.evaluate.seq2seq):
        result = doctest.testmod(module)
        assert result.attempted > 0 and result.failed == 0, module.__name__


# --- harness-causal is lm-eval's hf model on (context, continuation) ---------------------------------


def test_harness_causal_equals_lm_evals_hf_model(model_dirs):
    tokenizer = transformers.AutoTokenizer.from_pretrained(model_dirs["decoder"])
    # the model arguments harness.evaluate.run gives lm-eval's hf model
    hf_args = {"pretrained": str(model_dirs["decoder"]), "dtype": "float32", "add_bos_token": False,
               "prefix_token_id": tokenizer.eos_token_id, "max_length": 12}
    hf = get_model("hf").create_from_arg_obj(hf_args, {"batch_size": 2, "device": "cpu"})
    ours = CausalLM(pretrained=str(model_dirs["decoder"]), batch_size=3, device="cpu", max_length=12)
    pairs = [
        ("alice lives in paris . alice works as a", " baker ."),
        ("claim : bob lives in rome . verdict :", " true"),
        ("alice lives in paris", " ."),
        ("bob lives in", " rome . bob works as"),
        ("", "carol lives in oslo ."),
        ("dave lives in lima . dave works as a farmer . claim : dave lives in lima . verdict :", " true ."),
    ]
    longest = split_tokens(tokenizer, *pairs[-1])
    assert hf.max_length == 12 and len(longest[0] + longest[1]) > 12 + 1  # HFLM cuts it from the left

    expected = hf.loglikelihood(instances("loglikelihood", pairs), disable_tqdm=True)
    scores = ours.loglikelihood(instances("loglikelihood", pairs), disable_tqdm=True)
    for (score, greedy), (hf_score, hf_greedy) in zip(scores, expected, strict=True):
        assert abs(score - hf_score) < 1e-5
        assert greedy == hf_greedy
    assert {greedy for _, greedy in expected} == {True, False}  # both outcomes are compared


# --- rolling log-likelihood against plain forward passes ----------------------------------------


@torch.no_grad()
def causal_reference(model, context: list[int], continuation: list[int]) -> float:
    tokens = context + continuation
    logprobs = model(input_ids=torch.tensor([tokens])).logits[0].log_softmax(-1)
    return sum(logprobs[i, tokens[i + 1]].item() for i in range(len(context) - 1, len(tokens) - 1))


@torch.no_grad()
def prefix_reference(model, mode: int, context: list[int], continuation: list[int]) -> float:
    """The mode token and the context read both ways, the continuation causally after them."""
    tokens, prefix = [mode] + context + continuation, 1 + len(context)
    n = len(tokens)
    mask = torch.tensor([[j < prefix or j <= i for j in range(n)] for i in range(n)])[None, None]
    logprobs = model(input_ids=torch.tensor([tokens]), attention_mask=mask).logits[0].log_softmax(-1)
    return sum(logprobs[i, tokens[i + 1]].item() for i in range(prefix - 1, n - 1))


@torch.no_grad()
def seq2seq_reference(model, tokenizer, context: list[int], continuation: list[int]) -> float:
    """"context <extra_id_0> [EOS]" in, the continuation after "[PAD] <extra_id_0>" out."""
    sentinel = tokenizer.convert_tokens_to_ids(SENTINEL)
    encoder = context + [sentinel, tokenizer.eos_token_id]
    decoder = [tokenizer.pad_token_id, sentinel] + continuation
    logits = model(input_ids=torch.tensor([encoder]), decoder_input_ids=torch.tensor([decoder])).logits
    logprobs = logits[0].log_softmax(-1)
    return sum(logprobs[j, decoder[j + 1]].item() for j in range(1, len(decoder) - 1))


def hand_windows(tokens: list[int], eos: int, first: int, stride: int, context_length) -> list[tuple[list, list]]:
    """Tokens [0, first) after [EOS], then `stride` at a time; before tokens [a, b) go the
    context_length(b - a) tokens right before a."""
    bounds = [0, *range(first, len(tokens), stride), len(tokens)]
    return [([eos] if a == 0 else tokens[max(a - context_length(b - a), 0) : a], tokens[a:b])
            for a, b in zip(bounds, bounds[1:])]


def rolling_case(architecture: str, model_dirs):
    """(adapter, windows of a text's tokens, the reference score of one window)."""
    path = model_dirs["encdec" if architecture == "seq2seq" else "decoder"]
    tokenizer = transformers.AutoTokenizer.from_pretrained(path)
    eos = tokenizer.eos_token_id
    if architecture == "causal":
        lm = CausalLM(pretrained=str(path), batch_size=3, device="cpu", max_length=WINDOW, rolling_stride=STRIDE)
        model = transformers.AutoModelForCausalLM.from_pretrained(path).eval()
        return (lm, lambda t: hand_windows(t, eos, WINDOW - 1, STRIDE, lambda n: WINDOW - n),
                lambda c, x: causal_reference(model, c, x))
    if architecture == "prefix":  # the mode token takes one place of every window
        lm = PrefixLM(pretrained=str(path), batch_size=3, device="cpu", max_length=WINDOW, rolling_stride=STRIDE,
                      mode_token=MODE)
        model = transformers.AutoModelForCausalLM.from_pretrained(path, attn_implementation="sdpa").eval()
        mode = tokenizer.convert_tokens_to_ids(MODE)
        return (lm, lambda t: hand_windows(t, eos, WINDOW - 2, STRIDE, lambda n: WINDOW - 1 - n),
                lambda c, x: prefix_reference(model, mode, c, x))
    # seq2seq: every window scores at most `stride` tokens, after the WINDOW - 2 tokens before them
    stride = 5
    lm = EncoderDecoderLM(pretrained=str(path), batch_size=3, device="cpu", max_length=WINDOW, rolling_stride=stride)
    model = ModernEncoderDecoder.from_pretrained(path).eval()
    return (lm, lambda t: hand_windows(t, eos, stride, stride, lambda n: WINDOW - 2),
            lambda c, x: seq2seq_reference(model, tokenizer, c, x))


@pytest.mark.parametrize("architecture", ["causal", "prefix", "seq2seq"])
def test_rolling_is_the_sum_over_hand_cut_windows(model_dirs, architecture):
    lm, windows_of, reference = rolling_case(architecture, model_dirs)
    windows = [windows_of(lm.tok_encode(text)) for text in HELDOUT]
    assert len(windows[-1]) >= 4 and len(windows[-1][-1][1]) < len(windows[-1][-2][1])  # a short last window
    expected = [sum(reference(context, continuation) for context, continuation in text) for text in windows]
    scores = rolling(lm, HELDOUT)
    assert scores == pytest.approx(expected, abs=1e-4)


def test_a_text_within_the_window_is_one_forward_after_eos_as_lm_evals_hf_rolls_it(model_dirs):
    text = HELDOUT[2]
    tokenizer = transformers.AutoTokenizer.from_pretrained(model_dirs["decoder"])
    tokens = tokenizer.encode(text, add_special_tokens=False)
    assert len(tokens) < 63  # one window of the default 64
    model = transformers.AutoModelForCausalLM.from_pretrained(model_dirs["decoder"]).eval()
    ours = CausalLM(pretrained=str(model_dirs["decoder"]), device="cpu")
    hf = get_model("hf").create_from_arg_obj(
        {"pretrained": str(model_dirs["decoder"]), "dtype": "float32", "add_bos_token": False,
         "prefix_token_id": tokenizer.eos_token_id}, {"batch_size": 2, "device": "cpu"})
    requests = instances("loglikelihood_rolling", [(text,)])
    [score] = ours.loglikelihood_rolling(requests, disable_tqdm=True)
    assert score == pytest.approx(causal_reference(model, [tokenizer.eos_token_id], tokens), abs=1e-5)
    assert score == pytest.approx(hf.loglikelihood_rolling(requests, disable_tqdm=True)[0], abs=1e-5)


def test_rolling_batches_across_texts_and_caches_each_texts_total_only(model_dirs, tmp_path):
    lm = CausalLM(pretrained=str(model_dirs["decoder"]), batch_size=3, device="cpu", max_length=WINDOW,
                  rolling_stride=STRIDE)
    alone = [rolling(lm, [text])[0] for text in HELDOUT]
    cache = CachingLM(lm, str(tmp_path / "responses.db"))  # hooks lm's cache_hook to its database
    together = rolling(lm, HELDOUT)
    assert together == pytest.approx(alone, abs=1e-5)
    assert dict(cache.dbdict) == {hash_args("loglikelihood_rolling", (text,)): total
                                  for text, total in zip(HELDOUT, together)}
    # a (context, continuation) request is still cached under its own key
    [result] = lm.loglikelihood(instances("loglikelihood", [("alice lives in", " paris")]), disable_tqdm=True)
    assert cache.dbdict[hash_args("loglikelihood", ("alice lives in", " paris"))] == result


def test_rolling_stride_must_fit_the_window(model_dirs):
    with pytest.raises(UserError, match="rolling_stride: 16: expected 1 to 15 tokens"):
        CausalLM(pretrained=str(model_dirs["decoder"]), device="cpu", max_length=WINDOW, rolling_stride=WINDOW)


# --- bits per byte through lm-eval's simple_evaluate ---------------------------------------------


@pytest.fixture(scope="module")
def heldout_tasks(tmp_path_factory) -> TaskManager:
    """The shipped harness_heldout task over HELDOUT, as the data step and materialize_tasks lay it out."""
    tasks_dir = tmp_path_factory.mktemp("tasks")
    (tasks_dir / "harness_heldout").mkdir()
    (tasks_dir / "harness_heldout" / "validation.jsonl").write_text(
        "".join(json.dumps({"text": text}) + "\n" for text in HELDOUT))
    return TaskManager(include_path=str(materialize_tasks(tasks_dir)), include_defaults=False)


def evaluate_heldout(model: str, model_args: dict, manager: TaskManager) -> dict:
    return simple_evaluate(model=model, model_args=model_args, tasks=["harness_heldout"], task_manager=manager,
                           batch_size=4, device="cpu", log_samples=True, random_seed=0, numpy_random_seed=0,
                           torch_random_seed=0, fewshot_random_seed=0)


@pytest.mark.parametrize(("model", "directory", "model_class", "extra"), [
    ("harness-causal", "decoder", CausalLM, {}),
    ("harness-prefix", "decoder", PrefixLM, {"mode_token": MODE}),
    ("harness-seq2seq", "encdec", EncoderDecoderLM, {"rolling_stride": 5}),
])
def test_heldout_bits_per_byte_is_lm_evals_sum_over_rolling_scores(model_dirs, heldout_tasks, model, directory,
                                                                   model_class, extra):
    model_args = {"pretrained": str(model_dirs[directory]), "max_length": WINDOW, "rolling_stride": STRIDE, **extra}
    results = evaluate_heldout(model, model_args, heldout_tasks)
    metrics = results["results"]["harness_heldout"]

    lm = model_class(device="cpu", **model_args)
    scores = rolling(lm, HELDOUT)
    logged = {sample["doc"]["text"]: sample["filtered_resps"][0] for sample in results["samples"]["harness_heldout"]}
    assert [logged[text] for text in HELDOUT] == pytest.approx(scores, abs=1e-5)
    n_bytes = sum(len(text.encode("utf-8")) for text in HELDOUT)
    assert n_bytes > sum(len(text) for text in HELDOUT)  # "é" counts two
    bits_per_byte = -sum(scores) / math.log(2) / n_bytes
    assert math.isfinite(metrics["bits_per_byte,none"]) and metrics["bits_per_byte,none"] > 0
    assert metrics["bits_per_byte,none"] == pytest.approx(bits_per_byte, rel=1e-6)
    assert metrics["byte_perplexity,none"] == pytest.approx(2 ** bits_per_byte, rel=1e-6)
    n_words = sum(len(text.split()) for text in HELDOUT)
    assert metrics["word_perplexity,none"] == pytest.approx(math.exp(-sum(scores) / n_words), rel=1e-6)


def test_pseudo_log_likelihood_and_the_discriminator_refuse_heldout_text(model_dirs, heldout_tasks):
    with pytest.raises(NotImplementedError, match="harness-pll scores .* pseudo-log-likelihood .* no rolling"):
        evaluate_heldout("harness-pll", {"pretrained": str(model_dirs["encoder"])}, heldout_tasks)
    discriminator = DiscriminatorLM(pretrained=str(model_dirs["discriminator"]), device="cpu")
    with pytest.raises(NotImplementedError, match="harness-electra scores .* no rolling"):
        discriminator.loglikelihood_rolling(instances("loglikelihood_rolling", [(HELDOUT[0],)]))
