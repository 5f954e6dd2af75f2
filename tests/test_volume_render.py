"""Volume rendering: analytic media (slab, spheres), a dense brute-force reference, rays, sampling.

The references here are written apart from onehead.render.volume: closed-form optical depths and
ray/sphere hits, and a dense sampler that composites with an explicit cumulative product.
"""

from __future__ import annotations

import math

import pytest
import torch

from onehead.camera import default_world_to_cam, intrinsics, project
from onehead.errors import ConfigError
from onehead.render.volume import (VolumeOutput, camera_rays, composite, importance_samples, render_volume,
                                   stratified_samples, triplane_features)

H = W = 16
CENTRE = torch.tensor([0.0, 0.0, 0.0])  # the world origin, 1 m in front of the default camera


def _camera(size=H, focal=20.0):
    return intrinsics(focal, size, size)[None], default_world_to_cam(1.0, batch=1)


def _sphere_field(radius, sigma, centre=CENTRE):
    def field(points, directions):
        inside = ((points - centre).norm(dim=-1) < radius).to(points.dtype)
        return sigma * inside, torch.ones(*points.shape[:2], 1)
    return field


def _sphere_hits(origins, directions, radius, centre=CENTRE):
    """Entry distance and chord length of each ray through the sphere (chord 0 for misses)."""
    b = (directions * (origins - centre)).sum(-1)
    disc = b ** 2 - ((origins - centre) ** 2).sum(-1) + radius ** 2
    root = disc.clamp(min=0).sqrt()
    return -b - root, torch.where(disc > 0, 2 * root, torch.zeros_like(root))


def _blob_field(seed=0, count=5):
    """A smooth field: a sum of Gaussian blobs of density with colours mixed by density."""
    g = torch.Generator().manual_seed(seed)
    centres = (torch.rand(count, 3, generator=g) - 0.5) * 0.5
    sizes = 0.08 + 0.08 * torch.rand(count, generator=g)
    amplitude = torch.nn.Parameter(4 + 8 * torch.rand(count, generator=g))
    colours = torch.nn.Parameter(torch.rand(count, 3, generator=g))

    def field(points, directions):
        blobs = amplitude * torch.exp(-((points[..., None, :] - centres) ** 2).sum(-1) / (2 * sizes ** 2))
        density = blobs.sum(-1)
        return density, (blobs @ colours) / density.clamp(min=1e-6)[..., None]
    return field, (amplitude, colours)


def _dense_reference(field, origins, directions, near, far, count=4096):
    """Left Riemann sum on `count` uniform samples, transmittance by an explicit cumprod."""
    t = near + (far - near) * torch.arange(count, dtype=torch.float64) / count
    points = origins[:, :, None].double() + directions[:, :, None].double() * t[:, None]
    density, features = field(points.reshape(1, -1, 3).float(), None)
    alpha = 1 - torch.exp(-density.double().reshape(-1, count) * (far - near) / count)
    transmittance = torch.cumprod(torch.cat([torch.ones_like(alpha[:, :1]), 1 - alpha[:, :-1]], 1), 1)
    weights = alpha * transmittance
    return (weights[..., None] * features.double().reshape(-1, count, features.shape[-1])).sum(1), weights.sum(1)


# ---------------------------------------------------------------------------------- composite
def test_slab_opacity_and_depth_match_closed_form():
    a, b, sigma = 1.0, 1.6, 3.0
    depths = torch.linspace(0.0, 3.0, 20001, dtype=torch.float64)
    densities = torch.where((depths >= a) & (depths < b), sigma, 0.0).to(torch.float64)
    out = composite(densities, torch.ones(20001, 2, dtype=torch.float64), depths)
    length = b - a
    decay = math.exp(-sigma * length)
    assert isinstance(out, VolumeOutput)
    assert out.opacity.item() == pytest.approx(1 - decay, abs=1e-3)
    assert out.features.tolist() == pytest.approx([1 - decay] * 2, abs=1e-3)
    assert out.transmittance.item() == pytest.approx(decay, abs=1e-3)
    assert out.depth.item() == pytest.approx(a + 1 / sigma - length * decay / (1 - decay), abs=1e-3)


