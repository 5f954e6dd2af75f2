"""The mesh rasterizer against an independent per-pixel ray caster, plus its contracts.

The reference casts a ray through every pixel centre (numpy, float64, Moller-Trumbore) and
keeps the nearest hit. Pixels whose centre lies within a margin of a triangle edge, or where
the two nearest surfaces are at almost the same depth, may legitimately go either way; the
reference marks them and only those are excluded from the comparison.
"""

from __future__ import annotations

import importlib.machinery
import sys
import types

import numpy as np
import pytest
import scipy.ndimage
import torch

from onehead.camera import (
    default_focal,
    default_world_to_cam,
    intrinsics,
    nvdiffrast_projection,
    project,
    pytorch3d_camera_params,
    world_to_camera,
)
from onehead.errors import ConfigError
from onehead.render.rasterize import Fragments, interpolate, rasterize_mesh, rasterize_uv

NEAR = 1e-3


# ------------------------------------------------------------------------------ reference
def reference_raster(cam_vertices, faces, K, height, width, cull_backfaces=False, margin=1e-6):
    """Nearest ray hit per pixel centre. cam_vertices (V, 3) camera space, numpy float64.

    Returns face (H, W) int (-1 background), bary (H, W, 3), depth (H, W), ambiguous (H, W) bool.
    """
    tri = cam_vertices[faces]  # (F, 3, 3)
    usable = tri[:, :, 2].min(1) > NEAR
    # Pixel-space corners, for the facing and the edge-distance margin.
    pix = tri[:, :, :2] / np.where(usable[:, None, None], tri[:, :, 2:], 1.0)
    pix = pix * [K[0, 0], K[1, 1]] + K[:2, 2]
    e1, e2 = pix[:, 1] - pix[:, 0], pix[:, 2] - pix[:, 0]
    signed_area = e1[:, 0] * e2[:, 1] - e1[:, 1] * e2[:, 0]  # y down: < 0 is counter-clockwise on screen
    usable &= signed_area != 0
    if cull_backfaces:
        usable &= signed_area < 0

    rows, cols = np.mgrid[0:height, 0:width]
    centres = np.stack([cols, rows], -1).reshape(-1, 2).astype(np.float64)  # (P, 2) as (x, y)
    rays = np.concatenate([(centres - K[:2, 2]) / [K[0, 0], K[1, 1]], np.ones((len(centres), 1))], 1)

    # Moller-Trumbore for every (pixel, triangle) pair.
    v0, edge1, edge2 = tri[:, 0], tri[:, 1] - tri[:, 0], tri[:, 2] - tri[:, 0]
    pvec = np.cross(rays[:, None], edge2[None])  # (P, F, 3)
    det = (edge1[None] * pvec).sum(-1)
    safe = np.where(det == 0, 1.0, det)
    tvec = -v0[None]
    u = (tvec * pvec).sum(-1) / safe
    qvec = np.cross(tvec, edge1[None])
    v = (rays[:, None] * qvec).sum(-1) / safe
    t = (edge2[None] * qvec).sum(-1) / safe
    hit = usable[None] & (det != 0) & (u >= 0) & (v >= 0) & (u + v <= 1) & (t > 0)
    depth_all = np.where(hit, t, np.inf)
    order = np.argsort(depth_all, axis=1, kind="stable")
    best = order[:, 0]
    nearest = depth_all[np.arange(len(best)), best]
    second = depth_all[np.arange(len(best)), order[:, 1]] if tri.shape[0] > 1 else np.full(len(best), np.inf)
    face = np.where(np.isfinite(nearest), best, -1)
    bary = np.stack([1 - u, u, v], -1)[np.arange(len(best)), best]
    bary[:, 0] -= bary[:, 2]
    bary[face < 0] = 0
    depth = np.where(face >= 0, nearest, 0.0)

    # Ambiguous: the centre is within `margin` pixels of an edge of a usable triangle, or the two
    # nearest surfaces are within a relative 1e-5 in depth.
    near_edge = np.zeros(len(centres), bool)
    for k in range(3):
        a, b = pix[usable, k], pix[usable, (k + 1) % 3]
        seg = b - a
        s = np.clip(((centres[:, None] - a) * seg).sum(-1) / np.maximum((seg * seg).sum(-1), 1e-300), 0, 1)
        closest = a + s[..., None] * seg
        near_edge |= (np.linalg.norm(centres[:, None] - closest, axis=-1) < margin).any(1)
    close_depths = np.isfinite(second) & (second - np.where(np.isfinite(second), nearest, 0) < 1e-5 * nearest)
    ambiguous = near_edge | close_depths
    shape = (height, width)
    return face.reshape(shape), bary.reshape(*shape, 3), depth.reshape(shape), ambiguous.reshape(shape)


