"""Synthetic heads with exact ground truth: random identities, motion, cameras and lights.

No multi-identity or multi-view face data can be had offline, so onehead makes its own:

- an identity is a shape vector plus a procedural UV albedo (skin tone and blotches, lips,
  brows, eyes, a hair region; optional beard, glasses and headband) painted in the head
  model's canonical space, so it works with the open model and with FLAME alike;
- motion is smooth random expression, jaw, eye and head-pose trajectories (with blinks);
- cameras look at the head from the front hemisphere (yaw within +-60 degrees, pitch from -30
  to 45; view 0 is near-frontal); a light gives Lambert plus ambient shading;
- cross-identity ground truth renders identity A with B's motion and cameras.

`synthesize(...)` writes sequences in onehead's data format (onehead.data.sequence).
"""

from __future__ import annotations

import math
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from scipy.interpolate import CubicSpline

from onehead.camera import intrinsics, project
from onehead.pixels import frames_to_uint8
from onehead.data.prepare import FRAMING_LIFT, FRAMING_SCALE
from onehead.data.sequence import SequenceMeta, write_pairs, write_view
from onehead.data.tracking_file import Tracking
from onehead.errors import ConfigError
from onehead.head import MOTION_PARAM_NAMES
from onehead.render.gbuffers import GBuffers, render_gbuffers
from onehead.render.rasterize import interpolate, rasterize_uv

YAW_RANGE = (-60.0, 60.0)  # degrees, camera around the head's vertical axis
PITCH_RANGE = (-30.0, 45.0)  # degrees, camera elevation (positive: from above)
FRONTAL_RANGE = 15.0  # view 0 stays within this many degrees of frontal

SKIN_TONES = np.array([[0.95, 0.80, 0.70], [0.90, 0.72, 0.60], [0.80, 0.60, 0.46], [0.66, 0.47, 0.34],
                       [0.50, 0.34, 0.24], [0.35, 0.23, 0.16]], np.float32)
HAIR_COLOURS = np.array([[0.08, 0.06, 0.05], [0.25, 0.16, 0.09], [0.45, 0.30, 0.16], [0.80, 0.66, 0.42],
                         [0.55, 0.22, 0.10], [0.62, 0.62, 0.62], [0.90, 0.90, 0.88]], np.float32)
IRIS_COLOURS = np.array([[0.30, 0.18, 0.08], [0.20, 0.35, 0.55], [0.30, 0.42, 0.25], [0.40, 0.40, 0.42]],
                        np.float32)
BEARDS = ("none", "stubble", "moustache", "full")


# --------------------------------------------------------------------------- identities

@dataclass
class Appearance:
    """The procedural look of one identity; `paint_albedo` turns it into a UV texture."""

    skin: list[float]
    lips: list[float]
    hair: list[float]
    iris: list[float]
    hairline: float  # metres above the brows where the hair starts at the front
    bald: bool
    beard: str  # one of BEARDS
    glasses: list[float] | None  # frame colour, or None
    headband: list[float] | None  # band colour, or None
    noise_seed: int


@dataclass
class Identity:
    name: str
    shape: np.ndarray  # (S,) head-model shape coefficients
    appearance: Appearance


def random_identity(rng: np.random.Generator, num_shape: int, name: str) -> Identity:
    shape = rng.normal(size=num_shape).astype(np.float32)
    shape[20:] *= 0.5  # the named components carry most of the variation
    tone = SKIN_TONES[rng.integers(len(SKIN_TONES))] * rng.uniform(0.92, 1.06, 3)
    hair = HAIR_COLOURS[rng.integers(len(HAIR_COLOURS))] * rng.uniform(0.85, 1.15)
    lips = tone * np.array([0.85, 0.55, 0.55]) * rng.uniform(0.85, 1.05)
    appearance = Appearance(
        skin=_colour(tone), lips=_colour(lips), hair=_colour(hair),
        iris=_colour(IRIS_COLOURS[rng.integers(len(IRIS_COLOURS))]),
        hairline=float(rng.uniform(0.035, 0.065)), bald=bool(rng.random() < 0.12),
        beard=str(rng.choice(BEARDS, p=[0.55, 0.15, 0.12, 0.18])),
        glasses=_colour(rng.uniform(0.02, 0.5) * np.ones(3) * rng.uniform(0.8, 1.2, 3)) if rng.random() < 0.2 else None,
        headband=_colour(rng.uniform(0.1, 0.9, 3)) if rng.random() < 0.12 else None,
        noise_seed=int(rng.integers(2**31)),
    )
    return Identity(name=name, shape=shape, appearance=appearance)


