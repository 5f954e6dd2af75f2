"""onehead's open head model: a procedural head written in the FLAME file format.

It is NOT learned from human scans. It is a hand-designed, seeded, deterministic mesh with
the parts a tracker and the renderers need, so onehead runs with no licensed files:

- a closed head-and-neck surface of about 5k vertices on a (row x column) grid over a
  sagittal profile, with a coarse nose, brow ridge, eye sockets, cheeks, lips, chin and ears;
- horizontal slits for the eyes and the mouth; each slit opens into a closed pocket (so the
  surface stays watertight when the jaw opens or the eyes blink), and two eyeball spheres;
- FLAME's five joints (root, neck, jaw, left eye, right eye) and skinning weights;
- a linear shape basis (semantic components first, then smooth local bumps) and a linear
  expression basis (named components first, see EXPRESSION_NAMES, then local lip/eye/brow bumps);
- a non-overlapping UV layout of the whole surface (head in the upper part, pockets, neck cap
  and eyeballs as islands in the lower band);
- the 68 iBUG landmarks: 51 static points and a 79-bin yaw table for the 17 jaw points that
  follows the visible contour (landmark marching baked into FLAME's dynamic embedding).

Units are metres; +y up, +z out of the face, +x to the subject's left (FLAME's axes).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from scipy.interpolate import PchipInterpolator

from onehead.head.flame_format import NUM_YAW_BINS, FlameData
from onehead.head.geometry import vertex_normals_np

GENERATOR_VERSION = 3  # 3: mouth_open parts the lips (the slit row counts as upper lip)
NUM_SHAPE = 300
NUM_EXPRESSION = 100
EXPRESSION_NAMES = (
    "mouth_open", "smile", "pucker", "lip_corners_down", "brow_raise", "brow_frown",
    "blink_left", "blink_right", "cheek_puff", "upper_lip_raise", "lower_lip_depress",
    "mouth_left", "mouth_right", "smile_left", "smile_right", "brow_raise_left",
    "brow_raise_right", "eyes_wide", "squint", "nose_wrinkle", "lip_funnel", "lips_press",
    "mouth_stretch",
)
SHAPE_NAMES = (
    "scale", "width", "height", "depth", "face_width", "jaw_width", "chin_length", "face_length",
    "nose_length", "nose_protrusion", "nose_width", "eye_distance", "eye_size", "mouth_width",
    "lip_thickness", "brow_height", "forehead_slope", "cheek_fullness", "ear_size", "neck_width",
)

# Key rows of the sagittal profile: front (y, z), back (y, z), half-width, rows to the next key.
_KEY_ROWS = np.array([
    # y_front z_front y_back  z_back  width  rows
    [0.135, -0.005, 0.135, -0.005, 0.000, 3],   # 0 crown (pole)
    [0.127, 0.040, 0.125, -0.055, 0.048, 3],    # 1
    [0.100, 0.076, 0.098, -0.088, 0.066, 3],    # 2 high forehead
    [0.062, 0.092, 0.058, -0.101, 0.074, 3],    # 3 mid forehead
    [0.030, 0.094, 0.022, -0.101, 0.076, 4],    # 4 brow
    [0.004, 0.088, -0.005, -0.095, 0.077, 4],   # 5 eye slit row
    [-0.018, 0.090, -0.028, -0.086, 0.074, 3],  # 6 cheekbone
    [-0.036, 0.090, -0.046, -0.072, 0.070, 3],  # 7 nose base
    [-0.050, 0.092, -0.060, -0.063, 0.066, 2],  # 8 upper lip
    [-0.058, 0.091, -0.070, -0.058, 0.063, 3],  # 9 mouth slit row
    [-0.070, 0.089, -0.082, -0.054, 0.059, 2],  # 10 lower lip / chin top
    [-0.084, 0.087, -0.094, -0.052, 0.053, 2],  # 11 chin
    [-0.097, 0.074, -0.104, -0.051, 0.049, 2],  # 12 chin bottom
    [-0.104, 0.048, -0.115, -0.050, 0.054, 2],  # 13 under the chin
    [-0.112, 0.036, -0.125, -0.047, 0.056, 6],  # 14 throat
    [-0.190, 0.036, -0.190, -0.046, 0.058, 0],  # 15 neck bottom ring
])
EYE_ROW_KEY, MOUTH_ROW_KEY, CHIN_BOTTOM_KEY = 5, 9, 12
NUM_COLUMNS = 100
EYE_X = (0.018, 0.046)  # inner and outer eye corner, |x|
MOUTH_HALF_WIDTH = 0.025
EYE_OPEN = (0.0045, 0.0035)  # upper lid up, lower lid down, at the middle of the eye
EYEBALL_RADIUS = 0.0118
POCKET_LOOPS = 3


@dataclass
class _Mesh:
    """The mesh under construction plus what the bases and landmarks need."""

    vertices: np.ndarray
    faces: np.ndarray
    uv: np.ndarray
    uv_faces: np.ndarray
    grid: np.ndarray  # (R, C) vertex id of each grid point (upper copy on slits)
    lower: dict  # (row, col) -> vertex id of the lower copy on a slit
    slits: dict  # name -> (row, col0, col1)
    num_surface: int  # surface vertices come first; pockets and eyeballs are derived
    attach_shape: np.ndarray  # (V_derived, num_surface): derived displacement from surface
    attach_expr: np.ndarray  # same, for expressions (eyeballs do not follow the lids)
    eyeball_ids: dict = field(default_factory=dict)  # "left"/"right" -> vertex ids
    pocket_ids: dict = field(default_factory=dict)


def _smoothstep(edge0, edge1, x):
    t = np.clip((x - edge0) / (edge1 - edge0), 0.0, 1.0)
    return t * t * (3 - 2 * t)


def _gauss(points, center, sigma):
    d = (points - np.asarray(center)) / np.asarray(sigma)
    return np.exp(-0.5 * np.sum(d * d, axis=-1))


def _row_parameters() -> tuple[np.ndarray, int, int]:
    """Key-row parameter of every grid row; the eye and mouth rows land exactly on key rows."""
    params, key_row_index = [], {}
    for k, row in enumerate(_KEY_ROWS):
        key_row_index[k] = len(params)
        count = int(row[5])
        if k == len(_KEY_ROWS) - 1:
            params.append(float(k))
        else:
            params.extend(k + np.arange(count) / count)
    return np.asarray(params), key_row_index[EYE_ROW_KEY], key_row_index[MOUTH_ROW_KEY]


def _column_angles() -> np.ndarray:
    """Azimuth of each column, denser over the face (0 = front, +pi/2 = subject's left)."""
    u = -1 + 2 * np.arange(NUM_COLUMNS) / NUM_COLUMNS
    return np.pi * (u - 0.55 * np.sin(np.pi * u) / np.pi), (u + 1) / 2


def _base_grid(row_params, phi):
    knots = np.arange(len(_KEY_ROWS))
    interp = [PchipInterpolator(knots, _KEY_ROWS[:, j])(row_params) for j in range(5)]
    y_f, z_f, y_b, z_b, width = (a[:, None] for a in interp)
    cos, sin = np.cos(phi)[None], np.sin(phi)[None]
    front = (1 + cos) / 2
    power = 2 / 2.6  # superellipse: flatter face and back than an ellipse
    x = width * np.sign(sin) * np.abs(sin) ** power
    z_mid, depth = (z_f + z_b) / 2, (z_f - z_b) / 2
    z = z_mid + depth * np.sign(cos) * np.abs(cos) ** power
    y = y_b + (y_f - y_b) * front
    return np.stack(np.broadcast_arrays(x, y, z), axis=-1)


def _feature_displacement(points: np.ndarray, cos_phi: np.ndarray) -> np.ndarray:
    """Signed offset along the normal that sculpts the face onto the base surface."""
    x, y = points[..., 0], points[..., 1]
    ax = np.abs(x)
    front = _smoothstep(0.25, 0.65, cos_phi)
    d = np.zeros_like(x)
    # nose: a ridge that grows from the nasion to the tip, then drops at the base
    ridge_height = np.interp(y, [-0.044, -0.036, -0.028, 0.000, 0.014], [0.0, 0.012, 0.024, 0.007, 0.002])
    ridge_width = np.interp(y, [-0.044, -0.028, 0.014], [0.011, 0.011, 0.007])
    d += ridge_height * np.exp(-0.5 * (x / ridge_width) ** 2)
    for side in (-1, 1):
        d += 0.007 * _gauss(np.stack([x, y], -1), (side * 0.015, -0.032), (0.006, 0.006))  # nostril wings
        d += 0.005 * _gauss(np.stack([x, y], -1), (side * 0.030, 0.027), (0.020, 0.007))  # brow ridge
        d -= 0.012 * _gauss(np.stack([x, y], -1), (side * 0.032, 0.006), (0.015, 0.010))  # eye socket
        d += 0.006 * _gauss(np.stack([x, y], -1), (side * 0.047, -0.022), (0.016, 0.014))  # cheek
    d += 0.006 * _gauss(np.stack([x, y], -1), (0.0, -0.052), (0.021, 0.0055))  # upper lip
    d += 0.006 * _gauss(np.stack([x, y], -1), (0.0, -0.065), (0.019, 0.0055))  # lower lip
    d -= 0.003 * _gauss(np.stack([x, y], -1), (0.0, -0.073), (0.016, 0.004))  # lip-chin fold
    d += 0.006 * _gauss(np.stack([x, y], -1), (0.0, -0.086), (0.018, 0.010))  # chin
    d *= front
    # ears on the sides
    side = _smoothstep(0.75, 0.95, np.abs(np.sin(np.arctan2(x, points[..., 2] + 1e-9))))
    ear = 0.013 * np.exp(-0.5 * ((y + 0.012) / 0.022) ** 2) * np.exp(-0.5 * ((points[..., 2] + 0.006) / 0.012) ** 2)
    d += ear * side * (ax > 0.05)
    return d


def _build_mesh() -> _Mesh:
    row_params, eye_row, mouth_row = _row_parameters()
    phi, u_columns = _column_angles()
    base = _base_grid(row_params, phi)
    num_rows = len(row_params)

    # Faces of the plain grid first, to get base normals for sculpting.
    ids = np.arange(num_rows * NUM_COLUMNS).reshape(num_rows, NUM_COLUMNS)
    normals = vertex_normals_np(base.reshape(-1, 3), _grid_faces(ids, {}, set())).reshape(base.shape)
    offset = _feature_displacement(base, np.cos(phi)[None].repeat(num_rows, 0))
    grid_points = base + offset[..., None] * normals

    def slit_columns(row, x_from, x_to):
        xs = grid_points[row, :, 0]
        front = np.cos(phi) > 0
        cols = np.where(front & (xs >= x_from - 1e-9) & (xs <= x_to + 1e-9))[0]
        return int(cols.min()), int(cols.max())

    slits = {
        "mouth": (mouth_row, *slit_columns(mouth_row, -MOUTH_HALF_WIDTH, MOUTH_HALF_WIDTH)),
        "eye_right": (eye_row, *slit_columns(eye_row, -EYE_X[1], -EYE_X[0])),
        "eye_left": (eye_row, *slit_columns(eye_row, EYE_X[0], EYE_X[1])),
    }

    # Vertex list: the pole, rings, the neck-bottom centre; slits get lower copies.
    vertices, uv_of_vertex = [], []
    grid = np.full((num_rows, NUM_COLUMNS), -1)
    v_scale = 0.72  # the head grid uses uv v in [1 - 0.72, 1]
    for r in range(num_rows):
        for c in range(NUM_COLUMNS):
            if r == 0 and c > 0:
                grid[r, c] = grid[0, 0]
                continue
            grid[r, c] = len(vertices)
            vertices.append(grid_points[r, c])
    lower = {}
    for name, (row, c0, c1) in slits.items():
        for c in range(c0 + 1, c1):
            lower[(row, c)] = len(vertices)
            vertices.append(grid_points[row, c].copy())
    neck_center = len(vertices)
    vertices.append(grid_points[-1].mean(axis=0))
    vertices = np.asarray(vertices)
    num_surface = len(vertices)

    slit_cols = {(row, c) for row, c0, c1 in slits.values() for c in range(c0 + 1, c1)}
    faces = _grid_faces(grid, lower, slit_cols)
    last = grid[-1]
    faces = np.concatenate([faces, np.stack([np.full(NUM_COLUMNS, neck_center), np.roll(last, -1), last], 1)])

    # Open the eyes: lids apart at rest, with a softer pull on the rows around them.
    for name in ("eye_right", "eye_left"):
        row, c0, c1 = slits[name]
        for c in range(c0 + 1, c1):
            s = np.sin(np.pi * (c - c0) / (c1 - c0))
            vertices[grid[row, c], 1] += EYE_OPEN[0] * s
            vertices[lower[(row, c)], 1] -= EYE_OPEN[1] * s
            vertices[grid[row - 1, c], 1] += 0.5 * EYE_OPEN[0] * s
            vertices[grid[row + 1, c], 1] -= 0.4 * EYE_OPEN[1] * s

    # UVs of the grid: u from the column, v from the row; one seam column at the back.
    uv_rows = 1 - v_scale * np.arange(num_rows) / (num_rows - 1)
    uv = []
    uv_grid = np.zeros((num_rows, NUM_COLUMNS + 1), np.int64)
    u_cols = np.append(u_columns, 1.0)
    for r in range(num_rows):
        for c in range(NUM_COLUMNS + 1):
            uv_grid[r, c] = len(uv)
            uv.append((u_cols[c], uv_rows[r]))
    uv = [list(t) for t in uv]
    uv_faces = _grid_uv_faces(uv_grid)
    neck_uv_center = len(uv)
    uv.append([0.5, uv_rows[-1] - 0.0])  # placeholder, replaced by the cap island below
    cap_uv = _disk_island(NUM_COLUMNS, center=(0.09, 0.14), radius=0.075)
    cap_ids = np.arange(len(uv), len(uv) + NUM_COLUMNS)
    uv.extend(cap_uv.tolist())
    uv[neck_uv_center] = [0.09, 0.14]
    uv_faces = np.concatenate([uv_faces, np.stack([np.full(NUM_COLUMNS, neck_uv_center),
                                                   np.roll(cap_ids, -1), cap_ids], 1)])
    uv = np.asarray(uv, np.float64)

    mesh = _Mesh(vertices=vertices, faces=faces, uv=uv, uv_faces=uv_faces, grid=grid, lower=lower,
                 slits=slits, num_surface=num_surface,
                 attach_shape=np.zeros((0, num_surface)), attach_expr=np.zeros((0, num_surface)))
    _fix_orientation(mesh)
    islands = {"mouth": ((0.28, 0.14), 0.085), "eye_right": ((0.47, 0.14), 0.07),
               "eye_left": ((0.63, 0.14), 0.07)}
    for name in ("mouth", "eye_right", "eye_left"):
        _add_pocket(mesh, name, *islands[name])
    for name, (u0, u1) in (("right", (0.72, 0.85)), ("left", (0.86, 0.99))):
        _add_eyeball(mesh, name, (u0, 0.05, u1, 0.23))
    return mesh


def _grid_faces(grid, lower, slit_cols):
    """Quads between consecutive rows split in two; faces below a slit use its lower copies."""
    faces = []
    num_rows, num_cols = grid.shape
    for r in range(num_rows - 1):
        for c in range(num_cols):
            c2 = (c + 1) % num_cols
            top_a = lower.get((r, c), grid[r, c]) if (r, c) in slit_cols else grid[r, c]
            top_b = lower.get((r, c2), grid[r, c2]) if (r, c2) in slit_cols else grid[r, c2]
            bot_a, bot_b = grid[r + 1, c], grid[r + 1, c2]
            if r == 0:
                faces.append((top_a, bot_a, bot_b))
            else:
                faces.append((top_a, bot_a, bot_b))
                faces.append((top_a, bot_b, top_b))
    return np.asarray(faces, np.int64)


def _grid_uv_faces(uv_grid):
    faces = []
    num_rows, num_cols_plus = uv_grid.shape
    for r in range(num_rows - 1):
        for c in range(num_cols_plus - 1):
            a, b = uv_grid[r, c], uv_grid[r, c + 1]
            d, e = uv_grid[r + 1, c], uv_grid[r + 1, c + 1]
            if r == 0:
                faces.append((a, d, e))
            else:
                faces.append((a, d, e))
                faces.append((a, e, b))
    return np.asarray(faces, np.int64)


def _disk_island(n, center, radius, inner_loops=0):
    angles = 2 * np.pi * np.arange(n) / n
    return np.stack([center[0] + radius * np.cos(angles), center[1] + radius * np.sin(angles)], 1)


def _fix_orientation(mesh: _Mesh) -> None:
    """Make face normals point outward (away from the head's centre)."""
    tri = mesh.vertices[mesh.faces]
    normal = np.cross(tri[:, 1] - tri[:, 0], tri[:, 2] - tri[:, 0])
    center = np.array([0.0, 0.0, 0.0])
    outward = np.einsum("fi,fi->f", normal, tri.mean(1) - center)
    if np.median(np.sign(outward[np.linalg.norm(normal, axis=1) > 1e-12])) < 0:
        mesh.faces = mesh.faces[:, ::-1].copy()
        mesh.uv_faces = mesh.uv_faces[:, ::-1].copy()


def _boundary_loop(mesh: _Mesh, name: str) -> list[int]:
    row, c0, c1 = mesh.slits[name]
    upper = [mesh.grid[row, c] for c in range(c0, c1 + 1)]
    lower = [mesh.lower[(row, c)] for c in range(c1 - 1, c0, -1)]
    return upper + lower


def _append_vertices(mesh: _Mesh, points: np.ndarray, attach_shape: np.ndarray, attach_expr: np.ndarray):
    start = len(mesh.vertices)
    mesh.vertices = np.concatenate([mesh.vertices, points])
    mesh.attach_shape = np.concatenate([mesh.attach_shape, attach_shape])
    mesh.attach_expr = np.concatenate([mesh.attach_expr, attach_expr])
    return np.arange(start, start + len(points))


def _append_faces(mesh: _Mesh, faces, uv_points, uv_faces):
    uv_start = len(mesh.uv)
    mesh.uv = np.concatenate([mesh.uv, uv_points])
    mesh.faces = np.concatenate([mesh.faces, np.asarray(faces, np.int64)])
    mesh.uv_faces = np.concatenate([mesh.uv_faces, np.asarray(uv_faces, np.int64) + uv_start])


def _add_pocket(mesh: _Mesh, name: str, uv_center, uv_radius) -> None:
    """Close a slit with a pocket: loops shrinking inward, then a centre vertex."""
    loop = _boundary_loop(mesh, name)
    n = len(loop)
    boundary = mesh.vertices[loop]
    center = boundary.mean(0)
    depth_dir = np.array([0.0, 0.0, -1.0])
    depth = 0.010 if name == "mouth" else 0.006
    all_ids, uv_points = [np.asarray(loop)], [_disk_island(n, uv_center, uv_radius)]
    for k in range(1, POCKET_LOOPS + 1):
        s = k / (POCKET_LOOPS + 1)
        points = boundary + s * (center - boundary) + k * depth * depth_dir
        attach = np.zeros((n, mesh.num_surface))
        attach[np.arange(n), loop] = 1 - 0.5 * s
        all_ids.append(_append_vertices(mesh, points, attach, attach))
        uv_points.append(_disk_island(n, uv_center, uv_radius * (1 - s)))
    attach = np.zeros((1, mesh.num_surface))
    attach[0, loop] = 0.5 / n
    tip = _append_vertices(mesh, (center + (POCKET_LOOPS + 1) * depth * depth_dir)[None], attach, attach)
    # Orientation: the surface uses boundary edge (loop[i] -> loop[i+1]) in one direction;
    # the pocket must use it in the other.
    edges = {tuple(e) for f in mesh.faces.tolist() for e in ((f[0], f[1]), (f[1], f[2]), (f[2], f[0]))}
    reverse = (loop[0], loop[1]) not in edges
    faces, uv_faces = [], []
    uv_offsets = [k * n for k in range(POCKET_LOOPS + 1)]
    for k in range(POCKET_LOOPS):
        a, b = all_ids[k], all_ids[k + 1]
        for i in range(n):
            j = (i + 1) % n
            quad = [(a[i], b[i], b[j]), (a[i], b[j], a[j])]
            quad_uv = [(uv_offsets[k] + i, uv_offsets[k + 1] + i, uv_offsets[k + 1] + j),
                       (uv_offsets[k] + i, uv_offsets[k + 1] + j, uv_offsets[k] + j)]
            faces += quad
            uv_faces += quad_uv
    last = all_ids[-1]
    tip_uv = (POCKET_LOOPS + 1) * n
    for i in range(n):
        j = (i + 1) % n
        faces.append((last[i], tip[0], last[j]))
        uv_faces.append((uv_offsets[-1] + i, tip_uv, uv_offsets[-1] + j))
    faces, uv_faces = np.asarray(faces), np.asarray(uv_faces)
    if reverse:
        faces, uv_faces = faces[:, ::-1], uv_faces[:, ::-1]
    uv_all = np.concatenate(uv_points + [np.asarray([uv_center])])
    _append_faces(mesh, faces, uv_all, uv_faces)
    mesh.pocket_ids[name] = np.concatenate(all_ids[1:] + [tip])


def _add_eyeball(mesh: _Mesh, side: str, uv_box) -> None:
    """A UV sphere behind the eye slit; its vertices follow the eye opening's mean shape."""
    loop = _boundary_loop(mesh, "eye_" + side)
    rim = mesh.vertices[loop]
    center = rim.mean(0)
    center[2] = rim[:, 2].max() - EYEBALL_RADIUS + 0.0015
    n_lat, n_lon = 8, 12
    points = []
    lat = np.pi * np.arange(1, n_lat) / n_lat  # 0 = front pole
    for a in lat:
        for b in 2 * np.pi * np.arange(n_lon) / n_lon:
            points.append([np.sin(a) * np.cos(b), np.sin(a) * np.sin(b), np.cos(a)])
    points = np.asarray([[0, 0, 1.0]] + points + [[0, 0, -1.0]]) * EYEBALL_RADIUS + center
    attach_shape = np.zeros((len(points), mesh.num_surface))
    attach_shape[:, loop] = 1.0 / len(loop)
    ids = _append_vertices(mesh, points, attach_shape, np.zeros_like(attach_shape))
    front, back = ids[0], ids[-1]
    ring = lambda i: ids[1 + i * n_lon: 1 + (i + 1) * n_lon]  # noqa: E731
    faces, uv_faces, uv_points = [], [], []
    u0, v0, u1, v1 = uv_box
    grid_uv = {}

    def uv_id(i, j):  # i: latitude ring 0..n_lat (0 front pole), j: longitude 0..n_lon
        if (i, j) not in grid_uv:
            grid_uv[(i, j)] = len(uv_points)
            uv_points.append((u0 + (u1 - u0) * j / n_lon, v1 - (v1 - v0) * i / n_lat))
        return grid_uv[(i, j)]

    for j in range(n_lon):
        k = (j + 1) % n_lon
        faces.append((front, ring(0)[j], ring(0)[k]))
        uv_faces.append((uv_id(0, j), uv_id(1, j), uv_id(1, j + 1)))
        faces.append((back, ring(n_lat - 2)[k], ring(n_lat - 2)[j]))
        uv_faces.append((uv_id(n_lat, j), uv_id(n_lat - 1, j + 1), uv_id(n_lat - 1, j)))
        for i in range(n_lat - 2):
            a, b, c, d = ring(i)[j], ring(i)[k], ring(i + 1)[j], ring(i + 1)[k]
            faces += [(a, c, d), (a, d, b)]
            uv_faces += [(uv_id(i + 1, j), uv_id(i + 2, j), uv_id(i + 2, j + 1)),
                         (uv_id(i + 1, j), uv_id(i + 2, j + 1), uv_id(i + 1, j + 1))]
    faces, uv_faces = np.asarray(faces), np.asarray(uv_faces)
    tri = points[faces - ids[0]]
    normal = np.cross(tri[:, 1] - tri[:, 0], tri[:, 2] - tri[:, 0])
    if np.einsum("fi,fi->f", normal, tri.mean(1) - center).mean() < 0:
        faces, uv_faces = faces[:, ::-1], uv_faces[:, ::-1]
    _append_faces(mesh, faces, np.asarray(uv_points), uv_faces)
    mesh.eyeball_ids[side] = ids


# --------------------------------------------------------------------------- bases

def _derive(mesh: _Mesh, surface_disp: np.ndarray, attach: np.ndarray) -> np.ndarray:
    """Full-mesh displacement (V, 3) from a displacement of the surface vertices."""
    surface_disp = surface_disp.copy()
    # lower slit copies start where their upper twins are; both were given the same value
    return np.concatenate([surface_disp, attach @ surface_disp])


def _shape_basis(mesh: _Mesh, rng: np.random.Generator) -> np.ndarray:
    v = mesh.vertices[: mesh.num_surface]
    x, y, z = v[:, 0], v[:, 1], v[:, 2]
    normals = vertex_normals_np(mesh.vertices, mesh.faces)[: mesh.num_surface]
    front = _smoothstep(0.0, 0.04, z) * _smoothstep(-0.11, -0.09, y)
    eyes = {s: (s * 0.032, 0.004) for s in (-1, 1)}
    comps = []

    def add(d):
        comps.append(_derive(mesh, d, mesh.attach_shape))

    lower_face = _smoothstep(0.0, -0.04, y)
    add(v * 0.04)  # scale
    add(np.stack([x * 0.05, 0 * y, 0 * z], 1))  # width
    add(np.stack([0 * x, (y + 0.03) * 0.04, 0 * z], 1))  # height
    add(np.stack([0 * x, 0 * y, z * 0.04], 1))  # depth
    add(np.stack([x * 0.05 * front * _smoothstep(0.03, -0.01, y), 0 * y, 0 * z], 1))  # face width
    add(np.stack([x * 0.08 * lower_face * _smoothstep(-0.12, -0.09, y), 0 * y, 0 * z], 1))  # jaw width
    add(np.stack([0 * x, -0.004 * _smoothstep(-0.065, -0.09, y) * _smoothstep(-0.125, -0.1, y), 0 * z], 1))
    add(np.stack([0 * x, 0.06 * np.minimum(y + 0.01, 0) * _smoothstep(-0.13, -0.1, y), 0 * z], 1))  # face length
    nose = _gauss(v[:, :2], (0, -0.015), (0.012, 0.022)) * front
    add(np.stack([0 * x, -0.003 * nose * _smoothstep(0.01, -0.03, y), 0 * z], 1))  # nose length
    add(normals * 0.003 * nose[:, None])  # nose protrusion
    add(np.stack([x * 0.15 * _gauss(v[:, :2], (0, -0.03), (0.02, 0.012)) * front, 0 * y, 0 * z], 1))
    eye_shift = sum(np.sign(s) * _gauss(v[:, :2], c, (0.016, 0.014)) for s, c in eyes.items()) * front
    add(np.stack([0.0025 * eye_shift, 0 * y, 0 * z], 1))  # eye distance
    eye_size = sum(_gauss(v[:, :2], c, (0.016, 0.012)) for c in eyes.values()) * front
    add(np.stack([(x - np.sign(x) * 0.032) * 0.12 * eye_size, (y - 0.004) * 0.15 * eye_size, 0 * z], 1))
    mouth = _gauss(v[:, :2], (0, -0.058), (0.03, 0.012)) * front
    add(np.stack([x * 0.12 * mouth, 0 * y, 0 * z], 1))  # mouth width
    add(np.stack([0 * x, (y + 0.058) * 0.25 * mouth, 0 * z], 1) + normals * 0.0015 * mouth[:, None])
    brow = _gauss(v[:, :2], (0, 0.027), (0.06, 0.012)) * front
    add(np.stack([0 * x, 0.003 * brow, 0 * z], 1))  # brow height
    forehead = _smoothstep(0.03, 0.1, y) * front
    add(np.stack([0 * x, 0 * y, -0.004 * forehead], 1))  # forehead slope
    cheeks = sum(_gauss(v[:, :2], (s * 0.048, -0.03), (0.02, 0.02)) for s in (-1, 1)) * front
    add(normals * 0.003 * cheeks[:, None])  # cheek fullness
    ears = _smoothstep(0.055, 0.075, np.abs(x)) * _gauss(v[:, 1:], (-0.012, -0.006), (0.03, 0.02))
    add(normals * 0.003 * ears[:, None])  # ear size
    neck = _smoothstep(-0.1, -0.125, y)
    add(np.stack([x * 0.06 * neck, 0 * y, z * 0.06 * neck], 1))  # neck width
    assert len(comps) == len(SHAPE_NAMES)

    # smooth local bumps, most of them on the face, in random directions (1 sd ~ 1.5 mm)
    surface_ids = np.arange(mesh.num_surface)
    face_ids = surface_ids[(z > 0.02) & (y > -0.11) & (y < 0.09)]
    while len(comps) < NUM_SHAPE:
        center = v[rng.choice(face_ids if rng.random() < 0.8 else surface_ids)]
        sigma = rng.uniform(0.012, 0.03)
        direction = rng.normal(size=3)
        direction /= np.linalg.norm(direction)
        weight = _gauss(v, center, (sigma, sigma, sigma))
        add(weight[:, None] * direction * 0.0015)
    return np.stack(comps, axis=-1)


def _expression_basis(mesh: _Mesh, rng: np.random.Generator) -> np.ndarray:
    v = mesh.vertices[: mesh.num_surface]
    x, y, z = v[:, 0], v[:, 1], v[:, 2]
    front = _smoothstep(0.0, 0.04, z)
    xy = v[:, :2]
    row_m, c0_m, c1_m = mesh.slits["mouth"]
    lower_lip = np.zeros(mesh.num_surface, bool)
    lower_lip[list(mesh.lower[(row_m, c)] for c in range(c0_m + 1, c1_m))] = True
    y_mouth = mesh.vertices[mesh.grid[row_m, c0_m], 1]
    upper_lip = np.zeros(mesh.num_surface, bool)  # the slit row's upper side (it sags below the corners)
    upper_lip[mesh.grid[row_m, c0_m + 1: c1_m]] = True
    below_mouth = ((y < y_mouth - 1e-6) & ~upper_lip) | lower_lip
    above_mouth = ~below_mouth
    mouth_region = _gauss(xy, (0, y_mouth), (0.028, 0.016)) * front
    upper = mouth_region * above_mouth * _smoothstep(y_mouth + 0.016, y_mouth, y)
    lower = mouth_region * below_mouth * _smoothstep(y_mouth - 0.02, y_mouth, y)
    corners = {s: _gauss(xy, (s * MOUTH_HALF_WIDTH, y_mouth), (0.011, 0.011)) * front for s in (-1, 1)}
    both_corners = corners[-1] + corners[1]
    zeros = np.zeros_like(x)
    comps = {}

    def lid(side, up_amount, low_amount):
        row, c0, c1 = mesh.slits["eye_" + side]
        d = np.zeros((mesh.num_surface, 3))
        for c in range(c0 + 1, c1):
            s = np.sin(np.pi * (c - c0) / (c1 - c0))
            d[mesh.grid[row, c], 1] += up_amount * s
            d[mesh.grid[row - 1, c], 1] += 0.55 * up_amount * s
            d[mesh.lower[(row, c)], 1] += low_amount * s
            d[mesh.grid[row + 1, c], 1] += 0.4 * low_amount * s
        return d

    comps["mouth_open"] = np.stack([zeros, 0.003 * upper - 0.006 * lower, zeros], 1)
    comps["smile"] = np.stack([0.004 * np.sign(x) * both_corners, 0.004 * both_corners, -0.002 * both_corners], 1)
    comps["pucker"] = np.stack([-0.25 * x * mouth_region, zeros, 0.005 * mouth_region], 1)
    comps["lip_corners_down"] = np.stack([zeros, -0.004 * both_corners, zeros], 1)
    brows = _gauss(xy, (0, 0.028), (0.05, 0.014)) * front
    comps["brow_raise"] = np.stack([zeros, 0.005 * brows, zeros], 1)
    inner = sum(_gauss(xy, (s * 0.018, 0.026), (0.014, 0.012)) for s in (-1, 1)) * front
    comps["brow_frown"] = np.stack([-0.003 * np.sign(x) * inner, -0.003 * inner, zeros], 1)
    open_up, open_down = EYE_OPEN
    comps["blink_left"] = lid("left", -(open_up + 0.6 * open_down), 0.4 * open_down)
    comps["blink_right"] = lid("right", -(open_up + 0.6 * open_down), 0.4 * open_down)
    puff = sum(_gauss(xy, (s * 0.042, -0.045), (0.016, 0.016)) for s in (-1, 1)) * front
    normals = vertex_normals_np(mesh.vertices, mesh.faces)[: mesh.num_surface]
    comps["cheek_puff"] = normals * 0.006 * puff[:, None]
    comps["upper_lip_raise"] = np.stack([zeros, 0.004 * upper, 0.001 * upper], 1)
    comps["lower_lip_depress"] = np.stack([zeros, -0.004 * lower, 0.001 * lower], 1)
    comps["mouth_left"] = np.stack([0.004 * mouth_region, zeros, zeros], 1)
    comps["mouth_right"] = np.stack([-0.004 * mouth_region, zeros, zeros], 1)
    comps["smile_left"] = np.stack([0.004 * corners[1], 0.004 * corners[1], -0.002 * corners[1]], 1)
    comps["smile_right"] = np.stack([-0.004 * corners[-1], 0.004 * corners[-1], -0.002 * corners[-1]], 1)
    for s, name in ((1, "brow_raise_left"), (-1, "brow_raise_right")):
        one = _gauss(xy, (s * 0.032, 0.028), (0.02, 0.014)) * front
        comps[name] = np.stack([zeros, 0.005 * one, zeros], 1)
    comps["eyes_wide"] = lid("left", 0.002, -0.001) + lid("right", 0.002, -0.001)
    comps["squint"] = lid("left", -0.001, 0.002) + lid("right", -0.001, 0.002)
    nose = _gauss(xy, (0, -0.01), (0.015, 0.012)) * front
    comps["nose_wrinkle"] = np.stack([zeros, 0.002 * nose, zeros], 1)
    comps["lip_funnel"] = np.stack([zeros, 0.002 * upper - 0.002 * lower, 0.004 * mouth_region], 1)
    comps["lips_press"] = np.stack([zeros, -0.0015 * upper + 0.0015 * lower, -0.002 * mouth_region], 1)
    comps["mouth_stretch"] = np.stack([0.003 * np.sign(x) * both_corners, -0.002 * both_corners, zeros], 1)
    names = list(EXPRESSION_NAMES)
    basis = [_derive(mesh, comps[n], mesh.attach_expr) for n in names]

    # local bumps around the mouth, eyes and brows (1 sd ~ 1 mm) for fine fitting
    centers = [(0, y_mouth, 0.02, 0.012), (-0.032, 0.006, 0.012, 0.006), (0.032, 0.006, 0.012, 0.006),
               (-0.03, 0.028, 0.02, 0.006), (0.03, 0.028, 0.02, 0.006), (0, -0.08, 0.025, 0.012)]
    while len(basis) < NUM_EXPRESSION:
        cx, cy, sx, sy = centers[rng.integers(len(centers))]
        center = (cx + rng.normal() * sx, cy + rng.normal() * sy)
        sigma = rng.uniform(0.006, 0.014)
        direction = rng.normal(size=3) * (1, 1, 0.5)
        direction /= np.linalg.norm(direction)
        weight = _gauss(xy, center, (sigma, sigma)) * front
        d = weight[:, None] * direction * 0.001
        if rng.random() < 0.5:  # half of them act on one lip only, so the lips can part
            d *= (below_mouth if rng.random() < 0.5 else above_mouth)[:, None]
        basis.append(_derive(mesh, d, mesh.attach_expr))
    return np.stack(basis, axis=-1)


# --------------------------------------------------------------------------- skeleton

def _skeleton(mesh: _Mesh) -> tuple[np.ndarray, np.ndarray]:
    """Joint regressor (5, V) and skinning weights (V, 5): root, neck, jaw, left eye, right eye."""
    v = mesh.vertices
    num = len(v)
    regressor = np.zeros((5, num))
    grid = mesh.grid
    rows_y = v[grid[:, 0], 1]
    root_row = int(np.argmin(np.abs(rows_y - (-0.16))))
    neck_row = int(np.argmin(np.abs(rows_y - (-0.105))))
    regressor[0, grid[root_row]] = 1.0 / NUM_COLUMNS
    regressor[1, grid[neck_row]] = 1.0 / NUM_COLUMNS
    surface = v[: mesh.num_surface]
    for side in (-1, 1):  # the jaw hinges between points just in front of the ears
        near = np.argsort(np.linalg.norm(surface - np.array([side * 0.066, -0.018, 0.005]), axis=1))[:4]
        regressor[2, near] = 0.125
    for joint, side in ((3, "left"), (4, "right")):
        regressor[joint, mesh.eyeball_ids[side]] = 1.0 / len(mesh.eyeball_ids[side])

    y, z = surface[:, 1], surface[:, 2]
    head = _smoothstep(-0.16, -0.1, y)
    row_m, c0_m, c1_m = mesh.slits["mouth"]
    y_mouth = v[grid[row_m, c0_m], 1]
    lower_lip = np.zeros(mesh.num_surface, bool)
    lower_lip[[mesh.lower[(row_m, c)] for c in range(c0_m + 1, c1_m)]] = True
    jaw = _smoothstep(y_mouth + 0.001, y_mouth - 0.008, y) * _smoothstep(-0.035, 0.025, z)
    jaw = np.where(lower_lip, 1.0, jaw)
    upper_lip_row = np.zeros(mesh.num_surface, bool)
    upper_lip_row[grid[row_m, c0_m + 1: c1_m]] = True
    jaw = np.where(upper_lip_row, 0.0, jaw)
    jaw *= _smoothstep(-0.118, -0.1, y)  # fades out under the chin towards the throat
    jaw *= 1 - _smoothstep(0.05, 0.075, np.abs(surface[:, 0])) * _smoothstep(y_mouth - 0.03, y_mouth + 0.005, y)
    weights = np.zeros((num, 5))
    weights[: mesh.num_surface, 0] = 1 - head
    weights[: mesh.num_surface, 1] = head * (1 - jaw)
    weights[: mesh.num_surface, 2] = head * jaw
    derived = mesh.attach_shape[:, :]
    row_sum = derived.sum(1, keepdims=True)
    weights[mesh.num_surface:] = (derived / np.maximum(row_sum, 1e-12)) @ weights[: mesh.num_surface]
    for joint, side in ((3, "left"), (4, "right")):
        weights[mesh.eyeball_ids[side]] = 0.0
        weights[mesh.eyeball_ids[side], joint] = 1.0
    return regressor, weights


# --------------------------------------------------------------------------- landmarks

def frontal_embedding(vertices: np.ndarray, faces: np.ndarray, xy: np.ndarray,
                      allowed_faces: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Face index and barycentric weights of the front-most surface point under each (x, y)."""
    tri = vertices[faces]
    out_faces, out_bary = [], []
    candidates = np.arange(len(faces)) if allowed_faces is None else allowed_faces
    for px, py in xy:
        a, b, c = tri[candidates, 0, :2], tri[candidates, 1, :2], tri[candidates, 2, :2]
        det = (b[:, 1] - c[:, 1]) * (a[:, 0] - c[:, 0]) + (c[:, 0] - b[:, 0]) * (a[:, 1] - c[:, 1])
        ok = np.abs(det) > 1e-14
        det = np.where(ok, det, 1.0)
        l1 = ((b[:, 1] - c[:, 1]) * (px - c[:, 0]) + (c[:, 0] - b[:, 0]) * (py - c[:, 1])) / det
        l2 = ((c[:, 1] - a[:, 1]) * (px - c[:, 0]) + (a[:, 0] - c[:, 0]) * (py - c[:, 1])) / det
        l3 = 1 - l1 - l2
        inside = ok & (l1 >= -1e-9) & (l2 >= -1e-9) & (l3 >= -1e-9)
        hits = np.where(inside)[0]
        if len(hits) == 0:
            raise ValueError(f"no surface under landmark position ({px:.4f}, {py:.4f})")
        bary = np.stack([l1, l2, l3], 1)[hits]
        depth = np.einsum("hk,hk->h", bary, tri[candidates[hits], :, 2])
        best = int(np.argmax(depth))
        out_faces.append(candidates[hits[best]])
        out_bary.append(bary[best])
    return np.asarray(out_faces, np.int64), np.asarray(out_bary)


def _vertex_embedding(faces: np.ndarray, vertex_ids, allowed_faces) -> tuple[np.ndarray, np.ndarray]:
    """Embed vertices exactly: a face among `allowed_faces` that holds each vertex, one-hot weights."""
    out_f, out_b = [], []
    for vid in vertex_ids:
        holder = [f for f in allowed_faces if vid in faces[f]][0]
        bary = (faces[holder] == vid).astype(np.float64)
        out_f.append(holder)
        out_b.append(bary)
    return np.asarray(out_f, np.int64), np.asarray(out_b)


def _static_landmarks(mesh: _Mesh) -> tuple[np.ndarray, np.ndarray]:
    """iBUG points 17-67 as faces + barycentric weights on the neutral mesh."""
    v, f = mesh.vertices, mesh.faces
    surface_faces = np.where((f < mesh.num_surface).all(1))[0]
    upper_faces = {}  # faces touching a vertex from above / below a slit
    row_m, c0_m, c1_m = mesh.slits["mouth"]
    y_mouth = v[mesh.grid[row_m, c0_m], 1]

    def faces_with(vid, below):
        cand = [i for i in surface_faces if vid in f[i]]
        centroid_y = v[f[cand]].mean(1)[:, 1]
        y0 = v[vid, 1]
        keep = [i for i, cy in zip(cand, centroid_y) if (cy < y0) == below]
        return keep or cand

    def slit_point(name, frac, below):
        row, c0, c1 = mesh.slits[name]
        c = int(round(c0 + frac * (c1 - c0)))
        if c in (c0, c1):
            vid = mesh.grid[row, c]
        else:
            vid = mesh.lower[(row, c)] if below else mesh.grid[row, c]
        return _vertex_embedding(f, [vid], faces_with(vid, below))

    brow_x = np.array([0.050, 0.040, 0.030, 0.020, 0.011])
    brow_y = np.array([0.025, 0.031, 0.033, 0.032, 0.028])
    xy = []
    xy += [(-bx, by) for bx, by in zip(brow_x, brow_y)]  # 17-21 right brow, outer -> inner
    xy += [(bx, by) for bx, by in zip(brow_x[::-1], brow_y[::-1])]  # 22-26 left brow, inner -> outer
    xy += [(0.0, 0.010), (0.0, -0.003), (0.0, -0.016), (0.0, -0.029)]  # 27-30 nose bridge to tip
    xy += [(-0.012, -0.036), (-0.006, -0.038), (0.0, -0.039), (0.006, -0.038), (0.012, -0.036)]  # 31-35
    static_xy_a = np.asarray(xy)
    fa, ba = frontal_embedding(v, f, static_xy_a, surface_faces)

    parts_f, parts_b = [fa], [ba]
    # eyes 36-47: corners and lid points are slit vertices (exact)
    for name, order in (("eye_right", (0.0, 1.0)), ("eye_left", (0.0, 1.0))):
        outer, inner = (0.0, 1.0) if name == "eye_right" else (1.0, 0.0)
        fracs = [(outer, False), (outer + (inner - outer) / 3, False), (outer + 2 * (inner - outer) / 3, False),
                 (inner, False), (outer + 2 * (inner - outer) / 3, True), (outer + (inner - outer) / 3, True)]
        if name == "eye_left":  # iBUG left eye starts at the inner corner
            fracs = [(inner, False), (inner + (outer - inner) / 3, False), (inner + 2 * (outer - inner) / 3, False),
                     (outer, False), (inner + 2 * (outer - inner) / 3, True), (inner + (outer - inner) / 3, True)]
        for frac, below in fracs:
            fi, bi = slit_point(name, frac, below)
            parts_f.append(fi)
            parts_b.append(bi)
    # outer lips 48-59: corners exact, vermilion borders frontal
    fi, bi = slit_point("mouth", 0.0, False)
    parts_f.append(fi)
    parts_b.append(bi)
    outer_upper = [(-0.016, y_mouth + 0.0075), (-0.007, y_mouth + 0.0100), (0.0, y_mouth + 0.0090),
                   (0.007, y_mouth + 0.0100), (0.016, y_mouth + 0.0075)]
    fo, bo = frontal_embedding(v, f, np.asarray(outer_upper), surface_faces)
    parts_f.append(fo)
    parts_b.append(bo)
    fi, bi = slit_point("mouth", 1.0, False)
    parts_f.append(fi)
    parts_b.append(bi)
    outer_lower = [(0.016, y_mouth - 0.0085), (0.007, y_mouth - 0.0110), (0.0, y_mouth - 0.0115),
                   (-0.007, y_mouth - 0.0110), (-0.016, y_mouth - 0.0085)]
    fo, bo = frontal_embedding(v, f, np.asarray(outer_lower), surface_faces)
    parts_f.append(fo)
    parts_b.append(bo)
    # inner lips 60-67: on the slit
    for frac, below in ((0.04, False), (0.3, False), (0.5, False), (0.7, False), (0.96, False),
                        (0.7, True), (0.5, True), (0.3, True)):
        fi, bi = slit_point("mouth", frac, below)
        parts_f.append(fi)
        parts_b.append(bi)
    faces_out = np.concatenate(parts_f)
    bary_out = np.concatenate(parts_b)
    assert len(faces_out) == 51, len(faces_out)
    return faces_out, bary_out


def yaw_of_bin(index: int) -> float:
    """Head yaw in degrees (rotation about +y) that smplx maps to dynamic-embedding bin `index`."""
    return float(-index if index <= 39 else index - 39)


def _contour_table(mesh: _Mesh) -> tuple[np.ndarray, np.ndarray]:
    """Jaw points 0-16 per yaw bin by landmark marching: the extreme point in each direction sector."""
    v, f = mesh.vertices, mesh.faces
    surface = np.arange(mesh.num_surface)
    center = np.array([0.0, -0.012])
    p = v[surface]
    eye_y = 0.004
    rel = p[:, :2] - center
    angle = np.degrees(np.arctan2(rel[:, 0], -rel[:, 1]))  # 0 = straight down, +90 = subject's left
    below_eyes = p[:, 1] < eye_y - 0.002
    in_front_of_ears = p[:, 2] > -0.012
    row_params, _, _ = _row_parameters()
    chin_bottom_row = int(np.argmin(np.abs(row_params - CHIN_BOTTOM_KEY)))
    row_of = np.zeros(mesh.num_surface, np.int64)
    for r, ids in enumerate(mesh.grid):
        row_of[ids] = r
    for (r, _), vid in mesh.lower.items():
        row_of[vid] = r
    row_of[mesh.num_surface - 1] = len(mesh.grid) - 1  # the neck-cap centre
    valid = below_eyes & in_front_of_ears & (row_of[surface] <= chin_bottom_row)
    sector_angles = np.linspace(-95, 95, 17)  # iBUG 0 (subject's right, -x) ... 16
    half_width = (sector_angles[1] - sector_angles[0]) * 0.75
    surface_faces = np.where((f < mesh.num_surface).all(1))[0]
    face_of_vertex = {}
    for fi in surface_faces:
        for vid in f[fi]:
            face_of_vertex.setdefault(vid, fi)
    table_faces = np.zeros((NUM_YAW_BINS, 17), np.int64)
    table_bary = np.zeros((NUM_YAW_BINS, 17, 3))
    for b in range(NUM_YAW_BINS):
        yaw = np.radians(yaw_of_bin(b))
        rot = np.array([[np.cos(yaw), 0, np.sin(yaw)], [0, 1, 0], [-np.sin(yaw), 0, np.cos(yaw)]])
        q = p @ rot.T
        for k, a in enumerate(sector_angles):
            members = np.where(valid & (np.abs(angle - a) <= half_width))[0]
            direction = np.array([np.sin(np.radians(a)), -np.cos(np.radians(a))])
            best = surface[members[np.argmax(q[members, :2] @ direction)]]
            fi = face_of_vertex[best]
            table_faces[b, k] = fi
            table_bary[b, k] = (f[fi] == best).astype(np.float64)
    return table_faces, table_bary


def generate_basic_head(seed: int = 0) -> FlameData:
    """Build onehead's open head model (deterministic for a given seed)."""
    rng = np.random.default_rng(seed)
    mesh = _build_mesh()
    regressor, weights = _skeleton(mesh)
    shapedirs = _shape_basis(mesh, rng)
    exprdirs = _expression_basis(mesh, rng)
    static_faces, static_bary = _static_landmarks(mesh)
    dyn_faces, dyn_bary = _contour_table(mesh)
    uv = mesh.uv.copy()
    return FlameData(
        v_template=mesh.vertices.astype(np.float32),
        faces=mesh.faces.astype(np.int64),
        shapedirs=shapedirs.astype(np.float32),
        exprdirs=exprdirs.astype(np.float32),
        posedirs=np.zeros((len(mesh.vertices), 3, 36), np.float32),
        j_regressor=regressor.astype(np.float32),
        parents=np.array([-1, 0, 1, 1, 1]),
        lbs_weights=weights.astype(np.float32),
        static_lmk_faces=static_faces,
        static_lmk_bary=static_bary.astype(np.float32),
        dynamic_lmk_faces=dyn_faces,
        dynamic_lmk_bary=dyn_bary.astype(np.float32),
        uv_coords=uv.astype(np.float32),
        uv_faces=mesh.uv_faces.astype(np.int64),
    )
