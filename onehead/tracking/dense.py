"""Where each of mediapipe's 478 face-mesh points lies on a head model's surface.

    points = dense_points(head)        # onehead.head.SurfacePoints, made once per head and cached
    out = head(..., points=points)     # out.points (B, 478, 3)

The embedding is learned by looking: the head model is rendered (several painted identities, a
neutral face with the mouth closed and open, yaws from -30 to 30 degrees), mediapipe finds its 478
points in each render, and each point is lifted to the surface under its pixel (face and
barycentric weights). Per point, the surface spot that lies nearest all the others in template
space (the medoid) is kept, and the spread around it says how consistently mediapipe places that
point. So the fit compares mediapipe's points with the places mediapipe itself sees them on this
model, for any head model in FLAME format: onehead's open model, or a user's FLAME (rendered
untextured when it has no UV layout). Cached under onehead's cache folder by the model's template
and faces.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field

import numpy as np
import torch
from tqdm.auto import tqdm

from onehead.cache import default_cache_dir
from onehead.errors import NoFaceError
from onehead.head.model import HeadModel, SurfacePoints

NUM_POINTS = 478
IRIS_POINTS = range(468, 478)  # iris centres and rims: fitted through the eyeballs' pupils instead
EMBEDDING_VERSION = 2  # 2: open mouths rendered too (JAWS)
YAWS = (-30.0, -15.0, 0.0, 15.0, 30.0)
JAWS = (0.0, 8.0, 16.0)  # mouth openings, degrees: an open mouth shows its inner lip edge further in than
# a closed one's seam, where mediapipe then puts its inner-lip points (closed mouths alone: the fitted
# mouth opened 0.82 as wide as mediapipe's on the carphone clip; with these, 0.88)
REGION_WEIGHTS = {"lips": 3.0, "eyes": 2.0, "brows": 0.0, "nose": 0.0, "oval": 1.0, "iris": 0.0}
OTHER_WEIGHT = 0.0  # cheeks, forehead: few features, loosely placed; left out (and so cheaper)
DEPTH_REGIONS_LEFT_OUT = ("lips", "oval", "iris")  # they move, or sit on the silhouette, whose depth mediapipe guesses
DEPTH_POINTS = 64  # of the rest, evenly spread: the depth term's points
CONSISTENT_SPREAD = 0.005  # metres: points mediapipe places more loosely than this count less


@dataclass
class DenseEmbedding:
    faces: np.ndarray  # (478,) int64
    bary: np.ndarray  # (478, 3) float32
    spread: np.ndarray  # (478,) metres: median distance of the lifted samples from the kept spot
    samples: np.ndarray  # (478,) int: how many renders saw the point on the surface
    _depth_weights: np.ndarray | None = field(default=None, init=False, repr=False, compare=False)

    def points(self, head: HeadModel, indices=None) -> SurfacePoints:
        """SurfacePoints of all 478 points, or of those `indices`."""
        keep = slice(None) if indices is None else np.asarray(indices)
        return SurfacePoints.on(head, self.faces[keep], self.bary[keep])

    def weights(self) -> np.ndarray:
        """(478,) fit weights summing to 68 (the dense term weighs like the 68 points): by region
        (REGION_WEIGHTS), times how consistently the renders placed the point; 0 for points no
        render saw on the surface and for the irises."""
        from onehead.tracking.landmarks import mediapipe_regions

        weights = np.full(NUM_POINTS, OTHER_WEIGHT)
        for region, indices in mediapipe_regions().items():
            weights[indices] = REGION_WEIGHTS[region]
        spread = np.nan_to_num(self.spread, nan=np.inf)
        weights = weights / (1 + (spread / CONSISTENT_SPREAD) ** 2)
        weights[self.samples == 0] = 0
        return (weights * 68 / weights.sum()).astype(np.float32)

    def depth_weights(self, head: HeadModel) -> np.ndarray:
        """(478,) weights of the depth term (onehead.tracking.fit.depth_residual), summing to 68:
        DEPTH_POINTS of the points on the face's rigid parts (nose, brows, forehead, cheeks) that the
        renders placed consistently, spread evenly over them (farthest-point order on the template).
        Chosen once per embedding (about 25 ms), then kept."""
        if self._depth_weights is not None:
            return self._depth_weights.copy()
        from onehead.tracking.landmarks import mediapipe_regions

        regions = mediapipe_regions()
        candidates = np.ones(NUM_POINTS, bool)
        for region in DEPTH_REGIONS_LEFT_OUT:
            candidates[regions[region]] = False
        candidates &= (self.samples > 0) & (np.nan_to_num(self.spread, nan=np.inf) < CONSISTENT_SPREAD)
        index = np.flatnonzero(candidates)
        corners = head.v_template[head.faces[torch.as_tensor(self.faces[index])]].numpy()  # (N, 3, 3)
        chosen = index[_farthest_points((corners * self.bary[index, :, None]).sum(1), DEPTH_POINTS)]
        weights = np.zeros(NUM_POINTS, np.float32)
        weights[chosen] = 68 / max(len(chosen), 1)
        self._depth_weights = weights
        return weights.copy()


def dense_points(head: HeadModel, progress: bool = False) -> SurfacePoints:
    """The head's dense embedding as SurfacePoints (built on first use, then read from the cache)."""
    return dense_embedding(head, progress).points(head)