def test_composite_weights_are_alpha_times_exclusive_transmittance_and_gradcheck():
    g = torch.Generator().manual_seed(1)
    depths = torch.sort(torch.rand(3, 7, generator=g, dtype=torch.float64), -1).values
    densities = (3 * torch.rand(3, 7, generator=g, dtype=torch.float64)).requires_grad_()
    values = torch.rand(3, 7, 2, generator=g, dtype=torch.float64, requires_grad=True)
    out = composite(densities, values, depths, far_delta=0.1)
    deltas = torch.cat([depths.diff(dim=-1), torch.full((3, 1), 0.1, dtype=torch.float64)], -1)
    alpha = 1 - torch.exp(-densities * deltas)
    expected = alpha * torch.cumprod(torch.cat([torch.ones(3, 1, dtype=torch.float64), 1 - alpha[:, :-1]], -1), -1)
    torch.testing.assert_close(out.weights, expected)
    torch.testing.assert_close(out.opacity + out.transmittance, torch.ones(3, dtype=torch.float64))
    assert torch.autograd.gradcheck(lambda s, v: composite(s, v, depths, 0.1).features, (densities, values))
    # opaque media and empty rays stay finite, gradients included
    dense = torch.tensor([[0.0, 1e30, 1e30], [0.0, 0.0, 0.0]], requires_grad=True)
    out = composite(dense, torch.ones(2, 3, 1), torch.tensor([[0.0, 1.0, 2.0]] * 2))
    out.depth.sum().backward()
    assert out.opacity.tolist() == [1.0, 0.0] and out.depth.tolist() == [1.0, 0.0]
    assert torch.isfinite(dense.grad).all()


# ------------------------------------------------------------------------------ render_volume
def test_sphere_opacity_matches_chord_length():
    radius, sigma = 0.3, 4.0
    K, w2c = _camera()
    out = render_volume(_sphere_field(radius, sigma), K, w2c, H, W, 0.5, 1.5, coarse=64, fine=64,
                        generator=torch.Generator().manual_seed(0))
    origins, directions = camera_rays(K, w2c, H, W)
    _, chord = _sphere_hits(origins, directions, radius)
    expected = (1 - torch.exp(-sigma * chord)).reshape(1, 1, H, W)
    assert out.features.shape == (1, 1, H, W) and out.opacity.shape == out.depth.shape == (1, 1, H, W)
    assert out.weights.shape == out.samples.shape == (1, H, W, 128)
    hit = expected > 0
    assert 0 < hit.sum() < H * W  # some rays hit, some miss
    # the density jumps at the surface: a ray's error is about sigma * (sample gap at entry and exit),
    # largest on grazing rays whose short chord falls between two coarse samples
    assert (out.opacity - expected).abs().max() < 0.08
    assert (out.opacity - expected).abs().mean() < 0.004
    assert out.opacity[~hit].abs().max() < 1e-6


def test_opaque_sphere_depth_is_first_hit_and_fine_pass_helps():
    radius, near, far, coarse = 0.3, 0.5, 1.5, 32
    K, w2c = _camera()
    origins, directions = camera_rays(K, w2c, H, W)
    entry, chord = _sphere_hits(origins, directions, radius)
    hit = (chord > 0.05).reshape(1, 1, H, W)  # away from grazing rays
    entry = entry.reshape(1, 1, H, W)
    errors = {}
    for fine in (0, 64):
        out = render_volume(_sphere_field(radius, 1e5), K, w2c, H, W, near, far, coarse=coarse, fine=fine,
                            generator=torch.Generator().manual_seed(3))
        assert (out.opacity[hit] > 0.999).all()
        errors[fine] = (out.depth - entry)[hit].abs()
    spacing = (far - near) / coarse
    assert errors[0].max() < 2 * spacing  # jittered neighbours are up to two bins apart
    assert errors[64].max() < spacing / 2
    assert errors[64].mean() < errors[0].mean() / 4


def test_coarse_and_fine_agree_with_dense_reference():
    field, _ = _blob_field()
    K, w2c = _camera(size=8, focal=10.0)
    near, far = 0.5, 1.5
    out = render_volume(field, K, w2c, 8, 8, near, far, coarse=32, fine=64,
                        generator=torch.Generator().manual_seed(0))
    origins, directions = camera_rays(K, w2c, 8, 8)
    features, opacity = _dense_reference(field, origins, directions, near, far)
    assert opacity.max() > 0.5  # the blobs are in view
    errors = out.features.permute(0, 2, 3, 1).reshape(-1, 3).double() - features
    assert (out.opacity.reshape(-1).double() - opacity).abs().max() < 0.015
    assert errors.abs().max() < 0.015 and errors.abs().mean() < 0.003


