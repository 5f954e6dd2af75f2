"""One head-model interface over any FLAME-format directory.

    head = load_head_model("basic")                   # onehead's open model (generated once, cached)
    head = load_head_model("flame", flame_dir=DIR)     # licensed FLAME 2020 / 2023 files
    out = head(shape=..., expression=..., global_pose=..., jaw_pose=..., translation=...)
    out.vertices (B, V, 3), out.landmarks68 (B, 68, 3) in iBUG order, out.joints (B, 5, 3)

Linear blend skinning uses smplx's own rotation and kinematic-chain functions, so vertices
match `smplx.FLAME` on the same files. `landmarks_only=True` skins just the vertices under
the landmarks, which is what makes per-frame fitting cheap.
"""

from __future__ import annotations

import copy
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from smplx.lbs import batch_rigid_transform, batch_rodrigues, find_dynamic_lmk_idx_and_bcoords

from onehead.cache import default_cache_dir
from onehead.errors import CheckpointError, ConfigError
from onehead.head.flame_format import FlameData, read_flame_dir, write_flame_dir
from onehead.head.geometry import barycentric_points

HEAD_KINDS = ("basic", "flame")
# The head model's parameters, in the order of its forward(); every per-frame one but `shape`.
HEAD_PARAM_NAMES = ("shape", "expression", "global_pose", "neck_pose", "jaw_pose", "eye_pose", "translation")
MOTION_PARAM_NAMES = HEAD_PARAM_NAMES[1:]
NUM_JOINTS = 5  # root, neck, jaw, left eye, right eye
NECK_KIN_CHAIN = (0,)  # smplx takes the contour yaw from the global rotation alone (FLAME.NECK_IDX = 0)


@dataclass
class HeadOutput:
    vertices: torch.Tensor | None  # (B, V, 3) world, or None with landmarks_only
    landmarks68: torch.Tensor  # (B, 68, 3) iBUG order; jaw points follow the visible contour
    joints: torch.Tensor  # (B, 5, 3)
    pupils: torch.Tensor  # (B, 2, 3) front of the left and right eyeballs (basic model only; else eye joints)
    points: torch.Tensor | None = None  # (B, P, 3) the SurfacePoints asked for, else None


@dataclass
class SurfacePoints:
    """P fixed points on a head model's surface: a face and barycentric weights each. Made once per
    head (`SurfacePoints.on(head, faces, bary)`) so that `head(points=...)` with landmarks_only
    skins just the vertices under them."""

    faces: torch.Tensor  # (P,) face index
    bary: torch.Tensor  # (P, 3)
    vertex_ids: torch.Tensor  # (U,) the vertices under the points
    local_corners: torch.Tensor  # (P, 3) each point's corners as indices into vertex_ids

    @classmethod
    def on(cls, head: "HeadModel", faces, bary) -> "SurfacePoints":
        faces = torch.as_tensor(np.asarray(faces), dtype=torch.long)
        bary = torch.as_tensor(np.asarray(bary), dtype=torch.float32)
        if faces.dim() != 1 or bary.shape != (len(faces), 3):
            raise ConfigError(f"surface points need faces (P,) and bary (P, 3), got {tuple(faces.shape)} "
                              f"and {tuple(bary.shape)}")
        if len(faces) and (faces.min() < 0 or faces.max() >= len(head.faces)):
            raise ConfigError(f"surface points name faces outside the head model's {len(head.faces)}")
        corners = head.faces[faces]  # (P, 3)
        # a corner of zero weight is swapped for the point's heaviest: the same point, one vertex fewer to pose
        heaviest = corners.gather(1, bary.argmax(1, keepdim=True)).expand_as(corners)
        corners = torch.where(bary > 0, corners, heaviest)
        vertex_ids, local = torch.unique(corners.reshape(-1), return_inverse=True)
        return cls(faces, bary, vertex_ids, local.view(-1, 3))


