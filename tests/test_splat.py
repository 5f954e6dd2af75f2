"""Gaussian feature splatting: the torch splatter against a dense brute-force reference and gsplat.

The dense reference below is written independently of onehead.render.splat: every pixel against
every Gaussian in float64, onehead's own pixel convention (centres at integers, no half-pixel
shift), one Python loop over depth-sorted Gaussians, gsplat's rules. Since gsplat's screen boxes
are tight for the 1/255 cut-off, the tiled splatter must match it to float64 rounding.
"""

from __future__ import annotations

import pytest
import torch

from onehead.camera import default_world_to_cam, intrinsics, project, to_gsplat_intrinsics
from onehead.errors import ConfigError
from onehead.render import SplatResult, splat_features
from onehead.render.splat import (composite_tiles, gaussian_covariances, intersect_tiles,
                                  project_gaussians)

F64 = torch.float64


# ----------------------------------------------------------------------------------------------
# the independent dense reference


def _rotation(quats):
    q = quats / quats.norm(dim=-1, keepdim=True)
    w, x, y, z = q.unbind(-1)
    rows = [[w * w + x * x - y * y - z * z, 2 * (x * y - w * z), 2 * (x * z + w * y)],
            [2 * (x * y + w * z), w * w - x * x + y * y - z * z, 2 * (y * z - w * x)],
            [2 * (x * z - w * y), 2 * (y * z + w * x), w * w - x * x - y * y + z * z]]
    return torch.stack([torch.stack(r, -1) for r in rows], -2)


def dense_reference(means, scales, quats, opacities, features, K, world_to_cam, height, width,
                    near=0.01, far=1e10, background=None, stats=None):
    """(features, alpha, depth) as (B, C, H, W), (B, 1, H, W), (B, 1, H, W), all in float64.

    stats, a dict, receives "stopped": how many pixels hit the transmittance stop."""
    args = [t.to(F64) for t in (means, scales, quats, opacities, features, K, world_to_cam)]
    means, scales, quats, opacities, features, K, world_to_cam = args
    outputs = []
    for b in range(len(means)):
        R, t = world_to_cam[b, :3, :3], world_to_cam[b, :3, 3]
        x, y, z = (means[b] @ R.T + t).unbind(-1)
        rot = R @ _rotation(quats[b])
        cov_cam = rot @ torch.diag_embed(scales[b] ** 2) @ rot.transpose(-1, -2)
        fx, fy, cx, cy = K[b, 0, 0], K[b, 1, 1], K[b, 0, 2], K[b, 1, 2]
        used = (z >= near) & (z <= far)
        z_ = torch.where(used, z, torch.ones_like(z))
        # gsplat evaluates the Jacobian with x/z, y/z clamped to 15% of the image beyond its edges;
        # the image spans [-0.5, width - 0.5] in onehead's pixels
        u = (x / z_).clamp(-(cx + 0.5 + 0.15 * width) / fx, (width - 0.5 - cx + 0.15 * width) / fx)
        v = (y / z_).clamp(-(cy + 0.5 + 0.15 * height) / fy, (height - 0.5 - cy + 0.15 * height) / fy)
        J = torch.zeros(len(z), 2, 3, dtype=F64)
        J[:, 0, 0], J[:, 0, 2] = fx / z_, -fx * u / z_
        J[:, 1, 1], J[:, 1, 2] = fy / z_, -fy * v / z_
        precision = torch.linalg.inv(J @ cov_cam @ J.transpose(-1, -2) + 0.3 * torch.eye(2, dtype=F64))
        centre = torch.stack([fx * x / z_ + cx, fy * y / z_ + cy], -1)

        rows, cols = torch.meshgrid(torch.arange(height, dtype=F64), torch.arange(width, dtype=F64), indexing="ij")
        d = torch.stack([cols, rows], -1).reshape(-1, 1, 2) - centre  # (P, N, 2)
        alpha = (opacities[b] * torch.exp(-0.5 * torch.einsum("pni,nij,pnj->pn", d, precision, d))).clamp(max=0.999)
        alpha = torch.where((alpha >= 1 / 255) & used, alpha, torch.zeros_like(alpha))

        T = torch.ones(len(d), dtype=F64)
        done = torch.zeros(len(d), dtype=torch.bool)
        color = torch.zeros(len(d), features.shape[-1], dtype=F64)
        acc, depth = torch.zeros_like(T), torch.zeros_like(T)
        for n in torch.argsort(z):  # front to back
            next_T = T * (1 - alpha[:, n])
            stops = (alpha[:, n] > 0) & (next_T <= 1e-4)
            adds = (alpha[:, n] > 0) & ~stops & ~done
            done |= stops
            w = torch.where(adds, alpha[:, n] * T, torch.zeros_like(T))
            color += w[:, None] * features[b, n]
            acc += w
            depth += w * z[n]
            T = torch.where(adds, next_T, T)
        if stats is not None:
            stats["stopped"] = stats.get("stopped", 0) + int(done.sum())
        if background is not None:
            color += (1 - acc)[:, None] * background.to(F64).expand(len(means), -1)[b]
        depth = torch.where(acc > 0, depth / acc.clamp(min=1e-300), torch.zeros_like(depth))
        outputs.append((color.T.reshape(-1, height, width), acc.reshape(1, height, width),
                        depth.reshape(1, height, width)))
    return tuple(torch.stack(o) for o in zip(*outputs))