def test_chunks_and_per_pixel_bounds_do_not_change_the_image():
    field, _ = _blob_field(seed=2)
    K, w2c = _camera(size=8, focal=10.0)
    whole = render_volume(field, K, w2c, 8, 8, 0.5, 1.5, coarse=16, fine=16, jitter=False)
    chunked = render_volume(field, K, w2c, 8, 8, torch.full((1, 8, 8), 0.5), torch.tensor([1.5]),
                            coarse=16, fine=16, jitter=False, chunk=5)
    for name in ("features", "depth", "opacity", "weights", "samples"):
        torch.testing.assert_close(getattr(chunked, name), getattr(whole, name))


def test_gradients_reach_field_parameters_and_planes():
    field, params = _blob_field(seed=1)
    K, w2c = _camera(size=8, focal=10.0)
    out = render_volume(field, K, w2c, 8, 8, 0.5, 1.5, coarse=16, fine=16,
                        generator=torch.Generator().manual_seed(0))
    (out.features.sum() + out.depth.sum()).backward()
    for p in params:
        assert p.grad is not None and torch.isfinite(p.grad).all() and p.grad.abs().sum() > 0

    planes = (0.1 * torch.randn(1, 3, 4, 8, 8, generator=torch.Generator().manual_seed(0))).requires_grad_()

    def plane_field(points, directions):
        f = triplane_features(planes, points, bounds=0.5)
        return torch.nn.functional.softplus(8 * f[..., 0] + 2), torch.sigmoid(f[..., 1:])

    out = render_volume(plane_field, K, w2c, 8, 8, 0.5, 1.5, coarse=8, fine=8,
                        generator=torch.Generator().manual_seed(0))
    out.features.mean().backward()
    assert torch.isfinite(planes.grad).all() and (planes.grad != 0).sum() > 3 * 4 * 8


# ------------------------------------------------------------------------------- triplanes
def test_triplane_lookup_at_texel_centres_sums_the_three_planes():
    R, bounds = 4, 2.0
    planes = torch.arange(3 * 2 * R * R, dtype=torch.float32).reshape(1, 3, 2, R, R)

    def centre(k):
        return ((2 * k + 1) / R - 1) * bounds

    i, j, k = 0, 2, 3  # texel indices along x, y, z
    point = torch.tensor([[[centre(i), centre(j), centre(k)]]])
    # plane[row, col]: xy -> (y, x), xz -> (z, x), yz -> (z, y)
    expected = planes[0, 0, :, j, i] + planes[0, 1, :, k, i] + planes[0, 2, :, k, j]
    torch.testing.assert_close(triplane_features(planes, point, bounds)[0, 0], expected)
    # halfway between two x texels: bilinear; outside the cube: zero
    between = torch.tensor([[[(centre(1) + centre(2)) / 2, centre(j), centre(k)]]])
    expected = ((planes[0, 0, :, j, 1] + planes[0, 0, :, j, 2] + planes[0, 1, :, k, 1] + planes[0, 1, :, k, 2]) / 2
                + planes[0, 2, :, k, j])
    torch.testing.assert_close(triplane_features(planes, between, bounds)[0, 0], expected)
    assert triplane_features(planes, torch.full((1, 1, 3), 3 * bounds), bounds).abs().max() == 0
    with pytest.raises(ConfigError, match="planes"):
        triplane_features(planes[:, :2], point, bounds)


