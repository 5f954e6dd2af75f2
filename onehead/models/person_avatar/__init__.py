"""Person-specific DiffusionAvatars (paper 000): the networks and their configs."""

from onehead.models.person_avatar.config import (
    CONFIG_FILE,
    KIND,
    PRESETS,
    WEIGHTS_FILE,
    AvatarSettings,
    PersonAvatarConfig,
)
from onehead.models.person_avatar.model import PersonAvatarModel

__all__ = ["CONFIG_FILE", "KIND", "PRESETS", "WEIGHTS_FILE", "AvatarSettings", "PersonAvatarConfig",
           "PersonAvatarModel"]