# ----------------------------------------------------------------------------------------------
# scenes


def random_scene(seed, batch=2, n=50, height=20, width=24, channels=3, anisotropic=True, dtype=F64,
                 opacity=(0.05, 1.0), spread=(0.12, 0.1, 0.3), size=(0.005, 0.03)):
    """Gaussians around the origin seen from 1 m; the first three of each scene sit behind the
    camera, the next three beyond the image's left and bottom edges (crossing them)."""
    g = torch.Generator().manual_seed(seed)
    rand = lambda *shape: torch.rand(*shape, generator=g, dtype=dtype)  # noqa: E731
    means = torch.randn(batch, n, 3, generator=g, dtype=dtype) * torch.tensor(spread, dtype=dtype)
    means[:, :3, 2] = 1.2 + rand(batch, 3)  # camera at z = 1 looks down -z: these are behind it
    means[:, 3:6, 0] = -0.3  # about the left edge
    means[:, 3:6, 1] = -0.2  # about the bottom edge (world +y is up, image y is down)
    scales = size[0] + (size[1] - size[0]) * rand(batch, n, 3 if anisotropic else 1)
    scales = scales if anisotropic else scales[..., 0]
    quats = torch.randn(batch, n, 4, generator=g, dtype=dtype) if anisotropic else None
    opacities = opacity[0] + (opacity[1] - opacity[0]) * rand(batch, n)
    features = torch.randn(batch, n, channels, generator=g, dtype=dtype)
    K = intrinsics(torch.tensor([30.0, 36.0], dtype=dtype)[:batch], height, width, dtype=dtype)
    K[:, 1, 1] *= 0.9  # non-square pixels
    K[:, 0, 2] += 0.7  # off-centre principal point
    w2c = default_world_to_cam(1.0, batch, dtype=dtype)
    return dict(means=means, scales=scales, quats=quats, opacities=opacities, features=features,
                K=K, world_to_cam=w2c, height=height, width=width)


def splat(scene, **kwargs):
    s = scene
    return splat_features(s["means"], s["scales"], s["opacities"], s["features"], s["K"], s["world_to_cam"],
                          s["height"], s["width"], quats=s["quats"], **kwargs)