# ------------------------------------------------------------------------------ scenes
def random_rotation(rng):
    q, r = np.linalg.qr(rng.normal(size=(3, 3)))
    q = q * np.sign(np.diag(r))
    return q if np.linalg.det(q) > 0 else -q


def random_scene(seed, height, width, count=40):
    """Triangles in camera space: overlapping, crossing the border, both facings, a few behind `near`.

    Returns world vertices (V, 3), faces (F, 3), K (3, 3), world_to_cam (4, 4), all numpy float64.
    """
    rng = np.random.default_rng(seed)
    focal = rng.uniform(0.9, 1.3) * max(height, width)
    K = np.array([[focal, 0, width / 2 + rng.uniform(-3, 3)],
                  [0, focal * rng.uniform(0.9, 1.1), height / 2 + rng.uniform(-3, 3)], [0, 0, 1]])
    centres = np.stack([rng.uniform(-0.7, 0.7, count), rng.uniform(-0.7, 0.7, count),
                        rng.uniform(1.0, 3.0, count)], 1)
    centres[:, :2] *= centres[:, 2:]  # spread over the view, some past the border
    sizes = rng.uniform(0.05, 0.45, count)[:, None, None]
    cam = centres[:, None] + sizes * rng.normal(size=(count, 3, 3))
    cam[:3, 0, 2] = [-0.5, 0.0, NEAR / 2]  # three triangles reach behind the near plane
    cam = cam.reshape(-1, 3)
    faces = np.arange(len(cam)).reshape(-1, 3)

    rotation, translation = random_rotation(rng), rng.normal(size=3)
    world_to_cam = np.eye(4)
    world_to_cam[:3, :3], world_to_cam[:3, 3] = rotation, translation
    world = (cam - translation) @ rotation  # inverse of cam = R world + t
    return world, faces, K, world_to_cam


def to_torch(*arrays, dtype=torch.float64):
    return [torch.as_tensor(a, dtype=torch.long if a.dtype.kind == "i" else dtype) for a in arrays]


def compare_with_reference(world, faces, K, world_to_cam, height, width, dtype, cull=False):
    vertices, faces_t, K_t, w2c_t = to_torch(world, faces, K, world_to_cam, dtype=dtype)
    fragments = rasterize_mesh(vertices[None], faces_t, K_t, w2c_t, height, width, cull_backfaces=cull)
    cam = world @ world_to_cam[:3, :3].T + world_to_cam[:3, 3]
    margin = 1e-6 if dtype == torch.float64 else 1e-3
    face, bary, depth, ambiguous = reference_raster(cam, faces, K, height, width, cull, margin)
    got = fragments.face_index[0].numpy()
    agree = got == face
    assert np.all(agree | ambiguous), f"{(~agree & ~ambiguous).sum()} pixels differ from the ray caster"
    assert agree.sum() > 0.9 * agree.size
    atol = 1e-9 if dtype == torch.float64 else 1e-4
    np.testing.assert_allclose(fragments.bary[0].numpy()[agree], bary[agree], atol=atol)
    np.testing.assert_allclose(fragments.depth[0].numpy()[agree], depth[agree], rtol=atol)
    return fragments, face, ambiguous


