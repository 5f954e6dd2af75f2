"""The floors every learned model must beat, run in the same evaluation as the models.

Both take what every one-shot method takes (onehead.pipelines.reenactment): a prepared reference
(image and tracking at the output size) and the motion to render (a Tracking at the output size).

- copy the reference: every output frame is the reference image.
- mesh warp: the reference warped by the head model's motion (onehead.render.warp). Points
  hidden in the reference, and the background that the head uncovers, are filled by inpainting
  (OpenCV Telea).
"""

from __future__ import annotations

import torch

from onehead.pipelines.reenactment import Motion, Reference
from onehead.render.warp import fill_warp, warp_reference


def copy_reference(reference: Reference, motion: Motion) -> torch.Tensor:
    """(T, 3, S, S) in [0, 1]: the reference, once per frame."""
    image = torch.from_numpy(reference.image).permute(2, 0, 1).float() / 255
    return image[None].expand(motion.tracking.num_frames, -1, -1, -1).clone()


def mesh_warp(reference: Reference, motion: Motion, head, inpaint_radius: int = 3) -> torch.Tensor:
    """(T, 3, S, S) in [0, 1]: the reference warped by the head model's motion, holes inpainted
    (onehead.render.warp.fill_warp)."""
    image = torch.from_numpy(reference.image).permute(2, 0, 1).float()[None] / 255
    with torch.no_grad():
        warp = warp_reference(image, head.faces, _vertices(head, reference.tracking),
                              torch.as_tensor(reference.tracking.K[0]),
                              torch.as_tensor(reference.tracking.world_to_cam[0]), _vertices(head, motion.tracking),
                              torch.as_tensor(motion.tracking.K), torch.as_tensor(motion.tracking.world_to_cam))
    return fill_warp(image, warp, inpaint_radius)


def _vertices(head, tracking) -> torch.Tensor:
    params = {k: torch.as_tensor(v) for k, v in tracking.head_params().items()}
    return head(**params).vertices
