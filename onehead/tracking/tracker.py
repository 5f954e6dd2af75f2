"""Track a head-model fit through an image, a video or a folder of frames.

    tracking = track("portrait.jpg")              # one image
    tracking = track("talking.mp4")               # one shape, per-frame expression and pose
    tracking.save("talking.npz")                  # format: onehead.data.tracking_file

Video: mediapipe in tracking mode finds the 478 points in each frame; one shape is fitted on up
to 16 keyframes together; then all frames are fitted in chunks, warm-started from the keyframe
solution and the previous chunk, with temporal smoothing. Frames where the face is lost are
interpolated and flagged `valid=False`. The fit compares the head model's 68 landmarks and pupils
with mediapipe's, and (TrackOptions.dense) its lip, eye and face-oval points with their places on
the head (onehead.tracking.dense).

The reported `landmarks68` fuse the fit with the detections (`fuse_landmarks`): the fitted head's
points moved part of the way (TrackOptions.detection_share) towards mediapipe's mapped points, the
difference smoothed over time in a video. The head model alone cannot take every real face's shape,
and mediapipe alone is noisy; together they land nearer hand labels than either.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from scipy.ndimage import gaussian_filter1d
from tqdm.auto import tqdm

from onehead.camera import default_focal, default_world_to_cam, intrinsics, project
from onehead.data.images import is_image_path, load_image
from onehead.data.tracking_file import Tracking
from onehead.data.video import read_frames
from onehead.errors import ConfigError, MediaReadError, NoFaceError
from onehead.head.model import HeadModel, SurfacePoints, load_head_model
from onehead.tracking.fit import (FITTED_PARAM_NAMES, UNFITTED_PARAM_NAMES, DenseTargets, FitSettings, fit_frames,
                                  interpolate_invalid)
from onehead.tracking.landmarks import MEDIAPIPE_TO_IBUG68, LandmarkDetector

IRIS_CENTERS = (468, 473)
KEYFRAMES = 16
CHUNK = 128  # frames fitted together after the keyframes (fewer, larger batches: faster per frame)


@dataclass
class TrackOptions:
    """What `track` does beyond the defaults."""

    focal: float | None = None  # pixels; default: onehead.camera.default_focal
    optimize_focal: bool = False
    dense: bool = True  # also fit mediapipe's lip, eye and face-oval points (onehead.tracking.dense)
    fit: FitSettings = field(default_factory=FitSettings)
    detection_share: tuple[float, float] = (0.7, 0.8)  # of mediapipe's points in landmarks68: (inner 51, jaw 17)
    residual_smoothing: float = 2.0  # frames (Gaussian sigma) over which a video's fit-to-detection gap
    # is averaged, and mediapipe's depth for the fit's depth term
    progress: bool = True
    max_frames: int | None = None

    def __post_init__(self):
        if len(self.detection_share) != 2 or not all(0 <= share <= 1 for share in self.detection_share):
            raise ConfigError(f"detection_share takes two shares in [0, 1] (inner, jaw), got {self.detection_share}")
        if self.residual_smoothing < 0:
            raise ConfigError(f"residual_smoothing must be at least 0 frames, got {self.residual_smoothing}")


@dataclass
class Detections:
    """mediapipe output for T frames, NaN where the face was lost."""

    points: np.ndarray  # (T, 478, 2) pixels
    valid: np.ndarray  # (T,) bool
    seconds: float = 0.0
    depth: np.ndarray | None = None  # (T, 478) mediapipe's relative depth, pixels (smaller: nearer)

    def ibug68(self) -> np.ndarray:
        return self.points[:, list(MEDIAPIPE_TO_IBUG68)]

    def iris(self) -> np.ndarray:
        """(T, 2, 2) iris centres ordered like the head model's pupils: (left eye, right eye)."""
        centers = self.points[:, list(IRIS_CENTERS)]
        right_eye = self.ibug68()[:, 36:42].mean(1)  # the subject's right eye
        first_is_right = (np.linalg.norm(centers[:, 0] - right_eye, axis=-1)
                          < np.linalg.norm(centers[:, 1] - right_eye, axis=-1))
        ordered = np.where(first_is_right[:, None, None], centers[:, ::-1], centers)
        return ordered


def detect_frames(frames: np.ndarray, mode: str, progress: bool = False) -> Detections:
    """Run mediapipe on (T, H, W, 3) uint8 frames."""
    start = time.perf_counter()
    points = np.full((len(frames), 478, 3), np.nan, np.float32)
    valid = np.zeros(len(frames), bool)
    with LandmarkDetector(mode=mode) as detector:
        for t, frame in enumerate(tqdm(frames, desc="landmarks", unit="frame", disable=not progress,
                                       leave=False)):
            found = detector.detect(np.ascontiguousarray(frame))
            if found is not None:
                points[t] = found.points
                valid[t] = True
    return Detections(points[..., :2], valid, time.perf_counter() - start, points[..., 2])


