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
