"""The contract between an objective and the trainer.

An objective turns a block of token ids into a batch and a batch into a loss. Every batch has
the required keys (`BATCH_KEYS`), so the trainer checks the contract once and never branches on
which objective it is driving:

    input_ids  (B, T) int64   what the model (the encoder, for an encoder-decoder) reads
    labels     (B, S) int64   the token to predict at each position, or IGNORE_INDEX

`labels` are aligned with the positions that predict them: for causal LM, labels[t] is the
token at t+1 (the shift happens in `transform`, not in the loss), so one cross-entropy serves
every objective. Objectives may add keys of their own, from this list so that their meaning
is shared:

    decoder_input_ids (B, S)  the decoder's input, for an encoder-decoder (labels align with it)
    prefix_lengths    (B,)    tokens at the start of each row that attend bidirectionally
    sequence_labels   (B,)    one class per row (next-sentence / sentence-order prediction)
    attention_mask    (B, T)  1 on tokens the model reads, 0 on padding (NSP/SOP rows are padded)
    noise_seed        (B,)    seeds for draws the loss makes (ELECTRA's sampling), drawn from the
                              transform's rng so that they too are a function of (seed, step)

An objective also says which module is trained (`build_model`: the backbone, or the backbone
with extra heads or a generator) and which model is kept and evaluated (`export_model`).

It says, too, how that model must be used once exported (`export`): the trainer saves the model
with `save_pretrained`, its config.json carrying a `harness_export` section (`export_usage`: the
transformers Auto class that loads it, its attention pattern, how to score it), and writes the
extra modules an objective keeps beside it (`export_heads`: NSP/SOP's pair head) as safetensors
files. harness.export.loader reads them back from the folder alone.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar, Literal, NamedTuple, Protocol

import numpy as np
import torch
import torch.nn.functional as F

from harness.models.tensors import IGNORE_INDEX
from objectives.configs import ObjectiveConfig

BATCH_KEYS = ("input_ids", "labels")
OPTIONAL_BATCH_KEYS = ("decoder_input_ids", "prefix_lengths", "sequence_labels", "attention_mask",
                       "noise_seed")
Architecture = Literal["decoder", "encoder", "encoder-decoder"]

EXPORT_FORMAT = 1  # the version of config.json's `harness_export` section
# Per architecture, the defaults of `harness_export`: the transformers Auto class that loads the
# exported folder, whether it needs the folder's own code, the attention pattern, and how to score.
EXPORT_DEFAULTS: dict[str, dict] = {
    "decoder": {
        "auto_class": "AutoModelForCausalLM", "trust_remote_code": False, "attention": "causal",
        "use": "A causal language model: score a continuation by the sum of the log-probabilities of its "
               "tokens, each read from the logits at the position before it (as lm-eval's hf model does)."},
    "encoder": {
        "auto_class": "AutoModelForMaskedLM", "trust_remote_code": False, "attention": "bidirectional",
        "use": "A masked language model, bidirectional: score a continuation by its pseudo-log-likelihood, "
               "masking each of its tokens in turn with [MASK] (the context visible) and summing log P(original "
               "token) at the mask. That is no likelihood of the text."},
    "encoder-decoder": {
        "auto_class": "AutoModelForSeq2SeqLM", "trust_remote_code": True, "attention": "encoder-decoder",
        "use": "An encoder-decoder whose code is in this folder (load it with trust_remote_code=True). Score a "
               "continuation as T5 scores zero-shot: the encoder reads context + sentinel + [EOS], the decoder "
               "[PAD] + sentinel + continuation, and the continuation's tokens are scored after the sentinel."},
}


@dataclass(frozen=True)
class Vocab:
    """What an objective needs to know about the suite's tokenizer."""

    size: int
    special: dict[str, int]  # every special token -> id
    sentence_end: tuple[int, ...] = ()  # ids of tokens that end a sentence (".", "!", "?")

    def id(self, token: str) -> int:
        return self.special[token]

    def special_ids(self) -> np.ndarray:
        return np.array(sorted(self.special.values()), dtype=np.int64)


class ModelFactory(Protocol):
    """Builds a freshly initialized model of the run's size (or another size) and vocabulary."""

    def __call__(self, architecture: Architecture, *, size=None, overrides: dict | None = None
                 ) -> torch.nn.Module: ...


