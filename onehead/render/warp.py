"""Warp a reference image by the head model's motion.

Each output pixel the head covers takes the same surface point of the head model in the reference
(same face, same barycentric weights, the reference's pose and camera) and looks up the
reference's colour there. A point is visible when nothing nearer hides it in the reference.
`fill_warp` completes a warp into a whole frame: the reference's background with its head region
inpainted, the warped head over it, and the head pixels the reference does not see inpainted
(OpenCV Telea). That frame is the mesh-warp baseline (onehead.evaluation.baselines) and the base
that a warp-correcting Animator corrects (GaussianDiffusionConfig.correct_warp).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from onehead.camera import project
from onehead.pixels import frames_to_uint8
from onehead.render.rasterize import interpolate, rasterize_mesh


@dataclass
class Warp:
    image: torch.Tensor  # (N, 3, H, W) the reference's colours where visible, 0 elsewhere
    visible: torch.Tensor  # (N, 1, H, W) 1 where the head covers the pixel and the reference sees it
    covered: torch.Tensor  # (N, 1, H, W) 1 where the head covers the pixel
    reference_covered: torch.Tensor  # (N, 1, H, W) 1 where the head covers the reference


def warp_reference(reference: torch.Tensor, faces: torch.Tensor, reference_vertices: torch.Tensor,
                   reference_K: torch.Tensor, reference_world_to_cam: torch.Tensor, vertices: torch.Tensor,
                   K: torch.Tensor, world_to_cam: torch.Tensor, depth_tolerance: float = 0.01) -> Warp:
    """reference (1 or N, 3, H, W) with its posed mesh (1 or N, V, 3) and camera ((3, 3) and (4, 4),
    or batched like the mesh); the output mesh (N, V, 3) and camera. A single reference is rasterized
    once and shared by the N outputs."""
    height, width = reference.shape[-2:]
    count = vertices.shape[0]
    with torch.no_grad():
        seen = rasterize_mesh(reference_vertices, faces, reference_K, reference_world_to_cam, height, width)
        fragments = rasterize_mesh(vertices, faces, K, world_to_cam, height, width)
        shared = reference_vertices if reference_vertices.shape[0] == count else reference_vertices[0]
        points = interpolate(fragments, faces, shared)  # (N, H, W, 3) on the reference's mesh
        pixels, depth = project(points.flatten(1, 2), reference_K, reference_world_to_cam)
        grid = torch.stack([(pixels[..., 0] + 0.5) / width, (pixels[..., 1] + 0.5) / height], -1) * 2 - 1
        grid = grid.view(-1, height, width, 2).to(reference.dtype)  # pixel centres at integers (onehead.camera)
        colours = F.grid_sample(reference.expand(count, -1, -1, -1), grid, mode="bilinear", padding_mode="border",
                                align_corners=False)
        seen_depth = F.grid_sample(seen.depth[:, None].to(reference.dtype).expand(count, -1, -1, -1), grid,
                                   mode="nearest", padding_mode="zeros", align_corners=False)
        covered = fragments.mask[:, None].to(reference.dtype)
        visible = covered * (seen_depth > 0) * (depth.view_as(seen_depth) <= seen_depth * (1 + depth_tolerance))
        reference_covered = seen.mask[:, None].to(reference.dtype).expand(count, -1, -1, -1)
        return Warp(colours * visible, visible, covered, reference_covered)


def fill_warp(reference: torch.Tensor, warp: Warp, inpaint_radius: int = 3) -> torch.Tensor:
    """The whole frames (N, 3, H, W) in [0, 1] of a warp of `reference` (1 or N, 3, H, W) in [0, 1]:
    outside the head, the reference with its own head region inpainted; on the head, the warped
    reference, with the pixels the reference does not see inpainted. 8-bit, like the images."""
    import cv2

    references = frames_to_uint8(reference)
    reference_covered = warp.reference_covered[:, 0].cpu().numpy() > 0
    covered = warp.covered[:, 0].cpu().numpy() > 0
    holes = covered & (warp.visible[:, 0].cpu().numpy() == 0)
    warped = frames_to_uint8(warp.image)
    shared = len(references) == 1  # one reference: its background is inpainted once
    background = _inpaint(references[0], reference_covered[0], inpaint_radius) if shared else None
    out = []
    for i in range(len(warped)):
        frame = (background if shared else _inpaint(references[i], reference_covered[i], inpaint_radius)).copy()
        frame[covered[i]] = warped[i][covered[i]]
        out.append(_inpaint(frame, holes[i], inpaint_radius))
    frames = torch.from_numpy(np.stack(out)).permute(0, 3, 1, 2).float() / 255
    return frames.to(warp.image.device)


def _inpaint(image: np.ndarray, hole: np.ndarray, radius: int) -> np.ndarray:
    import cv2

    if not hole.any():
        return image.copy()
    grown = cv2.dilate(hole.astype(np.uint8), np.ones((3, 3), np.uint8))
    return cv2.inpaint(np.ascontiguousarray(image), grown, radius, cv2.INPAINT_TELEA)