def fit_sequence(head: HeadModel, detections: Detections, image_size: tuple[int, int],
                 options: TrackOptions | None = None, fps: float = 25.0) -> Tracking:
    """Fit the head model to detections of one image (T=1) or one video."""
    options = options or TrackOptions()
    height, width = image_size
    frames = len(detections.valid)
    if not detections.valid.any():
        raise NoFaceError("no face found in any frame")
    valid = torch.from_numpy(detections.valid)
    targets = torch.from_numpy(np.nan_to_num(interpolate_invalid(detections.ibug68(), detections.valid)))
    iris = torch.from_numpy(interpolate_invalid(detections.iris(), detections.valid))
    focal = options.focal or default_focal(height, width)
    K = intrinsics(focal, height, width).expand(frames, 3, 3).clone()
    w2c = default_world_to_cam(batch=frames)
    settings = options.fit
    dense = _dense_targets(head, detections, options.progress, options.residual_smoothing,
                           settings.landmarks_on_dense) if options.dense else None
    dense_at = (lambda rows: None) if dense is None else dense.select

    # 1. shape (and focal) from keyframes, fitted together from a cold start
    found = np.where(detections.valid)[0]
    keys = found[np.unique(np.linspace(0, len(found) - 1, min(KEYFRAMES, len(found))).round().astype(int))]
    key_fit = fit_frames(head, targets[keys], K[keys], w2c[keys], valid[keys], iris=iris[keys],
                         settings=_without_smoothing(settings), optimize_focal=options.optimize_focal,
                         dense=dense_at(keys))
    shape = key_fit["shape"]
    K = key_fit["K"][:1].expand(frames, 3, 3).clone()
    if frames == 1:
        params = key_fit
    else:
        # 2. every frame, in chunks, warm-started from the keyframes and the previous chunk
        init = {k: torch.from_numpy(_interp_rows(key_fit[k].numpy(), keys, frames)) for k in FITTED_PARAM_NAMES}
        parts, previous = [], None
        starts = range(0, frames, CHUNK)
        for start in tqdm(starts, desc="fit", unit="chunk", disable=not options.progress, leave=False):
            sl = slice(start, min(start + CHUNK, frames))
            chunk = fit_frames(head, targets[sl], K[sl], w2c[sl], valid[sl], iris=iris[sl], shape=shape,
                               init={k: v[sl] for k, v in init.items()}, settings=settings,
                               optimize_shape=False, previous=previous, dense=dense_at(sl))
            parts.append(chunk)
            previous = {k: chunk[k][-1] for k in init}
        params = {k: torch.cat([p[k] for p in parts]) for k in init}
        params["shape"] = shape
    return _tracking_from_fit(head, params, detections, K, w2c, image_size, fps, options)


def _dense_targets(head: HeadModel, detections: Detections, progress: bool, sigma: float,
                   with_landmarks: bool = False) -> DenseTargets:
    """mediapipe's points for the fit; their depth is averaged over `sigma` frames (a centred
    Gaussian: no lag), because mediapipe's z shakes more than its x and y."""
    from onehead.tracking.dense import dense_embedding

    embedding = dense_embedding(head, progress)  # built once per head model (15-40 s), then cached
    weights = embedding.weights()
    depth_weights = embedding.depth_weights(head) if detections.depth is not None else np.zeros_like(weights)
    mapped = np.zeros_like(weights, bool)
    mapped[list(MEDIAPIPE_TO_IBUG68)] = with_landmarks
    used = np.flatnonzero((weights > 0) | (depth_weights > 0) | mapped)  # the points with weight: a cheaper fit
    faces, bary = embedding.faces[used], embedding.bary[used].copy()
    depth_only = (weights[used] == 0) & ~mapped[used]  # snapped to their nearest vertex: fewer vertices to pose
    bary[depth_only] = np.eye(3, dtype=bary.dtype)[bary[depth_only].argmax(1)]
    pixels = np.nan_to_num(interpolate_invalid(detections.points[:, used], detections.valid))
    depth = None
    if detections.depth is not None and depth_weights.any():
        depth = np.nan_to_num(interpolate_invalid(detections.depth[:, used], detections.valid))
        if sigma > 0 and len(depth) > 1:
            depth = gaussian_filter1d(depth, sigma, axis=0, mode="nearest")
        depth = torch.from_numpy(depth)
    position = {index: row for row, index in enumerate(used)}
    landmarks = torch.tensor([position[index] for index in MEDIAPIPE_TO_IBUG68]) if with_landmarks else None
    return DenseTargets(SurfacePoints.on(head, faces, bary), torch.from_numpy(pixels), torch.from_numpy(weights[used]),
                        depth, torch.from_numpy(depth_weights[used]), landmarks)