def reference(scene, **kwargs):
    s = scene
    scales = s["scales"] if s["scales"].dim() == 3 else s["scales"][..., None].expand(-1, -1, 3)
    quats = s["quats"] if s["quats"] is not None else torch.tensor([1.0, 0, 0, 0], dtype=F64).expand(
        *scales.shape[:2], 4)
    return dense_reference(s["means"], scales, quats, s["opacities"], s["features"], s["K"],
                           s["world_to_cam"], s["height"], s["width"], **kwargs)


def max_differences(result: SplatResult, expected) -> list[float]:
    return [(got.to(F64) - want).abs().max().item()
            for got, want in zip((result.features, result.alpha, result.depth), expected)]


# ----------------------------------------------------------------------------------------------
# the camera convention


def test_gsplat_intrinsics_shift_the_principal_point_by_half_a_pixel():
    K = intrinsics(100.0, 48, 64)
    Kg = to_gsplat_intrinsics(K)
    assert torch.equal(Kg - K, torch.tensor([[0, 0, 0.5], [0, 0, 0.5], [0, 0, 0.0]]))
    points = torch.tensor([[[0.05, -0.02, 0.9]]])
    w2c = torch.eye(4)[None]
    onehead_px, _ = project(points, K[None], w2c)
    gsplat_px, _ = project(points, Kg[None], w2c)
    assert torch.allclose(gsplat_px - onehead_px, torch.tensor(0.5))


def test_a_gaussian_on_the_optical_axis_lands_on_the_centre_pixel():
    """Odd image: the axis hits pixel (8, 10)'s centre, so alpha there is exactly the opacity."""
    height, width, opacity, distance = 17, 21, 0.6, 1.3
    result = splat_features(torch.zeros(1, 1, 3), torch.full((1, 1), 0.01), torch.full((1, 1), opacity),
                            torch.tensor([[[2.0]]]), intrinsics(50.0, height, width)[None],
                            default_world_to_cam(distance, 1), height, width, backend="torch")
    alpha = result.alpha[0, 0]
    assert alpha[8, 10].item() == pytest.approx(opacity, abs=1e-6)
    assert result.features[0, 0, 8, 10].item() == pytest.approx(2 * opacity, abs=1e-6)
    assert result.depth[0, 0, 8, 10].item() == pytest.approx(distance, abs=1e-6)
    assert torch.allclose(alpha, alpha.flip(0)) and torch.allclose(alpha, alpha.flip(1))  # symmetric
    assert alpha.argmax().item() == 8 * width + 10
    assert result.depth[0, 0][alpha == 0].abs().max().item() == 0  # 0 where nothing is splatted


# ----------------------------------------------------------------------------------------------
# the torch splatter against the dense reference


SCENES = {
    "anisotropic": dict(seed=0),
    "isotropic": dict(seed=1, anisotropic=False),
    # many large, nearly opaque Gaussians: pixels hit the 1e-4 stop and the 0.999 clamp
    "opaque-pile": dict(seed=2, n=60, opacity=(0.7, 1.0), spread=(0.08, 0.06, 0.2), size=(0.02, 0.06)),
    "odd-size": dict(seed=3, n=40, height=29, width=37, batch=1),
}


@pytest.mark.parametrize("name", SCENES)
def test_torch_splatter_matches_the_dense_reference(name):
    """float64: only summation order differs, so the bound is 1e-10 (values are O(1))."""
    scene = random_scene(**SCENES[name])
    background = torch.tensor([0.3, -1.0, 2.0], dtype=F64)
    result = splat(scene, backend="torch", background=background)
    stats = {}
    expected = reference(scene, background=background, stats=stats)
    worst = max_differences(result, expected)
    assert max(worst) < 1e-10, f"{name}: max |torch - dense| (features, alpha, depth) = {worst}"
    assert expected[1].max() > 0.5, "the scene must actually cover pixels"
    if name == "opaque-pile":
        assert stats["stopped"] > 20, "pixels must reach the transmittance stop"
        assert (expected[1] > 0.998).sum() > 20, "and the 0.999 clamp"


