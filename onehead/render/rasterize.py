"""Mesh rasterizer: which face is seen at each pixel, where on it, and how far away.

    fragments = rasterize_mesh(vertices, faces, K, world_to_cam, H, W)   # (B, V, 3) world vertices
    face_index = visible_faces(vertices, faces, K, world_to_cam, H, W)   # step 1 below, alone
    normals = interpolate(fragments, faces, vertex_normals)               # (B, H, W, 3)
    uv = interpolate(fragments, uv_faces, uv_coords)                       # per-face-corner attributes
    texels = rasterize_uv(uv_coords, uv_faces, 256)                        # texel -> (face, barycentric)

Cameras follow onehead.camera (OpenCV: x right, y down, z forward; pixel (row i, col j) is the
point x=j, y=i). Rasterization has two steps:

1. Visibility, without gradients: every face is projected and the nearest face whose triangle
   contains each pixel centre is found. The "torch" backend (default, CPU and CUDA) does this
   with tiles: each face's screen bounding box is cut into TILE x TILE pixel tiles, every
   (face, tile) pair evaluates the three edge functions at the tile's pixel centres at once,
   and the nearest covering face per pixel is one `scatter_reduce(amin)` over packed
   (depth bits << 32 | face id) keys. pytorch3d and nvdiffrast, when importable, can find the
   visible faces instead; the conversions to their cameras live in onehead.camera.
2. Surface, with gradients: for each covered pixel the ray through its centre is intersected
   with the chosen face, giving perspective-correct barycentrics and camera depth that are
   differentiable w.r.t. the vertices (and K, world_to_cam).

Coverage rules (torch backend):
- A pixel is covered when its centre lies inside the projected triangle. A centre exactly on an
  edge belongs to the triangle it would fall into if nudged infinitesimally right (+x), or,
  for a horizontal edge, down (+y). Shared edges are evaluated bit-identically (up to sign) in
  both triangles, so a closed mesh has neither cracks nor pixels drawn twice by one surface.
- Both windings are drawn unless `cull_backfaces=True`. Front faces are those whose vertices
  run counter-clockwise as seen in the image (negative signed area in pixel coordinates with
  y down), i.e. whose normal (v1 - v0) x (v2 - v0) points towards the camera: the winding of
  the head model, whose normals point outwards.
- A face with any vertex at camera z <= `near` is dropped whole (no clipping), as are faces of
  zero projected area. Faces crossing the image border are drawn on the part inside.
- Depths are compared as float32 (the packed key); equal depths go to the lower face index.
- Screen positions are float32 for float32 vertices: coverage is exact for the given float
  positions, but a vertex a million pixels off-screen moves edges by ~0.1 px (float64 input
  avoids that).
"""

from __future__ import annotations

import importlib.util
from dataclasses import dataclass

import torch

from onehead.camera import nvdiffrast_projection, project, pytorch3d_camera_params, world_to_camera
from onehead.errors import ConfigError

BACKENDS = ("auto", "torch", "pytorch3d", "nvdiffrast")
TILE_BITS = 3
TILE = 1 << TILE_BITS  # tile side in pixels
MAX_TILE_PIXELS = 1 << 22  # pixel centres tested per chunk of (face, tile) pairs: bounds memory
_NO_HIT = torch.iinfo(torch.int64).max


@dataclass
class Fragments:
    """What each pixel sees. Background pixels: face_index -1, bary and depth 0."""

    face_index: torch.Tensor  # (B, H, W) long
    bary: torch.Tensor  # (B, H, W, 3) perspective-correct barycentric weights of the face's corners
    depth: torch.Tensor  # (B, H, W) camera z of the visible surface

    @property
    def mask(self) -> torch.Tensor:
        """(B, H, W) bool: True where a face covers the pixel."""
        return self.face_index >= 0


