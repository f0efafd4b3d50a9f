"""Every objective's config: plain pydantic, no torch, so that a suite is validated without it.

Each objective class points at its own (`Config = ...`), and `objectives.registry.config(name)`
returns it without importing the objective. Unknown keys are errors; each field's description
doubles as help text.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator


class ObjectiveConfig(BaseModel):
    """Base of every objective's own config: unknown keys are errors."""

    model_config = ConfigDict(extra="forbid", frozen=True)


class CrossEntropyConfig(ObjectiveConfig):
    """Options of every objective whose loss is a token cross-entropy."""

    label_smoothing: float = Field(0.0, ge=0, lt=1, description="mass spread uniformly over the vocabulary")
    z_loss: float = Field(0.0, ge=0, description="weight of log(Z)^2, which keeps logits from drifting (PaLM)")


class CausalLMConfig(CrossEntropyConfig):
    pass


class PrefixLMConfig(CrossEntropyConfig):
    pass


class MultiTokenConfig(CrossEntropyConfig):
    k: int = Field(4, ge=1, le=16, description="tokens predicted at each position (output heads)")


# --- masked LM and the objectives that mask as it does -------------------------------------------


class MaskedLMConfig(CrossEntropyConfig):
    mask_rate: float = Field(0.15, gt=0, lt=1, description="share of positions selected for prediction")
    mask_fraction: float = Field(0.8, ge=0, le=1, description="selected positions replaced by [MASK]")
    random_fraction: float = Field(0.1, ge=0, le=1, description="selected positions replaced by a random token")

    @property
    def split(self) -> tuple[float, float, float]:
        """Shares of the selected positions made [MASK], a random token, and left unchanged."""
        keep = 1.0 - self.mask_fraction - self.random_fraction
        return self.mask_fraction, self.random_fraction, keep


class SegmentPairConfig(MaskedLMConfig):
    """BERT masking of the pair row; the options of objectives.mlm."""


class NextSentenceConfig(SegmentPairConfig):
    pass


class SentenceOrderConfig(SegmentPairConfig):
    pass


class ElectraConfig(CrossEntropyConfig):
    """label_smoothing and z_loss apply to the generator's MLM loss."""

    mask_rate: float = Field(0.15, gt=0, lt=1, description="share of positions the generator fills")
    generator_fraction: float = Field(0.25, gt=0, le=1,
                                      description="generator width / discriminator width (paper: 1/4 to 1/3)")
    disc_weight: float = Field(50.0, gt=0, description="weight of the discriminator's loss (lambda)")


# --- span noise ------------------------------------------------------------------------------------


class SpanCorruptionConfig(CrossEntropyConfig):
    noise_density: float = Field(0.15, gt=0, lt=1, description="share of the block's tokens in noise spans")
    mean_span_length: float = Field(3.0, ge=1, description="mean length of a noise span, in tokens")


class Denoiser(BaseModel):
    """One denoiser of the UL2 mixture: a paradigm, its span noise (R and X only) and its weight."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    paradigm: Literal["R", "S", "X"] = Field(description="R regular, S sequential (prefix LM), X extreme")
    mean_span: float | None = Field(None, ge=1, description="mean noise span length (R and X)")
    density: float | None = Field(None, gt=0, lt=1, description="share of raw tokens corrupted (R and X)")
    weight: float = Field(1.0, gt=0, description="relative frequency in the mixture")

    @model_validator(mode="after")
    def _noise_matches_paradigm(self):
        spans = self.mean_span is not None and self.density is not None
        if self.paradigm == "S" and (self.mean_span is not None or self.density is not None):
            raise ValueError("an S denoiser takes no mean_span or density")
        if self.paradigm != "S" and not spans:
            raise ValueError(f"an {self.paradigm} denoiser needs mean_span and density")
        return self


def _span(paradigm: str, mean_span: float, density: float) -> Denoiser:
    return Denoiser(paradigm=paradigm, mean_span=mean_span, density=density)


PAPER_DENOISERS = (
    _span("R", 3, 0.15), _span("R", 8, 0.15),
    Denoiser(paradigm="S"),
    _span("X", 3, 0.5), _span("X", 8, 0.5), _span("X", 64, 0.15), _span("X", 64, 0.5),
)


class UL2Config(CrossEntropyConfig):
    denoisers: tuple[Denoiser, ...] = Field(PAPER_DENOISERS, min_length=1,
                                            description="the mixture; each row draws one by weight")
