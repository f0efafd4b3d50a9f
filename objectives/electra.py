"""ELECTRA: replaced-token detection (Clark et al. 2020).

A small generator, a masked LM, fills masked positions with tokens sampled from its softmax;
the discriminator, an encoder at the run's size, reads the result and tells for every position
whether its token was replaced. The kept model is the discriminator.

`transform` does the masking, as the paper does: each non-special position is selected with
probability `mask_rate` and replaced by [MASK] (no 80/10/10). Sampling happens in the model's
forward, since it needs the generator's logits; no gradient flows through it. A sampled token
equal to the original counts as original (label 0).

    block           [the, cat, sat, on, the, mat]
    input_ids       [the, [MASK], sat, on, [MASK], mat]     (the generator's input)
    labels          [-100, cat, -100, -100, the, -100]      (the generator's MLM targets)
    generator samples [dog, the] at the two masks
    discriminator   [the, dog, sat, on, the, mat]  ->  replaced [0, 1, 0, 0, 0, 0]

Loss = generator MLM cross-entropy + disc_weight x mean binary cross-entropy of the
discriminator over every position (the paper's lambda = 50).

The generator shares the discriminator's token embeddings, as in the paper. It is narrower
(`generator_fraction` of the width), so it reads them through a Linear projection to its width,
and its output layer maps back to the embedding width with another Linear and scores tokens
against the same embedding matrix (plus a bias). The generator owns no embedding matrix.

The exported model is a ModernBertForTokenClassification with one label whose logit means
"replaced"; its backbone is the trained discriminator backbone.
"""

from __future__ import annotations

import copy
from typing import NamedTuple

import torch
import torch.nn.functional as F
from transformers import ModernBertForTokenClassification

from harness.models.sizes import ModelSize
from harness.models.tensors import IGNORE_INDEX
from objectives.base import Objective, cross_entropy
from objectives.configs import ElectraConfig
from objectives.mlm import bert_mask

ALL_MASK = (1.0, 0.0, 0.0)  # every selected position becomes [MASK]
REPLACED = "replaced"  # the discriminator's one label