# ---------------------------------------------------------------------------------- public API
def rasterize_mesh(vertices: torch.Tensor, faces: torch.Tensor, K: torch.Tensor, world_to_cam: torch.Tensor,
                   height: int, width: int, *, backend: str = "auto", cull_backfaces: bool = False,
                   near: float = 1e-3) -> Fragments:
    """Rasterize a batch of triangle meshes seen by OpenCV cameras.

    vertices (B, V, 3) world; faces (F, 3) long; K (3, 3) or (B, 3, 3) pixels; world_to_cam (4, 4)
    or (B, 4, 4). backend: "auto" (= "torch"), "torch", "pytorch3d" or "nvdiffrast" (the last two
    only find the visible faces; barycentrics and depth always come from onehead's differentiable
    ray/face intersection). See the module docstring for the coverage rules.
    Returns Fragments with face_index (B, height, width), bary (B, height, width, 3), depth.
    """
    backend = _resolve_backend(backend)
    faces, K, world_to_cam, height, width = _mesh_inputs(vertices, faces, K, world_to_cam, height, width, near,
                                                         "rasterize_mesh")

    cam = world_to_camera(vertices, world_to_cam)
    with torch.no_grad():
        drawable = _drawable_faces(cam.detach(), faces, near, cull_backfaces)
        if backend == "torch":
            pixels, depth = project(vertices.detach(), K, world_to_cam)
            face_index = _visible_faces(pixels, depth, faces, drawable, height, width)
        elif backend == "pytorch3d":
            face_index = _visible_faces_pytorch3d(vertices.detach(), faces, drawable, K, world_to_cam,
                                                  height, width)
        else:
            face_index = _visible_faces_nvdiffrast(cam.detach(), faces, drawable, K, height, width, near)
    bary, depth = _surface_at_pixels(cam, faces, face_index, K)
    return Fragments(face_index, bary, depth)


def visible_faces(vertices: torch.Tensor, faces: torch.Tensor, K: torch.Tensor, world_to_cam: torch.Tensor,
                  height: int, width: int, *, cull_backfaces: bool = False, near: float = 1e-3) -> torch.Tensor:
    """Step 1 of `rasterize_mesh` alone (torch backend): the visible face at each pixel, no gradients.

    Same arguments and coverage rules as rasterize_mesh; returns face_index (B, height, width) long,
    -1 on the background, equal to `rasterize_mesh(...).face_index` with backend="torch". Useful
    where only visibility is needed (masks, face ids) and to time that step on its own.
    """
    faces, K, world_to_cam, height, width = _mesh_inputs(vertices, faces, K, world_to_cam, height, width, near,
                                                         "visible_faces")
    with torch.no_grad():
        vertices = vertices.detach()
        drawable = _drawable_faces(world_to_camera(vertices, world_to_cam), faces, near, cull_backfaces)
        pixels, depth = project(vertices, K, world_to_cam)
        return _visible_faces(pixels, depth, faces, drawable, height, width)


def rasterize_uv(uv_coords: torch.Tensor, uv_faces: torch.Tensor, resolution: int | tuple[int, int]) -> Fragments:
    """Map each texel of a UV grid to the face covering it and its barycentrics there (B = 1).

    uv_coords (T, 2) in [0, 1] with v up (OBJ convention); uv_faces (F, 3) long; resolution R or
    (H, W). Texel (row i, col j) has its centre at u = (j + 0.5) / W, v = 1 - (i + 0.5) / H: row 0
    is the top of the texture, as in an image of it. Depth is 0. Both windings are drawn; where
    UV triangles overlap the lower face index wins. Interpolating posed vertices with these
    fragments (`interpolate(fragments, faces, vertices)`) gives each texel's 3D position.
    """
    height, width = (resolution, resolution) if isinstance(resolution, int) else tuple(resolution)
    height, width = _check_size(height, width)
    if not torch.is_floating_point(uv_coords) or uv_coords.dim() != 2 or uv_coords.shape[1] != 2:
        raise ConfigError(f"rasterize_uv: uv_coords must be a float (T, 2) tensor, got {tuple(uv_coords.shape)}")
    # The texture plane as a mesh at z = 1 seen by a camera with K = identity: pixels = (x, y).
    x = uv_coords[:, 0] * width - 0.5
    y = (1 - uv_coords[:, 1]) * height - 0.5
    plane = torch.stack([x, y, torch.ones_like(x)], -1)[None]
    _check_vertices_and_faces(plane, uv_faces)
    uv_faces = uv_faces.long().to(plane.device)
    identity = torch.eye(3, dtype=plane.dtype, device=plane.device)[None]
    with torch.no_grad():
        drawable = torch.ones(1, len(uv_faces), dtype=torch.bool, device=plane.device)
        face_index = _visible_faces(plane[..., :2], plane[..., 2], uv_faces, drawable, height, width)
    bary, _ = _surface_at_pixels(plane, uv_faces, face_index, identity)
    return Fragments(face_index, bary, torch.zeros_like(face_index, dtype=plane.dtype))


