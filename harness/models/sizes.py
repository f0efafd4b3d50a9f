"""Named model sizes: the width and depth of the transformer block every objective shares.

Plain pydantic, no torch, so that a suite is validated without importing a model library.
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field


class ModelSize(BaseModel):
    """Width and depth of the shared transformer block."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    hidden: int = Field(gt=0, description="model width")
    layers: int = Field(gt=0, description="number of transformer layers")
    heads: int = Field(gt=0, description="attention heads per layer")
    intermediate: int = Field(gt=0, description="width of the MLP's hidden layer")


SIZES: dict[str, ModelSize] = {
    "tiny": ModelSize(hidden=64, layers=2, heads=2, intermediate=128),
    "mini": ModelSize(hidden=128, layers=4, heads=4, intermediate=256),
    "small": ModelSize(hidden=256, layers=6, heads=4, intermediate=512),
    "base": ModelSize(hidden=768, layers=12, heads=12, intermediate=1152),
    "large": ModelSize(hidden=1024, layers=24, heads=16, intermediate=2624),
}
