"""Gaussian feature splatting: 3D Gaussians -> a C-channel feature map, alpha and expected depth.

One entry point, `splat_features`, with two backends that follow the same rules (gsplat 1.5's
"classic" rasteriser):

- "gsplat": `gsplat.rasterization` (CUDA only);
- "torch": onehead's own splatter, pure torch, CPU and CUDA, built from three tested pieces:
  1. `project_gaussians`: EWA projection of 3D Gaussians to 2D means, conics, depths and radii;
  2. `intersect_tiles`: which Gaussians touch which 16x16 tile, sorted by (tile, depth);
  3. `composite_tiles`: front-to-back alpha compositing per tile, with a hand-written backward.

Screen boxes: as in gsplat 1.5 (not the 3 * sqrt(largest eigenvalue) of gsplat < 1.0), a Gaussian
covers ceil(e * sqrt(Σ2d_xx)) x ceil(e * sqrt(Σ2d_yy)) pixels around its centre with
e = min(3.33, sqrt(2 ln(255 opacity))): outside that box its alpha is below the 1/255 cut-off, so
tiling never changes the image and a dense every-pixel-every-Gaussian reference matches it exactly.

Pixel frame: the three pieces work in gsplat's frame, where pixel (row i, col j) is centred at
(j + 0.5, i + 0.5). onehead's K puts that centre at (j, i); `splat_features` converts K once with
`onehead.camera.to_gsplat_intrinsics`.
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from onehead.camera import to_gsplat_intrinsics
from onehead.errors import ConfigError

# gsplat's rules (ProjectionEWA3DGSFused.cu, RasterizeToPixels3DGSFwd.cu)
EPS2D = 0.3  # added to the 2D covariance's diagonal ("classic" mode, no compensation)
MAX_EXTEND = 3.33  # screen radius in standard deviations, at most
ALPHA_MIN = 1.0 / 255.0  # contributions below this are skipped
ALPHA_MAX = 0.999  # alpha is clamped to this
T_MIN = 1e-4  # a pixel stops once its transmittance would fall to this
TILE_SIZE = 16

BACKENDS = ("auto", "torch", "gsplat")


@dataclass
class SplatResult:
    """What `splat_features` returns; all (B, ., H, W)."""

    features: torch.Tensor  # (B, C, H, W): sum_i w_i f_i (+ (1 - alpha) * background)
    alpha: torch.Tensor  # (B, 1, H, W): sum_i w_i
    depth: torch.Tensor  # (B, 1, H, W): expected camera z, sum_i w_i z_i / alpha; 0 where alpha is 0


def splat_features(means: torch.Tensor, scales: torch.Tensor, opacities: torch.Tensor,
                   features: torch.Tensor, K: torch.Tensor, world_to_cam: torch.Tensor,
                   height: int, width: int, *, backend: str = "auto", quats: torch.Tensor | None = None,
                   near: float = 0.01, far: float = 1e10,
                   background: torch.Tensor | None = None) -> SplatResult:
    """Splat B scenes of N 3D Gaussians with C-channel features into (B, C, H, W) maps.

    Args:
        means: (B, N, 3) centres in world coordinates.
        scales: standard deviations in world units, >= 0: (B, N) or (B, N, 1) isotropic, or
            (B, N, 3) per axis of the rotation `quats`.
        opacities: (B, N) in [0, 1].
        features: (B, N, C), any C.
        K: (B, 3, 3) intrinsics in onehead's convention (pixel centres at integers).
        world_to_cam: (B, 4, 4) OpenCV extrinsics (x right, y down, z forward).
        height, width: output size in pixels.
        backend: "gsplat" (gsplat.rasterization, CUDA only), "torch" (onehead's, CPU and CUDA), or
            "auto": gsplat for CUDA tensors when it imports, torch otherwise.
        quats: (B, N, 4) rotations as (w, x, y, z), like gsplat; need not be normalised; None is
            the identity.
        near, far: Gaussians whose centre's camera z is outside [near, far] are dropped.
        background: (C,) or (B, C), composited behind the Gaussians.

    Each pixel composites the Gaussians front to back by camera z: the weight of Gaussian i is
    w_i = alpha_i * prod_{j<i} (1 - alpha_j) with alpha_i = min(0.999, opacity_i * exp(-d^T S_i^-1 d / 2)),
    S_i the projected 2D covariance plus 0.3 px^2; alpha_i < 1/255 is skipped and a pixel stops
    before its transmittance falls to 1e-4 (gsplat's rules).

    Raises:
        ConfigError: on mismatched shapes, negative scales, opacities outside [0, 1], an unknown
            backend, or an explicit backend that cannot run here.
    """
    scales, quats, background = _check_inputs(means, scales, opacities, features, K, world_to_cam,
                                              height, width, quats, background)
    if _choose_backend(backend, means) == "gsplat":
        return _splat_gsplat(means, scales, quats, opacities, features, K, world_to_cam,
                             height, width, near, far, background)
    return _splat_torch(means, scales, quats, opacities, features, K, world_to_cam,
                        height, width, near, far, background)


# ---------------------------------------------------------------------------------------------
# input checks and backend choice


def _check_inputs(means, scales, opacities, features, K, world_to_cam, height, width, quats, background):
    """Validate shapes and values; returns scales as (B, N, 3), quats (B, N, 4), background (B, C) or None."""
    if means.dim() != 3 or means.shape[-1] != 3:
        raise ConfigError(f"splat: means must be (B, N, 3), got {tuple(means.shape)}")
    B, N = means.shape[:2]

    def expect(name, tensor, shape):
        if tuple(tensor.shape) != shape:
            raise ConfigError(f"splat: {name} must be {shape} for means {tuple(means.shape)}, "
                              f"got {tuple(tensor.shape)}")

    expect("opacities", opacities, (B, N))
    if features.dim() != 3 or features.shape[:2] != (B, N):
        raise ConfigError(f"splat: features must be (B, N, C) = ({B}, {N}, C), got {tuple(features.shape)}")
    expect("K", K, (B, 3, 3))
    expect("world_to_cam", world_to_cam, (B, 4, 4))
    if int(height) != height or int(width) != width or height < 1 or width < 1:
        raise ConfigError(f"splat: height and width must be positive integers, got {height} x {width}")

    if scales.shape in ((B, N), (B, N, 1)):
        scales = scales.reshape(B, N, 1).expand(B, N, 3)
    elif scales.shape != (B, N, 3):
        raise ConfigError(f"splat: scales must be (B, N), (B, N, 1) or (B, N, 3) = ({B}, {N}, 3), "
                          f"got {tuple(scales.shape)}")
    if quats is None:
        quats = means.new_tensor([1.0, 0.0, 0.0, 0.0]).expand(B, N, 4)
    else:
        expect("quats", quats, (B, N, 4))

    if background is not None:
        C = features.shape[-1]
        if background.shape == (C,):
            background = background.expand(B, C)
        elif background.shape != (B, C):
            raise ConfigError(f"splat: background must be ({C},) or ({B}, {C}), got {tuple(background.shape)}")

    if bool((scales < 0).any()) or not bool(torch.isfinite(scales).all()):
        raise ConfigError("splat: scales are standard deviations and must be finite and >= 0; "
                          f"got min {scales.min().item():.4g}")
    if bool((opacities < 0).any()) or bool((opacities > 1).any()) or bool(torch.isnan(opacities).any()):
        raise ConfigError("splat: opacities must lie in [0, 1] (apply a sigmoid to logits first); "
                          f"got range [{opacities.min().item():.4g}, {opacities.max().item():.4g}]")
    return scales, quats, background


def _gsplat_imports() -> bool:
    try:
        import gsplat  # noqa: F401
    except Exception:  # any import failure (missing, broken build) means "not available"
        return False
    return True


def _choose_backend(backend: str, means: torch.Tensor) -> str:
    if backend not in BACKENDS:
        raise ConfigError(f"splat: unknown backend {backend!r}; choose one of {', '.join(BACKENDS)}")
    if backend == "auto":
        return "gsplat" if means.is_cuda and _gsplat_imports() else "torch"
    if backend == "gsplat":
        if not means.is_cuda:
            raise ConfigError("splat: backend='gsplat' needs CUDA tensors (gsplat.rasterization has no "
                              "CPU path); move the inputs to a GPU or use backend='torch'")
        if not _gsplat_imports():
            raise ConfigError("splat: backend='gsplat' needs the gsplat package (pip install gsplat); "
                              "or use backend='torch'")
    return backend


# ---------------------------------------------------------------------------------------------
# the two backends


def _splat_gsplat(means, scales, quats, opacities, features, K, world_to_cam, height, width,
                  near, far, background) -> SplatResult:
    import gsplat

    renders, alphas, _ = gsplat.rasterization(
        means, quats, scales, opacities, features,
        viewmats=world_to_cam[:, None], Ks=to_gsplat_intrinsics(K)[:, None],  # one camera per scene
        width=width, height=height, near_plane=near, far_plane=far, eps2d=EPS2D, packed=False,
        render_mode="RGB+ED", rasterize_mode="classic",
        backgrounds=None if background is None else background[:, None],
    )
    renders, alphas = renders[:, 0], alphas[:, 0]  # (B, H, W, C + 1), (B, H, W, 1)
    return SplatResult(features=renders[..., :-1].permute(0, 3, 1, 2),
                       alpha=alphas.permute(0, 3, 1, 2),
                       depth=renders[..., -1:].permute(0, 3, 1, 2))


def _splat_torch(means, scales, quats, opacities, features, K, world_to_cam, height, width,
                 near, far, background) -> SplatResult:
    covariances = gaussian_covariances(scales, quats)
    projected = project_gaussians(means, covariances, to_gsplat_intrinsics(K), world_to_cam, height, width,
                                  opacities=opacities, near=near, far=far)
    tiles = intersect_tiles(projected.means2d, projected.radii, projected.depths, height, width)
    # depth rides along as one more channel, as in gsplat's "RGB+ED"
    channels = torch.cat([features.to(means.dtype), projected.depths[..., None]], -1)
    image, alpha = composite_tiles(projected.means2d, projected.conics, opacities.to(means.dtype), channels, tiles)
    image, alpha = image.permute(0, 3, 1, 2), alpha[:, None]  # (B, C + 1, H, W), (B, 1, H, W)
    feature_map, depth = image[:, :-1], image[:, -1:] / alpha.clamp(min=1e-10)
    if background is not None:
        feature_map = feature_map + (1 - alpha) * background[:, :, None, None]
    return SplatResult(features=feature_map, alpha=alpha, depth=depth)


# ---------------------------------------------------------------------------------------------
# piece 1: projection


@dataclass
class ProjectedGaussians:
    """2D Gaussians in gsplat's pixel frame; radii 0 marks a dropped Gaussian."""

    means2d: torch.Tensor  # (B, N, 2) pixels
    conics: torch.Tensor  # (B, N, 3) (a, b, c) of the inverse 2D covariance [[a, b], [b, c]]
    depths: torch.Tensor  # (B, N) camera z
    radii: torch.Tensor  # (B, N, 2) int32 half-sizes of the screen box in x and y


def gaussian_covariances(scales: torch.Tensor, quats: torch.Tensor) -> torch.Tensor:
    """(..., 3) standard deviations and (..., 4) wxyz rotations -> (..., 3, 3) covariances R S^2 R^T."""
    w, x, y, z = F.normalize(quats, dim=-1).unbind(-1)
    R = torch.stack([
        1 - 2 * (y * y + z * z), 2 * (x * y - w * z), 2 * (x * z + w * y),
        2 * (x * y + w * z), 1 - 2 * (x * x + z * z), 2 * (y * z - w * x),
        2 * (x * z - w * y), 2 * (y * z + w * x), 1 - 2 * (x * x + y * y),
    ], -1).unflatten(-1, (3, 3))
    RS = R * scales[..., None, :]
    return RS @ RS.transpose(-1, -2)


def project_gaussians(means: torch.Tensor, covariances: torch.Tensor, K_gsplat: torch.Tensor,
                      world_to_cam: torch.Tensor, height: int, width: int, *,
                      opacities: torch.Tensor | None = None, near: float = 0.01, far: float = 1e10,
                      eps2d: float = EPS2D) -> ProjectedGaussians:
    """EWA projection of (B, N) 3D Gaussians, as gsplat's fully fused pinhole projection.

    means (B, N, 3) and covariances (B, N, 3, 3) in world space; K_gsplat (B, 3, 3) in gsplat's
    pixel frame (see `to_gsplat_intrinsics`); world_to_cam (B, 4, 4).
    The 2D covariance is J Σ_cam J^T + eps2d I, J the perspective Jacobian at the centre (its
    x/z and y/z clamped to 1.3x the field of view, as gsplat does). The screen box half-size is
    ceil(extend * sqrt(Σ2d_xx)) in x (likewise y) with extend = 3.33, or, given opacities,
    min(3.33, sqrt(2 ln(255 opacity))) so that alpha < 1/255 everywhere outside the box.
    A Gaussian is dropped (radii 0) when its z is outside [near, far], its opacity is < 1/255,
    or its box misses the image. Differentiable in means2d, conics and depths.
    """
    R, t = world_to_cam[:, None, :3, :3], world_to_cam[:, None, :3, 3]
    cam = (R @ means[..., None]).squeeze(-1) + t
    cov_cam = R @ covariances @ R.transpose(-1, -2)
    x, y, z = cam.unbind(-1)
    in_depth_range = (z >= near) & (z <= far)
    z = torch.where(in_depth_range, z, torch.ones_like(z))  # keeps dropped ones finite for autograd

    fx, fy, cx, cy = (K_gsplat[:, None, 0, 0], K_gsplat[:, None, 1, 1],
                      K_gsplat[:, None, 0, 2], K_gsplat[:, None, 1, 2])
    means2d = torch.stack([fx * x / z + cx, fy * y / z + cy], -1)

    # perspective Jacobian, evaluated at a centre clamped to 1.3x the field of view
    margin_x, margin_y = 0.3 * 0.5 * width / fx, 0.3 * 0.5 * height / fy
    tx = z * torch.minimum(torch.maximum(x / z, -(cx / fx + margin_x)), (width - cx) / fx + margin_x)
    ty = z * torch.minimum(torch.maximum(y / z, -(cy / fy + margin_y)), (height - cy) / fy + margin_y)
    zeros = torch.zeros_like(z)
    J = torch.stack([fx / z, zeros, -fx * tx / z**2,
                     zeros, fy / z, -fy * ty / z**2], -1).unflatten(-1, (2, 3))
    cov2d = J @ cov_cam @ J.transpose(-1, -2)
    a, b, c = cov2d[..., 0, 0] + eps2d, cov2d[..., 0, 1], cov2d[..., 1, 1] + eps2d
    det = a * c - b * b
    valid = in_depth_range & (det > 0)
    det = torch.where(valid, det, torch.ones_like(det))
    conics = torch.stack([c / det, -b / det, a / det], -1)

    with torch.no_grad():
        extend = torch.full_like(z, MAX_EXTEND)
        visible = valid
        if opacities is not None:
            visible = visible & (opacities >= ALPHA_MIN)
            extend = torch.sqrt(2 * torch.log(opacities.clamp(min=ALPHA_MIN) / ALPHA_MIN)).clamp(max=MAX_EXTEND)
        radii = torch.ceil(extend[..., None] * torch.stack([a, c], -1).clamp(min=0).sqrt())
        image_size = means2d.new_tensor([width, height])
        on_image = ((means2d + radii > 0) & (means2d - radii < image_size)).all(-1)
        visible = visible & (radii > 0).any(-1) & on_image
        radii = torch.where(visible[..., None], radii, torch.zeros_like(radii)).int()
    return ProjectedGaussians(means2d=means2d, conics=conics, depths=cam[..., 2], radii=radii)


# ---------------------------------------------------------------------------------------------
# piece 2: tile intersection


@dataclass
class TileIntersections:
    """(Gaussian, tile) pairs sorted by (tile, depth); tiles numbered b * tiles_y * tiles_x + ty * tiles_x + tx."""

    gaussian_ids: torch.Tensor  # (M,) int64 index into the flattened (B * N) Gaussians
    tile_ids: torch.Tensor  # (M,) int64, non-decreasing
    offsets: torch.Tensor  # (B * tiles_y * tiles_x + 1,) int64: tile t owns pairs offsets[t]:offsets[t + 1]
    batch: int
    height: int
    width: int
    tiles_y: int
    tiles_x: int
    tile_size: int

    def counts(self) -> torch.Tensor:
        """(B * tiles_y * tiles_x,) number of Gaussians per tile."""
        return self.offsets[1:] - self.offsets[:-1]


@torch.no_grad()
def intersect_tiles(means2d: torch.Tensor, radii: torch.Tensor, depths: torch.Tensor, height: int,
                    width: int, tile_size: int = TILE_SIZE) -> TileIntersections:
    """Every (Gaussian, tile) pair whose screen box (means2d ± radii) overlaps the tile, as gsplat.

    means2d (B, N, 2) in gsplat's pixel frame, radii (B, N, 2) int (0: dropped), depths (B, N).
    Tile (ty, tx) covers pixels [ty * tile_size, (ty + 1) * tile_size) x [tx * tile_size, ...).
    Pairs are sorted by tile, then by depth (ties by Gaussian index).
    """
    B, N = depths.shape
    tiles_y, tiles_x = math.ceil(height / tile_size), math.ceil(width / tile_size)
    device = means2d.device

    centre, half = means2d.detach().reshape(-1, 2) / tile_size, radii.reshape(-1, 2).to(means2d.dtype) / tile_size
    limit = torch.tensor([tiles_x, tiles_y], device=device)
    lo = torch.minimum(torch.floor(centre - half).long().clamp(min=0), limit)  # inclusive
    hi = torch.minimum(torch.ceil(centre + half).long().clamp(min=0), limit)  # exclusive
    span = hi - lo
    count = span[:, 0] * span[:, 1] * (radii.reshape(-1, 2) > 0).all(-1)

    gaussian_ids = torch.repeat_interleave(torch.arange(B * N, device=device), count)
    first_pair = torch.cumsum(count, 0) - count
    local = torch.arange(len(gaussian_ids), device=device) - first_pair[gaussian_ids]
    span_x = span[gaussian_ids, 0]
    tx = lo[gaussian_ids, 0] + local % span_x
    ty = lo[gaussian_ids, 1] + torch.div(local, span_x, rounding_mode="floor")
    image = torch.div(gaussian_ids, N, rounding_mode="floor")
    tile_ids = (image * tiles_y + ty) * tiles_x + tx

    depth_rank = torch.empty(B * N, dtype=torch.long, device=device)
    depth_rank[torch.argsort(depths.detach().reshape(-1), stable=True)] = torch.arange(B * N, device=device)
    order = torch.argsort(tile_ids * (B * N) + depth_rank[gaussian_ids])
    gaussian_ids, tile_ids = gaussian_ids[order], tile_ids[order]

    n_tiles = B * tiles_y * tiles_x
    offsets = torch.zeros(n_tiles + 1, dtype=torch.long, device=device)
    offsets[1:] = torch.cumsum(torch.bincount(tile_ids, minlength=n_tiles), 0)
    return TileIntersections(gaussian_ids, tile_ids, offsets, B, height, width, tiles_y, tiles_x, tile_size)


# ---------------------------------------------------------------------------------------------
# piece 3: compositing


def composite_tiles(means2d: torch.Tensor, conics: torch.Tensor, opacities: torch.Tensor,
                    features: torch.Tensor, tiles: TileIntersections,
                    depth_slots: int = 32) -> tuple[torch.Tensor, torch.Tensor]:
    """Front-to-back alpha compositing of projected Gaussians, tile by tile.

    means2d (B, N, 2) gsplat pixel frame, conics (B, N, 3), opacities (B, N), features (B, N, C);
    `tiles` from `intersect_tiles`. Returns the composited features (B, H, W, C) = sum_i w_i f_i
    and alpha (B, H, W) = sum_i w_i with gsplat's rules (see `splat_features`).
    Vectorised over all pixels of a group of tiles and `depth_slots` Gaussians per tile at a time;
    a tile stops once all its pixels are done. The backward is hand-written (like gsplat's): it
    recomputes the same groups, so memory stays at a few image-sized buffers.
    """
    B, N, C = features.shape
    image, alpha = _Composite.apply(means2d.reshape(B * N, 2), conics.reshape(B * N, 3),
                                    opacities.reshape(B * N), features.reshape(B * N, C), tiles, depth_slots)
    return image, alpha


def _tiles_to_image(per_tile: torch.Tensor, tiles: TileIntersections) -> torch.Tensor:
    """(B * ty * tx, S * S, C) -> (B, H, W, C), cropping the padding of the last tiles."""
    S = tiles.tile_size
    x = per_tile.reshape(tiles.batch, tiles.tiles_y, tiles.tiles_x, S, S, -1).permute(0, 1, 3, 2, 4, 5)
    x = x.reshape(tiles.batch, tiles.tiles_y * S, tiles.tiles_x * S, -1)
    return x[:, :tiles.height, :tiles.width]


def _image_to_tiles(image: torch.Tensor, tiles: TileIntersections) -> torch.Tensor:
    """(B, H, W, C) -> (B * ty * tx, S * S, C), zero-padding to whole tiles; inverse of `_tiles_to_image`."""
    S = tiles.tile_size
    pad_h, pad_w = tiles.tiles_y * S - tiles.height, tiles.tiles_x * S - tiles.width
    x = F.pad(image, (0, 0, 0, pad_w, 0, pad_h))
    x = x.reshape(tiles.batch, tiles.tiles_y, S, tiles.tiles_x, S, -1).permute(0, 1, 3, 2, 4, 5)
    return x.reshape(tiles.batch * tiles.tiles_y * tiles.tiles_x, S * S, -1)


@dataclass
class _Slots:
    """`depth_slots` consecutive Gaussians of each tile in a group, with their pixel offsets."""

    gaussian_ids: torch.Tensor  # (T, D); padding points at the dummy id G
    dx: torch.Tensor  # (T, S, D) mean x minus pixel-centre x, per tile column
    dy: torch.Tensor  # (T, S, D) mean y minus pixel-centre y, per tile row
    conics: torch.Tensor  # (T, D, 3)
    log_opacity: torch.Tensor  # (T, D); -inf for padding
    features: torch.Tensor  # (T, D, C)


def _gather_slots(tile_group, depth_start, depth_slots, tiles, means2d, conics, log_opacity, features):
    offsets = tiles.offsets
    slot = offsets[tile_group, None] + depth_start + torch.arange(depth_slots, device=offsets.device)
    real = slot < offsets[tile_group + 1, None]
    dummy = len(means2d) - 1  # the caller appends one padding Gaussian
    ids = torch.where(real, tiles.gaussian_ids[slot.clamp(max=max(len(tiles.gaussian_ids) - 1, 0))], dummy)

    S = tiles.tile_size
    per_image = tiles.tiles_y * tiles.tiles_x
    tile_y = torch.div(tile_group % per_image, tiles.tiles_x, rounding_mode="floor")
    tile_x = tile_group % tiles.tiles_x
    centres = torch.arange(S, device=offsets.device, dtype=means2d.dtype) + 0.5
    px = tile_x[:, None] * S + centres  # (T, S)
    py = tile_y[:, None] * S + centres
    mean = means2d[ids]  # (T, D, 2)
    return _Slots(ids, mean[:, None, :, 0] - px[:, :, None], mean[:, None, :, 1] - py[:, :, None],
                  conics[ids], log_opacity[ids], features[ids])


def _raw_alphas(s: _Slots) -> torch.Tensor:
    """(T, P, D) opacity * exp(-d^T Σ^-1 d / 2) at every pixel of each tile for each slot."""
    T, S, D = s.dx.shape
    a, b, c = s.conics.unbind(-1)  # (T, D)
    row = s.log_opacity[:, None] - 0.5 * c[:, None] * s.dy**2  # (T, S rows, D)
    col = -0.5 * a[:, None] * s.dx**2  # (T, S cols, D)
    cross = -b[:, None] * s.dy  # (T, S rows, D)
    power = row[:, :, None] + col[:, None]  # (T, S rows, S cols, D)
    power.addcmul_(cross[:, :, None], s.dx[:, None])  # log(opacity) - d^T Σ^-1 d / 2
    return power.exp_().reshape(T, S * S, D)


def _apply_alpha_rules(alpha: torch.Tensor) -> torch.Tensor:
    """In place: clamp alpha to 0.999 and zero the ones below 1/255 (gsplat's rules)."""
    alpha.clamp_(max=ALPHA_MAX)
    return F.threshold_(alpha, _just_below(ALPHA_MIN, alpha.dtype), 0.0)  # keeps alpha >= 1/255


@functools.lru_cache
def _just_below(value: float, dtype: torch.dtype) -> float:
    """The largest number of `dtype` below `value`: `x > _just_below(v)` is `x >= v` in that dtype."""
    return torch.nextafter(torch.tensor(value, dtype=dtype), torch.tensor(-math.inf, dtype=dtype)).item()


def _transmittances(alpha: torch.Tensor, T_start: torch.Tensor) -> torch.Tensor:
    """(T, P, D + 1) transmittance before slot 0, after slot 0, ..., after slot D - 1, from T_start (T, P)."""
    T_all = alpha.new_empty(*alpha.shape[:-1], alpha.shape[-1] + 1)
    T_all[..., 0] = T_start
    torch.sub(1, alpha, out=T_all[..., 1:])
    return T_all.cumprod_(-1)


def _weights(alpha: torch.Tensor, T_all: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """w_k = alpha_k * T_before_k, zero from the slot at which a pixel stops; and `going`, 1.0 before it.

    (Masks are kept as 0/1 floats: on CPU, bool masks and masked_fill are several times slower.)
    """
    going = torch.gt(T_all[..., 1:], T_MIN, out=torch.empty_like(alpha))
    return torch.mul(alpha, T_all[..., :-1]).mul_(going), going


class _Composite(torch.autograd.Function):
    @staticmethod
    def forward(ctx, means2d, conics, opacities, features, tiles: TileIntersections, depth_slots: int):
        G, C = features.shape
        n_tiles, P = tiles.batch * tiles.tiles_y * tiles.tiles_x, tiles.tile_size**2
        dtype, device = features.dtype, features.device
        # one extra "padding" Gaussian at index G with opacity 0, for ragged tiles
        pad = _padded_inputs(means2d, conics, opacities, features)

        color = torch.zeros(n_tiles, P, C, dtype=dtype, device=device)
        weight_sum = torch.zeros(n_tiles, P, dtype=dtype, device=device)
        T_run = torch.ones(n_tiles, P, dtype=dtype, device=device)
        counts = tiles.counts()
        rounds = torch.zeros(n_tiles, dtype=torch.long, device=device)  # depth groups each tile ran
        for depth_start, group in _depth_groups_forward(counts, T_run, rounds, depth_slots, P):
            s = _gather_slots(group, depth_start, depth_slots, tiles, *pad)
            alpha = _apply_alpha_rules(_raw_alphas(s))
            T_all = _transmittances(alpha, T_run[group])
            weights, _ = _weights(alpha, T_all)
            color[group] += torch.bmm(weights, s.features)
            weight_sum[group] += weights.sum(-1)
            T_run[group] = T_all[..., -1]

        ctx.tiles, ctx.depth_slots = tiles, depth_slots
        ctx.save_for_backward(means2d, conics, opacities, features, rounds, color, weight_sum)
        return _tiles_to_image(color, tiles), _tiles_to_image(weight_sum[..., None], tiles)[..., 0]

    @staticmethod
    def backward(ctx, grad_image, grad_alpha):
        means2d, conics, opacities, features, rounds, color, weight_sum = ctx.saved_tensors
        tiles, depth_slots = ctx.tiles, ctx.depth_slots
        G, C = features.shape
        n_tiles, P = rounds.shape[0], tiles.tile_size**2
        dtype, device = features.dtype, features.device
        pad = _padded_inputs(means2d, conics, opacities, features)
        grad_color = _image_to_tiles(grad_image, tiles)  # (n_tiles, P, C)
        grad_weight_sum = _image_to_tiles(grad_alpha[..., None], tiles)[..., 0]  # (n_tiles, P)

        # Front to back again, with G_k = f_k . g (g: the pixel's incoming gradient):
        #   dL/dalpha_k = T_before_k G_k - (S_after_k - g_alpha T_final) / (1 - alpha_k)
        # where S_after_k = sum_{j > k} w_j G_j = color . g - sum_{j <= k} w_j G_j.
        remaining = (color * grad_color).sum(-1) - grad_weight_sum * (1 - weight_sum)
        T_run = torch.ones(n_tiles, P, dtype=dtype, device=device)
        grads = torch.zeros(G + 1, 6, dtype=dtype, device=device)  # mean x, y; conic a, b, c; log opacity
        grad_features = torch.zeros(G + 1, C, dtype=dtype, device=device)
        for depth_start, group in _depth_groups_backward(rounds, depth_slots, P):
            s = _gather_slots(group, depth_start, depth_slots, tiles, *pad)
            alpha = _raw_alphas(s)
            unclamped = torch.le(alpha, ALPHA_MAX, out=torch.empty_like(alpha))
            alpha = _apply_alpha_rules(alpha)
            T_all = _transmittances(alpha, T_run[group])
            T_run[group] = T_all[..., -1]
            weights, going = _weights(alpha, T_all)

            g = grad_color[group]  # (T, P, C)
            ids = s.gaussian_ids.reshape(-1)
            grad_features.index_add_(0, ids, torch.bmm(weights.transpose(1, 2), g).reshape(-1, C))
            G_k = torch.bmm(g, s.features.transpose(1, 2))  # (T, P, D)
            after = torch.cumsum(weights * G_k, -1)
            torch.sub(remaining[group][..., None], after, out=after)  # S_after_k - g_alpha T_final
            remaining[group] = after[..., -1]
            grad_alpha_k = G_k.mul_(T_all[..., :-1]).sub_(after.div_(1 - alpha))
            # dL/d log(alpha before the clamp): times alpha, where alpha was used and not clamped
            v = grad_alpha_k.mul_(alpha.mul_(going).mul_(unclamped))
            grads.index_add_(0, ids, _slot_grads(v, s).reshape(-1, 6))
        grad_means2d = grads[:G, :2]
        grad_conics = grads[:G, 2:5]
        grad_opacities = grads[:G, 5] / opacities.clamp(min=ALPHA_MIN)  # d log(o) / d o = 1 / o
        return grad_means2d, grad_conics, grad_opacities, grad_features[:G], None, None


def _slot_grads(v, s: _Slots) -> torch.Tensor:
    """Per-slot gradients (T, D, 6) from v = dL/d(log alpha) (T, P, D), alpha = o exp(-sigma).

    sigma = a dx^2 / 2 + b dx dy + c dy^2 / 2, so dL/dsigma = -v and dL/d log(o) = v.
    """
    T, _, D = v.shape
    S = s.dx.shape[1]
    v = v.reshape(T, S, S, D)  # rows, cols
    v_col = v.sum(1)  # (T, S cols, D)
    v_row = v.sum(2)  # (T, S rows, D)
    sum_dx, sum_dx2 = (v_col * s.dx).sum(1), (v_col * s.dx**2).sum(1)
    sum_dy, sum_dy2 = (v_row * s.dy).sum(1), (v_row * s.dy**2).sum(1)
    sum_dxdy = ((v * s.dx[:, None]).sum(2) * s.dy).sum(1)
    a, b, c = s.conics.unbind(-1)
    return torch.stack([-(a * sum_dx + b * sum_dy), -(b * sum_dx + c * sum_dy),
                        -0.5 * sum_dx2, -sum_dxdy, -0.5 * sum_dy2, v_col.sum(1)], -1)


def _padded_inputs(means2d, conics, opacities, features):
    """Append one padding Gaussian (opacity 0, log opacity -inf) at index G."""
    log_opacity = torch.log(opacities.detach())
    return (F.pad(means2d.detach(), (0, 0, 0, 1)), F.pad(conics.detach(), (0, 0, 0, 1)),
            F.pad(log_opacity, (0, 1), value=-math.inf), F.pad(features.detach(), (0, 0, 0, 1)))


def _group_size(depth_slots: int, pixels: int, budget: int = 1 << 20) -> int:
    """Tiles per group so that a (tiles, pixels, depth_slots) buffer has about `budget` entries."""
    return max(1, budget // (pixels * depth_slots))


def _depth_groups_forward(counts, T_run, rounds, depth_slots, pixels):
    """Yield (first slot, tile ids) front to back; a tile leaves when its list ends or its pixels are done."""
    active = torch.nonzero(counts > 0).flatten()
    depth_start = 0
    while len(active):
        for group in active.split(_group_size(depth_slots, pixels)):
            yield depth_start, group
        rounds[active] += 1
        depth_start += depth_slots
        going_on = (counts[active] > depth_start) & (T_run[active] > T_MIN).any(-1)
        active = active[going_on]


def _depth_groups_backward(rounds, depth_slots, pixels):
    """The same (first slot, tile ids) sequence as the forward pass, from the rounds each tile ran."""
    r = 0
    while True:
        active = torch.nonzero(rounds > r).flatten()
        if not len(active):
            return
        for group in active.split(_group_size(depth_slots, pixels)):
            yield r * depth_slots, group
        r += 1