def _colour(values) -> list[float]:
    return [float(v) for v in np.clip(values, 0.0, 1.0)]


class TextureAtlas:
    """Each texel of a head model's UV layout with its canonical position, for painting."""

    def __init__(self, head, resolution: int = 256):
        if head.uv_coords is None:
            raise ConfigError("the head model has no UV layout; synthetic heads need one")
        self.resolution = resolution
        fragments = rasterize_uv(head.uv_coords.float(), head.uv_faces, resolution)
        self.valid = fragments.mask[0]  # (R, R)
        attributes = torch.cat([head.v_template, head.lbs_weights[:, 3:5]], -1)
        per_texel = interpolate(fragments, head.faces, attributes)[0]
        self.position = per_texel[..., :3]  # (R, R, 3) canonical (template) coordinates
        self.eyeball = per_texel[..., 3:5].sum(-1) > 0.5
        out = head(landmarks_only=True, frontal_contour=True)
        self.landmarks = out.landmarks68[0]  # (68, 3) canonical
        self.eye_joints = out.joints[0, 3:5]  # (2, 3)
        self.top = float(head.v_template[:, 1].max())


def paint_albedo(atlas: TextureAtlas, look: Appearance) -> torch.Tensor:
    """The identity's albedo as a (3, R, R) texture in [0, 1], dilated past the UV islands."""
    gen = torch.Generator().manual_seed(look.noise_seed)
    p = atlas.position
    x, y, z = p[..., 0], p[..., 1], p[..., 2]
    lm = atlas.landmarks
    res = atlas.resolution

    def colour(rgb):
        return torch.tensor(rgb, dtype=torch.float32).view(3, 1, 1)

    def blend(base, rgb, weight):
        return base * (1 - weight) + rgb * weight

    blotches = 1 + 0.06 * _smooth_noise(gen, res, 12) + 0.02 * _smooth_noise(gen, res, 48)
    albedo = colour(look.skin) * blotches
    front = _step(z, lm[:, 2].min() - 0.03, lm[:, 2].min() - 0.01)  # the face side of the head

    # cheeks a little redder
    cheeks = sum(_blob(p, (lm[side] + lm[mouth]) / 2, 0.018) for side, mouth in ((2, 48), (14, 54)))
    albedo = blend(albedo, albedo * colour([1.05, 0.85, 0.85]), 0.5 * cheeks * front)

    # lips: an ellipse through the outer lip points; the mouth pocket behind them is dark
    mouth_c = lm[48:60].mean(0)
    half_w = 0.55 * (lm[54] - lm[48]).norm()
    half_h = 0.6 * (lm[57, 1] - lm[51, 1]).abs() + 0.002
    ellipse = ((x - mouth_c[0]) / half_w) ** 2 + ((y - mouth_c[1]) / half_h) ** 2
    lip_front = _step(z, mouth_c[2] - 0.012, mouth_c[2] - 0.006)
    lips = _step(-ellipse, -1.1, -0.9) * lip_front
    albedo = blend(albedo, colour(look.lips) * blotches, lips)
    inside = _step(-ellipse, -1.6, -1.2) * (1 - lip_front)
    albedo = blend(albedo, colour([0.28, 0.07, 0.07]), inside)

    # brows: thick strokes along the brow points
    for ids in (range(17, 22), range(22, 27)):
        d = _polyline_distance(p[..., :2], lm[list(ids), :2])
        brow = _step(-d, -0.0045, -0.0025) * front
        albedo = blend(albedo, colour(look.hair) * (0.9 + 0.2 * _smooth_noise(gen, res, 96)), 0.9 * brow)

    # hair: above a hairline that is lower at the sides and back
    if not look.bald:
        brow_y = lm[17:27, 1].mean()
        around = torch.atan2(x, z).abs()  # 0 at the face, pi at the back
        line = brow_y + look.hairline - (look.hairline + 0.035) * _step(around, 0.7, 1.8)
        hair = _step(y, line, line + 0.006) * (~atlas.eyeball).float()
        strands = 0.85 + 0.25 * _smooth_noise(gen, res, 180, row_cells=10)
        albedo = blend(albedo, colour(look.hair) * strands, hair)
        if look.headband is not None:
            band = _step(y, line + 0.012, line + 0.014) * _step(-y, -(line + 0.03), -(line + 0.028))
            albedo = blend(albedo, colour(look.headband), band)

    # facial hair
    if look.beard != "none":
        nose_y = lm[33, 1]
        moustache = (_step(y, lm[51, 1], lm[51, 1] + 0.002) * _step(-y, -nose_y, -nose_y + 0.004)
                     * _step(-(x - mouth_c[0]).abs(), -half_w * 1.3, -half_w) * front)
        weight = moustache
        if look.beard in ("full", "stubble"):
            jaw = _step(-y, -mouth_c[1] + 0.004, -mouth_c[1] + 0.008) * _step(y, lm[8, 1] - 0.04, lm[8, 1] - 0.02)
            weight = torch.maximum(weight, jaw * _step(-torch.atan2(x, z).abs(), -1.5, -1.2) * (1 - lips))
        strength = 0.35 if look.beard == "stubble" else 0.9
        albedo = blend(albedo, colour(look.hair) * (0.8 + 0.4 * _smooth_noise(gen, res, 128)), strength * weight)

    # eyes: sclera, iris and pupil by the angle from each eyeball's forward axis
    for joint in atlas.eye_joints:
        direction = F.normalize(p - joint, dim=-1)
        near = (p - joint).norm(dim=-1) < 0.02
        on_eye = (atlas.eyeball & near).float()
        iris = _step(direction[..., 2], 0.86, 0.89)
        pupil = _step(direction[..., 2], 0.965, 0.975)
        eye = blend(colour([0.92, 0.9, 0.86]), colour(look.iris), iris)
        eye = blend(eye, colour([0.02, 0.02, 0.02]), pupil)
        albedo = blend(albedo, eye, on_eye)

    # glasses: rims around the eyes, a bridge and temples, painted on the skin
    if look.glasses is not None:
        centres = [lm[36:42].mean(0), lm[42:48].mean(0)]
        frame = torch.zeros_like(x)
        for c in centres:
            r = torch.sqrt(((x - c[0]) / 1.15) ** 2 + (y - c[1] + 0.002) ** 2)
            frame = torch.maximum(frame, _step(r, 0.019, 0.0195) * _step(-r, -0.0225, -0.022))
        across = _step(-(y - centres[0][1]).abs(), -0.0018, -0.0012)
        bridge = across * _step(-x.abs(), -0.012, -0.01)
        temples = across * _step(x.abs(), 0.058, 0.06) * _step(z, -0.02, 0.0)
        frame = torch.maximum(frame, torch.maximum(bridge, temples)) * (~atlas.eyeball).float()
        albedo = blend(albedo, colour(look.glasses), frame * front.clamp(min=_step(z, -0.02, 0.0)))

    albedo = albedo.clamp(0, 1) * atlas.valid
    return _dilate(albedo, atlas.valid.float())


