"""Mesh G-buffers of a posed head: the per-pixel surface attributes every model family uses.

DiffusionAvatars conditions on canonical coordinates, depth and normals; the synthetic head
renderer shades albedo (looked up by UV) with the normals. All come from one rasterization.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from onehead.head.geometry import vertex_normals
from onehead.render.rasterize import Fragments, interpolate, rasterize_mesh


@dataclass
class GBuffers:
    """Per-pixel surface attributes, channels first; zeros on the background."""

    fragments: Fragments
    mask: torch.Tensor  # (B, 1, H, W) 1 where the head covers the pixel
    depth: torch.Tensor  # (B, 1, H, W) camera z in metres
    normals: torch.Tensor  # (B, 3, H, W) unit normals in camera coordinates (OpenCV axes)
    canonical: torch.Tensor  # (B, 3, H, W) the surface point in the head model's template space
    uv: torch.Tensor | None  # (B, 2, H, W) texture coordinates in [0, 1], v up; None without a UV layout


def render_gbuffers(head, vertices: torch.Tensor, K: torch.Tensor, world_to_cam: torch.Tensor,
                    height: int, width: int, backend: str = "auto") -> GBuffers:
    """Rasterize posed head-model vertices (B, V, 3) and interpolate the G-buffers."""
    faces = head.faces
    fragments = rasterize_mesh(vertices, faces, K, world_to_cam, height, width, backend=backend)
    batch = vertices.shape[0]
    rotation = world_to_cam[..., :3, :3].expand(batch, 3, 3)
    normals_cam = vertex_normals(vertices, faces) @ rotation.transpose(-1, -2)
    attributes = [normals_cam, head.v_template.expand(batch, -1, -1)]
    normals, canonical = interpolate(fragments, faces, torch.cat(attributes, -1)).split(3, -1)
    normals = torch.nn.functional.normalize(normals, dim=-1)
    uv = None
    if head.uv_coords is not None:
        uv_coords = head.uv_coords.to(vertices)
        uv = interpolate(fragments, head.uv_faces.to(faces.device), uv_coords)
    mask = fragments.mask.unsqueeze(1).to(vertices.dtype)
    first = lambda x: x.permute(0, 3, 1, 2) * mask  # noqa: E731  (B, H, W, C) -> (B, C, H, W)
    return GBuffers(fragments=fragments, mask=mask, depth=fragments.depth.unsqueeze(1) * mask,
                    normals=first(normals), canonical=first(canonical),
                    uv=None if uv is None else first(uv))