def test_float32_splatter_is_close_to_the_float64_reference():
    """float32 rounding (eps 6e-8 per operation, tens of operations per O(1) value, measured 8e-7): 1e-5."""
    scene = random_scene(seed=4, dtype=torch.float32)
    worst = max_differences(splat(scene, backend="torch"), reference(scene))
    assert max(worst) < 1e-5, f"max |float32 torch - float64 dense| (features, alpha, depth) = {worst}"


def test_auto_backend_on_cpu_is_torch():
    scene = random_scene(seed=5)
    auto, torch_ = splat(scene), splat(scene, backend="torch")
    assert torch.equal(auto.features, torch_.features) and torch.equal(auto.alpha, torch_.alpha)


def test_nothing_in_front_of_the_camera_gives_empty_maps_and_zero_gradients():
    scene = random_scene(seed=6)
    scene["means"] = (scene["means"] + torch.tensor([0, 0, 5.0], dtype=F64)).requires_grad_()
    result = splat(scene, backend="torch")
    assert result.features.abs().max() == 0 and result.alpha.max() == 0 and result.depth.max() == 0
    (result.features.sum() + result.alpha.sum()).backward()
    assert scene["means"].grad.abs().max() == 0


# ----------------------------------------------------------------------------------------------
# the pieces against gsplat's own torch implementation


def test_projection_matches_gsplat_torch_projection():
    gsplat_impl = pytest.importorskip("gsplat.cuda._torch_impl")
    for dtype in (F64, torch.float32):
        s = random_scene(seed=7, n=60, dtype=dtype)
        covs = gaussian_covariances(s["scales"], _unit_quats(s["quats"]))
        Kg = to_gsplat_intrinsics(s["K"])
        ours = project_gaussians(s["means"], covs, Kg, s["world_to_cam"], s["height"], s["width"])
        radii, means2d, depths, conics, _ = gsplat_impl._fully_fused_projection(
            s["means"], covs, s["world_to_cam"][:, None], Kg[:, None], s["width"], s["height"])
        radii, means2d, depths, conics = radii[:, 0], means2d[:, 0], depths[:, 0], conics[:, 0]
        assert torch.equal(ours.radii, radii), "same Gaussians kept, same screen boxes"
        kept = radii[..., 0] > 0
        assert 20 < kept.sum() < kept.numel(), "the scene must keep some Gaussians and drop others"
        for name, got, want in [("means2d", ours.means2d, means2d), ("depths", ours.depths, depths),
                                ("conics", ours.conics, conics)]:
            scale = want[kept].abs().max()
            assert (got[kept] - want[kept]).abs().max() <= 1e-5 * scale, f"{name} ({dtype})"


def test_opacity_aware_radii_bound_the_one_over_255_cut_off():
    s = random_scene(seed=8, n=60)
    covs = gaussian_covariances(s["scales"], _unit_quats(s["quats"]))
    Kg = to_gsplat_intrinsics(s["K"])
    plain = project_gaussians(s["means"], covs, Kg, s["world_to_cam"], s["height"], s["width"])
    aware = project_gaussians(s["means"], covs, Kg, s["world_to_cam"], s["height"], s["width"],
                              opacities=s["opacities"])
    assert (aware.radii <= plain.radii).all() and (aware.radii < plain.radii).any()
    faint = s["opacities"] < 1 / 255
    assert (aware.radii[faint] == 0).all()