# ------------------------------------------------------------------------------ tests
@pytest.mark.parametrize("seed", range(4))
@pytest.mark.parametrize("size", [(29, 37), (37, 29)])
def test_matches_ray_caster_float64(seed, size):
    height, width = size
    world, faces, K, w2c = random_scene(seed, height, width)
    fragments, face, _ = compare_with_reference(world, faces, K, w2c, height, width, torch.float64)
    # The scenes exercise what they are meant to: background, occlusion, faces behind `near`,
    # visible faces crossing the image border.
    assert (face < 0).any() and len(np.unique(face)) > 10
    assert not np.isin([0, 1, 2], fragments.face_index.numpy()).any()
    visible = np.unique(face[face >= 0])
    pixels = project(*to_torch(world[None], K, w2c))[0][0].numpy()[faces[visible]]  # (n, 3, 2)
    outside = (pixels < -0.5).any(-1) | (pixels[..., 0] > width - 0.5) | (pixels[..., 1] > height - 0.5)
    assert outside.any(1).sum() >= 2


@pytest.mark.parametrize("seed", range(4, 7))
def test_matches_ray_caster_float32(seed):
    world, faces, K, w2c = random_scene(seed, 30, 37)
    compare_with_reference(world, faces, K, w2c, 30, 37, torch.float32)


@pytest.mark.parametrize("seed", range(3))
def test_back_face_culling_matches_ray_caster(seed):
    world, faces, K, w2c = random_scene(seed, 30, 37)
    culled, _, _ = compare_with_reference(world, faces, K, w2c, 30, 37, torch.float64, cull=True)
    everything = rasterize_mesh(*to_torch(world[None], faces, K, w2c), 30, 37)
    # Culling really removed faces that were visible.
    assert (culled.face_index != everything.face_index).sum() > 20


def test_batch_with_different_cameras_matches_per_image():
    height, width = 30, 37
    scenes = [random_scene(seed, height, width) for seed in (11, 12)]
    world = np.stack([s[0] for s in scenes])
    K = np.stack([s[2] for s in scenes])
    w2c = np.stack([s[3] for s in scenes])
    faces = scenes[0][1]
    batched = rasterize_mesh(*to_torch(world, faces, K, w2c), height, width)
    for b in range(2):
        single = rasterize_mesh(*to_torch(world[b:b + 1], faces, K[b], w2c[b]), height, width)
        assert torch.equal(batched.face_index[b], single.face_index[0])
        torch.testing.assert_close(batched.bary[b], single.bary[0])


def test_interpolated_positions_are_the_ray_hits():
    height, width = 30, 37
    world, faces, K, w2c = random_scene(3, height, width)
    vertices, faces_t, K_t, w2c_t = to_torch(world[None], faces, K, w2c)
    fragments = rasterize_mesh(vertices, faces_t, K_t, w2c_t, height, width)
    cam = world_to_camera(vertices, w2c_t)
    points = interpolate(fragments, faces_t, cam)[0].numpy()  # (H, W, 3)
    rows, cols = np.mgrid[0:height, 0:width]
    rays = np.stack([(cols - K[0, 2]) / K[0, 0], (rows - K[1, 2]) / K[1, 1], np.ones_like(rows)], -1)
    mask = fragments.mask[0].numpy()
    ref_face, _, ref_depth, _ = reference_raster(world @ w2c[:3, :3].T + w2c[:3, 3], faces, K, height, width)
    agree = mask & (fragments.face_index[0].numpy() == ref_face)
    assert agree.sum() > 0.9 * mask.sum()
    np.testing.assert_allclose(points[agree], (rays * ref_depth[..., None])[agree], atol=1e-9)
    assert np.all(points[~mask] == 0)
    # World-space positions interpolate the same way (unbatched attributes are broadcast).
    world_points = interpolate(fragments, faces_t, vertices[0])[0]
    back_to_cam = world_points.numpy() @ w2c[:3, :3].T + w2c[:3, 3]
    np.testing.assert_allclose(back_to_cam[mask], points[mask], atol=1e-9)