# ------------------------------------------------------------------------------------ rays
def test_camera_rays_centre_pixel_and_reprojection():
    K = intrinsics(30.0, 9, 11)
    origins, directions = camera_rays(K, torch.eye(4), 9, 11)
    assert origins.shape == directions.shape == (1, 99, 3)
    torch.testing.assert_close(directions[0, 4 * 11 + 5], torch.tensor([0.0, 0.0, 1.0]))
    torch.testing.assert_close(directions.norm(dim=-1), torch.ones(1, 99))

    angle = torch.tensor(0.4)
    turn = torch.eye(4)
    turn[0, 0], turn[0, 2], turn[2, 0], turn[2, 2] = angle.cos(), angle.sin(), -angle.sin(), angle.cos()
    w2c = torch.stack([default_world_to_cam(2.0), default_world_to_cam(1.5) @ turn])
    origins, directions = camera_rays(K, w2c, 9, 11)
    assert origins.shape == (2, 99, 3)
    torch.testing.assert_close(origins[:, 0], torch.linalg.inv(w2c)[:, :3, 3])
    pixels, depth = project(origins + 0.7 * directions, K.expand(2, 3, 3), w2c)
    rows, cols = torch.meshgrid(torch.arange(9.0), torch.arange(11.0), indexing="ij")
    torch.testing.assert_close(pixels, torch.stack([cols, rows], -1).reshape(1, 99, 2).expand(2, -1, -1),
                               atol=1e-4, rtol=0)
    assert (depth > 0).all()


# -------------------------------------------------------------------------------- sampling
def test_stratified_samples_are_sorted_one_per_bin():
    near, far = torch.tensor([0.5, 1.0]), 2.0
    depths = stratified_samples(near[:, None], far, 8, (2, 3), generator=torch.Generator().manual_seed(0))
    assert depths.shape == (2, 3, 8)
    width = (far - near)[:, None, None] / 8
    bins = ((depths - near[:, None, None]) / width).floor()
    assert (bins == torch.arange(8.0)).all()
    centres = stratified_samples(0.0, 1.0, 4, (1,), jitter=False)
    torch.testing.assert_close(centres, torch.tensor([[0.125, 0.375, 0.625, 0.875]]))
    with pytest.raises(ConfigError, match="near < far"):
        stratified_samples(1.0, 1.0, 4, (1,))
    with pytest.raises(ConfigError, match="at least one"):
        stratified_samples(0.0, 1.0, 0, (1,))


def test_importance_samples_follow_the_weights_and_survive_zero_weights():
    depths = torch.linspace(0.0, 1.0, 11).expand(2, 11)
    weights = torch.zeros(2, 11)
    weights[0, 7] = 1.0  # all mass on the bin around t = 0.7: [0.65, 0.75]
    weights[1, 2], weights[1, 8] = 3.0, 1.0
    drawn = importance_samples(depths, weights, 400, generator=torch.Generator().manual_seed(0))
    assert drawn.shape == (2, 400) and (drawn.diff(dim=-1) >= 0).all()
    assert ((drawn[0] >= 0.65) & (drawn[0] <= 0.75)).all()
    near_first = ((drawn[1] - 0.2).abs() <= 0.05).float().mean()
    assert ((drawn[1] - 0.8).abs() <= 0.05).float().mean() + near_first == 1
    assert near_first == pytest.approx(0.75, abs=0.07)

    even = importance_samples(depths[:1], torch.zeros(1, 11), 20, deterministic=True)
    assert torch.isfinite(even).all() and even.min() >= 0 and even.max() <= 1
    torch.testing.assert_close(even, (torch.arange(20.0) + 0.5)[None] / 20)  # zero weights: uniform


def test_bad_inputs_raise_clear_errors():
    K, w2c = _camera(size=4)
    field = _sphere_field(0.3, 1.0)
    with pytest.raises(ConfigError, match="near < far"):
        render_volume(field, K, w2c, 4, 4, 1.5, 0.5)
    with pytest.raises(ConfigError, match="coarse >= 1"):
        render_volume(field, K, w2c, 4, 4, 0.5, 1.5, coarse=0)
    with pytest.raises(ConfigError, match="K must be"):
        render_volume(field, K[:, :2], w2c, 4, 4, 0.5, 1.5)
    with pytest.raises(ConfigError, match="near must be"):
        render_volume(field, K, w2c, 4, 4, torch.zeros(2, 3), 1.5)
    with pytest.raises(ConfigError, match="field must return"):
        render_volume(lambda p, d: (p, p), K, w2c, 4, 4, 0.5, 1.5)
    with pytest.raises(ConfigError, match="composite needs"):
        composite(torch.zeros(3), torch.zeros(3), torch.zeros(3))