def _step(value, edge0, edge1):
    """0 below edge0, 1 above edge1, smooth in between (works for edge0 > edge1 too)."""
    t = ((value - edge0) / (edge1 - edge0)).clamp(0, 1)
    return t * t * (3 - 2 * t)


def _blob(points, centre, sigma):
    return torch.exp(-((points - centre) ** 2).sum(-1) / (2 * sigma ** 2))


def _smooth_noise(gen: torch.Generator, resolution: int, cells: int, row_cells: int | None = None) -> torch.Tensor:
    """Band-limited noise in [-1, 1]-ish: random cells upsampled bicubically (fewer rows than
    columns gives streaks along v, like strands of hair)."""
    coarse = torch.randn(1, 1, row_cells or cells, cells, generator=gen)
    return F.interpolate(coarse, size=(resolution, resolution), mode="bicubic", align_corners=False)[0, 0]


def _polyline_distance(points: torch.Tensor, polyline: torch.Tensor) -> torch.Tensor:
    """Distance from (..., 2) points to a polyline (K, 2)."""
    a, b = polyline[:-1], polyline[1:]
    ab = b - a
    rel = points[..., None, :] - a
    t = ((rel * ab).sum(-1) / (ab * ab).sum(-1)).clamp(0, 1)
    return (rel - t[..., None] * ab).norm(dim=-1).min(-1).values


