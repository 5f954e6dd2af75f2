"""The floors every learned model must beat, run in the same evaluation as the models.

Both take what every one-shot method takes (onehead.pipelines.reenactment): a prepared reference
(image and tracking at the output size) and the motion to render (a Tracking at the output size).

- copy the reference: every output frame is the reference image.
- mesh warp: the reference warped by the head model's motion (onehead.render.warp). Points
  hidden in the reference, and the background that the head uncovers, are filled by inpainting
  (OpenCV Telea).
"""

from __future__ import annotations

import cv2
import numpy as np
import torch

from onehead.pixels import frames_to_uint8
from onehead.pipelines.reenactment import Motion, Reference
from onehead.render.warp import warp_reference


def copy_reference(reference: Reference, motion: Motion) -> torch.Tensor:
    """(T, 3, S, S) in [0, 1]: the reference, once per frame."""
    image = torch.from_numpy(reference.image).permute(2, 0, 1).float() / 255
    return image[None].expand(motion.tracking.num_frames, -1, -1, -1).clone()


def mesh_warp(reference: Reference, motion: Motion, head, inpaint_radius: int = 3) -> torch.Tensor:
    """(T, 3, S, S) in [0, 1]: the reference warped by the head model's motion (onehead.render.warp)."""
    frames = motion.tracking.num_frames
    image = torch.from_numpy(reference.image).permute(2, 0, 1).float()[None] / 255
    with torch.no_grad():
        ref_vertices = _vertices(head, reference.tracking)
        warp = warp_reference(image, head.faces, ref_vertices, torch.as_tensor(reference.tracking.K[0]),
                              torch.as_tensor(reference.tracking.world_to_cam[0]), _vertices(head, motion.tracking),
                              torch.as_tensor(motion.tracking.K), torch.as_tensor(motion.tracking.world_to_cam))
    background = _inpaint(reference.image, warp.reference_covered[0, 0].numpy() > 0, inpaint_radius)
    warped = frames_to_uint8(warp.image)
    out = []
    for t in range(frames):
        frame = background.copy()
        covered = warp.covered[t, 0].numpy() > 0
        frame[covered] = warped[t][covered]
        out.append(_inpaint(frame, covered & (warp.visible[t, 0].numpy() == 0), inpaint_radius))
    return torch.from_numpy(np.stack(out)).permute(0, 3, 1, 2).float() / 255


def _vertices(head, tracking) -> torch.Tensor:
    params = {k: torch.as_tensor(v) for k, v in tracking.head_params().items()}
    return head(**params).vertices


def _inpaint(image: np.ndarray, hole: np.ndarray, radius: int) -> np.ndarray:
    if not hole.any():
        return image.copy()
    grown = cv2.dilate(hole.astype(np.uint8), np.ones((3, 3), np.uint8))
    return cv2.inpaint(np.ascontiguousarray(image), grown, radius, cv2.INPAINT_TELEA)