def grid_mesh(cells: int, z: float = 2.0, focal: float = 2.0, offset: float = 3.0):
    """A flat quad grid whose vertices project exactly onto pixel centres (3..3+cells), with
    diagonals in both directions, so edges pass exactly through pixel centres."""
    ys, xs = np.mgrid[0:cells + 1, 0:cells + 1]
    pixel_xy = np.stack([xs, ys], -1).reshape(-1, 2) + offset
    cam = np.concatenate([(pixel_xy - offset - cells / 2) * z / focal, np.full((len(pixel_xy), 1), z)], 1)
    faces = []
    for i in range(cells):
        for j in range(cells):
            a, b, c, d = i * (cells + 1) + j, i * (cells + 1) + j + 1, (i + 1) * (cells + 1) + j, (i + 1) * (cells + 1) + j + 1
            # counter-clockwise on screen (front facing): a -> c -> b with y down
            faces += [[a, c, b], [b, c, d]] if (i + j) % 2 else [[a, c, d], [a, d, b]]
    K = np.array([[focal, 0, offset + cells / 2], [0, focal, offset + cells / 2], [0, 0, 1]])
    return cam, np.array(faces), K


def test_tie_rule_covers_each_pixel_centre_exactly_once():
    cells, size = 6, 14
    cam, faces, K = grid_mesh(cells)
    vertices, faces_t, K_t = to_torch(cam[None], faces, K)
    eye = torch.eye(4, dtype=torch.float64)
    fragments = rasterize_mesh(vertices, faces_t, K_t, eye, size, size, cull_backfaces=True)
    assert fragments.mask[0].all() == False  # noqa: E712  (there is a border)
    count = torch.zeros(size, size, dtype=torch.long)
    for f in range(len(faces)):  # each face alone: how many faces claim each pixel centre
        count += rasterize_mesh(vertices, faces_t[f:f + 1], K_t, eye, size, size).mask[0].long()
    # Vertices sit on pixels 3..9; the grid's closed interior [3, 9) x [3, 9) (right/bottom border
    # pixels lie on edges owned by the outside) is covered exactly once, nothing else at all.
    inside = torch.zeros(size, size, dtype=torch.bool)
    inside[3:3 + cells, 3:3 + cells] = True
    assert torch.all(count[inside] == 1), count
    assert torch.all(count[~inside] == 0), count
    assert torch.equal(fragments.mask[0], inside)


def icosphere(subdivisions: int = 2) -> tuple[np.ndarray, np.ndarray]:
    t = (1 + 5 ** 0.5) / 2
    verts = [(-1, t, 0), (1, t, 0), (-1, -t, 0), (1, -t, 0), (0, -1, t), (0, 1, t), (0, -1, -t), (0, 1, -t),
             (t, 0, -1), (t, 0, 1), (-t, 0, -1), (-t, 0, 1)]
    faces = [(0, 11, 5), (0, 5, 1), (0, 1, 7), (0, 7, 10), (0, 10, 11), (1, 5, 9), (5, 11, 4), (11, 10, 2),
             (10, 7, 6), (7, 1, 8), (3, 9, 4), (3, 4, 2), (3, 2, 6), (3, 6, 8), (3, 8, 9), (4, 9, 5),
             (2, 4, 11), (6, 2, 10), (8, 6, 7), (9, 8, 1)]
    verts = [np.array(v, float) / np.linalg.norm(v) for v in verts]
    for _ in range(subdivisions):
        cache, new_faces = {}, []

        def midpoint(a, b):
            key = (min(a, b), max(a, b))
            if key not in cache:
                m = verts[a] + verts[b]
                verts.append(m / np.linalg.norm(m))
                cache[key] = len(verts) - 1
            return cache[key]
        for a, b, c in faces:
            ab, bc, ca = midpoint(a, b), midpoint(b, c), midpoint(c, a)
            new_faces += [(a, ab, ca), (b, bc, ab), (c, ca, bc), (ab, bc, ca)]
        faces = new_faces
    return np.array(verts), np.array(faces)


