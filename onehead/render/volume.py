"""Volume rendering of a density + feature field (NeRF / EG3D), pure torch and differentiable.

    out = render_volume(field, K, world_to_cam, H, W, near=0.5, far=1.5, coarse=48, fine=48)
    out.features  # (B, C, H, W); out.depth, out.opacity: (B, 1, H, W)
    field = lambda p, d: split(decoder(triplane_features(planes, p, bounds=1.0)))

Pieces, each tested alone: `camera_rays` -> `stratified_samples` (coarse) -> field -> `composite`
-> `importance_samples` (fine, from the coarse weights) -> field -> `composite` over the merged,
sorted coarse + fine samples.

Conventions:
- Rays follow onehead.camera: pixel (row i, col j) is centred at the point (x=j, y=i) that K
  maps to, as in the mesh rasterizer (no half-pixel shift). Directions are unit vectors, so
  sample depths, `near`, `far` and the returned `depth` are distances along the ray, not camera z.
- Quadrature: sample i stands for [t_i, t_{i+1}], alpha_i = 1 - exp(-sigma_i delta_i), weight
  w_i = alpha_i exp(-sum_{j<i} sigma_j delta_j). `render_volume` ends the last interval at `far`,
  so nothing behind `far` is seen; `composite`'s default extends it to infinity (NeRF's 1e10).
- Importance sampling does not backpropagate (sample positions are detached), as in NeRF/EG3D.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from onehead.errors import ConfigError

Field = Callable[[torch.Tensor, torch.Tensor], "tuple[torch.Tensor, torch.Tensor]"]


@dataclass
class VolumeOutput:
    """Composited rays. `composite` returns the per-ray layout (..., .); `render_volume` the image
    layout given in brackets, with rays in row-major pixel order."""

    features: torch.Tensor  # (..., C) [(B, C, H, W)]: sum_i w_i f_i, no background added
    depth: torch.Tensor  # (..., ) [(B, 1, H, W)]: sum_i w_i t_i / max(opacity, 1e-10); 0 on empty rays
    opacity: torch.Tensor  # (..., ) [(B, 1, H, W)]: sum_i w_i, in [0, 1]
    transmittance: torch.Tensor  # (..., ) [(B, 1, H, W)]: light left after the last sample
    weights: torch.Tensor  # (..., N) [(B, H, W, N)]: w_i
    samples: torch.Tensor  # (..., N) [(B, H, W, N)]: the sample depths t_i, sorted


# ---------------------------------------------------------------------------------- public API
def render_volume(field: Field, K: torch.Tensor, world_to_cam: torch.Tensor, height: int, width: int,
                  near: float | torch.Tensor, far: float | torch.Tensor, *, coarse: int = 48, fine: int = 48,
                  generator: torch.Generator | None = None, jitter: bool = True,
                  chunk: int | None = None) -> VolumeOutput:
    """Render B images of a field seen by OpenCV cameras (K (3, 3)/(B, 3, 3), world_to_cam (4, 4)/(B, 4, 4)).

    field(points (B, P, 3), directions (B, P, 3)) -> (density (B, P) >= 0, features (B, P, C)), world
    frame. near, far: ray distances, floats or tensors (B,) per camera or (B, H, W) per pixel.
    coarse >= 1 stratified samples per ray, then fine >= 0 importance samples (0: coarse pass only);
    the coarse evaluations are reused in the final composite, so it has coarse + fine samples.
    jitter=False makes both passes deterministic. chunk: rays per field call (bounds memory).
    """
    if coarse < 1 or fine < 0:
        raise ConfigError(f"volume: need coarse >= 1 and fine >= 0 samples, got coarse={coarse}, fine={fine}")
    if chunk is not None and chunk < 1:
        raise ConfigError(f"volume: chunk must be a positive number of rays, got {chunk}")
    origins, directions = camera_rays(K, world_to_cam, height, width)
    B, R = origins.shape[:2]
    near, far = (_per_ray(v, name, B, height, width, origins) for v, name in ((near, "near"), (far, "far")))
    if (near < 0).any() or (near >= far).any():
        raise ConfigError("volume: need 0 <= near < far on every ray")
    step = R if chunk is None else chunk
    parts = [_render_rays(field, origins[:, s:s + step], directions[:, s:s + step], near[:, s:s + step],
                          far[:, s:s + step], coarse, fine, generator, jitter) for s in range(0, R, step)]
    out = {name: torch.cat([getattr(p, name) for p in parts], 1) for name in VolumeOutput.__dataclass_fields__}
    grid = {name: value.reshape(B, height, width, -1) for name, value in out.items()}  # (B, H, W, .)
    return VolumeOutput(**{name: value if name in ("weights", "samples") else value.permute(0, 3, 1, 2)
                           for name, value in grid.items()})


def camera_rays(K: torch.Tensor, world_to_cam: torch.Tensor, height: int,
                width: int) -> tuple[torch.Tensor, torch.Tensor]:
    """World-frame rays through every pixel centre: origins (B, H*W, 3), unit directions (B, H*W, 3).

    Row-major pixel order (ray i * W + j is pixel (row i, col j), centred at x=j, y=i)."""
    if K.shape[-2:] != (3, 3) or world_to_cam.shape[-2:] != (4, 4) or K.dim() not in (2, 3) \
            or world_to_cam.dim() not in (2, 3):
        raise ConfigError(f"volume: K must be (3, 3) or (B, 3, 3) and world_to_cam (4, 4) or (B, 4, 4), "
                          f"got {tuple(K.shape)} and {tuple(world_to_cam.shape)}")
    if int(height) != height or int(width) != width or height < 1 or width < 1:
        raise ConfigError(f"volume: height and width must be positive integers, got {height} x {width}")
    K, world_to_cam = (x.reshape(-1, *x.shape[-2:]) for x in (K, world_to_cam))
    B = max(K.shape[0], world_to_cam.shape[0])
    rows, cols = torch.meshgrid(torch.arange(height, dtype=K.dtype, device=K.device),
                                torch.arange(width, dtype=K.dtype, device=K.device), indexing="ij")
    pixels = torch.stack([cols, rows, torch.ones_like(cols)], -1).reshape(-1, 3)  # (H*W, 3) homogeneous
    cam_dirs = pixels @ torch.linalg.inv(K).transpose(-1, -2)  # (B, H*W, 3), z = 1
    cam_to_world = torch.linalg.inv(world_to_cam)
    directions = F.normalize(cam_dirs @ cam_to_world[:, :3, :3].transpose(-1, -2), dim=-1)
    origins = cam_to_world[:, None, :3, 3].expand(B, height * width, 3)
    return origins, directions.expand(B, -1, -1)


def stratified_samples(near: float | torch.Tensor, far: float | torch.Tensor, count: int, batch_shape,
                       generator: torch.Generator | None = None, jitter: bool = True, *,
                       device=None, dtype=None) -> torch.Tensor:
    """(*batch_shape, count) sorted depths in [near, far], one per equal bin: uniform in the bin
    (jitter) or at its centre. near/far: floats or tensors broadcastable to batch_shape (their
    device and dtype win over `device`/`dtype`)."""
    if count < 1:
        raise ConfigError(f"volume: need at least one sample, got count={count}")
    ref = next((v for v in (near, far) if torch.is_tensor(v)), None)
    device, dtype = (ref.device, ref.dtype) if ref is not None else (device, dtype or torch.float32)
    near, far = (torch.broadcast_to(torch.as_tensor(v, dtype=dtype, device=device), tuple(batch_shape))
                 for v in (near, far))
    if (near >= far).any():
        raise ConfigError("volume: need near < far for stratified samples")
    shape = (*batch_shape, count)
    offset = (torch.rand(shape, generator=generator, device=device, dtype=dtype) if jitter
              else torch.full(shape, 0.5, device=device, dtype=dtype))
    fraction = (torch.arange(count, device=device, dtype=dtype) + offset) / count
    return near[..., None] + (far - near)[..., None] * fraction


def importance_samples(depths: torch.Tensor, weights: torch.Tensor, count: int,
                       generator: torch.Generator | None = None, deterministic: bool = False) -> torch.Tensor:
    """(..., count) sorted depths drawn by inverse CDF from the piecewise-constant pdf of `weights`.

    Bin i spans from the midpoint before depths[i] to the one after it (the end bins stop at
    depths[0] and depths[-1]), so draws stay in [depths[0], depths[-1]]. Rays whose weights sum to
    0 draw uniformly. deterministic: evenly spaced quantiles instead of random ones. No gradients.
    """
    if count < 1:
        raise ConfigError(f"volume: need at least one importance sample, got count={count}")
    if depths.shape != weights.shape or depths.dim() < 1:
        raise ConfigError(f"volume: depths and weights must share a shape (..., N), got "
                          f"{tuple(depths.shape)} and {tuple(weights.shape)}")
    depths, weights = depths.detach(), weights.detach().clamp(min=0)
    edges = torch.cat([depths[..., :1], (depths[..., 1:] + depths[..., :-1]) / 2, depths[..., -1:]], -1)
    uniform = edges.diff(dim=-1) + 1e-12  # mass proportional to bin width: uniform in depth
    weights = torch.where(weights.sum(-1, keepdim=True) > 0, weights, uniform)
    cdf = torch.cumsum(weights / weights.sum(-1, keepdim=True), -1)
    cdf = torch.cat([torch.zeros_like(cdf[..., :1]), cdf], -1).contiguous()  # (..., N + 1)
    shape = (*depths.shape[:-1], count)
    if deterministic:
        u = ((torch.arange(count, dtype=depths.dtype, device=depths.device) + 0.5) / count).expand(shape)
    else:
        u = torch.rand(shape, generator=generator, dtype=depths.dtype, device=depths.device).sort(-1).values
    upper = torch.searchsorted(cdf, u.contiguous(), right=True).clamp(1, depths.shape[-1])
    cdf_lo, cdf_hi = cdf.gather(-1, upper - 1), cdf.gather(-1, upper)
    edge_lo, edge_hi = edges.gather(-1, upper - 1), edges.gather(-1, upper)
    span = cdf_hi - cdf_lo
    t = torch.where(span > 0, (u - cdf_lo) / span.clamp(min=1e-12), torch.zeros_like(u)).clamp(0, 1)
    return edge_lo + t * (edge_hi - edge_lo)


def composite(densities: torch.Tensor, values: torch.Tensor, depths: torch.Tensor,
              far_delta: float | torch.Tensor = 1e10) -> VolumeOutput:
    """Alpha-composite N sorted samples per ray: densities (..., N) (negatives clamp to 0), values
    (..., N, C), depths (..., N). far_delta: length of the last sample's interval, a float or (...,)."""
    if densities.shape != depths.shape or values.shape[:-1] != densities.shape or values.dim() < 2:
        raise ConfigError(f"volume: composite needs densities (..., N), values (..., N, C), depths (..., N), "
                          f"got {tuple(densities.shape)}, {tuple(values.shape)}, {tuple(depths.shape)}")
    last = torch.as_tensor(far_delta, dtype=depths.dtype, device=depths.device)
    deltas = torch.cat([depths[..., 1:] - depths[..., :-1], last.expand(depths.shape[:-1])[..., None]], -1)
    optical = densities.clamp(min=0) * deltas  # sigma_i delta_i
    alpha = -torch.expm1(-optical)
    # exclusive cumsum: T_i = exp(-sum_{j<i} sigma_j delta_j); concatenation keeps inf - inf out
    before = torch.cat([torch.zeros_like(optical[..., :1]), torch.cumsum(optical, -1)[..., :-1]], -1)
    weights = alpha * torch.exp(-before)
    opacity = weights.sum(-1)
    depth = (weights * depths).sum(-1) / opacity.clamp(min=1e-10)
    return VolumeOutput(features=(weights[..., None] * values).sum(-2), depth=depth, opacity=opacity,
                        transmittance=torch.exp(-(before[..., -1] + optical[..., -1])), weights=weights,
                        samples=depths)