def test_tile_intersections_match_gsplat():
    gsplat_impl = pytest.importorskip("gsplat.cuda._torch_impl")
    s = random_scene(seed=9, n=40, height=40, width=56, size=(0.002, 0.02), dtype=torch.float32)
    covs = gaussian_covariances(s["scales"], _unit_quats(s["quats"]))
    p = project_gaussians(s["means"], covs, to_gsplat_intrinsics(s["K"]), s["world_to_cam"], 40, 56,
                          opacities=s["opacities"])
    ours = intersect_tiles(p.means2d, p.radii, p.depths, 40, 56)
    _, isect_ids, flatten_ids = gsplat_impl._isect_tiles(p.means2d.detach(), p.radii, p.depths.detach(),
                                                         16, ours.tiles_x, ours.tiles_y)
    offsets = gsplat_impl._isect_offset_encode(isect_ids, 2, ours.tiles_x, ours.tiles_y)
    assert len(ours.gaussian_ids) > 40
    assert torch.equal(ours.gaussian_ids, flatten_ids.long())
    assert torch.equal(ours.offsets[:-1], offsets.flatten().long())
    tile_bits = (ours.tiles_x * ours.tiles_y).bit_length()  # gsplat packs (image, tile) in the high word
    image, tile = (isect_ids >> 32) >> tile_bits, (isect_ids >> 32) & ((1 << tile_bits) - 1)
    assert torch.equal(ours.tile_ids, image * ours.tiles_x * ours.tiles_y + tile)


def _unit_quats(quats):
    return torch.nn.functional.normalize(quats, dim=-1)


# ----------------------------------------------------------------------------------------------
# gradients


def test_compositing_backward_passes_gradcheck():
    """The hand-written backward of the compositing, on its own inputs, in float64."""
    s = random_scene(seed=10, batch=1, n=10, height=12, width=20, channels=1,
                     opacity=(0.3, 0.95), spread=(0.05, 0.03, 0.1), size=(0.02, 0.04))
    covs = gaussian_covariances(s["scales"], _unit_quats(s["quats"]))
    p = project_gaussians(s["means"], covs, to_gsplat_intrinsics(s["K"]), s["world_to_cam"], 12, 20,
                          opacities=s["opacities"])
    tiles = intersect_tiles(p.means2d, p.radii, p.depths, 12, 20)
    assert tiles.counts().max() > 4, "tiles must span several depth groups of 4"
    inputs = [t.detach().clone().requires_grad_() for t in (p.means2d, p.conics, s["opacities"], s["features"])]
    assert torch.autograd.gradcheck(lambda *x: composite_tiles(*x, tiles, depth_slots=4), inputs)


@pytest.mark.parametrize("name", ["anisotropic", "opaque-pile"])
def test_splat_features_passes_gradcheck(name):
    """End to end in float64 (fast mode: random projections of the Jacobian), incl. quats and background."""
    scenes = {"anisotropic": dict(seed=11, batch=1, n=8, channels=2, opacity=(0.3, 0.95),
                                  spread=(0.06, 0.05, 0.1), size=(0.01, 0.04)),
              "opaque-pile": dict(seed=12, batch=1, n=20, channels=2, opacity=(0.85, 0.99),
                                  spread=(0.03, 0.03, 0.05), size=(0.03, 0.06))}
    s = random_scene(**scenes[name])
    names = ["means", "scales", "quats", "opacities", "features"]
    inputs = [s[k].clone().requires_grad_() for k in names] + [torch.randn(2, dtype=F64, requires_grad=True)]

    def run(means, scales, quats, opacities, features, background):
        r = splat_features(means, scales, opacities, features, s["K"], s["world_to_cam"], s["height"],
                           s["width"], quats=quats, background=background, backend="torch")
        return r.features, r.alpha, r.depth

    if name == "opaque-pile":
        stats = {}
        reference(s, stats=stats)
        assert stats["stopped"] > 5, "the transmittance stop must be exercised"
    assert torch.autograd.gradcheck(run, inputs, fast_mode=True)


