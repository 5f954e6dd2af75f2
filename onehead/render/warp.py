"""Warp a reference image by the head model's motion.

Each output pixel the head covers takes the same surface point of the head model in the reference
(same face, same barycentric weights, the reference's pose and camera) and looks up the
reference's colour there. A point is visible when nothing nearer hides it in the reference.
Used by the mesh-warp baseline (onehead.evaluation.baselines) and, optionally, as extra control
for the Animator (AnimatorConfig.warp_guidance).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from onehead.camera import project
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
    """reference (N, 3, H, W) with its posed mesh (N, V, 3) and camera; the output mesh (N, V, 3)
    and camera. Every tensor has the same N (expand a single reference to the output's N)."""
    height, width = reference.shape[-2:]
    with torch.no_grad():
        seen = rasterize_mesh(reference_vertices, faces, reference_K, reference_world_to_cam, height, width)
        fragments = rasterize_mesh(vertices, faces, K, world_to_cam, height, width)
        points = interpolate(fragments, faces, reference_vertices)  # (N, H, W, 3)
        pixels, depth = project(points.flatten(1, 2), reference_K, reference_world_to_cam)
        grid = torch.stack([(pixels[..., 0] + 0.5) / width, (pixels[..., 1] + 0.5) / height], -1) * 2 - 1
        grid = grid.view(-1, height, width, 2).to(reference.dtype)  # pixel centres at integers (onehead.camera)
        colours = F.grid_sample(reference, grid, mode="bilinear", padding_mode="border", align_corners=False)
        seen_depth = F.grid_sample(seen.depth[:, None].to(reference.dtype), grid, mode="nearest",
                                   padding_mode="zeros", align_corners=False)
        covered = fragments.mask[:, None].to(reference.dtype)
        visible = covered * (seen_depth > 0) * (depth.view_as(seen_depth) <= seen_depth * (1 + depth_tolerance))
        return Warp(colours * visible, visible, covered, seen.mask[:, None].to(reference.dtype))