def triplane_features(planes: torch.Tensor, points: torch.Tensor, bounds: float, reduce: str = "sum") -> torch.Tensor:
    """EG3D tri-plane lookup: planes (B, 3, C, R, R), points (B, P, 3) world -> (B, P, C), or
    (B, P, 3C) with reduce="concat" (the three planes side by side, as DiffusionAvatars feeds them).

    Plane 0 is xy (width axis x, height axis y), plane 1 xz (x, z), plane 2 yz (y, z). Points in the
    cube [-bounds, bounds]^3 map to grid_sample's [-1, 1] (align_corners=False: texel k of R is
    centred at (2k + 1) / R - 1); outside it the planes read as zero. With reduce="sum" the three
    bilinear lookups are SUMMED (EG3D averages; the factor 3 is the decoder's to absorb).
    """
    if planes.dim() != 5 or planes.shape[1] != 3 or points.dim() != 3 or points.shape[-1] != 3 \
            or points.shape[0] != planes.shape[0]:
        raise ConfigError(f"volume: triplane_features needs planes (B, 3, C, R, R) and points (B, P, 3), "
                          f"got {tuple(planes.shape)} and {tuple(points.shape)}")
    if bounds <= 0:
        raise ConfigError(f"volume: bounds must be positive, got {bounds}")
    if reduce not in ("sum", "concat"):
        raise ConfigError(f"volume: reduce must be 'sum' or 'concat', got {reduce!r}")
    B, _, C, Rh, Rw = planes.shape
    coords = points.to(planes.dtype) / bounds
    grids = torch.stack([coords[..., [0, 1]], coords[..., [0, 2]], coords[..., [1, 2]]], 1)  # (B, 3, P, 2)
    sampled = F.grid_sample(planes.reshape(B * 3, C, Rh, Rw), grids.reshape(B * 3, 1, -1, 2), mode="bilinear",
                            padding_mode="zeros", align_corners=False).reshape(B, 3, C, -1)  # (B, 3, C, P)
    if reduce == "sum":
        return sampled.sum(1).transpose(1, 2)
    return sampled.reshape(B, 3 * C, -1).transpose(1, 2)


