"""harness.evaluate: real lm-eval `simple_evaluate` on tiny models built and saved here, offline.

The references are written plainly, one forward per score, without lm-eval: pseudo-log-likelihood
as Salazar et al. (2020) define it for the encoder, and the sum of next-token log-probabilities
for the decoder.
"""

from __future__ import annotations

import json

import pytest
import torch
import transformers
from lm_eval.api.instance import Instance
from lm_eval.api.registry import get_model

from harness.errors import UserError
from harness.evaluate.adapters import PseudoLogLikelihoodLM, left_truncate, masked_copy
from harness.evaluate.documents import document_rows, read_documents, write_documents
from harness.evaluate.samples import read_samples, samples_dir
from harness.evaluate.run import (
    SCORING_MODELS,
    chance_level,
    evaluate_entry,
    lm_eval_model,
    lm_eval_model_args,
    plain_metrics,
    reported_tasks,
)
from harness.evaluate.tasks import HELDOUT_TASK, check_tasks, materialize_tasks
from harness.evaluate.weights import model_sha256
from harness.synthetic import TASKS
from conftest import split_tokens
from tiny_lm import tiny_config, train_tokenizer

REQUESTS = [  # (context, continuation) as multiple-choice tasks send them
    ("alice lives in paris . alice works as a", " baker ."),
    ("claim : bob lives in rome . verdict :", " true"),
    ("claim : bob lives in rome . verdict :", " false"),
    ("", "carol lives in oslo ."),
]




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
    model_name = lm_eval_model("loglikelihood")
    lm = get_model(model_name).create_from_arg_obj(
        lm_eval_model_args(model_name, model_dirs["decoder"]), {"batch_size": 2, "device": "cpu"}
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
def test_evaluate_entry_writes_lm_evals_results_and_the_harness_section(model_dirs, tasks_dir, tmp_path, architecture, scoring):
    out = tmp_path / "eval"
    for task, chance in (("synthetic_hellaswag", 0.25), ("synthetic_glue", 0.5)):
        section = evaluate_entry(model_dirs[architecture], scoring, task, tasks_dir=tasks_dir, out_dir=out,
                                 batch_size=4, seed=3)
        row = section["tasks"][task]
        assert list(section["tasks"]) == [task]
        assert (section["entry"], section["scoring"], section["model"]) == (task, scoring, SCORING_MODELS[scoring])
        assert section["model_sha256"] == model_sha256(model_dirs[architecture])
        assert row["chance"] == pytest.approx(chance) and row["n"] == 3 and row["num_fewshot"] == 0
        assert 0.0 <= row["metrics"]["acc"] <= 1.0 and row["metrics"]["acc_stderr"] is not None
        written = json.loads((out / f"{task}.json").read_text())
        assert written["harness"] == json.loads(json.dumps(section))
        # lm-eval's own results file: scores, versions, seeds, batch size, per-task hashes
        assert written["results"][task]["acc,none"] == row["metrics"]["acc"]
        assert written["n-samples"][task]["effective"] == 3
        assert written["configs"][task]["output_type"] == "multiple_choice"
        assert written["versions"][task] == 1.0
        assert written["config"]["model"] == SCORING_MODELS[scoring]
        assert (written["config"]["random_seed"], written["config"]["batch_size"]) == (3, 4)
        assert len(written["task_hashes"][task]) == 64 and "samples" not in written
    hellaswag = json.loads((out / "synthetic_hellaswag.json").read_text())["harness"]["tasks"]["synthetic_hellaswag"]
    assert set(hellaswag["metrics"]) == {"acc", "acc_stderr", "acc_norm", "acc_norm_stderr"}
    assert not list(out.glob(".*.tmp"))
    # each document's score beside each result; their mean is lm-eval's score
    documents = read_documents(tmp_path)
    assert sorted(documents["task"].unique()) == ["synthetic_glue", "synthetic_hellaswag"]
    means = documents.groupby(["task", "metric"])["value"].mean()
    assert set(means.index) == {("synthetic_glue", "acc"), ("synthetic_hellaswag", "acc"), ("synthetic_hellaswag", "acc_norm")}
    for (task, metric), mean in means.items():
        assert mean == pytest.approx(json.loads((out / f"{task}.json").read_text())["harness"]["tasks"][task]["metrics"][metric])
    assert sorted(documents["doc_id"].unique()) == ["0", "1", "2"] and documents["value"].isin([0.0, 1.0]).all()


def test_task_hashes_change_with_the_prompts(model_dirs, tasks_dir, tmp_path):
    """Equal hashes mean the same documents, prompts and targets: a different few-shot count
    changes the prompts, hence the hash."""
    hashes = []
    for shots in (0, 1):
        evaluate_entry(model_dirs["decoder"], "loglikelihood", "synthetic_glue", tasks_dir=tasks_dir,
                       out_dir=tmp_path / str(shots), num_fewshot=shots)
        written = json.loads((tmp_path / str(shots) / "synthetic_glue.json").read_text())
        assert written["n-shot"]["synthetic_glue"] == shots
        assert written["harness"]["request"] == {"num_fewshot": shots, "limit": None}
        hashes.append(written["task_hashes"]["synthetic_glue"])
    assert hashes[0] != hashes[1]


def test_evaluate_entry_keeps_lm_evals_samples_gzipped_the_same_bytes_every_time(model_dirs, tasks_dir, tmp_path):
    """One samples file per task, one record per document, written before the result; two
    identical evaluations write identical bytes; an evaluation without samples removes old ones."""
    for name in ("first", "again"):
        evaluate_entry(model_dirs["decoder"], "loglikelihood", "synthetic_glue", tasks_dir=tasks_dir,
                       out_dir=tmp_path / name)
    path = samples_dir(tmp_path / "first", "synthetic_glue") / "synthetic_glue.jsonl.gz"
    records = read_samples(path)
    assert [r["doc_id"] for r in records] == [0, 1, 2] and len(records[0]["arguments"]) == 2
    assert path.read_bytes() == (tmp_path / "again" / path.relative_to(tmp_path / "first")).read_bytes()
    result = json.loads((tmp_path / "first" / "synthetic_glue.json").read_text())
    assert sum(r["acc"] for r in records) / 3 == pytest.approx(result["results"]["synthetic_glue"]["acc,none"])
    assert path.stat().st_mtime_ns <= (tmp_path / "first" / "synthetic_glue.json").stat().st_mtime_ns
    evaluate_entry(model_dirs["decoder"], "loglikelihood", "synthetic_glue", tasks_dir=tasks_dir,
                   out_dir=tmp_path / "first", log_samples=False)
    assert not path.parent.exists() and (tmp_path / "first" / "synthetic_glue.json").exists()


def test_response_cache_is_keyed_per_checkpoint(model_dirs, tasks_dir, tmp_path):
    """Two checkpoints sharing one cache directory never see each other's answers."""
    other = tmp_path / "other"
    tokenizer = transformers.AutoTokenizer.from_pretrained(model_dirs["decoder"])
    torch.manual_seed(1)
    transformers.ModernBertDecoderForCausalLM(transformers.ModernBertDecoderConfig(**tiny_config(tokenizer))).save_pretrained(other)
    tokenizer.save_pretrained(other)
    cache, scores = tmp_path / "cache", {}
    for name, model_dir in (("first", model_dirs["decoder"]), ("other", other), ("again", model_dirs["decoder"])):
        section = evaluate_entry(model_dir, "loglikelihood", "synthetic_hellaswag", tasks_dir=tasks_dir,
                                 out_dir=tmp_path / name, cache_dir=cache)
        scores[name] = section["tasks"]["synthetic_hellaswag"]["metrics"]["acc_norm"], section["model_sha256"]
    assert len(list(cache.iterdir())) == 2  # one file per checkpoint
    assert {path.name.split("-")[1][:16] for path in cache.iterdir()} == {scores["first"][1][:16], scores["other"][1][:16]}
    assert scores["again"] == scores["first"]
    # the uncached truth for the other model equals what it got with the shared cache
    fresh = evaluate_entry(other, "loglikelihood", "synthetic_hellaswag", tasks_dir=tasks_dir, out_dir=tmp_path / "fresh")
    assert fresh["tasks"]["synthetic_hellaswag"]["metrics"]["acc_norm"] == scores["other"][0]


def test_document_rows_keep_numbers_name_leaves_under_a_group_and_read_back(tmp_path):
    samples = {
        "mmlu_anatomy": [{"doc_id": 1, "filter": "none", "metrics": ["acc"], "acc": 0.0},
                         {"doc_id": 0, "filter": "none", "metrics": ["acc"], "acc": 1.0}],
        "mmlu_law": [{"doc_id": 0, "filter": "none", "metrics": ["acc"], "acc": True}],
        "gsm": [{"doc_id": 0, "filter": "strict", "metrics": ["exact_match"], "exact_match": 1}],
        "heldout": [{"doc_id": 0, "filter": "none", "metrics": ["bits_per_byte"], "bits_per_byte": (-12.5, 40)}],
    }
    rows = document_rows(samples, {"mmlu": ["mmlu_anatomy", "mmlu_law"], "gsm": ["gsm"], "heldout": ["heldout"]})
    assert [(r["task"], r["doc_id"], r["metric"], r["value"]) for r in rows] == [
        ("mmlu", "mmlu_anatomy/0", "acc", 1.0), ("mmlu", "mmlu_anatomy/1", "acc", 0.0), ("mmlu", "mmlu_law/0", "acc", 1.0),
        ("gsm", "0", "exact_match,strict", 1.0)]  # the held-out pair (log-likelihood, bytes) is no score
    write_documents(tmp_path / "eval", "mmlu", rows)
    frame = read_documents(tmp_path)
    assert list(frame.columns) == ["task", "metric", "doc_id", "value"] and len(frame) == 4
    write_documents(tmp_path / "eval", "mmlu", [])  # nothing to keep: no stale file either
    assert read_documents(tmp_path).empty and list(read_documents(tmp_path).columns) == ["task", "metric", "doc_id", "value"]
    (tmp_path / "eval" / "bad.documents.jsonl").write_text('{"task": "t"}\n')
    with pytest.raises(UserError, match=r"bad.documents.jsonl: line 1: expected a JSON object with task, metric, doc_id, value"):
        read_documents(tmp_path)


def test_reported_tasks_group_tag_and_task():
    results = {"results": {"mmlu": {}, "mmlu_stem": {}, "mmlu_anatomy": {}},
               "groups": {"mmlu": {}, "mmlu_stem": {}}, "group_subtasks": {"mmlu": ["mmlu_stem"], "mmlu_stem": ["mmlu_anatomy"]}}
    assert reported_tasks(results, "mmlu") == ["mmlu"]
    tag = {"results": {"sst2": {}, "rte": {}}, "group_subtasks": {}}
    assert reported_tasks(tag, "glue") == ["rte", "sst2"]


def test_a_stock_task_that_cannot_load_offline_fails_fast_naming_the_bundle_command(tasks_dir):
    with pytest.raises(UserError, match=r"task 'hellaswag' cannot be loaded.*harness eval bundle hellaswag --out DIR"):
        check_tasks(["synthetic_glue", "hellaswag"], tasks_dir)
    with pytest.raises(UserError, match="unknown task 'hellaswg'.*did you mean 'hellaswag'"):
        check_tasks(["hellaswg"], tasks_dir)


def test_glue_accuracy_is_the_claim_prompt_scored_by_the_model(model_dirs, tasks_dir, tmp_path):
    """The task YAML sends "claim : <sentence> verdict :" with " false" / " true" to the model."""
    section = evaluate_entry(model_dirs["encoder"], "pseudo-loglikelihood", "synthetic_glue", tasks_dir=tasks_dir, out_dir=tmp_path)
    lm = PseudoLogLikelihoodLM(pretrained=str(model_dirs["encoder"]), device="cpu")
    rows = [json.loads(line) for line in (tasks_dir / "synthetic_glue" / "validation.jsonl").read_text().splitlines()]
    correct = []
    for row in rows:
        prompt = f"claim : {row['sentence']} verdict :"
        (false, _), (true, _) = lm.loglikelihood(instances([(prompt, " false"), (prompt, " true")]), disable_tqdm=True)
        correct.append(int(true > false) == row["label"])
    assert section["tasks"]["synthetic_glue"]["metrics"]["acc"] == pytest.approx(sum(correct) / len(correct))


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
    assert sorted(path.name for path in include.glob("*.yaml")) == sorted(f"{task}.yaml" for task in [*TASKS, HELDOUT_TASK])


def test_unknown_task_is_a_user_error(model_dirs, tasks_dir, tmp_path):
    with pytest.raises(UserError, match="unknown task 'synthetic_glu'.*did you mean 'synthetic_glue'.*synthetic_hellaswag"):
        evaluate_entry(model_dirs["decoder"], "loglikelihood", "synthetic_glu", tasks_dir=tasks_dir, out_dir=tmp_path / "eval")
    assert not (tmp_path / "eval").exists()


def test_unknown_scoring_and_missing_data_are_user_errors(model_dirs, tmp_path):
    with pytest.raises(UserError, match="unknown scoring method 'pll'"):
        evaluate_entry(model_dirs["encoder"], "pll", "synthetic_glue", tasks_dir=tmp_path, out_dir=tmp_path / "eval")
    with pytest.raises(UserError, match="synthetic_glue.*missing"):
        check_tasks(["synthetic_glue"], tmp_path)
