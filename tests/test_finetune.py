"""harness.evaluate.finetune: a tiny decoder pretrained here for real (causal LM on the synthetic world),
then fine-tuned on a synthetic classification task; each architecture's head against the hidden
state it should pool; the metrics against scikit-learn; the preflight's errors, offline."""

from __future__ import annotations

import doctest
import json
import statistics

import numpy as np
import pytest
import torch
import transformers

import harness.evaluate.finetune
from harness.data.config import SyntheticData
from harness.data.prepare import BASE_SPECIAL_TOKENS, prepare
from harness.data.sampler import BlockSampler
from harness.data.tokenizer import load_tokenizer
from harness.errors import UserError
from harness.evaluate.finetune import (FINETUNE_TASKS, baselines, build_classifier, check_finetune_tasks,
                                       classification_metrics, encode_rows, finetune_model, load_rows, pad_right,
                                       pool)
from harness.models.families import build_model, model_factory
from harness.models.sizes import SIZES
from harness.schema import FinetuneConfig
from harness.synthetic import WorldConfig
from objectives import registry
from objectives.base import Vocab
from objectives.electra import token_classifier

SEQ_LEN = 32
PRETRAIN_STEPS = 200
EVAL_ROWS = 200  # rows per task split; see the acceptance test's margin


@pytest.fixture(scope="session")
def world_data(tmp_path_factory):
    """The synthetic world with enough task rows to fine-tune on and score."""
    cfg = SyntheticData(synthetic=WorldConfig(entities=12, documents=600, seed=3), seq_len=SEQ_LEN,
                        val_fraction=0.1, eval_examples=EVAL_ROWS)
    return prepare(cfg, [*BASE_SPECIAL_TOKENS, "[MASK]", "[CLS]", "[SEP]"], tmp_path_factory.mktemp("data"))


@pytest.fixture(scope="session")
def pretrained_decoder(world_data, tmp_path_factory):
    """A `tiny` decoder trained with the causal-LM objective for PRETRAIN_STEPS steps (about two
    seconds), saved with its tokenizer as a run saves its model."""
    vocab = Vocab(world_data.vocab_size, world_data.special_tokens)
    objective = registry.build("clm", {}, vocab)
    make = model_factory(SIZES["tiny"], vocab_size=vocab.size, special=vocab.special, max_len=SEQ_LEN)
    model = objective.build_model(make)
    sampler = BlockSampler(world_data.train_tokens, world_data.dtype, SEQ_LEN, seed=0)
    optimizer = torch.optim.AdamW(model.parameters(), lr=3e-3)
    rng = np.random.default_rng(0)
    for step in range(PRETRAIN_STEPS):
        loss, _ = objective.loss(model, objective.transform(sampler.batch(step, 0, 0, 16), rng))
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()
    assert loss.item() < 0.5 * np.log(vocab.size)  # it learned something of the language
    root = tmp_path_factory.mktemp("pretrained") / "model"
    model.save_pretrained(root)
    load_tokenizer(world_data.tokenizer_dir).save_pretrained(root)
    return root


@pytest.fixture(scope="session")
def untrained_models(world_data, tmp_path_factory) -> dict:
    """Freshly initialized models of every saved kind: (directory, architecture)."""
    root = tmp_path_factory.mktemp("untrained")
    special, vocab_size = world_data.special_tokens, world_data.vocab_size
    built = {arch: build_model(arch, SIZES["tiny"], vocab_size=vocab_size, special=special, max_len=SEQ_LEN)
             for arch in ("encoder", "decoder", "encoder-decoder")}
    saved = {"mlm": (built["encoder"], "encoder"), "electra": (token_classifier(built["encoder"]), "encoder"),
             "clm": (built["decoder"], "decoder"), "span_corruption": (built["encoder-decoder"], "encoder-decoder")}
    for name, (model, _) in saved.items():
        model.save_pretrained(root / name)
        load_tokenizer(world_data.tokenizer_dir).save_pretrained(root / name)
    return {name: (root / name, arch) for name, (_, arch) in saved.items()}


def test_docstring_examples():
    assert doctest.testmod(harness.evaluate.finetune).failed == 0


# ---------------------------------------------------------------- the acceptance test


