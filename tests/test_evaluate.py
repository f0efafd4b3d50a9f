"""harness.evaluate: real lm-eval `simple_evaluate` on tiny models built and saved here, offline.

The references are written plainly, one forward per score, without lm-eval: pseudo-log-likelihood
as Salazar et al. (2020) define it for the encoder, and the sum of next-token log-probabilities
for the decoder.
"""

from __future__ import annotations

import json
import random

import pytest
import torch
import transformers
from lm_eval.api.instance import Instance
from lm_eval.api.registry import get_model
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

from harness.errors import UserError
from harness.evaluate import (
    SCORING_MODELS,
    _lm_eval_model,
    _model_args,
    chance_level,
    evaluate_model,
    materialize_tasks,
    plain_metrics,
)
from harness.evaluate.adapters import PseudoLogLikelihoodLM, left_truncate, masked_copy
from harness.synthetic import TASKS
from conftest import split_tokens

SPECIAL_TOKENS = ["[PAD]", "[UNK]", "[EOS]", "[MASK]", "[CLS]", "[SEP]"]
NAMES, CITIES, JOBS = ["alice", "bob", "carol", "dave"], ["paris", "rome", "oslo", "lima"], ["baker", "farmer", "nurse"]

REQUESTS = [  # (context, continuation) as multiple-choice tasks send them
    ("alice lives in paris . alice works as a", " baker ."),
    ("claim : bob lives in rome . verdict :", " true"),
    ("claim : bob lives in rome . verdict :", " false"),
    ("", "carol lives in oslo ."),
]




def corpus(n: int = 150) -> list[str]:
    rng = random.Random(0)
    lines = []
    for _ in range(n):
        name, city, job = rng.choice(NAMES), rng.choice(CITIES), rng.choice(JOBS)
        lines.append(f"{name} lives in {city} . {name} works as a {job} .")
        lines.append(f"claim : {name} lives in {city} . verdict : {rng.choice(['true', 'false'])} .")
    return lines


def train_tokenizer() -> transformers.PreTrainedTokenizerFast:
    # Byte-level BPE: the space before a word is part of its token, so the context/continuation
    # split at a space matters.
    tokenizer = Tokenizer(models.BPE(unk_token="[UNK]"))
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=400, special_tokens=SPECIAL_TOKENS,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tokenizer.train_from_iterator(corpus(), trainer)
    return transformers.PreTrainedTokenizerFast(
        tokenizer_object=tokenizer, eos_token="[EOS]", pad_token="[PAD]", mask_token="[MASK]",
        unk_token="[UNK]", cls_token="[CLS]", sep_token="[SEP]",
    )


def tiny_config(tokenizer) -> dict:
    return dict(
        vocab_size=len(tokenizer), hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
        intermediate_size=64, max_position_embeddings=64, layer_types=["full_attention"] * 2,
        pad_token_id=tokenizer.pad_token_id, eos_token_id=tokenizer.eos_token_id,
        bos_token_id=tokenizer.eos_token_id, cls_token_id=tokenizer.cls_token_id,
        sep_token_id=tokenizer.sep_token_id,
    )


@pytest.fixture(scope="module")
def model_dirs(tmp_path_factory) -> dict[str, object]:
    """A tiny decoder and a tiny encoder, initialized from scratch and saved with their tokenizer."""
    root = tmp_path_factory.mktemp("models")
    tokenizer = train_tokenizer()
    torch.manual_seed(0)
    built = {
        "decoder": transformers.ModernBertDecoderForCausalLM(transformers.ModernBertDecoderConfig(**tiny_config(tokenizer))),
        "encoder": transformers.ModernBertForMaskedLM(transformers.ModernBertConfig(**tiny_config(tokenizer))),
    }
    for name, model in built.items():
        model.save_pretrained(root / name)
        tokenizer.save_pretrained(root / name)
    return {name: root / name for name in built}


@pytest.fixture(scope="module")
def tasks_dir(tmp_path_factory):
    """A few rows of each task, as the data step writes them."""
    root = tmp_path_factory.mktemp("tasks")
    hellaswag = [
        {"ctx": "alice lives in paris . alice works as a", "endings": ["baker .", "a baker as .", "farmer .", "paris in ."], "label": 0},
        {"ctx": "bob lives in rome . bob works as a", "endings": ["nurse .", "rome .", "farmer .", "as a ."], "label": 2},
        {"ctx": "carol lives in oslo . carol works as a", "endings": ["lima .", "pilot .", "baker .", "works ."], "label": 2},
    ]
    glue = [
        {"sentence": "alice lives in paris .", "label": 1},
        {"sentence": "bob lives in lima .", "label": 0},
        {"sentence": "dave lives in oslo .", "label": 1},
    ]
    for task, rows in {"synthetic_hellaswag": hellaswag, "synthetic_glue": glue}.items():
        (root / task).mkdir()
        for split in ("train", "validation"):
            (root / task / f"{split}.jsonl").write_text("".join(json.dumps(row) + "\n" for row in rows))
    return root