def _without_smoothing(settings: FitSettings) -> FitSettings:
    from dataclasses import replace
    return replace(settings, smooth_weight=0.0)


def _interp_rows(values: np.ndarray, rows: np.ndarray, count: int) -> np.ndarray:
    full = np.zeros((count,) + values.shape[1:], values.dtype)
    mask = np.zeros(count, bool)
    full[rows], mask[rows] = values, True
    return interpolate_invalid(full, mask)


def fuse_landmarks(fitted: np.ndarray, detected: np.ndarray, valid: np.ndarray,
                   share: tuple[float, float], sigma: float) -> np.ndarray:
    """(T, 68, 2) fitted points moved `share` (inner, jaw) of the way to the detected ones.

    The gap (detected - fitted) is averaged over time with a centred Gaussian of `sigma` frames,
    so the detector's frame-to-frame noise is damped without delaying the motion, which the fit
    carries. Frames without a detection take the gap interpolated from their neighbours (none
    when no frame has one), as the fitted parameters do (`interpolate_invalid`).
    """
    weights = np.full((68, 1), share[0], np.float64)
    weights[:17] = share[1]
    gap = interpolate_invalid(np.where(valid[:, None, None], np.nan_to_num(detected - fitted), 0.0), valid)
    if sigma > 0 and len(valid) > 1:
        gap = gaussian_filter1d(gap, sigma, axis=0, mode="nearest")
    return (fitted + weights * gap).astype(np.float32)


def _tracking_from_fit(head, params, detections, K, w2c, image_size, fps, options) -> Tracking:
    frames = len(detections.valid)
    per_frame = {k: interpolate_invalid(params[k].numpy(), detections.valid) for k in FITTED_PARAM_NAMES}
    with torch.no_grad():
        out = head(shape=params["shape"][None], landmarks_only=True,
                   **{k: torch.from_numpy(v) for k, v in per_frame.items()})
        landmarks, _ = project(out.landmarks68, K, w2c)
    landmarks = landmarks.numpy()
    mp68 = detections.ibug68()
    iod = np.linalg.norm(mp68[:, 45] - mp68[:, 36], axis=-1)
    error = np.linalg.norm(landmarks - mp68, axis=-1).mean(-1) / np.maximum(iod, 1e-6)
    return Tracking(
        shape=params["shape"].numpy().astype(np.float32),
        **{k: np.zeros((frames, head.parameter_sizes[k]), np.float32) for k in UNFITTED_PARAM_NAMES},
        K=K.numpy().astype(np.float32),
        world_to_cam=w2c.numpy().astype(np.float32),
        landmarks68=fuse_landmarks(landmarks, mp68, detections.valid, options.detection_share,
                                   options.residual_smoothing),
        landmarks_mp=detections.points.astype(np.float32),
        valid=detections.valid.copy(),
        fit_error=np.where(detections.valid, error, np.nan).astype(np.float32),
        image_size=np.array(image_size, np.int64),
        fps=float(fps),
        head_model=head.kind,
        **{k: v.astype(np.float32) for k, v in per_frame.items()},
    )


def track_image(image, head: HeadModel | None = None, options: TrackOptions | None = None,
                name: str | None = None) -> Tracking:
    """Fit one image (path, PIL image, array or tensor). Raises NoFaceError without a face."""
    pixels = load_image(image)
    detections = detect_frames(pixels[None], mode="image")
    if not detections.valid[0]:
        raise NoFaceError(f"{name or 'image'}: no face found; use a photo with a visible, "
                          "roughly frontal face (or crop closer around it)")
    return fit_sequence(head or load_head_model(), detections, pixels.shape[:2], options)


def track_frames(frames: np.ndarray, fps: float, head: HeadModel | None = None,
                 options: TrackOptions | None = None, name: str | None = None) -> Tracking:
    """Fit a sequence of (T, H, W, 3) uint8 frames."""
    options = options or TrackOptions()
    if len(frames) == 0:
        raise MediaReadError(f"{name or 'video'}: no frames")
    detections = detect_frames(frames, mode="video", progress=options.progress)
    if not detections.valid.any():
        raise NoFaceError(f"{name or 'video'}: no face found in any of its {len(frames)} frames")
    return fit_sequence(head or load_head_model(), detections, frames.shape[1:3], options, fps)


def track(source: str | os.PathLike, head: HeadModel | None = None,
          options: TrackOptions | None = None) -> Tracking:
    """Track an image file, a video file or a folder of frames."""
    options = options or TrackOptions()
    path = Path(source)
    if not path.exists():
        raise MediaReadError(f"{path}: file or folder does not exist")
    if path.is_file() and is_image_path(path):
        return track_image(path, head, options, name=str(path))
    frames, fps = read_frames(path, max_frames=options.max_frames)
    if len(frames) == 1 and path.is_file():
        return track_image(frames[0], head, options, name=str(path))
    return track_frames(frames, fps, head, options, name=str(path))
