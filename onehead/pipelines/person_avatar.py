"""The person-specific protocol: an avatar trained on one person's video, rendered with no reference image.

    from onehead import PersonAvatar
    avatar = PersonAvatar.from_pretrained("my_avatar/")      # the family named by the folder's kind
    frames = avatar.render(motion, camera)                    # (T, 3, H, W) in [0, 1]

A family subclasses PersonAvatar, registers its kind with protocol "person" in
onehead.pipelines.families, holds its weights in `model` (onehead.pipelines.holder), and implements
`render`, `save_pretrained` and `from_pretrained`.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import ClassVar

import torch

from onehead.errors import CheckpointError
from onehead.pipelines.holder import ModelHolder


class PersonAvatar(ModelHolder):
    kind: ClassVar[str] = ""

    @classmethod
    def from_pretrained(cls, directory: str | os.PathLike, **kwargs) -> "PersonAvatar":
        from onehead.pipelines.families import read_model_config

        family, _ = read_model_config(directory, "person")
        target = family.load_class()
        if target.from_pretrained.__func__ is PersonAvatar.from_pretrained.__func__:
            raise CheckpointError(f"{directory}: the {family.kind} family does not implement from_pretrained")
        return target.from_pretrained(directory, **kwargs)

    def save_pretrained(self, directory: str | os.PathLike) -> Path:
        raise NotImplementedError

    def render(self, motion, camera=None, **settings) -> torch.Tensor:
        """A Motion (onehead.pipelines.reenactment; the person's own shape) at `camera` (None: the
        motion's cameras, or (K, world_to_cam)) -> frames (T, 3, H, W) in [0, 1]."""
        raise NotImplementedError