def _dilate(texture: torch.Tensor, valid: torch.Tensor, steps: int = 6) -> torch.Tensor:
    """Grow the colours of valid texels into empty ones, so bilinear lookups at seams stay clean."""
    texture, weight = texture * valid, valid.clone()
    for _ in range(steps):
        summed = F.avg_pool2d(texture[None], 3, 1, 1)[0]
        count = F.avg_pool2d(weight[None, None], 3, 1, 1)[0]
        empty = weight == 0
        texture = torch.where(empty & (count[0] > 0), summed / count.clamp(min=1e-8), texture)
        weight = torch.where(empty & (count[0] > 0), torch.ones_like(weight), weight)
    return texture


# --------------------------------------------------------------------------- motion

def random_motion(rng: np.random.Generator, num_frames: int, fps: float, num_expression: int,
                  talking: bool = True) -> dict[str, np.ndarray]:
    """Smooth random head-model motion: expression, jaw, eyes, head pose; (T, ...) float32."""
    t = np.arange(num_frames) / fps
    expression = np.zeros((num_frames, num_expression), np.float32)
    named = min(23, num_expression)
    # a few named expressions come and go (slow), plus small fine detail
    active = rng.choice(named, size=min(5, named), replace=False)
    for k in active:
        expression[:, k] = np.clip(_smooth_curve(rng, t, 1.2, 0.6), -0.3, 1.0)
    if num_expression > named:
        expression[:, named:] = 0.3 * _smooth_curve(rng, t, 0.8, 1.0, channels=num_expression - named)
    for k in (6, 7):  # blinks
        if k < named:
            expression[:, k] = np.maximum(expression[:, k], _blinks(rng, t))
    jaw = np.zeros((num_frames, 3), np.float32)
    if talking:  # syllable-like opening at 2.5-4 Hz under a slow envelope
        rate = rng.uniform(2.5, 4.0)
        phase = rng.uniform(0, 2 * np.pi)
        envelope = np.clip(0.5 + _smooth_curve(rng, t, 1.0, 0.5), 0, 1)
        jaw[:, 0] = 0.16 * envelope * (0.5 + 0.5 * np.sin(2 * np.pi * rate * t + phase)) ** 2
    jaw[:, 0] += np.clip(_smooth_curve(rng, t, 1.5, 0.08), 0, 0.2)
    pose = _smooth_curve(rng, t, 1.5, 1.0, channels=3) * np.array([0.18, 0.35, 0.08])  # pitch, yaw, roll
    gaze = _smooth_curve(rng, t, 0.7, 1.0, channels=2) * np.array([0.12, 0.2])
    eye_pose = np.concatenate([gaze, np.zeros((num_frames, 1)), gaze, np.zeros((num_frames, 1))], 1)
    translation = _smooth_curve(rng, t, 2.0, 1.0, channels=3) * 0.008
    motion = {"expression": expression, "global_pose": pose, "neck_pose": np.zeros((num_frames, 3)),
              "jaw_pose": jaw, "eye_pose": eye_pose, "translation": translation}
    return {name: motion[name].astype(np.float32) for name in MOTION_PARAM_NAMES}


def _smooth_curve(rng, t, timescale, scale, channels=None):
    """Random keys every `timescale` seconds through a cubic spline; (T,) or (T, channels)."""
    width = 1 if channels is None else channels
    keys_t = np.arange(-timescale, t[-1] + 2 * timescale, timescale) if len(t) else np.zeros(2)
    keys = rng.normal(scale=scale, size=(len(keys_t), width))
    curve = CubicSpline(keys_t, keys, axis=0)(t)
    return curve[:, 0] if channels is None else curve