_MEMORY: dict[str, DenseEmbedding] = {}


def dense_embedding(head: HeadModel, progress: bool = False) -> DenseEmbedding:
    """The head's DenseEmbedding from memory, the cache folder, or a fresh build (15-40 s on 2 cores)."""
    key = _head_key(head)
    if key in _MEMORY:
        return _MEMORY[key]
    path = default_cache_dir() / "dense" / f"{key}.npz"
    if path.is_file():
        with np.load(path) as data:
            embedding = DenseEmbedding(*(data[k] for k in ("faces", "bary", "spread", "samples")))
    else:
        embedding = build_dense_embedding(head, progress=progress)
        path.parent.mkdir(parents=True, exist_ok=True)
        partial = path.with_name(path.name + ".partial.npz")
        np.savez(partial, faces=embedding.faces, bary=embedding.bary, spread=embedding.spread,
                 samples=embedding.samples)
        partial.replace(path)  # atomic: a reader never sees half a file
    _MEMORY[key] = embedding
    return embedding


def build_dense_embedding(head: HeadModel, identities: int = 8, yaws=YAWS, size: int = 512, seed: int = 0,
                          progress: bool = False, jaws=JAWS) -> DenseEmbedding:
    """Render, detect and lift (module docstring). identities x len(jaws) x len(yaws) renders."""
    from onehead.tracking.landmarks import LandmarkDetector

    lifted = [[] for _ in range(NUM_POINTS)]  # per point: (face, bary, template position) samples
    count = identities * len(jaws) * len(yaws)
    with LandmarkDetector(mode="image") as detector:
        for image, fragments in tqdm(_renders(head, identities, yaws, size, seed, jaws), total=count, unit="render",
                                     desc="dense landmark embedding (once per head model)", disable=not progress,
                                     leave=False):
            found = detector.detect(image)
            if found is None:
                continue
            _lift(found.points[:, :2], fragments, head, lifted)
    if sum(len(samples) > 0 for samples in lifted) < NUM_POINTS - len(IRIS_POINTS):
        raise NoFaceError(f"dense landmark embedding: mediapipe found the face in too few of the "
                          f"{count} renders of the head model")
    return _medoids(lifted, head)


def _renders(head: HeadModel, identities: int, yaws, size: int, seed: int, jaws=(0.0,)):
    """(uint8 image (H, W, 3), Fragments of the render) per identity, jaw opening (degrees) and yaw."""
    from onehead.camera import intrinsics
    from onehead.data import synthetic
    from onehead.render.rasterize import rasterize_mesh

    rng = np.random.default_rng(seed)
    target, field = synthetic.head_framing(head)
    K = intrinsics(size / (0.8 * field), size, size)  # the face fills most of the frame
    light = synthetic.Light(direction=[0.0, 0.3, 0.95], colour=[1.0, 1.0, 1.0], ambient=0.5, diffuse=0.6)
    background = np.full((3, size, size), 0.55, np.float32)
    atlas = synthetic.TextureAtlas(head) if head.uv_coords is not None else None
    for _ in range(identities):
        identity = synthetic.random_identity(rng, head.num_shape, "dense")
        shape = identity.shape * 0.7  # typical faces, not caricatures
        albedo = None if atlas is None else synthetic.paint_albedo(atlas, identity.appearance)
        for jaw in jaws:
            rest = {k: np.zeros((1, n), np.float32) for k, n in head.parameter_sizes.items() if k != "shape"}
            rest["jaw_pose"][0, 0] = np.radians(jaw)  # about the head's x axis: the mouth opens
            with torch.no_grad():
                vertices = head(shape=torch.as_tensor(shape)[None], jaw_pose=torch.as_tensor(rest["jaw_pose"])).vertices
            for yaw in yaws:
                world_to_cam = synthetic.look_at_camera(yaw, 0.0, 1.0, target)
                with torch.no_grad():
                    fragments = rasterize_mesh(vertices, head.faces, K, torch.as_tensor(world_to_cam), size, size)
                if albedo is not None:
                    view = synthetic.render_head(head, shape, rest, albedo, K.numpy(), world_to_cam, size, light,
                                                 background)
                    rgb = view.rgb[0]
                else:
                    rgb = _shaded(head, vertices, fragments, world_to_cam, light, background)
                image = (rgb.permute(1, 2, 0).numpy() * 255 + 0.5).clip(0, 255).astype(np.uint8)
                yield np.ascontiguousarray(image), fragments


