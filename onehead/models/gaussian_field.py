"""Learnable Gaussians anchored in a head model's UV space (paper 003, section 3.2).

Every valid texel of a (resolution x resolution) UV grid owns one isotropic Gaussian with a
learnable feature (C channels, squashed to [-1, 1] by tanh as in the paper), opacity and scale,
and optionally an offset along the normal of the triangle it sits on. Its position follows any posed mesh of the
head model: the texel's (face, barycentric) anchor interpolates the posed vertices, so the field
moves with shape, expression, jaw and pose, differentiably.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import nn

from onehead.render.rasterize import rasterize_uv
from onehead.render.splat import SplatResult, splat_features


@dataclass
class Gaussians:
    means: torch.Tensor  # (B, N, 3) world
    scales: torch.Tensor  # (B, N) isotropic standard deviation, world units
    opacities: torch.Tensor  # (B, N) in (0, 1)
    features: torch.Tensor  # (B, N, C) in [-1, 1]


class UVGaussianField(nn.Module):
    """Gaussians on the valid texels of a UV grid; `forward(vertices)` places them on a posed mesh."""

    def __init__(self, faces: torch.Tensor, uv_coords: torch.Tensor, uv_faces: torch.Tensor,
                 template: torch.Tensor, resolution: int = 128, channels: int = 8,
                 normal_offset: bool = False, init_opacity: float = 0.9):
        super().__init__()
        if resolution < 2 or channels < 1:
            raise ValueError(f"resolution >= 2 and channels >= 1 required, got {resolution}, {channels}")
        fragments = rasterize_uv(uv_coords.float(), uv_faces, resolution)
        valid = fragments.mask[0]
        if not valid.any():
            raise ValueError("the UV layout covers no texel at this resolution")
        rows, cols = torch.nonzero(valid, as_tuple=True)
        self.resolution = resolution
        self.channels = channels
        self.register_buffer("faces", faces.long().clone())
        self.register_buffer("texel_face", fragments.face_index[0, rows, cols])
        self.register_buffer("texel_bary", fragments.bary[0, rows, cols].float())
        self.register_buffer("texel_rows", rows)
        self.register_buffer("texel_cols", cols)
        count = len(rows)
        spacing = self._texel_spacing(template.float())
        self.features = nn.Parameter(self._smooth_init(template.float(), channels))
        self.opacity_logit = nn.Parameter(torch.full((count,), math.log(init_opacity / (1 - init_opacity))))
        self.log_scale = nn.Parameter(torch.full((count,), math.log(spacing)))
        self.normal_offset = nn.Parameter(torch.zeros(count)) if normal_offset else None

    @classmethod
    def from_head(cls, head, resolution: int = 128, channels: int = 8, **kwargs) -> "UVGaussianField":
        if head.uv_coords is None:
            raise ValueError("this head model has no UV layout (FLAME: add head_template.obj to the folder)")
        return cls(head.faces, head.uv_coords, head.uv_faces, head.v_template, resolution, channels, **kwargs)

    @property
    def num_gaussians(self) -> int:
        return self.texel_face.shape[0]

    def _texel_spacing(self, template: torch.Tensor) -> float:
        """Median distance between neighbouring texels' points on the template: the initial scale."""
        points = self.anchor(template[None])[0]
        grid = torch.full((self.resolution, self.resolution, 3), float("nan"))
        grid[self.texel_rows, self.texel_cols] = points
        gaps = torch.cat([(grid[1:] - grid[:-1]).norm(dim=-1).flatten(),
                          (grid[:, 1:] - grid[:, :-1]).norm(dim=-1).flatten()])
        gaps = gaps[torch.isfinite(gaps)]
        return float(gaps.median()) if len(gaps) else 1e-3

    def _smooth_init(self, template: torch.Tensor, channels: int) -> torch.Tensor:
        """Random Fourier features of the template position (wavelengths ~5-20 cm): neighbouring
        texels start alike and distant regions differ, so the control signal is informative from
        step 0 instead of noise."""
        points = self.anchor(template[None])[0]
        frequencies = torch.randn(3, channels) * (2 * math.pi / torch.empty(channels).uniform_(0.05, 0.2))
        phases = torch.rand(channels) * 2 * math.pi
        return 0.8 * torch.sin(points @ frequencies + phases)

    def anchor(self, vertices: torch.Tensor) -> torch.Tensor:
        """Texel points on a posed mesh: (B, V, 3) -> (B, N, 3)."""
        corners = vertices[:, self.faces[self.texel_face]]  # (B, N, 3 corners, 3)
        return (corners * self.texel_bary[None, :, :, None]).sum(2)

    def forward(self, vertices: torch.Tensor) -> Gaussians:
        """Place the Gaussians on posed vertices (B, V, 3)."""
        batch = vertices.shape[0]
        means = self.anchor(vertices)
        if self.normal_offset is not None:  # along the anchoring triangle's normal (always defined)
            corners = vertices[:, self.faces[self.texel_face]]
            normals = torch.cross(corners[:, :, 1] - corners[:, :, 0], corners[:, :, 2] - corners[:, :, 0], dim=-1)
            means = means + torch.nn.functional.normalize(normals, dim=-1) * self.normal_offset[None, :, None]
        expand = lambda p: p[None].expand(batch, *p.shape)  # noqa: E731
        return Gaussians(means=means, scales=expand(self.log_scale.exp()),
                         opacities=expand(torch.sigmoid(self.opacity_logit)),
                         features=expand(torch.tanh(self.features)))

    def splat(self, vertices: torch.Tensor, K: torch.Tensor, world_to_cam: torch.Tensor,
              height: int, width: int, backend: str = "auto") -> SplatResult:
        """The control signal: the field on posed vertices splatted at a camera, (B, C, H, W)."""
        g = self(vertices)
        return splat_features(g.means, g.scales, g.opacities, g.features, K, world_to_cam,
                              height, width, backend=backend)

    def feature_image(self) -> torch.Tensor:
        """The features laid out in UV space, (C, R, R), zeros off the layout (for looking at)."""
        image = torch.zeros(self.channels, self.resolution, self.resolution, device=self.features.device)
        image[:, self.texel_rows, self.texel_cols] = torch.tanh(self.features).T.detach()
        return image