class HeadModel(torch.nn.Module):
    """FLAME-format head model with its own batched forward."""

    def __init__(self, data: FlameData, kind: str = "basic", num_shape: int = 100,
                 num_expression: int = 50, source: str | None = None):
        super().__init__()
        if data.dynamic_lmk_faces is None:
            raise CheckpointError(f"{source or 'head model'}: flame_dynamic_embedding.npy is missing; "
                                  "the 17 jaw landmarks need it")
        self.kind = kind
        self.source = source
        self.num_shape = min(num_shape, data.shapedirs.shape[-1])
        self.num_expression = min(num_expression, data.exprdirs.shape[-1])
        # torch.tensor copies: no buffer shares memory with `data` (cached by load_head_model)
        f32 = lambda a: torch.tensor(np.asarray(a), dtype=torch.float32)  # noqa: E731
        i64 = lambda a: torch.tensor(np.asarray(a), dtype=torch.long)  # noqa: E731
        dirs = np.concatenate([data.shapedirs[:, :, : self.num_shape],
                               data.exprdirs[:, :, : self.num_expression]], axis=-1)
        self.register_buffer("v_template", f32(data.v_template))
        self.register_buffer("faces", i64(data.faces))
        self.register_buffer("dirs", f32(dirs))  # (V, 3, S + E)
        self.register_buffer("posedirs", f32(data.posedirs.reshape(len(data.v_template), -1, 36)))
        self.register_buffer("j_regressor", f32(data.j_regressor))
        self.register_buffer("lbs_weights", f32(data.lbs_weights))
        self.register_buffer("parents", i64(data.parents))
        self.register_buffer("static_faces", i64(data.static_lmk_faces))
        self.register_buffer("static_bary", f32(data.static_lmk_bary))
        self.register_buffer("dynamic_faces", i64(data.dynamic_lmk_faces))
        self.register_buffer("dynamic_bary", f32(data.dynamic_lmk_bary))
        self.register_buffer("neck_kin_chain", torch.tensor(NECK_KIN_CHAIN, dtype=torch.long))
        # in float64, then rounded: the same bits whatever torch's thread count (which changes the
        # order of a float32 sum, and a reloaded model must equal the saved one)
        regressor = self.j_regressor.double()
        self.register_buffer("j_template", (regressor @ self.v_template.double()).float())  # (5, 3)
        self.register_buffer("j_dirs", torch.einsum("jv,vcs->jcs", regressor, self.dirs.double()).float())
        self.uv_coords = None if data.uv_coords is None else torch.tensor(np.asarray(data.uv_coords))
        self.uv_faces = None if data.uv_faces is None else torch.tensor(np.asarray(data.uv_faces))
        self._build_landmark_subset()
        self._find_pupils()

    # ------------------------------------------------------------------ set-up
    def _build_landmark_subset(self) -> None:
        """The vertices under the landmarks: at any yaw (every contour bin), and frontal only (bin 0,
        what the fit uses: fewer vertices to skin)."""
        for prefix, contour in (("subset", self.dynamic_faces.reshape(-1)), ("frontal_subset", self.dynamic_faces[0])):
            ids = torch.unique(self.faces[torch.cat([self.static_faces, contour])].reshape(-1))
            remap = torch.full((len(self.v_template),), -1, dtype=torch.long)
            remap[ids] = torch.arange(len(ids))
            self.register_buffer(f"{prefix}_ids", ids)
            self.register_buffer(f"{prefix}_faces", remap[self.faces])  # valid for landmark faces only

    def _find_pupils(self) -> None:
        """The most forward vertex skinned to each eye joint (the pupil), when the model has eyeballs."""
        ids = []
        for joint in (3, 4):
            members = torch.where(self.lbs_weights[:, joint] > 0.99)[0]
            if len(members) == 0:
                ids = []
                break
            ids.append(members[torch.argmax(self.v_template[members, 2])])
        self.has_pupils = bool(ids)
        self.register_buffer("pupil_ids", torch.stack(ids) if ids else torch.zeros(0, dtype=torch.long))

    def with_shape(self, shape: torch.Tensor) -> "HeadModel":
        """This model with one identity `shape` (S,) built into its template: it takes no shape
        parameter and poses faster (what a video fit with a known shape wants). Shares nothing
        writable with this one."""
        shape = shape.detach().to(self.v_template).view(-1)
        fixed = copy.copy(self)
        fixed._buffers = dict(self._buffers)
        S = self.num_shape
        fixed.v_template = self.v_template + self.dirs[..., :S] @ shape
        fixed.dirs = self.dirs[..., S:].contiguous()
        fixed.j_template = self.j_template + self.j_dirs[..., :S] @ shape
        fixed.j_dirs = self.j_dirs[..., S:].contiguous()
        fixed.num_shape = 0
        return fixed

    def neck_base_weights(self, reach: float = 0.6) -> torch.Tensor:
        """(V,) in [0, 1]: how much each vertex belongs to the torso rather than the head: 1 at the
        bottom of the neck, easing to 0 at `reach` of the way up to the chin (mean shape), and 0 on
        the head. A warp that pins the neck's base with these lets the neck stretch, not slide."""
        bottom = self.v_template[:, 1].min()
        with torch.no_grad():
            chin = self(landmarks_only=True).landmarks68[0, 8, 1]
        height = ((self.v_template[:, 1] - bottom) / (reach * (chin - bottom))).clamp(0, 1)
        return 1 - height * height * (3 - 2 * height)  # smoothstep

    # ------------------------------------------------------------------ sizes
    @property
    def num_vertices(self) -> int:
        return self.v_template.shape[0]

    @property
    def parameter_sizes(self) -> dict[str, int]:
        sizes = {"shape": self.num_shape, "expression": self.num_expression, "global_pose": 3,
                 "neck_pose": 3, "jaw_pose": 3, "eye_pose": 6, "translation": 3}
        return {name: sizes[name] for name in HEAD_PARAM_NAMES}

    # ------------------------------------------------------------------ forward
    def forward(self, shape=None, expression=None, global_pose=None, neck_pose=None, jaw_pose=None,
                eye_pose=None, translation=None, landmarks_only: bool = False,
                frontal_contour: bool = False, points: SurfacePoints | None = None) -> HeadOutput:
        """Pose the model. `landmarks_only` skins just the landmark vertices (vertices=None), and
        those under `points` when given (out.points).

        `frontal_contour` fixes the 17 jaw points to the frontal-view contour, i.e. to the same
        surface points at any yaw: the fit compares those with mediapipe's fixed face-oval points,
        while the reported landmarks follow the visible contour (yaw table).
        """
        given = [p for p in (shape, expression, global_pose, neck_pose, jaw_pose, eye_pose, translation)
                 if p is not None]
        batch = max([p.shape[0] for p in given], default=1)
        device, dtype = self.v_template.device, self.v_template.dtype

        def param(value, size):
            if value is None:
                return torch.zeros(batch, size, device=device, dtype=dtype)
            value = value.to(device=device, dtype=dtype)
            if value.shape[-1] != size:
                raise ConfigError(f"expected {size} values per frame, got {value.shape[-1]}")
            return value.expand(batch, -1) if value.shape[0] == 1 else value

        coeffs = torch.cat([param(shape, self.num_shape), param(expression, self.num_expression)], dim=1)
        pose = torch.cat([param(global_pose, 3), param(neck_pose, 3), param(jaw_pose, 3),
                          param(eye_pose, 6)], dim=1)
        subset_ids, subset_faces = ((self.frontal_subset_ids, self.frontal_subset_faces) if frontal_contour
                                    else (self.subset_ids, self.subset_faces))
        if landmarks_only:
            ids = torch.cat([subset_ids, self.pupil_ids] + ([] if points is None else [points.vertex_ids]))
            template, dirs = self.v_template[ids], self.dirs[ids]
            posedirs, weights = self.posedirs[ids], self.lbs_weights[ids]
        else:
            template, dirs, posedirs, weights = self.v_template, self.dirs, self.posedirs, self.lbs_weights
        vertices, joints = _skin(coeffs, pose, template, dirs, posedirs, weights,
                                 self.j_template, self.j_dirs, self.parents)
        if translation is not None:
            shift = param(translation, 3).unsqueeze(1)
            vertices, joints = vertices + shift, joints + shift

        if frontal_contour:
            dyn_faces = self.dynamic_faces[0].expand(batch, -1)
            dyn_bary = self.dynamic_bary[0].expand(batch, -1, -1)
        else:
            dyn_faces, dyn_bary = find_dynamic_lmk_idx_and_bcoords(
                vertices, pose, self.dynamic_faces, self.dynamic_bary, self.neck_kin_chain, pose2rot=True)
        faces_idx = torch.cat([dyn_faces, self.static_faces.expand(batch, -1)], dim=1)
        bary = torch.cat([dyn_bary, self.static_bary.expand(batch, -1, -1)], dim=1)
        surface = None
        if landmarks_only:
            num_subset, num_pupils = len(subset_ids), len(self.pupil_ids)
            landmarks = barycentric_points(vertices[:, :num_subset], subset_faces, faces_idx, bary)
            pupils = vertices[:, num_subset:num_subset + num_pupils] if self.has_pupils else joints[:, 3:5]
            if points is not None:
                under = vertices[:, num_subset + num_pupils:]  # (B, U, 3)
                surface = (under[:, points.local_corners] * points.bary.to(under)[None, :, :, None]).sum(-2)
            vertices = None
        else:
            landmarks = barycentric_points(vertices, self.faces, faces_idx, bary)
            pupils = vertices[:, self.pupil_ids] if self.has_pupils else joints[:, 3:5]
            if points is not None:
                surface = barycentric_points(vertices, self.faces, points.faces, points.bary.to(vertices))
        return HeadOutput(vertices=vertices, landmarks68=landmarks, joints=joints, pupils=pupils, points=surface)