class Objective:
    """One pretraining objective: its config, architecture, batch transform and loss."""

    name: ClassVar[str]
    architecture: ClassVar[Architecture]
    special_tokens: ClassVar[tuple[str, ...]] = ()
    # how lm-eval scores a model trained with this objective (see harness.evaluate)
    scoring: ClassVar[str]
    # whether the exported model, scored as `scoring` says, gives a likelihood of a text (a
    # product of conditional token probabilities over the whole text), so that held-out bits per
    # byte can be measured (harness.evaluate, sliding window). Pseudo-log-likelihood and a
    # discriminator's scores are not likelihoods.
    defines_likelihood: ClassVar[bool]
    Config: ClassVar[type[ObjectiveConfig]] = ObjectiveConfig

    def __init__(self, config: ObjectiveConfig, vocab: Vocab):
        self.config = config
        self.vocab = vocab

    def block_length(self, seq_len: int) -> int:
        """Tokens of raw text one example consumes (span corruption reads more than it emits)."""
        return seq_len

    def transform(self, block: np.ndarray, rng: np.random.Generator) -> dict[str, torch.Tensor]:
        """Turn a (B, block_length) block of token ids into a batch (see the module docstring)."""
        raise NotImplementedError

    def loss(self, model: torch.nn.Module, batch: dict[str, torch.Tensor]):
        """Return (loss tensor, metrics dict) for one batch. Metrics are 0-d tensors, detached,
        read as numbers by the trainer only when it logs them; they include `predicted`
        (positions the loss averages over), used to weight validation losses."""
        raise NotImplementedError

    def model_overrides(self) -> dict:
        """Config fields this objective sets on its backbone (e.g. sparse prediction)."""
        return {}

    def build_model(self, make: ModelFactory) -> torch.nn.Module:
        """The module training optimizes; by default the backbone of `architecture` alone."""
        return make(self.architecture, overrides=self.model_overrides())

    def export_model(self, module: torch.nn.Module):
        """The transformers model kept, saved and evaluated, as it is saved; by default the trained
        module. Every change made for export only (say, dense logits) happens here."""
        return module

    def scoring_args(self, seq_len: int) -> dict:
        """Extra model arguments for this objective's lm-eval adapter (a mode token, say), for a
        model trained on `seq_len`-token inputs. The harness adds `max_length: seq_len` itself."""
        return {}

    def export_usage(self, seq_len: int) -> dict:
        """How the exported model must be used, from its folder alone: config.json's
        `harness_export` (the keys below; `heads` is filled in by `export`). The defaults are
        those of the architecture (EXPORT_DEFAULTS); an objective whose model is read otherwise
        (a bidirectional prefix, a mode token) says so by overriding this."""
        return {"format": EXPORT_FORMAT, "objective": self.name, **EXPORT_DEFAULTS[self.architecture],
                "scoring": self.scoring, "mode_token": None, "heads": {}, "seq_len": seq_len,
                "scoring_args": self.scoring_args(seq_len)}

    def export_heads(self, module: torch.nn.Module) -> dict[str, ExtraWeights]:
        """Modules of the trained `module` kept beside the exported model, by name (saved as
        `<name>.safetensors`); none by default."""
        return {}

    def export(self, module: torch.nn.Module, seq_len: int) -> Export:
        """The exported model with `harness_export` set on its config, and its extra files."""
        model = self.export_model(module)
        heads = self.export_heads(module)
        usage = self.export_usage(seq_len)
        usage["heads"] = {name: {"file": f"{name}.safetensors", **head.description} for name, head in heads.items()}
        model.config.harness_export = usage
        return Export(model, {f"{name}.safetensors": head.tensors for name, head in heads.items()})


class ExtraWeights(NamedTuple):
    """A module trained with the exported model and saved beside it (`Objective.export_heads`)."""

    tensors: dict[str, torch.Tensor]  # its state dict, saved as safetensors
    description: dict  # what it reads and what its outputs mean, under harness_export["heads"]


class Export(NamedTuple):
    """What the trainer saves (`Objective.export`): the transformers model, whose config carries
    `harness_export`, and each extra module's tensors by the file name they go to."""

    model: torch.nn.Module
    files: dict[str, dict[str, torch.Tensor]]


def check_batch(batch: dict, name: str) -> None:
    """The batch contract, checked once by the trainer: required keys, and only known ones."""
    missing = set(BATCH_KEYS) - set(batch)
    unknown = set(batch) - set(BATCH_KEYS) - set(OPTIONAL_BATCH_KEYS)
    if missing or unknown:
        raise ValueError(f"objective {name}: batch lacks {sorted(missing)} and has unknown keys "
                         f"{sorted(unknown)} (contract: {BATCH_KEYS} plus {OPTIONAL_BATCH_KEYS})")


def token_cross_entropy(logits: torch.Tensor, labels: torch.Tensor, *, label_smoothing: float = 0.0,
                        z_loss: float = 0.0):
    """Mean cross-entropy over labelled positions, plus accuracy and the count of positions
    (0-d tensors).

    With `z_loss`, adds z_loss * mean(logsumexp(logits)^2) over the same positions.
    """
    logits = logits.reshape(-1, logits.size(-1)).float()
    labels = labels.reshape(-1)
    keep = labels != IGNORE_INDEX
    loss = F.cross_entropy(logits, labels, ignore_index=IGNORE_INDEX, label_smoothing=label_smoothing)
    if z_loss:
        loss = loss + z_loss * torch.logsumexp(logits[keep], dim=-1).pow(2).mean()
    accuracy = (logits.argmax(-1)[keep] == labels[keep]).float().mean()
    return loss, {"accuracy": accuracy, "predicted": keep.sum()}


def cross_entropy(logits: torch.Tensor, labels: torch.Tensor, config: ObjectiveConfig):
    """token_cross_entropy with the options of `config` (a CrossEntropyConfig), if any."""
    return token_cross_entropy(logits, labels, label_smoothing=getattr(config, "label_smoothing", 0.0),
                               z_loss=getattr(config, "z_loss", 0.0))