def interpolate(fragments: Fragments, faces: torch.Tensor, attributes: torch.Tensor) -> torch.Tensor:
    """Interpolate attributes over the visible faces: (B, H, W, D), zeros on the background.

    attributes (B, V, D) or (V, D), indexed by faces (F, 3). Per-face-corner attributes work the
    same way with their own index table, e.g. `interpolate(fragments, uv_faces, uv_coords)`,
    as long as it has the faces' order (same F).
    """
    face_index = fragments.face_index
    batch = face_index.shape[0]
    _check_faces(faces)
    if attributes.dim() == 2:
        attributes = attributes.unsqueeze(0).expand(batch, -1, -1)
    if attributes.dim() != 3 or attributes.shape[0] != batch:
        raise ConfigError(f"interpolate: attributes must be (V, D) or ({batch}, V, D), got {tuple(attributes.shape)}")
    if len(faces) and (faces.min() < 0 or faces.max() >= attributes.shape[1]):
        raise ConfigError(f"interpolate: faces index {attributes.shape[1]} attribute rows out of range")
    if face_index.numel() and face_index.max() >= len(faces):
        raise ConfigError(f"interpolate: fragments name face {int(face_index.max())} but faces has {len(faces)}")

    mask = fragments.mask
    batch_ids = torch.arange(batch, device=face_index.device).view(batch, 1, 1, 1)
    corners = faces.to(face_index.device)[face_index.clamp(min=0)]  # (B, H, W, 3)
    values = attributes[batch_ids, corners]  # (B, H, W, 3, D)
    dtype = torch.promote_types(attributes.dtype, fragments.bary.dtype)
    out = (fragments.bary.to(dtype).unsqueeze(-1) * values.to(dtype)).sum(-2)
    return out * mask.unsqueeze(-1)


# ---------------------------------------------------------------------------------- checks
def _resolve_backend(backend: str) -> str:
    if backend not in BACKENDS:
        raise ConfigError(f"rasterize_mesh: unknown backend {backend!r}; choose from {BACKENDS}")
    if backend == "auto":
        return "torch"
    if backend != "torch" and importlib.util.find_spec(backend) is None:
        raise ConfigError(f"rasterize_mesh: backend={backend!r} was asked for but {backend} is not importable "
                          "here; install it or use backend='torch'")
    return backend


def _mesh_inputs(vertices, faces, K, world_to_cam, height, width, near, caller: str):
    """Checked and batched (faces, K, world_to_cam, height, width) for a (B, V, 3) vertex batch."""
    batch = _check_vertices_and_faces(vertices, faces)
    faces = faces.long().to(vertices.device)
    K = _batched(K, (3, 3), batch, "K").to(vertices.dtype)
    world_to_cam = _batched(world_to_cam, (4, 4), batch, "world_to_cam").to(vertices.dtype)
    height, width = _check_size(height, width)
    if not near > 0:
        raise ConfigError(f"{caller}: near must be > 0, got {near}")
    return faces, K, world_to_cam, height, width


def _check_vertices_and_faces(vertices: torch.Tensor, faces: torch.Tensor) -> int:
    if not torch.is_floating_point(vertices) or vertices.dim() != 3 or vertices.shape[-1] != 3:
        raise ConfigError(f"vertices must be a float (B, V, 3) tensor, got {tuple(vertices.shape)}")
    _check_faces(faces)
    if len(faces) and (faces.min() < 0 or faces.max() >= vertices.shape[1]):
        raise ConfigError(f"faces index vertices outside 0..{vertices.shape[1] - 1}")
    return vertices.shape[0]