# ------------------------------------------------------------------------------------- pieces
def _per_ray(value, name, B, height, width, like):
    """near/far as a float, (B,) or (B, H, W) -> (B, H*W) on the rays' device and dtype."""
    v = torch.as_tensor(value, dtype=like.dtype, device=like.device)
    if v.dim() == 1 and v.shape[0] in (1, B):
        v = v[:, None]
    elif v.dim() == 3 and v.shape in ((B, height, width), (1, height, width)):
        v = v.reshape(v.shape[0], -1)
    elif v.dim() != 0:
        raise ConfigError(f"volume: {name} must be a float, (B,) or (B, H, W) = ({B}, {height}, {width}), "
                          f"got {tuple(v.shape)}")
    return v.expand(B, height * width)


def _query(field, origins, directions, depths):
    """Evaluate the field at depths (B, R, N) along the rays: densities (B, R, N), features (B, R, N, C)."""
    B, R, N = depths.shape
    points = origins[:, :, None] + directions[:, :, None] * depths[..., None]
    density, features = field(points.reshape(B, R * N, 3),
                              directions[:, :, None].expand(B, R, N, 3).reshape(B, R * N, 3))
    if density.shape != (B, R * N) or features.dim() != 3 or features.shape[:2] != (B, R * N):
        raise ConfigError(f"volume: field must return density (B, P) = ({B}, {R * N}) and features (B, P, C), "
                          f"got {tuple(density.shape)} and {tuple(features.shape)}")
    return density.reshape(B, R, N), features.reshape(B, R, N, -1)


def _render_rays(field, origins, directions, near, far, coarse, fine, generator, jitter) -> VolumeOutput:
    """The two passes for rays (B, R, 3) with near/far (B, R); per-ray VolumeOutput."""
    depths = stratified_samples(near, far, coarse, near.shape, generator, jitter)
    densities, features = _query(field, origins, directions, depths)
    if fine > 0:
        weights = composite(densities, features, depths, far - depths[..., -1]).weights.detach()
        # EG3D's max-blur: a coarse hit also sends fine samples to its neighbours' bins
        peak = F.max_pool1d(F.pad(weights.reshape(-1, 1, coarse), (1, 1)), 2, 1)
        weights = F.avg_pool1d(peak, 2, 1).reshape(weights.shape)
        extra = importance_samples(depths, weights, fine, generator, deterministic=not jitter)
        more_densities, more_features = _query(field, origins, directions, extra)
        depths, order = torch.sort(torch.cat([depths, extra], -1), -1)
        densities = torch.cat([densities, more_densities], -1).gather(-1, order)
        features = torch.cat([features, more_features], -2)
        features = features.gather(-2, order[..., None].expand(*order.shape, features.shape[-1]))
    return composite(densities, features, depths, far - depths[..., -1])