def _blinks(rng, t):
    """Eyelid closures of ~0.2 s every 2-6 s."""
    closed = np.zeros_like(t)
    moment = rng.uniform(0.2, 3.0)
    while moment < (t[-1] if len(t) else 0) + 0.2:
        closed = np.maximum(closed, np.exp(-((t - moment) / 0.07) ** 2))
        moment += rng.uniform(2.0, 6.0)
    return closed


# --------------------------------------------------------------------------- cameras and light

def look_at_camera(yaw_deg: float, pitch_deg: float, distance: float, target=(0.0, 0.0, 0.0)) -> np.ndarray:
    """OpenCV world-to-camera (4, 4) for a camera at (yaw, pitch) around the +z (face) axis."""
    yaw, pitch = math.radians(yaw_deg), math.radians(pitch_deg)
    target = np.asarray(target, np.float64)
    eye = target + distance * np.array([math.sin(yaw) * math.cos(pitch), math.sin(pitch),
                                        math.cos(yaw) * math.cos(pitch)])
    forward = (target - eye) / np.linalg.norm(target - eye)
    right = np.cross(forward, [0.0, 1.0, 0.0])
    right /= np.linalg.norm(right)
    down = np.cross(forward, right)
    rotation = np.stack([right, down, forward])  # rows: camera x, y, z in world coordinates
    w2c = np.eye(4)
    w2c[:3, :3] = rotation
    w2c[:3, 3] = -rotation @ eye
    return w2c.astype(np.float32)


def head_framing(head, scale: float = FRAMING_SCALE, lift: float = FRAMING_LIFT) -> tuple[np.ndarray, float]:
    """Where cameras look and how much they see: the head's centre (raised like the crops of
    onehead.data.prepare) and a field of `scale` times the landmark extent, in metres. Synthetic
    frames are then framed like prepared real videos."""
    lm = head(landmarks_only=True, frontal_contour=True).landmarks68[0].detach().numpy()
    extent = float((lm.max(0) - lm.min(0))[:2].max())
    centre = (lm.max(0) + lm.min(0)) / 2
    target = np.array([centre[0], centre[1] + lift * extent, float(head.v_template[:, 2].mean())])
    return target.astype(np.float32), scale * extent


def random_cameras(rng: np.random.Generator, num_views: int, size: int, target,
                   field: float = 0.25) -> tuple[np.ndarray, np.ndarray]:
    """K (V, 3, 3) and world_to_cam (V, 4, 4) seeing about `field` metres across at the target;
    view 0 near-frontal, the rest over the front hemisphere."""
    Ks, w2cs = [], []
    for v in range(num_views):
        if v == 0:
            yaw, pitch = rng.uniform(-FRONTAL_RANGE, FRONTAL_RANGE, 2) * (1.0, 0.6)
        else:
            yaw, pitch = rng.uniform(*YAW_RANGE), rng.uniform(*PITCH_RANGE)
        distance = rng.uniform(0.9, 1.1)
        focal = size * distance / field * rng.uniform(0.9, 1.1)
        Ks.append(intrinsics(focal, size, size).numpy())
        w2cs.append(look_at_camera(yaw, pitch, distance, target))
    return np.stack(Ks).astype(np.float32), np.stack(w2cs)


@dataclass
class Light:
    direction: list[float]  # unit vector from the surface toward the light, world coordinates
    colour: list[float]
    ambient: float
    diffuse: float


def random_light(rng: np.random.Generator) -> Light:
    yaw, pitch = rng.uniform(-1.2, 1.2), rng.uniform(-0.4, 0.9)
    direction = [math.sin(yaw) * math.cos(pitch), math.sin(pitch), math.cos(yaw) * math.cos(pitch)]
    return Light(direction=direction, colour=_colour(1 - rng.uniform(0, 0.12, 3)),
                 ambient=float(rng.uniform(0.3, 0.55)), diffuse=float(rng.uniform(0.5, 0.8)))


