"""ELECTRA against its definition (Clark et al. 2020) and the discriminator's lm-eval adapter
against a hand computation, on the tiny corpus with real tokens."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
import transformers
from lm_eval.api.instance import Instance

from harness.data.sampler import BlockSampler
from harness.data.tokenizer import load_tokenizer
from harness.evaluate.run import evaluate_entry
from harness.evaluate.electra import DiscriminatorLM
from harness.models.families import model_factory, parameter_count
from harness.models.sizes import SIZES, ModelSize
from harness.models.tensors import IGNORE_INDEX
from harness.plan import vocab_of
from objectives.electra import Electra, generator_size, replace_tokens
from conftest import split_tokens

REQUESTS = [  # (context, continuation) as multiple-choice tasks send them
    ("claim : the home of biko is in lisbon . verdict :", " true"),
    ("claim : the home of biko is in lisbon . verdict :", " false"),
    ("", "it was a quiet day ."),
]




def _objective(tiny_data, **config):
    return Electra(Electra.Config(**config), vocab_of(tiny_data))


def _build(tiny_data, objective):
    make = model_factory(SIZES["tiny"], vocab_size=tiny_data.vocab_size, special=tiny_data.special_tokens, max_len=32)
    return objective.build_model(make)


def _batch(tiny_data, objective, step=0, rows=8):
    block = BlockSampler(tiny_data.train_tokens, tiny_data.dtype, 32, seed=0).batch(step, 0, 0, rows)
    return objective.transform(block, np.random.default_rng(step))


def test_generator_size_follows_the_paper():
    # ELECTRA-Base: a 1/3-width generator of 256 hidden units and 4 heads of 64, same depth.
    assert generator_size(ModelSize(hidden=768, layers=12, heads=12, intermediate=3072), 1 / 3) == \
        ModelSize(hidden=256, layers=12, heads=4, intermediate=1024)
    assert generator_size(SIZES["large"], 0.25) == ModelSize(hidden=256, layers=24, heads=4, intermediate=656)
    assert generator_size(SIZES["base"], 1.0) == SIZES["base"]
    for size in SIZES.values():
        for fraction in (0.05, 0.25, 1 / 3, 0.5):
            small = generator_size(size, fraction)
            assert abs(small.hidden - size.hidden * fraction) <= 1 and small.layers == size.layers
            assert small.hidden % small.heads == 0 and (small.hidden // small.heads) % 2 == 0


@pytest.mark.parametrize("fraction", [0.25, 1 / 3])
def test_generator_is_the_configured_fraction_and_shares_the_embeddings(tiny_data, fraction):
    objective = _objective(tiny_data, generator_fraction=fraction)
    module = _build(tiny_data, objective)
    disc, gen = module.discriminator, module.generator
    assert gen.backbone.config.hidden_size == generator_size(SIZES["tiny"], fraction).hidden
    assert gen.backbone.config.num_hidden_layers == disc.config.num_hidden_layers
    shared = disc.model.embeddings.tok_embeddings.weight
    assert gen.backbone.get_input_embeddings().shared.weight is shared
    # No vocabulary-sized matrix other than the shared one: the generator owns no embeddings.
    assert [p for p in module.parameters() if p.shape[0] == tiny_data.vocab_size and p.ndim == 2] == [shared]
    # The output layer scores against the shared matrix through the projection back.
    batch = _batch(tiny_data, objective)
    selected = batch["labels"] != IGNORE_INDEX
    with torch.no_grad():
        hidden = gen.backbone(input_ids=batch["input_ids"]).last_hidden_state[selected]
        expected = gen.project_back(gen.head(hidden)) @ shared.T + gen.bias
        torch.testing.assert_close(gen(batch["input_ids"], selected), expected)
    # A gradient step on the generator's loss alone moves the discriminator's embeddings.
    logits = gen(batch["input_ids"], selected)
    F.cross_entropy(logits, batch["labels"][selected]).backward()
    assert shared.grad is not None and shared.grad.abs().sum() > 0


def test_transform_masks_with_mask_only(tiny_data):
    objective = _objective(tiny_data)
    block = BlockSampler(tiny_data.train_tokens, tiny_data.dtype, 32, seed=0).batch(0, 0, 0, 200)
    batch = objective.transform(block, np.random.default_rng(0))
    selected = (batch["labels"] != IGNORE_INDEX).numpy()
    assert (batch["input_ids"].numpy()[selected] == tiny_data.special_tokens["[MASK]"]).all()
    assert (batch["labels"].numpy()[selected] == block[selected]).all()
    assert (batch["input_ids"].numpy()[~selected] == block[~selected]).all()
    eligible = ~np.isin(block, list(tiny_data.special_tokens.values()))
    assert not (selected & ~eligible).any()
    assert abs(selected.sum() - 0.15 * eligible.sum()) <= 5 * np.sqrt(eligible.sum() * 0.15 * 0.85)


def test_replace_tokens_labels_exactly_the_changed_positions():
    input_ids = torch.tensor([[7, 3, 9, 3], [3, 8, 8, 2]])  # 3 is [MASK]
    labels = torch.tensor([[-100, 5, -100, 6], [4, -100, -100, -100]])
    samples = torch.tensor([5, 11, 12])  # the first sample equals its original
    corrupted, replaced = replace_tokens(input_ids, labels, samples)
    assert corrupted.tolist() == [[7, 5, 9, 11], [12, 8, 8, 2]]
    assert replaced.tolist() == [[False, False, False, True], [True, False, False, False]]


def test_discriminator_labels_are_where_the_sample_differs(tiny_data):
    objective = _objective(tiny_data)
    module = _build(tiny_data, objective)
    batch = _batch(tiny_data, objective, rows=16)
    selected = batch["labels"] != IGNORE_INDEX
    # Make the generator sample one token t everywhere; t is the original at some masked positions.
    t = int(torch.mode(batch["labels"][selected]).values)
    with torch.no_grad():
        module.generator.bias[t] = 1e4
    out = module(**batch)
    original = torch.where(selected, batch["labels"], batch["input_ids"])
    assert (out.discriminator_input[selected] == t).all()
    assert torch.equal(out.discriminator_input[~selected], original[~selected])
    assert torch.equal(out.replaced, selected & (original != t))
    assert (selected & (original == t)).any() and out.replaced.any()


def test_loss_is_generator_loss_plus_50_discriminator_loss(tiny_data):
    objective = _objective(tiny_data)
    module = _build(tiny_data, objective)
    batch = _batch(tiny_data, objective)
    torch.manual_seed(1)
    loss, metrics = objective.loss(module, batch)
    metrics = {k: v.item() for k, v in metrics.items()}  # 0-d tensors, read as the trainer reads them
    torch.manual_seed(1)  # the same generator samples
    out = module(**batch)
    selected = batch["labels"] != IGNORE_INDEX
    generator = F.cross_entropy(out.generator_logits, batch["labels"][selected])
    disc = F.binary_cross_entropy(torch.sigmoid(out.discriminator_logits), out.replaced.float())
    torch.testing.assert_close(loss, generator + 50 * disc, rtol=1e-5, atol=1e-5)
    assert metrics["loss"] == pytest.approx(metrics["generator_loss"] + 50 * metrics["discriminator_loss"], rel=1e-5)
    assert metrics["predicted"] == batch["input_ids"].numel()
    assert metrics["replaced"] == pytest.approx(out.replaced.float().mean().item())


def test_a_few_steps_lower_the_loss(tiny_data):
    objective = _objective(tiny_data)
    module = _build(tiny_data, objective)
    batch = _batch(tiny_data, objective)
    optimizer = torch.optim.AdamW(module.parameters(), lr=2e-3)

    def loss_now():
        torch.manual_seed(0)
        with torch.no_grad():
            return objective.loss(module, batch)[1]
    before = loss_now()
    for _ in range(15):
        loss, _ = objective.loss(module, batch)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    after = loss_now()
    assert after["loss"] < 0.7 * before["loss"]
    assert after["generator_loss"] < before["generator_loss"]


@pytest.fixture(scope="module")
def saved(tiny_data, tmp_path_factory):
    """A briefly trained tiny ELECTRA, its discriminator exported and saved with the tokenizer."""
    objective = _objective(tiny_data)
    module = _build(tiny_data, objective)
    optimizer = torch.optim.AdamW(module.parameters(), lr=2e-3)
    for step in range(5):
        loss, _ = objective.loss(module, _batch(tiny_data, objective, step))
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    exported = objective.export_model(module)
    path = tmp_path_factory.mktemp("electra") / "model"
    exported.save_pretrained(path)
    load_tokenizer(tiny_data.tokenizer_dir).save_pretrained(path)
    return module, exported, path


def test_export_round_trips_with_identical_logits(tiny_data, saved):
    module, exported, path = saved
    assert isinstance(exported, transformers.ModernBertForTokenClassification)
    assert exported.config.num_labels == 1 and exported.model is module.discriminator.model
    assert parameter_count(exported) < parameter_count(module)
    loaded = transformers.AutoModelForTokenClassification.from_pretrained(path).eval()
    assert type(loaded) is transformers.ModernBertForTokenClassification
    input_ids = BlockSampler(tiny_data.val_tokens, tiny_data.dtype, 32, seed=0).batch(0, 0, 0, 4)
    input_ids = torch.from_numpy(input_ids)
    with torch.no_grad():
        torch.testing.assert_close(loaded(input_ids=input_ids).logits, exported.eval()(input_ids=input_ids).logits)




@torch.no_grad()
def _reference(model, tokenizer, context, continuation):
    """Sum over continuation tokens of log(1 - sigmoid(replaced logit)), one unpadded forward."""
    context_ids, continuation_ids = split_tokens(tokenizer, context, continuation)
    logits = model(input_ids=torch.tensor([context_ids + continuation_ids])).logits[0, :, 0]
    ours = logits[len(context_ids):]
    return torch.log(1 - torch.sigmoid(ours)).sum().item(), bool((torch.sigmoid(ours) < 0.5).all())


def test_adapter_equals_a_hand_computation(saved):
    _, _, path = saved
    lm = DiscriminatorLM(pretrained=str(path), batch_size=3, device="cpu")  # one batch: pads the short row
    model = transformers.AutoModelForTokenClassification.from_pretrained(path).eval()
    tokenizer = transformers.AutoTokenizer.from_pretrained(path)
    requests = [Instance("loglikelihood", {}, pair, i) for i, pair in enumerate(REQUESTS)]
    scores = lm.loglikelihood(requests, disable_tqdm=True)
    for (context, continuation), (score, greedy) in zip(REQUESTS, scores, strict=True):
        expected, expected_greedy = _reference(model, tokenizer, context, continuation)
        assert score == pytest.approx(expected, abs=1e-4)
        assert greedy == expected_greedy
    with pytest.raises(NotImplementedError, match="does not generate text"):
        lm.generate_until([Instance("generate_until", {}, ("a", {"until": ["."]}), 0)])


def test_evaluate_entry_scores_with_the_discriminator(tiny_data, saved, tmp_path):
    _, _, path = saved
    tasks = ["synthetic_hellaswag", "synthetic_glue"]
    summary = {}
    for task in tasks:
        section = evaluate_entry(path, "discriminator", task, tasks_dir=tiny_data.tasks_dir,
                                 out_dir=tmp_path / "eval", batch_size=8, limit=10, seed=3)
        assert section["scoring"] == "discriminator" and section["model"] == "harness-electra"
        summary[task] = {**section["tasks"][task]["metrics"], "chance": section["tasks"][task]["chance"]}
    assert summary["synthetic_hellaswag"]["chance"] == pytest.approx(0.25)
    assert summary["synthetic_glue"]["chance"] == pytest.approx(0.5)
    for task, entry in summary.items():
        assert 0.0 <= entry["acc"] <= 1.0
        assert (tmp_path / "eval" / f"{task}.json").is_file()


def test_sampling_is_a_function_of_the_batch_seed():
    """A resumed run must draw the replacements an uninterrupted one would: same noise_seed,
    same samples, whatever torch's global generator has done in between."""
    from objectives.electra import sample_tokens
    logits = torch.randn(50, 40)
    torch.manual_seed(1)
    a = sample_tokens(logits, seed=7)
    torch.manual_seed(2)
    b = sample_tokens(logits, seed=7)
    assert torch.equal(a, b) and not torch.equal(a, sample_tokens(logits, seed=8))