def _skin(coeffs, pose, template, dirs, posedirs, weights, j_template, j_dirs, parents):
    """Blend shapes, pose correctives and linear blend skinning (FLAME's lbs, by linearity)."""
    batch = coeffs.shape[0]
    shaped = template + torch.einsum("bs,vcs->bvc", coeffs, dirs)
    joints_rest = j_template + torch.einsum("bs,jcs->bjc", coeffs, j_dirs)
    rot = batch_rodrigues(pose.reshape(-1, 3)).reshape(batch, -1, 3, 3)
    ident = torch.eye(3, dtype=pose.dtype, device=pose.device)
    pose_feature = (rot[:, 1:] - ident).reshape(batch, -1)
    shaped = shaped + torch.einsum("bp,vcp->bvc", pose_feature, posedirs)
    posed_joints, transforms = batch_rigid_transform(rot, joints_rest, parents, dtype=pose.dtype)
    per_vertex = torch.einsum("vj,bjmn->bvmn", weights, transforms)
    homog = torch.nn.functional.pad(shaped, (0, 1), value=1.0)
    vertices = torch.einsum("bvmn,bvn->bvm", per_vertex, homog)[..., :3]
    return vertices, posed_joints


# ---------------------------------------------------------------------- loading

def basic_head_dir(cache_dir: str | os.PathLike | None = None) -> Path:
    """The open head model's FLAME-format directory, generated on first use."""
    from onehead.head.generate import GENERATOR_VERSION, generate_basic_head

    directory = Path(cache_dir or default_cache_dir()) / "head" / f"basic-v{GENERATOR_VERSION}"
    if not (directory / "FLAME_NEUTRAL.pkl").is_file():
        write_flame_dir(generate_basic_head(seed=0), directory)
    return directory