def instances(pairs) -> list[Instance]:
    return [Instance("loglikelihood", {}, pair, i) for i, pair in enumerate(pairs)]




@torch.no_grad()
def reference_pll(model, tokenizer, context: str, continuation: str) -> tuple[float, bool]:
    """Salazar et al.: for each continuation token, mask it alone, sum log P(token) at the mask."""
    context_ids, continuation_ids = split_tokens(tokenizer, context, continuation)
    tokens = context_ids + continuation_ids
    total, greedy = 0.0, True
    for position in range(len(context_ids), len(tokens)):
        masked = list(tokens)
        masked[position] = tokenizer.mask_token_id
        logprobs = model(input_ids=torch.tensor([masked])).logits[0, position].log_softmax(-1)
        total += logprobs[tokens[position]].item()
        greedy = greedy and logprobs.argmax().item() == tokens[position]
    return total, greedy


@torch.no_grad()
def reference_causal(model, tokenizer, context: str, continuation: str) -> tuple[float, bool]:
    """Sum over continuation tokens of log P(token | every token before it)."""
    context_ids, continuation_ids = split_tokens(tokenizer, context, continuation)
    tokens = context_ids + continuation_ids
    logprobs = model(input_ids=torch.tensor([tokens])).logits[0].log_softmax(-1)
    predicted_at = range(len(context_ids) - 1, len(tokens) - 1)  # the logits at i predict token i + 1
    total = sum(logprobs[i, tokens[i + 1]].item() for i in predicted_at)
    greedy = all(logprobs[i].argmax().item() == tokens[i + 1] for i in predicted_at)
    return total, greedy


def test_pll_matches_unbatched_definition(model_dirs):
    # batch_size 3 spreads one request's masked copies over batches and pads shorter copies.
    lm = PseudoLogLikelihoodLM(pretrained=str(model_dirs["encoder"]), batch_size=3, device="cpu")
    model = transformers.AutoModelForMaskedLM.from_pretrained(model_dirs["encoder"]).eval()
    tokenizer = transformers.AutoTokenizer.from_pretrained(model_dirs["encoder"])
    scores = lm.loglikelihood(instances(REQUESTS), disable_tqdm=True)
    for (context, continuation), (score, greedy) in zip(REQUESTS, scores, strict=True):
        expected, expected_greedy = reference_pll(model, tokenizer, context, continuation)
        assert score == pytest.approx(expected, abs=1e-5)
        assert greedy == expected_greedy


def test_pll_truncates_context_from_the_left(model_dirs):
    lm = PseudoLogLikelihoodLM(pretrained=str(model_dirs["encoder"]), batch_size=8, device="cpu", max_length=8)
    model = transformers.AutoModelForMaskedLM.from_pretrained(model_dirs["encoder"]).eval()
    tokenizer = transformers.AutoTokenizer.from_pretrained(model_dirs["encoder"])
    context, continuation = REQUESTS[0]
    context_ids, continuation_ids = split_tokens(tokenizer, context, continuation)
    kept = tokenizer.decode((context_ids + continuation_ids)[-8:][: -len(continuation_ids)])
    [(score, _)] = lm.loglikelihood(instances([(context, continuation)]), disable_tqdm=True)
    assert score == pytest.approx(reference_pll(model, tokenizer, kept, continuation)[0], abs=1e-5)


def test_pll_refuses_rolling_and_generation(model_dirs):
    lm = PseudoLogLikelihoodLM(pretrained=str(model_dirs["encoder"]), device="cpu")
    with pytest.raises(NotImplementedError, match="pseudo-log-likelihood|rolling"):
        lm.loglikelihood_rolling([Instance("loglikelihood_rolling", {}, ("alice lives",), 0)])
    with pytest.raises(NotImplementedError, match="does not generate text"):
        lm.generate_until([Instance("generate_until", {}, ("alice", {"until": ["."]}), 0)])


def test_loglikelihood_path_is_lm_evals_hf_model_and_matches_logits(model_dirs):
    # Built the way simple_evaluate builds it from the harness's model arguments.
    model_name = _lm_eval_model("loglikelihood")
    lm = get_model(model_name).create_from_arg_obj(
        _model_args("loglikelihood", model_dirs["decoder"]), {"batch_size": 2, "device": "cpu"}
    )
    assert type(lm).__name__ == "HFLM"
    assert isinstance(lm.model, transformers.ModernBertDecoderForCausalLM)
    assert lm.prefix_token_id == lm.tokenizer.eos_token_id
    model = transformers.AutoModelForCausalLM.from_pretrained(model_dirs["decoder"]).eval()
    tokenizer = transformers.AutoTokenizer.from_pretrained(model_dirs["decoder"])
    scores = lm.loglikelihood(instances(REQUESTS), disable_tqdm=True)
    for (context, continuation), (score, greedy) in zip(REQUESTS, scores, strict=True):
        expected, expected_greedy = reference_causal(model, tokenizer, context, continuation)
        assert score == pytest.approx(expected, abs=1e-5)
        assert greedy == expected_greedy


