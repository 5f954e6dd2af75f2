"""The tri-plane feed-forward family (paper 004): the networks and their configs."""

from onehead.models.triplane.config import (CONFIG_FILE, KIND, PRESETS, WEIGHTS_FILE, TriplaneConfig,
                                            TriplaneSettings, split_saved_config)
from onehead.models.triplane.model import SourceCache, TriplaneModel, TriplaneOutput
from onehead.models.triplane.parts import splat_triplane

__all__ = ["CONFIG_FILE", "KIND", "PRESETS", "WEIGHTS_FILE", "TriplaneConfig", "TriplaneSettings",
           "split_saved_config", "SourceCache", "TriplaneModel", "TriplaneOutput", "splat_triplane"]