def test_closed_sphere_front_faces_cover_its_disc_once():
    verts, faces = icosphere(1)  # 80 faces, outward winding
    size = 36
    K = intrinsics(40.0, size, size, dtype=torch.float64)
    w2c = default_world_to_cam(3.0, dtype=torch.float64)
    vertices, faces_t = to_torch(verts[None], faces)
    fragments = rasterize_mesh(vertices, faces_t, K, w2c, size, size, cull_backfaces=True)
    count = torch.zeros(size, size, dtype=torch.long)
    for f in range(len(faces)):
        count += rasterize_mesh(vertices, faces_t[f:f + 1], K, w2c, size, size, cull_backfaces=True).mask[0].long()
    mask = fragments.mask[0]
    assert mask.sum() > 0.3 * size * size
    assert torch.all(count[mask] == 1) and torch.all(count[~mask] == 0)
    assert np.array_equal(scipy.ndimage.binary_fill_holes(mask.numpy()), mask.numpy())


def test_head_model_is_hole_free_and_front_faces_are_the_visible_ones(head):
    size = 128
    K = intrinsics(default_focal(size, size), size, size)
    w2c = default_world_to_cam(1.0)
    vertices = head().vertices
    both = rasterize_mesh(vertices, head.faces, K, w2c, size, size)
    front = rasterize_mesh(vertices, head.faces, K, w2c, size, size, cull_backfaces=True)
    mask = both.mask[0].numpy()
    assert 0.05 < mask.mean() < 0.5
    assert np.array_equal(scipy.ndimage.binary_fill_holes(mask), mask)
    # The head model's normals point outwards, so what is seen from outside is front faces.
    assert (front.face_index != both.face_index).float().mean() < 0.005


def test_gradients_flow_to_vertices():
    # Two small triangles in front of a 6 x 5 camera; gradcheck bary and depth in float64.
    cam = torch.tensor([[-1.0, -1.0, 3.0], [1.2, -0.9, 3.3], [-0.8, 1.1, 2.8], [1.1, 1.0, 3.6]], dtype=torch.float64)
    faces = torch.tensor([[0, 2, 1], [1, 2, 3]])
    K = torch.tensor([[6.0, 0, 2.6], [0, 6.0, 2.1], [0, 0, 1]], dtype=torch.float64)
    eye = torch.eye(4, dtype=torch.float64)

    def outputs(vertices):
        fragments = rasterize_mesh(vertices[None], faces, K, eye, 5, 6)
        return fragments.bary, fragments.depth, interpolate(fragments, faces, vertices * vertices)

    assert rasterize_mesh(cam[None], faces, K, eye, 5, 6).mask.sum() >= 15
    assert torch.autograd.gradcheck(outputs, (cam.clone().requires_grad_(),), eps=1e-6, atol=1e-6)


def test_uv_rasterization_of_the_head_layout(head):
    resolution = (96, 128)
    fragments = rasterize_uv(head.uv_coords.float(), head.uv_faces, resolution)
    assert isinstance(fragments, Fragments) and fragments.face_index.shape == (1, *resolution)
    mask = fragments.mask[0]
    assert 0.5 < mask.float().mean() < 0.98
    assert torch.all(fragments.depth == 0)
    uv = interpolate(fragments, head.uv_faces, head.uv_coords.float())[0]
    rows, cols = torch.nonzero(mask, as_tuple=True)
    centres = torch.stack([(cols + 0.5) / resolution[1], 1 - (rows + 0.5) / resolution[0]], -1)
    torch.testing.assert_close(uv[rows, cols], centres, atol=1e-4, rtol=0)
    # UV fragments place texels on the posed mesh: each lies on its face.
    posed = head(expression=torch.randn(1, head.num_expression) * 0.5).vertices
    points = interpolate(fragments, head.faces, posed)[0][rows, cols]
    corners = posed[0][head.faces[fragments.face_index[0, rows, cols]]]
    assert torch.all(points >= corners.amin(1) - 1e-6) and torch.all(points <= corners.amax(1) + 1e-6)


def test_nothing_to_draw_is_background():
    # One face behind the camera, one degenerate (collinear corners): nothing is drawn.
    vertices = torch.tensor([[[0, 0, -1.0], [1, 0, -1], [0, 1, -1], [0, 0, 2], [0.1, 0.1, 2], [0.2, 0.2, 2]]])
    faces = torch.tensor([[0, 1, 2], [3, 4, 5]])
    fragments = rasterize_mesh(vertices, faces, intrinsics(10.0, 8, 8), torch.eye(4), 8, 8)
    assert torch.all(fragments.face_index == -1)
    assert torch.all(fragments.bary == 0) and torch.all(fragments.depth == 0)
    assert torch.all(interpolate(fragments, faces, vertices) == 0)