def resolve_head_dir(kind: str = "basic", flame_dir: str | os.PathLike | None = None) -> Path:
    if kind not in HEAD_KINDS:
        raise ConfigError(f"unknown head model '{kind}'; choose one of {', '.join(HEAD_KINDS)}")
    if kind == "basic":
        return basic_head_dir()
    flame_dir = flame_dir or os.environ.get("ONEHEAD_FLAME_DIR")
    if not flame_dir:
        raise ConfigError("--head flame needs the licensed FLAME files: pass --flame-dir DIR or set "
                          "ONEHEAD_FLAME_DIR (DIR holds FLAME_NEUTRAL.pkl and flame_static_embedding.pkl)")
    return Path(flame_dir).expanduser()


_FLAME_DATA: dict = {}  # parsed files by directory; never a module (see load_head_model)


def load_head_model(kind: str = "basic", flame_dir: str | os.PathLike | None = None,
                    num_shape: int = 100, num_expression: int = 50) -> HeadModel:
    """Load a head model: "basic" (onehead's open model) or "flame" (a user's licensed files).

    Every call returns its own HeadModel (on CPU, float32, eval mode), built from the files
    parsed once per directory: a caller that moves it (`.to("cuda")`, `.double()`), trains it
    or registers it inside its own model never changes the head another caller (the tracker,
    the metrics) gets. Building one from the parsed files takes tens of milliseconds.
    """
    directory = resolve_head_dir(kind, flame_dir)
    key = str(directory)
    if key not in _FLAME_DATA:
        _FLAME_DATA[key] = read_flame_dir(directory)
    head = HeadModel(_FLAME_DATA[key], kind=kind, num_shape=num_shape, num_expression=num_expression,
                     source=str(directory))
    return head.eval()