def random_background(rng: np.random.Generator, size: int) -> np.ndarray:
    """(3, H, W) float: a solid colour, a vertical gradient or soft noise."""
    kind = rng.integers(3)
    a, b = rng.uniform(0, 1, 3), rng.uniform(0, 1, 3)
    ramp = np.linspace(0, 1, size)[:, None]
    if kind == 0:
        image = np.broadcast_to(a[:, None, None], (3, size, size))
    elif kind == 1:
        image = a[:, None, None] * (1 - ramp) + b[:, None, None] * ramp
    else:
        gen = torch.Generator().manual_seed(int(rng.integers(2**31)))
        noise = (0.5 + 0.25 * _smooth_noise(gen, size, 6)).clamp(0, 1).numpy()
        image = a[:, None, None] * noise + b[:, None, None] * (1 - noise)
    return np.ascontiguousarray(image, dtype=np.float32)


# --------------------------------------------------------------------------- rendering

@dataclass
class RenderedView:
    rgb: torch.Tensor  # (T, 3, H, W) in [0, 1]
    mask: torch.Tensor  # (T, 1, H, W)
    gbuffers: GBuffers
    landmarks68: torch.Tensor  # (T, 68, 2) pixels


def render_head(head, shape: np.ndarray, motion: dict, albedo: torch.Tensor, K: np.ndarray,
                world_to_cam: np.ndarray, size: int, light: Light,
                background: np.ndarray | None = None) -> RenderedView:
    """Render T frames of one identity under one camera (K (3, 3), world_to_cam (4, 4))."""
    frames = len(motion["expression"])
    params = {k: torch.as_tensor(v) for k, v in motion.items()}
    params["shape"] = torch.as_tensor(shape)[None].expand(frames, -1)
    with torch.no_grad():
        out = head(**params)
        Kt = torch.as_tensor(K)[None].expand(frames, 3, 3)
        w2c = torch.as_tensor(world_to_cam)[None].expand(frames, 4, 4)
        g = render_gbuffers(head, out.vertices, Kt, w2c, size, size)
        grid = torch.stack([g.uv[:, 0] * 2 - 1, 1 - g.uv[:, 1] * 2], -1)  # v up -> image rows
        colour = F.grid_sample(albedo[None].expand(frames, -1, -1, -1), grid, mode="bilinear",
                               padding_mode="border", align_corners=False)
        rotation = torch.as_tensor(world_to_cam[:3, :3])
        to_light = rotation @ torch.tensor(light.direction, dtype=torch.float32)
        lambert = (g.normals * to_light.view(1, 3, 1, 1)).sum(1, keepdim=True).clamp(min=0)
        shading = (light.ambient + light.diffuse * lambert) * torch.tensor(light.colour).view(1, 3, 1, 1)
        rgb = (colour * shading).clamp(0, 1) * g.mask
        if background is not None:
            rgb = rgb + torch.as_tensor(background)[None] * (1 - g.mask)
        landmarks, _ = project(out.landmarks68, Kt, w2c)
    return RenderedView(rgb=rgb, mask=g.mask, gbuffers=g, landmarks68=landmarks)


def _tracking_for_view(shape, motion, K, world_to_cam, landmarks, size, fps, head_kind) -> Tracking:
    frames = len(motion["expression"])
    return Tracking(
        shape=np.asarray(shape, np.float32), **{k: np.asarray(v) for k, v in motion.items()},
        K=np.repeat(K[None], frames, 0), world_to_cam=np.repeat(world_to_cam[None], frames, 0),
        landmarks68=landmarks.numpy().astype(np.float32),
        landmarks_mp=np.full((frames, 478, 2), np.nan, np.float32),
        valid=np.ones(frames, bool), fit_error=np.zeros(frames, np.float32),
        image_size=np.array([size, size]), fps=fps, head_model=head_kind)


@dataclass
class SynthOptions:
    identities: int = 4
    sequences: int = 2
    frames: int = 24
    views: int = 1
    size: int = 256
    seed: int = 0
    fps: float = 25.0
    texture_size: int = 256
    backgrounds: bool = True
    cross_pairs: bool = False
    studio: bool = False  # one camera rig, light and backdrop per identity, shared by all its sequences
    # (a capture studio: what a person-specific avatar trains on); otherwise new ones per sequence
    progress: bool = True