def test_bad_inputs_raise_config_error():
    vertices = torch.rand(1, 4, 3) + torch.tensor([0, 0, 2.0])
    faces = torch.tensor([[0, 1, 2], [1, 2, 3]])
    K, w2c = intrinsics(10.0, 8, 8), torch.eye(4)
    with pytest.raises(ConfigError, match="vertices"):
        rasterize_mesh(vertices[0], faces, K, w2c, 8, 8)
    with pytest.raises(ConfigError, match="faces index"):
        rasterize_mesh(vertices, faces + 1, K, w2c, 8, 8)
    with pytest.raises(ConfigError, match="faces must be"):
        rasterize_mesh(vertices, faces.float(), K, w2c, 8, 8)
    with pytest.raises(ConfigError, match="K must be"):
        rasterize_mesh(vertices, faces, K[:2], w2c, 8, 8)
    with pytest.raises(ConfigError, match="world_to_cam"):
        rasterize_mesh(vertices, faces, K, torch.eye(4).expand(3, 4, 4), 8, 8)
    with pytest.raises(ConfigError, match="image size"):
        rasterize_mesh(vertices, faces, K, w2c, 0, 8)
    with pytest.raises(ConfigError, match="unknown backend"):
        rasterize_mesh(vertices, faces, K, w2c, 8, 8, backend="opengl")
    fragments = rasterize_mesh(vertices, faces, K, w2c, 8, 8)
    with pytest.raises(ConfigError, match="attributes"):
        interpolate(fragments, faces, torch.rand(2, 4, 3))
    with pytest.raises(ConfigError, match="out of range"):
        interpolate(fragments, faces, torch.rand(3, 3))
    with pytest.raises(ConfigError, match="uv_coords"):
        rasterize_uv(torch.rand(4, 3), faces, 8)


@pytest.mark.parametrize("backend", ["pytorch3d", "nvdiffrast"])
def test_missing_backend_is_a_clear_error(backend, monkeypatch):
    monkeypatch.setitem(sys.modules, backend, None)  # importing it fails, as where it is not installed
    vertices = torch.rand(1, 3, 3) + torch.tensor([0, 0, 2.0])
    with pytest.raises(ConfigError, match=f"{backend} is not importable"):
        rasterize_mesh(vertices, torch.tensor([[0, 1, 2]]), intrinsics(10.0, 8, 8), torch.eye(4), 8, 8,
                       backend=backend)


# ------------------------------------------------------------------------------ other backends' cameras
def random_camera(seed, height, width):
    _, _, K, w2c = random_scene(seed, height, width)
    points = np.random.default_rng(seed).uniform([-0.5, -0.5, 1.5], [0.5, 0.5, 3.0], (20, 3))
    world = (points - w2c[:3, 3]) @ w2c[:3, :3]
    return to_torch(world, K, w2c)


@pytest.mark.parametrize("size", [(29, 37), (37, 29)])
def test_pytorch3d_camera_projects_to_the_same_pixels(size):
    """pytorch3d's documented projection, by hand: view = X R + T; NDC = f * view.xy / view.z + p;
    output pixel (i, j) is centred at NDC (-(j + 0.5 - W/2) / s, -(i + 0.5 - H/2) / s)."""
    height, width = size
    world, K, w2c = random_camera(1, height, width)
    params = pytorch3d_camera_params(K, w2c, height, width)
    view = world @ params["R"][0] + params["T"][0]
    ndc = params["focal_length"][0] * view[:, :2] / view[:, 2:] + params["principal_point"][0]
    s = min(height, width) / 2
    col = -ndc[:, 0] * s + width / 2 - 0.5
    row = -ndc[:, 1] * s + height / 2 - 0.5
    pixels, depth = project(world[None], K, w2c)
    torch.testing.assert_close(torch.stack([col, row], -1), pixels[0])
    torch.testing.assert_close(view[:, 2], depth[0])  # pytorch3d's z is the camera depth
    assert torch.allclose(torch.linalg.det(params["R"]), torch.ones(1, dtype=torch.float64))