def _check_faces(faces: torch.Tensor) -> None:
    if faces.dim() != 2 or faces.shape[1] != 3 or torch.is_floating_point(faces) or faces.dtype == torch.bool:
        raise ConfigError(f"faces must be an integer (F, 3) tensor, got {faces.dtype} {tuple(faces.shape)}")


def _batched(matrix: torch.Tensor, shape: tuple[int, int], batch: int, name: str) -> torch.Tensor:
    """(r, c) or (1 | batch, r, c) -> (batch, r, c)."""
    if matrix.dim() == 2:
        matrix = matrix.unsqueeze(0)
    if matrix.dim() != 3 or tuple(matrix.shape[1:]) != shape or matrix.shape[0] not in (1, batch):
        raise ConfigError(f"{name} must be {shape} or ({batch}, {shape[0]}, {shape[1]}), got {tuple(matrix.shape)}")
    return matrix.expand(batch, *shape)


def _check_size(height, width) -> tuple[int, int]:
    if int(height) != height or int(width) != width or height < 1 or width < 1:
        raise ConfigError(f"image size must be positive integers, got height={height}, width={width}")
    return int(height), int(width)


# ---------------------------------------------------------------------------------- visibility
def _drawable_faces(cam: torch.Tensor, faces: torch.Tensor, near: float, cull_backfaces: bool) -> torch.Tensor:
    """(B, F) bool: faces with an area, wholly in front of `near`, and facing the camera if culling."""
    corners = cam[:, faces]  # (B, F, 3, 3)
    normal = torch.linalg.cross(corners[:, :, 1] - corners[:, :, 0], corners[:, :, 2] - corners[:, :, 0])
    drawable = (corners[..., 2].amin(-1) > near) & normal.ne(0).any(-1)
    if cull_backfaces:
        # The normal points away from a camera at the origin when it agrees with the corner's position.
        drawable &= (normal * corners[:, :, 0]).sum(-1) < 0
    return drawable