def test_pretrained_tiny_decoder_fine_tuned_on_sst2_beats_chance(pretrained_decoder, world_data, tmp_path):
    # 3e-4 is ELECTRA-small's rate (tiny is smaller still); the default 1e-4 suits larger models.
    cfg = FinetuneConfig(tasks=["synthetic_sst2"], lr=3e-4, epochs=30, batch_size=32, max_steps=120, seeds=[0, 1, 2])
    logged = []
    record = finetune_model(pretrained_decoder, "decoder", "synthetic_sst2", cfg, tasks_dir=world_data.tasks_dir,
                            max_length=SEQ_LEN, out_dir=tmp_path, log=logged.append)

    assert record["n_eval"] == EVAL_ROWS and record["eval_split"] == "validation"
    assert record["metric"] == "acc" and record["head"] == "last-token"
    assert record["recipe"]["steps"] == 120  # 30 epochs of ceil(200 / 32) = 7 steps, capped
    # Under the null (predictions that ignore the text), accuracy on 200 balanced rows has
    # standard deviation sqrt(0.25 / 200) = 0.035: a margin of 0.2 is almost six of them.
    assert record["majority"] == pytest.approx(0.5, abs=0.05) and record["chance"] == record["majority"]
    assert record["median"]["acc"] >= record["majority"] + 0.2
    assert [run["seed"] for run in record["runs"]] == [0, 1, 2] and len(logged) == 3
    assert all(run["steps"] == 120 for run in record["runs"])
    assert len({run["train_loss"] for run in record["runs"]}) == 3  # each seed is its own run

    written = json.loads((tmp_path / "synthetic_sst2.json").read_text())
    assert written == record
    for metric in ("acc", "f1", "mcc"):
        assert written["median"][metric] == statistics.median(run[metric] for run in written["runs"])


def test_a_seed_reproduces_its_run(untrained_models, world_data, tmp_path):
    model_dir, arch = untrained_models["clm"]
    cfg = FinetuneConfig(max_steps=4, batch_size=8, seeds=[0, 0, 1])
    runs = finetune_model(model_dir, arch, "synthetic_rte", cfg, tasks_dir=world_data.tasks_dir,
                          max_length=SEQ_LEN, out_dir=tmp_path, log=lambda line: None)["runs"]
    assert runs[0]["train_loss"] == runs[1]["train_loss"] != runs[2]["train_loss"]


# ---------------------------------------------------------------- heads


@pytest.mark.parametrize("name", ["mlm", "electra", "clm", "span_corruption"])
def test_each_head_pools_its_position_and_trains(untrained_models, name):
    model_dir, arch = untrained_models[name]
    torch.manual_seed(0)
    classifier = build_classifier(model_dir, arch, num_labels=3).eval()
    saved = transformers.AutoModelForSeq2SeqLM if arch == "encoder-decoder" else transformers.AutoModel
    assert torch.equal(classifier.backbone.get_input_embeddings().weight,
                       saved.from_pretrained(model_dir).get_input_embeddings().weight)  # pretrained, not fresh

    short, long = [11, 12, 13], [21, 22, 23, 24, 25, 26]
    input_ids, attention_mask = pad_right([short, long], pad_id=0)
    with torch.no_grad():
        batched = classifier(input_ids, attention_mask)
        alone = torch.tensor([short])
        hidden = (classifier.backbone.encode(alone) if arch == "encoder-decoder"
                  else classifier.backbone(input_ids=alone).last_hidden_state)[0]
    # The reference reads the short row unpadded, at the position the architecture should pool.
    expected = {"encoder": hidden[0], "decoder": hidden[-1], "encoder-decoder": hidden.mean(0)}[arch]
    torch.testing.assert_close(batched[0], classifier.classifier(expected), atol=1e-5, rtol=1e-4)

    classifier.train()
    torch.nn.functional.cross_entropy(classifier(input_ids, attention_mask), torch.tensor([0, 2])).backward()
    layers = [p.grad for n, p in classifier.named_parameters() if n.startswith("backbone.")]
    assert classifier.classifier.weight.grad.abs().sum() > 0
    assert all(g is not None for g in layers) and sum(g.abs().sum() for g in layers) > 0


def test_pooling_reads_past_right_padding():
    hidden = torch.arange(2 * 4 * 1, dtype=torch.float).reshape(2, 4, 1)
    mask = torch.tensor([[1, 1, 0, 0], [1, 1, 1, 1]])
    assert pool(hidden, mask, "first-token").flatten().tolist() == [0.0, 4.0]
    assert pool(hidden, mask, "last-token").flatten().tolist() == [1.0, 7.0]
    assert pool(hidden, mask, "encoder-mean").flatten().tolist() == [0.5, 5.5]


def test_pairs_are_joined_by_eos_as_the_training_text_was_tokenized(world_data):
    tokenizer = load_tokenizer(world_data.tokenizer_dir)
    task = FINETUNE_TASKS["synthetic_rte"]
    rows = load_rows(task, "train", world_data.tasks_dir)[:5]
    encoded = encode_rows(tokenizer, task, rows, max_length=SEQ_LEN * 4)
    for row, ids in zip(rows, encoded):
        first = tokenizer.encode(row["sentence1"], add_special_tokens=False)
        second = tokenizer.encode(row["sentence2"], add_special_tokens=False)
        assert ids == first + [tokenizer.eos_token_id] + second
    assert all(len(ids) <= 8 for ids in encode_rows(tokenizer, task, rows, max_length=8))