@dataclass
class _SequencePlan:
    name: str
    identity: Identity
    motion: dict
    Ks: np.ndarray
    w2cs: np.ndarray
    light: Light
    backgrounds: list | None
    extra: dict


def synthesize(head, out: str | Path, options: SynthOptions = SynthOptions()) -> dict:
    """Render a synthetic dataset into `out`; returns counts and the rendering speed."""
    from tqdm import tqdm

    if min(options.identities, options.sequences, options.frames, options.views, options.size) < 1:
        raise ConfigError("identities, sequences, frames, views and size must all be at least 1")
    if options.cross_pairs and options.identities < 2:
        raise ConfigError("--cross-pairs needs at least 2 identities")
    out = Path(out)
    rng = np.random.default_rng(options.seed)
    atlas = TextureAtlas(head, options.texture_size)
    target, field = head_framing(head)
    identities = [random_identity(rng, head.num_shape, f"id{i:03d}") for i in range(options.identities)]
    plans = []
    for ident in identities:
        for s in range(options.sequences):
            motion = random_motion(rng, options.frames, options.fps, head.num_expression)
            if s == 0 or not options.studio:
                Ks, w2cs = random_cameras(rng, options.views, options.size, target, field)
                # one backdrop per sequence, seen by all its cameras (as in a capture studio), so a
                # reference from any view tells a model what the background of every view looks like
                backdrop = random_background(rng, options.size) if options.backgrounds else None
                backgrounds = None if backdrop is None else [backdrop] * options.views
                light = random_light(rng)
            plans.append(_SequencePlan(f"{ident.name}_s{s:02d}", ident, motion, Ks, w2cs, light, backgrounds, {}))
    pairs = []
    if options.cross_pairs:  # identity A (its look, light, background) moved by the next identity's motion
        own = {p.identity.name: p for p in plans if p.name.endswith("_s00")}
        for i, ident in enumerate(identities):
            driver = own[identities[(i + 1) % len(identities)].name]
            mine = own[ident.name]
            name = f"cross_{ident.name}_by_{driver.name}"
            plans.append(_SequencePlan(name, ident, driver.motion, driver.Ks, driver.w2cs, mine.light,
                                       mine.backgrounds, {"appearance_of": mine.name, "motion_of": driver.name}))
            pairs.append({"reference": mine.name, "driving": driver.name, "target": name})

    albedos = {ident.name: paint_albedo(atlas, ident.appearance) for ident in identities}
    render_seconds, rendered = 0.0, 0
    bar = tqdm(total=len(plans) * options.views * options.frames, unit="frame", desc="onehead synth",
               disable=not options.progress)
    for plan in plans:
        seq_dir = out / plan.name
        views = [f"cam{v:02d}" for v in range(options.views)]
        for v, view in enumerate(views):
            start = time.perf_counter()
            result = render_head(head, plan.identity.shape, plan.motion, albedos[plan.identity.name],
                                 plan.Ks[v], plan.w2cs[v], options.size, plan.light,
                                 None if plan.backgrounds is None else plan.backgrounds[v])
            render_seconds += time.perf_counter() - start
            rendered += options.frames
            tracking = _tracking_for_view(plan.identity.shape, plan.motion, plan.Ks[v], plan.w2cs[v],
                                          result.landmarks68, options.size, options.fps, head.kind)
            write_view(seq_dir, view, frames_to_uint8(result.rgb), tracking, masks=frames_to_uint8(result.mask)[..., 0])
            bar.update(options.frames)
        extra = dict(plan.extra, seed=options.seed, light=asdict(plan.light),
                     appearance=asdict(plan.identity.appearance))
        SequenceMeta(fps=options.fps, size=(options.size, options.size), num_frames=options.frames,
                     domain="synthetic", views=views, head_model=head.kind, identity=plan.identity.name,
                     extra=extra).save(seq_dir)
    bar.close()
    if pairs:
        write_pairs(out, pairs)
    return {"sequences": len(plans), "frames_rendered": rendered, "pairs": len(pairs),
            "render_fps": rendered / max(render_seconds, 1e-9)}