def _shaded(head, vertices, fragments, world_to_cam, light, background) -> torch.Tensor:
    """(3, H, W) a skin-coloured Lambert render, for head models without a UV layout."""
    from onehead.render.rasterize import interpolate

    v = vertices[0]
    tri = v[head.faces]
    normals = torch.cross(tri[:, 1] - tri[:, 0], tri[:, 2] - tri[:, 0], dim=-1)
    vertex_normals = torch.zeros_like(v).index_add_(0, head.faces.reshape(-1), normals.repeat_interleave(3, 0))
    n = torch.nn.functional.normalize(interpolate(fragments, head.faces, vertex_normals[None])[0], dim=-1)
    lambert = (n @ torch.tensor(light.direction)).clamp(min=0)
    skin = torch.tensor([0.80, 0.62, 0.52])
    mask = fragments.mask[0, ..., None].float()
    rgb = skin * (light.ambient + light.diffuse * lambert)[..., None] * mask
    rgb = rgb + torch.as_tensor(background).permute(1, 2, 0) * (1 - mask)
    return rgb.clamp(0, 1).permute(2, 0, 1)


def _lift(points: np.ndarray, fragments, head: HeadModel, lifted: list) -> None:
    """Add the surface spot under each detected point (478, 2) to its samples (with its template
    position, where the medoid is taken)."""
    height, width = fragments.face_index.shape[1:]
    cols = np.clip(np.round(points[:, 0]).astype(int), 0, width - 1)
    rows = np.clip(np.round(points[:, 1]).astype(int), 0, height - 1)
    faces = fragments.face_index[0, rows, cols].numpy()
    bary = fragments.bary[0, rows, cols].numpy()
    corners = head.v_template[head.faces[torch.as_tensor(faces).clamp(min=0)]].numpy()  # (478, 3, 3)
    positions = (corners * bary[..., None]).sum(1)
    for i in range(NUM_POINTS):
        if faces[i] >= 0:
            lifted[i].append((int(faces[i]), bary[i].astype(np.float32), positions[i]))


def _medoids(lifted: list, head: HeadModel) -> DenseEmbedding:
    faces = np.zeros(NUM_POINTS, np.int64)
    bary = np.full((NUM_POINTS, 3), 1 / 3, np.float32)
    spread = np.full(NUM_POINTS, np.nan, np.float32)
    samples = np.zeros(NUM_POINTS, np.int64)
    for i, candidates in enumerate(lifted):
        if not candidates:
            continue  # an iris point never on the surface: it keeps face 0 and no samples
        positions = np.stack([c[2] for c in candidates])
        distances = np.linalg.norm(positions[:, None] - positions[None], axis=-1)
        best = int(distances.sum(1).argmin())
        faces[i], bary[i] = candidates[best][0], candidates[best][1]
        spread[i] = float(np.median(distances[best]))
        samples[i] = len(candidates)
    return DenseEmbedding(faces, bary, spread, samples)


def _farthest_points(positions: np.ndarray, count: int) -> np.ndarray:
    """Indices of `count` of the (N, 3) positions, each next one the farthest from those before (an
    even spread), starting from the one nearest their mean."""
    order = [int(np.linalg.norm(positions - positions.mean(0), axis=1).argmin())]
    nearest = np.linalg.norm(positions - positions[order[0]], axis=1)
    for _ in range(min(count, len(positions)) - 1):
        order.append(int(nearest.argmax()))
        nearest = np.minimum(nearest, np.linalg.norm(positions - positions[order[-1]], axis=1))
    return np.array(order)


def _head_key(head: HeadModel) -> str:
    digest = hashlib.sha256()
    digest.update(f"dense-v{EMBEDDING_VERSION}".encode())
    for tensor in (head.v_template, head.faces):
        digest.update(np.ascontiguousarray(tensor.detach().cpu().numpy()).tobytes())
    return digest.hexdigest()[:20]
