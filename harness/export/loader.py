"""Load a model the harness exported and score it as it was trained, from its folder alone.

Every RUN/model/ folder's config.json has a `harness_export` section, written at the end of
training from the objective's `export_usage` (objectives/base.py): the transformers Auto class
that loads the folder, whether its own code must run (`trust_remote_code`, the encoder-decoder
only), the attention pattern the model was trained with, UL2's mode token, and the extra modules
saved beside the model (`heads`: NSP/SOP's pair head). This module reads that section and
nothing of objectives/, so it scores exactly what a user who reads the config would:

    exported = load_exported("results/SUITE/RUN/model")
    exported.usage["use"]                               # how the model must be used, in words
    exported.loglikelihood(context_ids, continuation_ids)   # causal, prefix (UL2), encoder-decoder
    exported.pair_logits(input_ids, attention_mask)      # NSP/SOP: the pair head on [CLS], (B, 2)
    exported.replaced_probability(input_ids)            # ELECTRA: P(token was replaced), (B, T)

A prefix model's context is its prefix, read bidirectionally: query i may attend key j iff
j < prefix length or j <= i, the mode token (UL2's [S2S]) first, inside the prefix. With context
[a, b], continuation [c, d] and mode token [S2S]: tokens [[S2S], a, b, c, d], prefix length 3,
score log P(c | [S2S] a b) + log P(d | [S2S] a b, c).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import torch
import transformers
from safetensors.torch import load_file

from harness.errors import UserError
from harness.evaluate.weights import safetensors_weights

FORMAT = 1  # the `harness_export` format this loader reads


def read_usage(model_dir: Path) -> dict:
    """The `harness_export` section of a model folder's config.json."""
    path = Path(model_dir) / "config.json"
    if not path.is_file():
        raise UserError("no config.json: not a saved model folder", where=str(model_dir))
    usage = json.loads(path.read_text()).get("harness_export")
    if usage is None:
        raise UserError("config.json has no 'harness_export' section: the folder was not exported by this "
                        "harness (or by a version before it wrote one)", where=str(path))
    if usage.get("format") != FORMAT:
        raise UserError(f"harness_export.format is {usage.get('format')!r}; this loader reads format {FORMAT}",
                        where=str(path))
    return usage