@pytest.mark.parametrize("size", [(29, 37), (37, 29)])
def test_nvdiffrast_projection_maps_to_the_same_pixels(size):
    """nvdiffrast: NDC = clip.xyz / clip.w; output row i, col j centred at NDC ((2j+1)/W - 1, (2i+1)/H - 1)."""
    height, width = size
    world, K, w2c = random_camera(2, height, width)
    near, far = 0.5, 10.0
    cam = world_to_camera(world[None], w2c)[0]
    clip = torch.cat([cam, torch.ones(len(cam), 1, dtype=cam.dtype)], 1) @ nvdiffrast_projection(K, height, width,
                                                                                                near, far)[0].T
    ndc = clip[:, :3] / clip[:, 3:]
    col = ((ndc[:, 0] + 1) * width - 1) / 2
    row = ((ndc[:, 1] + 1) * height - 1) / 2
    pixels, depth = project(world[None], K, w2c)
    torch.testing.assert_close(torch.stack([col, row], -1), pixels[0])
    torch.testing.assert_close(clip[:, 3], depth[0])
    # z/w is -1 at near, 1 at far and grows with depth.
    edge = nvdiffrast_projection(K, height, width, near, far)[0] @ torch.tensor([[0, 0, near, 1], [0, 0, far, 1]],
                                                                               dtype=K.dtype).T
    torch.testing.assert_close(edge[2] / edge[3], torch.tensor([-1.0, 1.0], dtype=K.dtype))
    assert torch.all(torch.diff(ndc[:, 2][torch.argsort(depth[0])]) > 0)


# ------------------------------------------------------------------------------ backend glue, with stand-ins
def nearest_in_screen(screen, faces, depth_key, points):
    """Brute force: for 2D points (P, 2), the face (F, 3) containing each (either winding) with the
    smallest depth_key (affine over the face in screen space). screen (V, 2), depth_key (V,)."""
    tri = screen[faces]  # (F, 3, 2)
    e = [tri[:, (k + 2) % 3] - tri[:, (k + 1) % 3] for k in range(3)]
    w = np.stack([e[k][None, :, 0] * (points[:, None, 1] - tri[None, :, (k + 1) % 3, 1])
                  - e[k][None, :, 1] * (points[:, None, 0] - tri[None, :, (k + 1) % 3, 0]) for k in range(3)], -1)
    area = w.sum(-1, keepdims=True)
    inside = np.all(w * np.sign(area) >= 0, -1) & (area[..., 0] != 0)
    key = (w / np.where(area == 0, 1, area) * depth_key[faces][None]).sum(-1)
    key = np.where(inside, key, np.inf)
    best = key.argmin(1)
    return np.where(np.isfinite(key.min(1)), best, -1)


def fake_nvdiffrast():
    """A stand-in for nvdiffrast.torch following its documented rasterize() semantics."""
    module = types.ModuleType("nvdiffrast.torch")

    def rasterize(context, pos, tri, resolution, ranges=None, grad_db=True):
        height, width = resolution
        pos, tri = pos.double().numpy(), tri.long().numpy()
        rows, cols = np.mgrid[0:height, 0:width]
        ndc_points = np.stack([(2 * cols + 1) / width - 1, (2 * rows + 1) / height - 1], -1).reshape(-1, 2)
        out = torch.zeros(len(ranges), height, width, 4)
        for r, (start, count) in enumerate(ranges.tolist()):
            faces = tri[start:start + count]
            with np.errstate(divide="ignore", invalid="ignore"):  # vertices of undrawn faces may have w = 0
                ndc = pos[:, :3] / pos[:, 3:]
            best = nearest_in_screen(ndc[:, :2], faces, ndc[:, 2], ndc_points)
            ids = np.where(best >= 0, best + start + 1, 0)  # triangle id + 1 into tri, 0 = none
            out[r, ..., 3] = torch.as_tensor(ids.reshape(height, width), dtype=torch.float32)
        return out, torch.zeros(len(ranges), height, width, 0)

    module.rasterize = rasterize
    module.RasterizeCudaContext = lambda device=None: object()
    return module