# ---------------------------------------------------------------- metrics


CASES = [  # (labels, predictions, number of labels)
    ([0, 0, 0, 0, 0, 0, 1, 1, 1, 1, 1, 1], [0, 0, 0, 0, 0, 1, 0, 0, 1, 1, 1, 1], 2),
    ([1, 1, 0, 1, 0, 0, 1], [1, 1, 1, 1, 1, 1, 1], 2),   # a constant guess: MCC undefined, 0
    ([0, 1, 2, 2, 1, 0, 2, 1], [0, 2, 2, 2, 1, 1, 0, 1], 3),
    ([0, 1, 0, 1], [1, 0, 1, 0], 2),                    # always wrong
]


def test_matthews_of_a_known_confusion_matrix():
    # TN 5, FP 1, FN 2, TP 4: (4 * 5 - 1 * 2) / sqrt((4 + 1)(4 + 2)(5 + 1)(5 + 2)) = 18 / sqrt(1260)
    labels, predictions = [0] * 6 + [1] * 6, [0] * 5 + [1] + [0] * 2 + [1] * 4
    metrics = classification_metrics(labels, predictions, 2)
    assert metrics["mcc"] == pytest.approx(18 / 1260**0.5)
    assert metrics["f1"] == pytest.approx(2 * 4 / (2 * 4 + 1 + 2)) and metrics["acc"] == pytest.approx(9 / 12)
    # three classes, all right but one; and a constant prediction, where MCC is undefined -> 0
    three = classification_metrics([0, 1, 2, 2], [0, 1, 2, 1], 3)
    assert "f1" not in three and three["acc"] == 0.75
    assert classification_metrics([0, 1, 1], [1, 1, 1], 2)["mcc"] == 0.0


def test_baselines_are_the_metric_of_a_constant_guess():
    train, evaluation = [0, 0, 0, 1], [0, 1, 1, 1, 1]
    assert baselines(FINETUNE_TASKS["sst2"], train, evaluation) == (0.2, 0.2)   # acc: the majority
    assert baselines(FINETUNE_TASKS["cola"], train, evaluation) == (0.2, 0.0)   # mcc: 0
    # f1: always positive, precision 0.8 and recall 1
    assert baselines(FINETUNE_TASKS["mrpc"], train, evaluation) == pytest.approx((0.2, 2 * 0.8 / 1.8))


# ---------------------------------------------------------------- preflight


def test_unknown_task_names_the_closest_one(world_data):
    with pytest.raises(UserError) as error:
        check_finetune_tasks(["synthetic_sst"], world_data.tasks_dir)
    assert "did you mean 'synthetic_sst2'" in str(error.value) and "mnli" in str(error.value)
    assert error.value.where == "eval.finetune.tasks"


def test_missing_synthetic_data_names_the_file(world_data, tmp_path):
    check_finetune_tasks(["synthetic_sst2", "synthetic_cola"], world_data.tasks_dir)
    with pytest.raises(UserError, match=r"synthetic_cola/train\.jsonl"):
        check_finetune_tasks(["synthetic_cola"], tmp_path)


def test_glue_offline_without_a_bundle_says_how_to_make_one(world_data, tmp_path):
    with pytest.raises(UserError, match=r"harness eval bundle sst2 .*--out DIR") as error:
        check_finetune_tasks(["sst2"], world_data.tasks_dir)
    assert "nyu-mll/glue" in str(error.value) and "no offline bundle" in str(error.value)
    (tmp_path / "data" / "rte").mkdir(parents=True)  # a bundle without the task's files
    with pytest.raises(UserError, match=r"holds no data/rte/train\.parquet"):
        check_finetune_tasks(["rte"], world_data.tasks_dir, bundle_dir=tmp_path)


def test_glue_reads_the_bundles_parquet_files(world_data, tmp_path):
    import pandas as pd

    rows = {"premise": ["a cat sat .", "it rains ."], "hypothesis": ["a cat .", "it is dry ."], "label": [0, 2],
            "idx": [0, 1]}
    (tmp_path / "data" / "mnli").mkdir(parents=True)
    for split in ("train", "validation_matched"):
        pd.DataFrame(rows).to_parquet(tmp_path / "data" / "mnli" / f"{split}.parquet")
    check_finetune_tasks(["mnli"], world_data.tasks_dir, bundle_dir=tmp_path)
    loaded = load_rows(FINETUNE_TASKS["mnli"], "validation_matched", world_data.tasks_dir, tmp_path)
    assert [(r["premise"], r["hypothesis"], r["label"]) for r in loaded] == list(
        zip(rows["premise"], rows["hypothesis"], rows["label"]))