def test_gradients_reach_every_input_on_a_bigger_scene():
    s = random_scene(seed=13, batch=2, n=400, height=64, width=48, channels=8, dtype=torch.float32,
                     size=(0.003, 0.02))
    names = ["means", "scales", "quats", "opacities", "features"]
    leaves = {k: s[k].clone().requires_grad_() for k in names}
    r = splat_features(leaves["means"], leaves["scales"], leaves["opacities"], leaves["features"], s["K"],
                       s["world_to_cam"], 64, 48, quats=leaves["quats"], backend="torch")
    weights = [torch.randn_like(t) for t in (r.features, r.alpha, r.depth)]
    sum(((t * w).sum() for t, w in zip((r.features, r.alpha, r.depth), weights))).backward()
    for k, leaf in leaves.items():
        assert torch.isfinite(leaf.grad).all(), k
        assert (leaf.grad.abs().reshape(2, 400, -1).sum(-1) > 0).float().mean() > 0.5, f"{k}: most Gaussians get a gradient"


# ----------------------------------------------------------------------------------------------
# gsplat on a GPU


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_torch_backend_matches_gsplat_rasterization_on_cuda():
    pytest.importorskip("gsplat")
    s = random_scene(seed=14, n=300, height=72, width=96, channels=5, dtype=torch.float32)
    s = {k: v.cuda() if torch.is_tensor(v) else v for k, v in s.items()}
    background = torch.tensor([0.2, 0.0, -0.5, 1.0, 0.3], device="cuda")
    ours, theirs = splat(s, backend="torch", background=background), splat(s, backend="gsplat", background=background)
    # depth is compared as alpha * depth: where alpha is just 1/255 a flipped cut-off would jump it by z
    diffs = [(a - b).abs() for a, b in zip((ours.features, ours.alpha, ours.alpha * ours.depth),
                                            (theirs.features, theirs.alpha, theirs.alpha * theirs.depth))]
    message = ("max |torch - gsplat| (features, alpha, alpha * depth) = "
               + ", ".join(f"{d.max().item():.3g}" for d in diffs))
    # gsplat uses fast-math exp in float32: a contribution at exactly the 1/255 cut-off may flip
    # (a jump of ~0.004 |f|), everything else agrees to float32 rounding
    assert all(d.mean() < 1e-4 for d in diffs), message
    assert all(d.max() < 2e-2 for d in diffs), message
    assert theirs.alpha.max() > 0.5


# ----------------------------------------------------------------------------------------------
# bad inputs


def _bad(scene, **change):
    args = dict(means=scene["means"], scales=scene["scales"], opacities=scene["opacities"],
                features=scene["features"], K=scene["K"], world_to_cam=scene["world_to_cam"],
                height=scene["height"], width=scene["width"], quats=scene["quats"])
    args.update(change)
    return args


@pytest.mark.parametrize("change, message", [
    (lambda s: dict(means=s["means"][..., :2]), "means must be"),
    (lambda s: dict(opacities=s["opacities"][:, :-1]), "opacities must be"),
    (lambda s: dict(features=s["features"][:, :-1]), "features must be"),
    (lambda s: dict(scales=s["scales"][..., :2]), "scales must be"),
    (lambda s: dict(quats=s["quats"][..., :3]), "quats must be"),
    (lambda s: dict(K=s["K"][0]), "K must be"),
    (lambda s: dict(world_to_cam=s["world_to_cam"][:, :3]), "world_to_cam must be"),
    (lambda s: dict(scales=-s["scales"]), ">= 0"),
    (lambda s: dict(opacities=s["opacities"] + 1), "opacities must lie in"),
    (lambda s: dict(height=0), "positive integers"),
    (lambda s: dict(background=torch.zeros(7, dtype=F64)), "background must be"),
    (lambda s: dict(backend="opengl"), "unknown backend"),
])
def test_bad_inputs_raise_config_errors(change, message):
    scene = random_scene(seed=15)
    with pytest.raises(ConfigError, match=message):
        splat_features(**_bad(scene, **change(scene)))


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the CPU-only error")
def test_gsplat_backend_on_cpu_tensors_says_it_needs_cuda():
    with pytest.raises(ConfigError, match="needs CUDA"):
        splat(random_scene(seed=16), backend="gsplat")
