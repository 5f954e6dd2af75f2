"""The one-shot protocol: one reference portrait, driven by the motion of another video.

    from onehead import Animator
    animator = Animator.from_pretrained()            # the embedded default, or from_pretrained("DIR")
    result = animator.animate("portrait.jpg", "talking.mp4")      # AnimationResult
    frames = animator.reenact(reference, motion).frames          # prepared inputs (onehead.pipelines.reenactment)

`Animator.from_pretrained(dir)` returns the family named by the `kind` in the folder's config
(onehead.pipelines.families). A family subclasses Animator, holds its weights in `model` (one
nn.Module with `head`, `config.resolution` and `device`: onehead.pipelines.holder gives the
pipeline those) and implements `reenact`, `save_pretrained` and `from_pretrained`;
`animate` is shared. tests/test_families.py runs one contract test for every registered family.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

import numpy as np
import torch

from onehead.errors import CheckpointError
from onehead.pipelines.holder import ModelHolder


@dataclass
class Reenactment:
    frames: torch.Tensor  # (T, 3, S, S) in [0, 1], on the CPU
    control_maps: torch.Tensor | None = None  # (T, C, s, s) what conditioned the frames, when there is such a signal


@dataclass
class AnimationResult:
    frames: torch.Tensor  # (T, 3, S, S) in [0, 1]
    control_maps: torch.Tensor | None  # (T, C, s, s) the family's control signal (its own size), or None
    tracking: object  # onehead.data.tracking_file.Tracking of the rendered motion (output camera)
    reference: torch.Tensor  # (3, S, S) the reference as the model saw it (cropped, resized)
    driving_frames: np.ndarray | None = None  # (T, H, W, 3) uint8 when the driving input was a video
    reference_tracking: object = None  # Tracking of `reference` (one frame, at its camera)

    def mesh_warp(self, head) -> torch.Tensor:
        """The floor to compare with: the reference warped by the same motion, holes inpainted
        (onehead.render.warp.fill_warp), (T, 3, S, S) in [0, 1]."""
        from onehead.pipelines.reenactment import Motion, Reference, mesh_warp
        from onehead.pixels import frames_to_uint8

        reference = Reference(frames_to_uint8(self.reference[None])[0], self.reference_tracking)
        return mesh_warp(reference, Motion(self.tracking, None), head)


class Animator(ModelHolder):
    """Base class and entry point of every one-shot family."""

    kind: ClassVar[str] = ""
    model: torch.nn.Module  # every weight of the family lives in this module

    # ------------------------------------------------------------------ loading
    @classmethod
    def from_pretrained(cls, directory: str | os.PathLike | None = None, **kwargs) -> "Animator":
        """A model folder of any one-shot family (None: the embedded default model).
        Keyword arguments go to the family's loader (e.g. `steps=4`, `head=...`)."""
        from onehead.pipelines.families import default_model_dir, read_model_config

        if directory is None:
            directory = default_model_dir()
        family, _ = read_model_config(directory, "one-shot")
        target = family.load_class()
        if cls is not Animator and not issubclass(target, cls):
            raise CheckpointError(f"{directory}: a {family.kind} model, not a {cls.kind or cls.__name__}")
        if target.from_pretrained.__func__ is Animator.from_pretrained.__func__:
            raise NotImplementedError(f"{target.__name__} must implement from_pretrained")
        return target.from_pretrained(directory, **kwargs)

    def save_pretrained(self, directory: str | os.PathLike) -> Path:
        raise NotImplementedError

    # ------------------------------------------------------------------ what a family provides
    def reenact(self, reference, motion, *, progress: bool = False, **settings) -> Reenactment:
        """A prepared Reference and Motion (onehead.pipelines.reenactment) -> Reenactment.
        `settings` override the family's inference settings for this call only."""
        raise NotImplementedError

    def describe(self) -> dict:
        """What exactly runs (kind and inference settings), for reports."""
        return {"kind": self.kind}

    # ------------------------------------------------------------------ shared
    def animate(self, reference, driving, *, camera=None, max_frames: int | None = None, reference_tracking=None,
                progress: bool = True, **settings) -> AnimationResult:
        """Reenact one reference portrait with the motion of a driving video.

        reference: image path, PIL image, array or tensor. driving: video path, folder of frames or
        tracking npz. Cross-identity: the shape comes from the reference; expression, jaw, eyes and
        head motion from the driving frames. camera: None renders at the reference's camera with
        the driving head motion applied relative to its first frame; "driving" uses the driving
        frames' own cameras and absolute poses (for data in onehead's format, such as synthetic
        ground truth); a (K (3, 3), world_to_cam (4, 4)) pair at the output resolution renders a
        novel view. reference_tracking: a tracking npz whose first frame describes the reference
        (for synthetic references), instead of tracking the image. settings: the family's
        inference settings for this call (e.g. steps=4, seed=1).
        """
        from onehead.pipelines.reenactment import driving_motion, prepare_reference

        ref = prepare_reference(reference, self.head, self.resolution, reference_tracking, progress)
        motion = driving_motion(driving, ref, self.head, self.resolution, camera=camera,
                                max_frames=max_frames, progress=progress)
        out = self.reenact(ref, motion, progress=progress, **settings)
        image = torch.from_numpy(ref.image).permute(2, 0, 1).float() / 255
        return AnimationResult(frames=out.frames, control_maps=out.control_maps, tracking=motion.tracking,
                               reference=image, driving_frames=motion.frames, reference_tracking=ref.tracking)