def generator_size(size: ModelSize, fraction: float) -> ModelSize:
    """The discriminator's depth at `fraction` of its width (rounded to an even number), with the
    discriminator's head width where that divides it, so that each head is whole and even
    (rotary embeddings rotate pairs of dimensions); the MLP narrows in proportion.

    >>> generator_size(ModelSize(hidden=768, layers=12, heads=12, intermediate=3072), 1 / 3)
    ModelSize(hidden=256, layers=12, heads=4, intermediate=1024)
    """
    hidden = max(2, 2 * round(size.hidden * fraction / 2))
    heads = max(1, min(size.heads, hidden // (size.hidden // size.heads)))
    while hidden % heads or (hidden // heads) % 2:
        heads -= 1
    intermediate = max(1, round(size.intermediate * hidden / size.hidden))
    return ModelSize(hidden=hidden, layers=size.layers, heads=heads, intermediate=intermediate)


def size_of(model: torch.nn.Module) -> ModelSize:
    c = model.config
    return ModelSize(hidden=c.hidden_size, layers=c.num_hidden_layers, heads=c.num_attention_heads,
                     intermediate=c.intermediate_size)


def replace_tokens(input_ids: torch.Tensor, labels: torch.Tensor, samples: torch.Tensor):
    """(discriminator input, replaced): the original tokens with `samples` (one per labelled
    position, row-major) at the labelled positions; replaced is True where the token differs."""
    selected = labels != IGNORE_INDEX
    original = torch.where(selected, labels, input_ids)
    corrupted = original.clone()
    corrupted[selected] = samples
    return corrupted, corrupted != original


@torch.no_grad()
def sample_tokens(logits: torch.Tensor, seed: int | None = None) -> torch.Tensor:
    """One token per row, drawn from softmax(logits); from a generator seeded with `seed` if given
    (the batch's noise_seed, so that a resumed run draws what an uninterrupted one would)."""
    if logits.size(0) == 0:
        return torch.zeros(0, dtype=torch.long, device=logits.device)
    generator = None
    if seed is not None:
        generator = torch.Generator(device=logits.device).manual_seed(seed)
    return torch.multinomial(logits.float().softmax(-1), 1, generator=generator).squeeze(-1)


class ProjectedEmbedding(torch.nn.Module):
    """A shared embedding table read at another width: project(shared(ids))."""

    def __init__(self, shared: torch.nn.Embedding, project: torch.nn.Linear):
        super().__init__()
        self.shared, self.project = shared, project

    def forward(self, input_ids):
        return self.project(self.shared(input_ids))


class Generator(torch.nn.Module):
    """The backbone and prediction head of a narrow ModernBertForMaskedLM, reading and scoring
    tokens with the shared embedding table; its own embedding and decoder are dropped."""

    def __init__(self, mlm: torch.nn.Module, shared: torch.nn.Embedding):
        super().__init__()
        width = mlm.config.hidden_size
        self.backbone, self.head = mlm.model, mlm.head
        self.backbone.set_input_embeddings(
            ProjectedEmbedding(shared, torch.nn.Linear(shared.embedding_dim, width, bias=False)))
        self.project_back = torch.nn.Linear(width, shared.embedding_dim, bias=False)
        self.bias = torch.nn.Parameter(torch.zeros(shared.num_embeddings))

    @property
    def shared(self) -> torch.nn.Embedding:
        return self.backbone.get_input_embeddings().shared

    def forward(self, input_ids, selected):
        """Vocabulary logits at the selected positions only, in row-major order."""
        hidden = self.backbone(input_ids=input_ids).last_hidden_state[selected]
        return F.linear(self.project_back(self.head(hidden)), self.shared.weight, self.bias)


class ElectraOutput(NamedTuple):
    generator_logits: torch.Tensor      # (masked positions, vocab)
    discriminator_logits: torch.Tensor  # (B, T), "replaced" logits
    replaced: torch.Tensor              # (B, T) bool, the discriminator's targets
    discriminator_input: torch.Tensor   # (B, T)


class ElectraModel(torch.nn.Module):
    """Generator and discriminator; one forward samples replacements and scores them."""

    def __init__(self, generator: Generator, discriminator: ModernBertForTokenClassification):
        super().__init__()
        self.generator, self.discriminator = generator, discriminator

    def forward(self, input_ids, labels, noise_seed=None) -> ElectraOutput:
        generator_logits = self.generator(input_ids, labels != IGNORE_INDEX)
        seed = None if noise_seed is None else int(noise_seed[0])
        corrupted, replaced = replace_tokens(input_ids, labels, sample_tokens(generator_logits, seed))
        logits = self.discriminator(input_ids=corrupted).logits.squeeze(-1)
        return ElectraOutput(generator_logits, logits, replaced, corrupted)


def token_classifier(mlm: torch.nn.Module) -> ModernBertForTokenClassification:
    """A ModernBertForTokenClassification (one label) whose backbone is `mlm`'s backbone."""
    config = copy.deepcopy(mlm.config)
    config.num_labels = 1
    # what the one logit means, for whoever loads the saved model: sigmoid(logit) = P(replaced)
    config.id2label, config.label2id = {0: REPLACED}, {REPLACED: 0}
    config.architectures = [ModernBertForTokenClassification.__name__]
    config.sparse_prediction = False
    model = ModernBertForTokenClassification(config)
    model.model = mlm.model
    return model


class Electra(Objective):
    name = "electra"
    architecture = "encoder"
    special_tokens = ("[MASK]",)
    scoring = "discriminator"
    defines_likelihood = False
    Config = ElectraConfig

    def transform(self, block, rng):
        inputs, labels = bert_mask(block, rng, self.vocab, rate=self.config.mask_rate, split=ALL_MASK)
        seeds = rng.integers(0, 2**62, size=len(inputs))
        return {"input_ids": torch.from_numpy(inputs), "labels": torch.from_numpy(labels),
                "noise_seed": torch.from_numpy(seeds)}

    def build_model(self, make):
        discriminator = token_classifier(make("encoder", overrides=self.model_overrides()))
        size = generator_size(size_of(discriminator), self.config.generator_fraction)
        generator = make("encoder", size=size, overrides=self.model_overrides())
        return ElectraModel(Generator(generator, discriminator.model.get_input_embeddings()), discriminator)

    def export_model(self, module):
        return module.discriminator

    def export_usage(self, seq_len):
        use = (f"A replaced-token detector: one logit per token (label '{REPLACED}'), sigmoid(logit) being the "
               "probability that the token was replaced. Score a continuation by the sum over its tokens of "
               "log sigmoid(-logit), the log-probability that each one is original.")
        return super().export_usage(seq_len) | {"auto_class": "AutoModelForTokenClassification", "use": use}

    def loss(self, model, batch):
        labels = batch["labels"]
        out = model(input_ids=batch["input_ids"], labels=labels, noise_seed=batch.get("noise_seed"))
        generator_loss, generator = cross_entropy(out.generator_logits, labels[labels != IGNORE_INDEX], self.config)
        target = out.replaced.float()
        disc_loss = F.binary_cross_entropy_with_logits(out.discriminator_logits.float(), target)
        disc_accuracy = ((out.discriminator_logits > 0).float() == target).float().mean()
        loss = generator_loss + self.config.disc_weight * disc_loss
        # accuracy and predicted describe the discriminator, the model kept: every position.
        predicted = torch.tensor(target.numel(), device=target.device)
        return loss, {"loss": loss.detach(), "accuracy": disc_accuracy, "predicted": predicted,
                      "generator_loss": generator_loss.detach(), "generator_accuracy": generator["accuracy"],
                      "discriminator_loss": disc_loss.detach(), "replaced": target.mean()}
