"""Gaussian-embedding diffusion (paper 003): the networks and their configs."""

from onehead.models.gaussian_diffusion.config import (
    KIND,
    PRESETS,
    GaussianDiffusionConfig,
    InferenceSettings,
    split_saved_config,
)
from onehead.models.gaussian_diffusion.model import GaussianDiffusionModel, ReferenceInputs, WarpBase, flatten_params

__all__ = ["KIND", "PRESETS", "GaussianDiffusionConfig", "InferenceSettings", "split_saved_config",
           "GaussianDiffusionModel", "ReferenceInputs", "WarpBase", "flatten_params"]