@pytest.mark.parametrize(("architecture", "scoring"), [("decoder", "loglikelihood"), ("encoder", "pseudo-loglikelihood")])
def test_evaluate_model_runs_both_tasks(model_dirs, tasks_dir, tmp_path, architecture, scoring):
    tasks = ["synthetic_hellaswag", "synthetic_glue"]
    summary = evaluate_model(model_dirs[architecture], scoring, tasks, tasks_dir, tmp_path / "eval", batch_size=4, seed=3)

    assert set(summary) == set(tasks)
    assert summary["synthetic_hellaswag"]["chance"] == pytest.approx(0.25)
    assert summary["synthetic_glue"]["chance"] == pytest.approx(0.5)
    assert set(summary["synthetic_hellaswag"]) == {"acc", "acc_stderr", "acc_norm", "acc_norm_stderr", "scoring", "chance"}
    assert set(summary["synthetic_glue"]) == {"acc", "acc_stderr", "scoring", "chance"}
    for task, entry in summary.items():
        assert 0.0 <= entry["acc"] <= 1.0 and entry["acc_stderr"] is not None
        assert entry["scoring"] == scoring
        written = json.loads((tmp_path / "eval" / f"{task}.json").read_text())
        assert (written["task"], written["scoring"], written["chance"]) == (task, scoring, entry["chance"])
        assert written["results"][task]["acc,none"] == entry["acc"]
        assert written["n-samples"][task]["effective"] == 3
        assert written["configs"][task]["output_type"] == "multiple_choice"
        assert written["config"]["model"] == SCORING_MODELS[scoring]
        assert (written["config"]["random_seed"], written["config"]["batch_size"]) == (3, 4)
    assert not list((tmp_path / "eval").glob(".*.tmp"))


def test_glue_accuracy_is_the_claim_prompt_scored_by_the_model(model_dirs, tasks_dir, tmp_path):
    """The task YAML sends "claim : <sentence> verdict :" with " false" / " true" to the model."""
    summary = evaluate_model(model_dirs["encoder"], "pseudo-loglikelihood", ["synthetic_glue"], tasks_dir, tmp_path)
    lm = PseudoLogLikelihoodLM(pretrained=str(model_dirs["encoder"]), device="cpu")
    rows = [json.loads(line) for line in (tasks_dir / "synthetic_glue" / "validation.jsonl").read_text().splitlines()]
    correct = []
    for row in rows:
        prompt = f"claim : {row['sentence']} verdict :"
        (false, _), (true, _) = lm.loglikelihood(instances([(prompt, " false"), (prompt, " true")]), disable_tqdm=True)
        correct.append(int(true > false) == row["label"])
    assert summary["synthetic_glue"]["acc"] == pytest.approx(sum(correct) / len(correct))


def test_helpers():
    assert masked_copy([5, 6, 7], 1, mask_id=3) == [5, 3, 7]
    assert left_truncate([1, 2, 3], [4, 5], max_length=3) == ([3, 4, 5], 2)
    assert left_truncate([1], [2, 3, 4], max_length=2) == ([3, 4], 2)
    assert plain_metrics({"alias": "t", "name": "t", "sample_len": 3, "acc,none": 0.5, "acc_stderr,none": "N/A",
                          "exact_match,strict": 1.0}) == {"acc": 0.5, "acc_stderr": None, "exact_match,strict": 1.0}
    two_choices = {"arguments": [("c", " a"), ("c", " b")], "metrics": ["acc"]}
    mutual_info = {"arguments": [("c", " a"), ("c", " b"), ("", " a"), ("", " b")], "metrics": ["acc", "acc_mutual_info"]}
    assert chance_level([two_choices, mutual_info], "multiple_choice") == 0.5
    assert chance_level([two_choices], "generate_until") is None


def test_materialize_tasks_points_at_local_data(tasks_dir):
    include = materialize_tasks(tasks_dir)
    text = (include / "synthetic_glue.yaml").read_text()
    assert str((tasks_dir / "synthetic_glue" / "validation.jsonl").resolve()) in text
    assert sorted(path.name for path in include.glob("*.yaml")) == sorted(f"{task}.yaml" for task in TASKS)


def test_unknown_task_is_a_user_error(model_dirs, tasks_dir, tmp_path):
    with pytest.raises(UserError, match="unknown task 'synthetic_glu'.*did you mean 'synthetic_glue'.*synthetic_hellaswag"):
        evaluate_model(model_dirs["decoder"], "loglikelihood", ["synthetic_glu"], tasks_dir, tmp_path)
    assert not list(tmp_path.iterdir())


def test_unknown_scoring_and_missing_data_are_user_errors(model_dirs, tmp_path):
    with pytest.raises(UserError, match="unknown scoring method 'pll'"):
        evaluate_model(model_dirs["encoder"], "pll", ["synthetic_glue"], tmp_path, tmp_path / "eval")
    with pytest.raises(UserError, match="synthetic_glue.*missing"):
        evaluate_model(model_dirs["encoder"], "pseudo-loglikelihood", ["synthetic_glue"], tmp_path, tmp_path / "eval")