@dataclass
class ExportedModel:
    """A loaded export: the transformers model, its tokenizer, its usage and its extra heads."""

    model: transformers.PreTrainedModel
    tokenizer: transformers.PreTrainedTokenizerBase
    usage: dict
    heads: dict[str, torch.nn.Module] = field(default_factory=dict)

    def token_id(self, token: str) -> int:
        return self.tokenizer.convert_tokens_to_ids(token)

    @torch.no_grad()
    def loglikelihood(self, context_ids: list[int], continuation_ids: list[int]) -> float:
        """Sum of log P(continuation token) after the context, scored as the model was trained;
        context and continuation are cut from the left to the training length (`seq_len`), the
        mode token kept first."""
        attention = self.usage["attention"]
        if attention == "encoder-decoder":
            return self._infill_loglikelihood(context_ids, continuation_ids)
        if attention not in ("causal", "prefix"):
            raise ValueError(f"a {attention} model defines no log-likelihood; use: {self.usage['use']}")
        if not context_ids:
            raise ValueError("an empty context: pass [EOS], which separated the training documents")
        mode = [self.token_id(self.usage["mode_token"])] if self.usage["mode_token"] else []
        tokens = mode + (context_ids + continuation_ids)[-(self.usage["seq_len"] - len(mode)):]
        prefix = max(len(tokens) - len(continuation_ids), 1)
        input_ids = torch.tensor([tokens], device=self.model.device)
        mask = prefix_mask(prefix, len(tokens)).to(self.model.device) if attention == "prefix" else None
        logprobs = self.model(input_ids=input_ids, attention_mask=mask).logits[0].float().log_softmax(-1)
        return logprobs[prefix - 1 : -1].gather(-1, input_ids[0, prefix:, None]).sum().item()

    def _infill_loglikelihood(self, context_ids: list[int], continuation_ids: list[int]) -> float:
        """T5's zero-shot scoring: the continuation as the span cut out at the sentinel."""
        config, length = self.model.config, self.usage["seq_len"]
        sentinel = self.token_id(self.usage["scoring_args"]["sentinel"])
        encoder = context_ids[max(len(context_ids) - (length - 2), 0):] + [sentinel, config.eos_token_id]
        targets = [sentinel] + continuation_ids[: length - 1]
        decoder = [config.decoder_start_token_id] + targets[:-1]
        device = self.model.device
        logits = self.model(input_ids=torch.tensor([encoder], device=device),
                            decoder_input_ids=torch.tensor([decoder], device=device)).logits[0]
        scored = logits[1:].float().log_softmax(-1)  # the sentinel itself is given, not scored
        return scored.gather(-1, torch.tensor(targets[1:], device=device)[:, None]).sum().item()

    @torch.no_grad()
    def pair_logits(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None) -> torch.Tensor:
        """NSP/SOP: the pair head's (B, 2) logits on the final hidden state of each row's first
        token ([CLS] A [SEP] B [SEP]); `usage["heads"]["pair_head"]["labels"]` names the classes."""
        if "pair_head" not in self.heads:
            raise ValueError(f"this {self.usage['objective']} export has no pair head")
        hidden = self.model.base_model(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state
        return self.heads["pair_head"](hidden[:, 0])

    @torch.no_grad()
    def replaced_probability(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None) -> torch.Tensor:
        """ELECTRA: (B, T) probability that each token was replaced, sigmoid of the one logit."""
        label = self.model.config.label2id.get("replaced")
        if self.usage["auto_class"] != "AutoModelForTokenClassification" or label is None:
            raise ValueError(f"this {self.usage['objective']} export is no replaced-token detector")
        return self.model(input_ids=input_ids, attention_mask=attention_mask).logits[..., label].sigmoid()


def prefix_mask(prefix_length: int, length: int) -> torch.Tensor:
    """(1, 1, L, L) bool, True where query i may attend key j: j < prefix length or j <= i.

    >>> prefix_mask(2, 3)[0, 0].int().tolist()
    [[1, 1, 0], [1, 1, 0], [1, 1, 1]]
    """
    positions = torch.arange(length)
    return ((positions[None, :] <= positions[:, None]) | (positions[None, :] < prefix_length))[None, None]


def load_exported(model_dir: str | Path, dtype: torch.dtype = torch.float32) -> ExportedModel:
    """The export in `model_dir`, loaded as its `harness_export` says (eval mode). Only
    safetensors weights are read; the encoder-decoder runs the code saved in its folder."""
    folder = Path(model_dir)
    safetensors_weights(folder)  # a pickled weights file there is refused before anything loads
    usage = read_usage(folder)
    auto_class = getattr(transformers, usage["auto_class"])
    # sdpa reads a boolean 4-D mask as given: the prefix rule (eager attention would add it)
    options = {"attn_implementation": "sdpa"} if usage["attention"] == "prefix" else {}
    model = auto_class.from_pretrained(folder, dtype=dtype, trust_remote_code=usage["trust_remote_code"], **options)
    heads = {name: _load_head(folder, head, dtype) for name, head in usage["heads"].items()}
    return ExportedModel(model.eval(), transformers.AutoTokenizer.from_pretrained(folder), usage, heads)


def _load_head(folder: Path, head: dict, dtype: torch.dtype) -> torch.nn.Module:
    """A head saved beside the model: a torch.nn.Linear from its safetensors file."""
    if head.get("module") != "torch.nn.Linear":
        raise UserError(f"a head of module {head.get('module')!r}: this loader reads torch.nn.Linear heads",
                        where=str(folder / "config.json"))
    linear = torch.nn.Linear(head["in_features"], head["out_features"])
    linear.load_state_dict(load_file(folder / head["file"]))
    return linear.to(dtype).eval()
