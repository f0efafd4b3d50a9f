"""CLM and MLM against their references: transformers' own loss, BERT's masking statistics."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from harness.models.families import build_model
from harness.models.sizes import SIZES
from harness.models.tensors import IGNORE_INDEX
from objectives.base import Vocab
from objectives.clm import CausalLM
from objectives.mlm import MaskedLM, bert_mask

SPECIAL = {"[PAD]": 0, "[UNK]": 1, "[EOS]": 2, "[MASK]": 3, "[CLS]": 4, "[SEP]": 5}
VOCAB = Vocab(size=500, special=SPECIAL)


def _block(rng, shape=(4, 32)):
    return rng.integers(len(SPECIAL), VOCAB.size, size=shape)


def test_clm_loss_equals_transformers_labels_loss():
    model = build_model("decoder", SIZES["tiny"], vocab_size=VOCAB.size, special=SPECIAL, max_len=32)
    objective = CausalLM(CausalLM.Config(), VOCAB)
    block = _block(np.random.default_rng(0))
    batch = objective.transform(block, np.random.default_rng(1))
    ours, _ = objective.loss(model, batch)
    reference = model(input_ids=batch["input_ids"], labels=batch["input_ids"]).loss
    torch.testing.assert_close(ours, reference, rtol=1e-6, atol=1e-6)


def test_clm_labels_are_the_next_token():
    objective = CausalLM(CausalLM.Config(), VOCAB)
    block = _block(np.random.default_rng(0))
    labels = objective.transform(block, np.random.default_rng(0))["labels"].numpy()
    assert (labels[:, :-1] == block[:, 1:]).all() and (labels[:, -1] == IGNORE_INDEX).all()


def _masking_draw(n_tokens=200_000):
    rng = np.random.default_rng(0)
    block = _block(rng, (n_tokens // 100, 100))
    block[:, ::10] = SPECIAL["[EOS]"]  # special positions must never be selected
    inputs, labels = bert_mask(block, rng, VOCAB, rate=0.15, split=(0.8, 0.1, 0.1))
    return block, inputs, labels


def _within(observed: int, n: int, p: float, sigmas: float = 5.0) -> bool:
    return abs(observed - n * p) <= sigmas * np.sqrt(n * p * (1 - p))


def test_mlm_selection_rate_and_80_10_10_split():
    block, inputs, labels = _masking_draw()
    eligible = block != SPECIAL["[EOS]"]
    selected = labels != IGNORE_INDEX
    n_eligible, n_selected = int(eligible.sum()), int(selected.sum())
    assert n_eligible >= 100_000
    assert _within(n_selected, n_eligible, 0.15)
    assert not (selected & ~eligible).any()
    masked = int((inputs[selected] == SPECIAL["[MASK]"]).sum())
    unchanged = int((inputs[selected] == block[selected]).sum())
    # a random replacement equals the original with probability 1/#ordinary tokens
    random_kept = 0.1 / (VOCAB.size - len(SPECIAL))
    assert _within(masked, n_selected, 0.8)
    assert _within(unchanged, n_selected, 0.1 + random_kept)
    assert _within(n_selected - masked - unchanged, n_selected, 0.1 - random_kept)
    replaced = inputs[selected & (inputs != block) & (inputs != SPECIAL["[MASK]"])]
    assert not np.isin(replaced, VOCAB.special_ids()).any()
    assert (inputs[~selected] == block[~selected]).all()


def test_mlm_unselected_positions_never_contribute_to_the_loss():
    from objectives.base import token_cross_entropy
    model = build_model("encoder", SIZES["tiny"], vocab_size=VOCAB.size, special=SPECIAL,
                        max_len=32, overrides={"sparse_prediction": True})
    objective = MaskedLM(MaskedLM.Config(), VOCAB)
    batch = objective.transform(_block(np.random.default_rng(0)), np.random.default_rng(1))
    selected = batch["labels"] != IGNORE_INDEX
    assert 0 < selected.sum() < selected.numel()
    loss, _ = objective.loss(model, batch)
    # The same weights with dense prediction give logits at every position; scrambling the
    # logits at unselected positions must not move the loss, and it must equal the mean
    # cross-entropy over selected positions alone.
    dense = model.__class__(model.config.__class__(**{**model.config.to_dict(), "sparse_prediction": False}))
    dense.load_state_dict(model.state_dict())
    with torch.no_grad():
        logits = dense(input_ids=batch["input_ids"]).logits
    scrambled = logits.clone()
    scrambled[~selected] = torch.randn_like(scrambled[~selected]) * 50
    reference = torch.nn.functional.cross_entropy(logits[selected], batch["labels"][selected])
    torch.testing.assert_close(loss.detach(), reference, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(token_cross_entropy(scrambled, batch["labels"])[0], reference,
                               rtol=1e-5, atol=1e-5)


def test_mlm_transform_is_deterministic_under_a_seed():
    objective = MaskedLM(MaskedLM.Config(), VOCAB)
    block = _block(np.random.default_rng(0))
    a = objective.transform(block, np.random.default_rng(5))
    b = objective.transform(block, np.random.default_rng(5))
    c = objective.transform(block, np.random.default_rng(6))
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert not torch.equal(a["labels"], c["labels"])


def test_registry_suggests_close_names():
    from harness.errors import UserError
    from objectives import registry
    assert registry.get("mlm") is MaskedLM
    with pytest.raises(UserError, match="did you mean 'mlm'"):
        registry.get("mlmm")
    with pytest.raises(UserError, match="did you mean 'mlm'"):
        registry.config("mlmm")


def test_registry_config_is_each_objectives_config_and_imports_no_torch():
    import subprocess
    import sys

    from objectives import registry
    for name in registry.names():
        assert registry.config(name) is registry.get(name).Config
    # A fresh interpreter: validating an objective's config needs neither torch nor transformers.
    code = ("import sys; from objectives import registry; "
            "[registry.config(n)() for n in registry.names()]; "
            "print(sorted(m for m in ('torch', 'transformers') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_registry_build_takes_a_dict_or_the_config():
    from pydantic import ValidationError

    from objectives import registry
    from objectives.configs import MaskedLMConfig
    from_dict = registry.build("mlm", {"mask_rate": 0.2}, VOCAB)
    from_config = registry.build("mlm", MaskedLMConfig(mask_rate=0.2), VOCAB)
    assert type(from_dict) is type(from_config) is MaskedLM and from_dict.vocab is VOCAB
    assert from_dict.config == from_config.config == MaskedLM.Config(mask_rate=0.2)
    block = _block(np.random.default_rng(0))
    a, b = (o.transform(block, np.random.default_rng(3)) for o in (from_dict, from_config))
    assert all(torch.equal(a[k], b[k]) for k in a)
    with pytest.raises(ValidationError, match="mask_rat"):
        registry.build("mlm", {"mask_rat": 0.2}, VOCAB)
    with pytest.raises(TypeError, match="MaskedLMConfig"):
        registry.build("mlm", CausalLM.Config(), VOCAB)


def test_metrics_are_detached_tensors():
    model = build_model("encoder", SIZES["tiny"], vocab_size=VOCAB.size, special=SPECIAL, max_len=32,
                        overrides={"sparse_prediction": True})
    objective = MaskedLM(MaskedLM.Config(), VOCAB)
    loss, metrics = objective.loss(model, objective.transform(_block(np.random.default_rng(0)),
                                                              np.random.default_rng(1)))
    assert loss.requires_grad and {"loss", "accuracy", "predicted"} <= set(metrics)
    for name, value in metrics.items():
        assert isinstance(value, torch.Tensor) and value.dim() == 0 and not value.requires_grad, name
    assert metrics["loss"].item() == loss.item() and metrics["predicted"].dtype == torch.int64


def test_mlm_exports_a_model_that_saves_dense_logits():
    model = build_model("encoder", SIZES["tiny"], vocab_size=VOCAB.size, special=SPECIAL, max_len=32,
                        overrides={"sparse_prediction": True})
    exported = MaskedLM(MaskedLM.Config(), VOCAB).export_model(model)
    assert exported is model and exported.config.sparse_prediction is False
    # the module trained keeps its sparse projection: ModernBERT reads the flag when built
    assert model.sparse_prediction is True


def test_label_smoothing_and_z_loss_follow_their_definitions():
    from objectives.base import token_cross_entropy
    torch.manual_seed(0)
    logits, labels = torch.randn(2, 6, 50) * 3, torch.randint(0, 50, (2, 6))
    labels[0, :2] = IGNORE_INDEX
    keep = labels != IGNORE_INDEX
    plain, _ = token_cross_entropy(logits, labels)
    smoothed, _ = token_cross_entropy(logits, labels, label_smoothing=0.1)
    logp = logits[keep].log_softmax(-1)
    reference = (0.9 * -logp.gather(1, labels[keep][:, None]).squeeze(1) + 0.1 * -logp.mean(-1)).mean()
    torch.testing.assert_close(smoothed, reference)
    with_z, _ = token_cross_entropy(logits, labels, z_loss=1e-2)
    torch.testing.assert_close(with_z - plain, 1e-2 * torch.logsumexp(logits[keep], -1).pow(2).mean())


def test_every_cross_entropy_objective_takes_the_options():
    from objectives import registry
    from objectives.configs import CrossEntropyConfig
    for name in registry.names():
        config = registry.config(name)
        if issubclass(config, CrossEntropyConfig):
            assert config(label_smoothing=0.1, z_loss=1e-4).label_smoothing == 0.1
    objective = CausalLM(CausalLM.Config(label_smoothing=0.2), VOCAB)
    model = build_model("decoder", SIZES["tiny"], vocab_size=VOCAB.size, special=SPECIAL, max_len=32)
    batch = objective.transform(_block(np.random.default_rng(0)), np.random.default_rng(1))
    smoothed, _ = objective.loss(model, batch)
    plain, _ = CausalLM(CausalLM.Config(), VOCAB).loss(model, batch)
    assert smoothed.item() != pytest.approx(plain.item())
