"""The floors every learned model must beat, run in the same evaluation as the models.

Both take what every one-shot method takes (onehead.pipelines.reenactment): a prepared reference
(image and tracking at the output size) and the motion to render (a Tracking at the output size).

- copy the reference: every output frame is the reference image.
- mesh warp: the reference warped by the head model's motion (onehead.render.warp). Points
  hidden in the reference, and the background that the head uncovers, are filled by inpainting
  (OpenCV Telea). It lives in onehead.pipelines.reenactment, beside the inputs it takes, so that
  pipelines can show it next to a model's output.
"""

from __future__ import annotations

import torch

from onehead.pipelines.reenactment import Motion, Reference, mesh_warp

__all__ = ["copy_reference", "mesh_warp"]


def copy_reference(reference: Reference, motion: Motion) -> torch.Tensor:
    """(T, 3, S, S) in [0, 1]: the reference, once per frame."""
    image = torch.from_numpy(reference.image).permute(2, 0, 1).float() / 255
    return image[None].expand(motion.tracking.num_frames, -1, -1, -1).clone()