def fake_pytorch3d():
    """Stand-ins for the pytorch3d classes the backend uses, following their documented math."""
    renderer, structures = types.ModuleType("pytorch3d.renderer"), types.ModuleType("pytorch3d.structures")

    class Meshes:
        def __init__(self, verts, faces):
            self.verts, self.faces = verts, faces

    class PerspectiveCameras:
        def __init__(self, R, T, focal_length, principal_point, in_ndc, device=None):
            assert in_ndc
            self.R, self.T, self.focal, self.principal = R, T, focal_length, principal_point

    class RasterizationSettings:
        def __init__(self, image_size, **kwargs):
            self.image_size = image_size

    class MeshRasterizer:
        def __init__(self, cameras, raster_settings):
            self.cameras, self.settings = cameras, raster_settings

        def __call__(self, meshes):
            height, width = self.settings.image_size
            s = min(height, width) / 2
            rows, cols = np.mgrid[0:height, 0:width]
            ndc_points = np.stack([-(cols + 0.5 - width / 2) / s, -(rows + 0.5 - height / 2) / s], -1).reshape(-1, 2)
            cams, offset, out = self.cameras, 0, []
            for b, (verts, faces) in enumerate(zip(meshes.verts, meshes.faces)):
                view = (verts @ cams.R[b] + cams.T[b]).double().numpy()
                ndc = cams.focal[b].double().numpy() * view[:, :2] / view[:, 2:] + cams.principal[b].double().numpy()
                # nearest by view z; 1/z is what is affine in screen space, so compare -1/z
                best = nearest_in_screen(ndc, faces.numpy(), -1 / view[:, 2], ndc_points)
                out.append(np.where(best >= 0, best + offset, -1).reshape(height, width, 1))
                offset += len(faces)
            return types.SimpleNamespace(pix_to_face=torch.as_tensor(np.stack(out)))

    renderer.Meshes = Meshes
    renderer.PerspectiveCameras, renderer.RasterizationSettings = PerspectiveCameras, RasterizationSettings
    renderer.MeshRasterizer = MeshRasterizer
    structures.Meshes = Meshes
    return {"pytorch3d.renderer": renderer, "pytorch3d.structures": structures}


def install(monkeypatch, name, modules):
    package = types.ModuleType(name)
    package.__spec__ = importlib.machinery.ModuleSpec(name, None)
    monkeypatch.setitem(sys.modules, name, package)
    for full_name, module in modules.items():
        monkeypatch.setitem(sys.modules, full_name, module)
        setattr(package, full_name.split(".")[1], module)


@pytest.mark.parametrize("backend", ["nvdiffrast", "pytorch3d"])
def test_backend_glue_agrees_with_torch_backend(backend, monkeypatch):
    """With stand-ins that follow each library's documented conventions, the other backends see
    the same faces as onehead's own (cameras, id offsets, ranges, culling, near plane)."""
    if backend == "nvdiffrast":
        install(monkeypatch, "nvdiffrast", {"nvdiffrast.torch": fake_nvdiffrast()})
    else:
        install(monkeypatch, "pytorch3d", fake_pytorch3d())
    height, width = 30, 37
    scenes = [random_scene(seed, height, width) for seed in (21, 22)]
    world, faces = np.stack([s[0] for s in scenes]), scenes[0][1]
    K, w2c = np.stack([s[2] for s in scenes]), np.stack([s[3] for s in scenes])
    args = to_torch(world, faces, K, w2c)
    for cull in (False, True):
        ours = rasterize_mesh(*args, height, width, cull_backfaces=cull)
        theirs = rasterize_mesh(*args, height, width, cull_backfaces=cull, backend=backend)
        for b in range(2):
            cam = world[b] @ w2c[b, :3, :3].T + w2c[b, :3, 3]
            ambiguous = reference_raster(cam, faces, K[b], height, width, cull, margin=1e-6)[3]
            same = (ours.face_index[b] == theirs.face_index[b]).numpy()
            assert np.all(same | ambiguous) and same.mean() > 0.9
            assert len(np.unique(theirs.face_index[b])) > 3