def _visible_faces(pixels: torch.Tensor, depth: torch.Tensor, faces: torch.Tensor, drawable: torch.Tensor,
                   height: int, width: int) -> torch.Tensor:
    """The torch backend's visibility: nearest drawable face at each pixel centre, (B, H, W), -1 if none.

    pixels (B, V, 2) screen positions, depth (B, V) positive camera z, drawable (B, F) bool.
    """
    batch, num_faces = drawable.shape
    setup = _face_setup(pixels, depth, faces, drawable, height, width)
    pair_face, tile_x, tile_y = _face_tile_pairs(setup, height, width)
    best = torch.full((batch * height * width,), _NO_HIT, dtype=torch.int64, device=pixels.device)
    pairs_per_chunk = max(1, MAX_TILE_PIXELS // TILE**2)
    for start in range(0, len(pair_face), pairs_per_chunk):
        chunk = slice(start, start + pairs_per_chunk)
        pixel_ids, keys = _hits_in_tiles(setup, pair_face[chunk], tile_x[chunk], tile_y[chunk], height, width)
        best.scatter_reduce_(0, pixel_ids, keys, "amin")
    face_id = torch.where(best == _NO_HIT, -1, (best & 0xFFFFFFFF) % max(num_faces, 1))
    return face_id.view(batch, height, width)


def _face_setup(pixels, depth, faces, drawable, height, width) -> dict:
    """Per drawable, on-screen, non-degenerate face: its edges, tie rule, depth plane and pixel box.

    Faces of the whole batch are numbered b * F + f ("global id").
    """
    num_faces = faces.shape[0]
    xy = pixels[:, faces].reshape(-1, 3, 2)  # (B*F, 3, 2) corners
    z = depth[:, faces].reshape(-1, 3)
    area2 = _cross2(xy[:, 1] - xy[:, 0], xy[:, 2] - xy[:, 0])  # twice the signed area; > 0: clockwise on screen
    low, high = xy.amin(1), xy.amax(1)
    x0, x1 = low[:, 0].ceil().clamp(min=0), high[:, 0].floor().clamp(max=width - 1)
    y0, y1 = low[:, 1].ceil().clamp(min=0), high[:, 1].floor().clamp(max=height - 1)
    keep = drawable.reshape(-1) & (area2 != 0) & (x0 <= x1) & (y0 <= y1)
    ids = keep.nonzero().squeeze(1)
    xy, z, area2 = xy[ids], z[ids], area2[ids]

    # Edge k runs between the corners other than k. Its edge function, positive inside:
    #   w_k(p) = D_k.x * (p.y - start_k.y) - D_k.y * (p.x - start_k.x).
    # The start is the edge's lexicographically smaller end, so both faces sharing an edge compute
    # bit-identical values; only the sign (folded into D) differs.
    a, b = xy[:, [1, 2, 0]], xy[:, [2, 0, 1]]  # (N, 3, 2)
    swap = (a[..., 0] > b[..., 0]) | ((a[..., 0] == b[..., 0]) & (a[..., 1] > b[..., 1]))
    start = torch.where(swap.unsqueeze(-1), b, a)
    delta = torch.where(swap.unsqueeze(-1), a, b) - start
    sign = torch.where(swap, -1.0, 1.0).to(xy.dtype) * area2.sign().unsqueeze(1)
    direction = delta * sign.unsqueeze(-1)  # D_k
    # Tie rule: a centre on the edge belongs to this face when nudging it by (+eps, +eps^2) moves
    # it inside, i.e. when the inward normal (-D.y, D.x) has x > 0, or x = 0 and y > 0.
    owns_ties = (direction[..., 1] < 0) | ((direction[..., 1] == 0) & (direction[..., 0] > 0))

    # Inverse depth is affine in screen space: 1/z(p) = sum_k w_k(p) / (|area2| z_k).
    weight = 1.0 / (z.double() * area2.double().abs().unsqueeze(1))  # (N, 3)
    start64, direction64 = start.double(), direction.double()
    inv_z_x = -(weight * direction64[..., 1]).sum(1)
    inv_z_y = (weight * direction64[..., 0]).sum(1)
    inv_z_0 = (weight * (direction64[..., 1] * start64[..., 0] - direction64[..., 0] * start64[..., 1])).sum(1)
    edges = torch.cat([start[..., 0], start[..., 1], direction[..., 0], direction[..., 1]], 1)  # (N, 12)
    return {"global_id": ids, "faces_per_mesh": num_faces, "edges": edges.T.contiguous(),
            "owns_ties": owns_ties.T.contiguous(), "inv_z": torch.stack([inv_z_0, inv_z_x, inv_z_y], 1),
            "box": torch.stack([x0[ids], y0[ids], x1[ids], y1[ids]], 1).long()}


def _cross2(u: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    return u[..., 0] * v[..., 1] - u[..., 1] * v[..., 0]


def _face_tile_pairs(setup: dict, height: int, width: int):
    """Every (face, tile) pair whose tile meets the face's pixel box: (pair_face, tile_x, tile_y)."""
    box = setup["box"]
    first_x, first_y = box[:, 0] // TILE, box[:, 1] // TILE
    tiles_x = box[:, 2] // TILE - first_x + 1
    tiles_y = box[:, 3] // TILE - first_y + 1
    counts = tiles_x * tiles_y
    total = int(counts.sum()) if len(counts) else 0
    pair_face = torch.repeat_interleave(torch.arange(len(counts), device=box.device), counts, output_size=total)
    rank = torch.arange(total, device=box.device) - (torch.cumsum(counts, 0) - counts)[pair_face]
    per_row = tiles_x[pair_face]
    return pair_face, first_x[pair_face] + rank % per_row, first_y[pair_face] + rank // per_row


def _hits_in_tiles(setup: dict, pair_face, tile_x, tile_y, height: int, width: int):
    """Test every pixel centre of each (face, tile) pair: (pixel ids, packed depth/face keys) of hits.

    Arrays are laid out (..., P) with the pair index last, so every operation runs over long
    contiguous rows.
    """
    num_pairs = len(pair_face)
    offsets = torch.arange(TILE, device=pair_face.device).unsqueeze(1)
    px = tile_x * TILE + offsets  # (TILE, P) pixel columns of each tile
    py = tile_y * TILE + offsets  # (TILE, P) pixel rows
    edges = setup["edges"]
    start_x, start_y, d_x, d_y = edges.index_select(1, pair_face).view(4, 3, 1, num_pairs)  # (3 edges, 1, P)

    # w_k >= 0  <=>  row_k[y] >= col_k[x], with row_k = D.x (y - s.y) and col_k = D.y (x - s.x).
    row = d_x * (py.to(edges.dtype) - start_y)  # (3, TILE, P)
    col = d_y * (px.to(edges.dtype) - start_x)
    # Edges that do not own their ties need w_k > 0: lower row by one ulp so that >= acts as >.
    lowered = torch.nextafter(row, torch.tensor(-torch.inf, dtype=edges.dtype, device=row.device))
    row = torch.where(setup["owns_ties"].index_select(1, pair_face).unsqueeze(1), row, lowered)
    if height % TILE:  # tiles reaching past the image
        row.masked_fill_(py >= height, -torch.inf)
    if width % TILE:
        col.masked_fill_(px >= width, torch.inf)
    inside = row.unsqueeze(2) >= col.unsqueeze(1)  # (3, TILE rows, TILE cols, P)
    inside = inside[0] & inside[1] & inside[2]

    hit = inside.reshape(-1).nonzero().squeeze(1)
    local, pair = hit // num_pairs, hit % num_pairs  # local = tile row * TILE + tile col
    hit_x = tile_x.index_select(0, pair) * TILE + (local & (TILE - 1))
    hit_y = tile_y.index_select(0, pair) * TILE + (local >> TILE_BITS)
    face = pair_face.index_select(0, pair)
    inv_z = setup["inv_z"].index_select(0, face)
    inv_depth = inv_z[:, 0] + inv_z[:, 1] * hit_x + inv_z[:, 2] * hit_y
    depth_bits = (1.0 / inv_depth).float().view(torch.int32).long()  # positive floats sort as their bits
    global_id = setup["global_id"].index_select(0, face)
    image = global_id // setup["faces_per_mesh"]
    pixel_ids = (image * height + hit_y) * width + hit_x
    return pixel_ids, (depth_bits << 32) | global_id


# ---------------------------------------------------------------------------------- surface
def _surface_at_pixels(cam: torch.Tensor, faces: torch.Tensor, face_index: torch.Tensor, K: torch.Tensor):
    """Intersect the ray through each covered pixel centre with its face (differentiable).

    cam (B, V, 3) camera-space vertices; face_index (B, H, W); K (B, 3, 3).
    Returns bary (B, H, W, 3) and depth (B, H, W), zeros where face_index is -1.
    Vectors are laid out (3, P), one row per coordinate, for contiguous arithmetic.
    """
    batch, height, width = face_index.shape
    pixel = torch.nonzero(face_index.reshape(-1) >= 0).squeeze(1)  # flat ids of covered pixels
    image, within = pixel // (height * width), pixel % (height * width)
    row, col = within // width, within % width
    corner_ids = faces.index_select(0, face_index.reshape(-1).index_select(0, pixel))  # (P, 3)
    corner_ids = corner_ids + (image * cam.shape[1]).unsqueeze(1)
    coords = cam.reshape(-1, 3).T.contiguous()  # (xyz, B*V)
    corners = coords.index_select(1, corner_ids.T.reshape(-1)).view(3, 3, -1)  # (xyz, corner, P)
    fx, fy, cx, cy = K.reshape(batch, 9)[:, [0, 4, 2, 5]].T.contiguous().index_select(1, image)
    ray = torch.stack([(col.to(cam.dtype) - cx) / fx, (row.to(cam.dtype) - cy) / fy, torch.ones_like(fx)])
    # Moller-Trumbore from the camera centre: corner0 + u e1 + v e2 = t * ray, and t is the depth (ray.z = 1).
    e1, e2 = corners[:, 1] - corners[:, 0], corners[:, 2] - corners[:, 0]
    to_origin = -corners[:, 0]
    p = _cross_rows(ray, e2)
    det = (e1 * p).sum(0)
    q = _cross_rows(to_origin, e1)
    u = (to_origin * p).sum(0) / det
    v = (ray * q).sum(0) / det
    t = (e2 * q).sum(0) / det
    bary_hits = torch.stack([1 - u - v, u, v], -1)

    bary = cam.new_zeros(batch * height * width, 3).index_copy(0, pixel, bary_hits)
    depth = cam.new_zeros(batch * height * width).index_copy(0, pixel, t)
    return bary.view(batch, height, width, 3), depth.view(batch, height, width)


def _cross_rows(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Cross product of (3, P) vectors stored one coordinate per row."""
    return torch.stack([a[1] * b[2] - a[2] * b[1], a[2] * b[0] - a[0] * b[2], a[0] * b[1] - a[1] * b[0]])


# ---------------------------------------------------------------------------------- other backends
def _visible_faces_pytorch3d(vertices, faces, drawable, K, world_to_cam, height, width):
    """pytorch3d's rasterizer on the drawable faces (its own clipping and culling off)."""
    from pytorch3d.renderer import MeshRasterizer, PerspectiveCameras, RasterizationSettings
    from pytorch3d.structures import Meshes

    kept = [torch.nonzero(d).squeeze(1) for d in drawable]
    meshes = Meshes(verts=list(vertices.float()), faces=[faces[k] for k in kept])
    cameras = PerspectiveCameras(**{name: value.float() for name, value in
                                    pytorch3d_camera_params(K, world_to_cam, height, width).items()},
                                 in_ndc=True, device=vertices.device)
    settings = RasterizationSettings(image_size=(height, width), blur_radius=0.0, faces_per_pixel=1,
                                     cull_backfaces=False, perspective_correct=False)
    packed = MeshRasterizer(cameras=cameras, raster_settings=settings)(meshes).pix_to_face[..., 0]  # (B, H, W)
    return _unpack_face_ids(packed, kept)


def _visible_faces_nvdiffrast(cam, faces, drawable, K, height, width, near):
    """nvdiffrast's CUDA rasterizer on the drawable faces, one range of triangles per image."""
    import nvdiffrast.torch as dr

    far = float(cam[..., 2].max()) * 2 + 1
    projection = nvdiffrast_projection(K, height, width, near, far)  # (B, 4, 4)
    clip = torch.cat([cam, torch.ones_like(cam[..., :1])], -1) @ projection.transpose(1, 2)  # (B, V, 4)
    batch, num_vertices = cam.shape[:2]
    kept = [torch.nonzero(d).squeeze(1) for d in drawable]
    triangles = torch.cat([faces[k] + b * num_vertices for b, k in enumerate(kept)]).int()
    counts = torch.tensor([len(k) for k in kept], dtype=torch.int32)
    ranges = torch.stack([torch.cumsum(counts, 0) - counts, counts], 1)
    raster, _ = dr.rasterize(_nvdiffrast_context(cam.device), clip.reshape(-1, 4).float().contiguous(),
                             triangles.contiguous(), (height, width), ranges=ranges)
    # Row i of nvdiffrast's output is NDC y = (2i + 1) / H - 1, which the clip space maps to pixel row i.
    packed = raster[..., 3].long() - 1  # triangle ids are offset by one; 0 is background
    return _unpack_face_ids(packed, kept)


_NVDIFFRAST_CONTEXTS: dict = {}


def _nvdiffrast_context(device):
    import nvdiffrast.torch as dr

    if device not in _NVDIFFRAST_CONTEXTS:
        _NVDIFFRAST_CONTEXTS[device] = dr.RasterizeCudaContext(device=device)
    return _NVDIFFRAST_CONTEXTS[device]


def _unpack_face_ids(packed: torch.Tensor, kept: list[torch.Tensor]) -> torch.Tensor:
    """Index into the concatenation of each image's kept faces -> original face index, -1 stays."""
    all_kept = torch.cat(kept).to(packed.device)
    return torch.where(packed >= 0, all_kept[packed.clamp(min=0)], -1)
