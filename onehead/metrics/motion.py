"""Face-motion metrics: AKD from mediapipe landmarks, AED and APD from onehead's tracker.

As in paper 003 (appendix), with onehead's tracker in place of SMIRK:
- AKD: mean distance of the 68 iBUG points that mediapipe finds in the output and in the ground
  truth, in pixels of the evaluated images and over the ground truth's inter-ocular distance;
- AED: mean L1 distance of the expression parameters (the expression coefficients, the blink
  ones included, and the jaw pose);
- APD: mean L1 distance of the head pose (the axis-angle global rotation, radians); the geodesic
  angle between the two rotations is reported too, in degrees.
Frames where either side has no face are counted as failures and left out of the means.
"""

from __future__ import annotations

import cv2
import numpy as np
from scipy.spatial.transform import Rotation

from onehead.data.tracking_file import Tracking
from onehead.tracking.landmarks import MEDIAPIPE_TO_IBUG68, interocular_distance

MIN_SIDE = 256  # mediapipe misses faces in small frames: smaller frames are upsampled to this


def akd(prediction: np.ndarray, target: np.ndarray) -> dict:
    """Landmarks (T, 68, 2) of output and ground truth (NaN where lost) -> per-frame AKD in pixels
    and over the target's inter-ocular distance (NaN where either side is lost)."""
    prediction, target = np.asarray(prediction, np.float64), np.asarray(target, np.float64)
    per_frame = np.linalg.norm(prediction - target, axis=-1).mean(-1)
    return {"akd": per_frame, "akd_iod": per_frame / interocular_distance(target)}


def apd(prediction_pose: np.ndarray, target_pose: np.ndarray) -> dict:
    """Axis-angle head rotations (T, 3) -> per-frame mean L1 (radians) and geodesic angle (degrees)."""
    prediction_pose, target_pose = np.asarray(prediction_pose, np.float64), np.asarray(target_pose, np.float64)
    l1 = np.abs(prediction_pose - target_pose).mean(-1)
    lost = np.isnan(l1)
    angle = np.full(len(l1), np.nan)
    if (~lost).any():
        relative = Rotation.from_rotvec(prediction_pose[~lost]) * Rotation.from_rotvec(target_pose[~lost]).inv()
        angle[~lost] = np.degrees(relative.magnitude())
    return {"apd": l1, "pose_angle_deg": angle}


def aed(prediction: np.ndarray, target: np.ndarray) -> np.ndarray:
    """Expression parameters (T, P) -> per-frame mean L1 distance."""
    return np.abs(np.asarray(prediction, np.float64) - np.asarray(target, np.float64)).mean(-1)


def expression_parameters(tracking: Tracking) -> np.ndarray:
    """(T, E + 3): expression coefficients and jaw pose, NaN on frames without a face."""
    values = np.concatenate([tracking.expression, tracking.jaw_pose], -1).astype(np.float64)
    values[~np.asarray(tracking.valid, bool)] = np.nan
    return values


def head_pose(tracking: Tracking) -> np.ndarray:
    """(T, 3) axis-angle head rotation, NaN on frames without a face."""
    pose = np.asarray(tracking.global_pose, np.float64).copy()
    pose[~np.asarray(tracking.valid, bool)] = np.nan
    return pose


def detected_landmarks(tracking: Tracking, scale: float = 1.0) -> np.ndarray:
    """mediapipe's 68 iBUG points (T, 68, 2) stored in a tracking (NaN where lost), times scale."""
    points = np.asarray(tracking.landmarks_mp, np.float64)[:, list(MEDIAPIPE_TO_IBUG68)]
    points[~np.asarray(tracking.valid, bool)] = np.nan
    return points * scale


def track_for_metrics(frames: np.ndarray, head) -> tuple[Tracking | None, float]:
    """Track uint8 frames (T, H, W, 3) frame by frame (mediapipe image mode, no temporal smoothing),
    upsampled to at least MIN_SIDE pixels. Returns (tracking, scale back to the frames' pixels), or
    (None, 1) when no frame has a face."""
    from dataclasses import replace

    from onehead.errors import NoFaceError
    from onehead.tracking.tracker import TrackOptions, detect_frames, fit_sequence

    height, width = frames.shape[1:3]
    factor = max(1.0, MIN_SIDE / min(height, width))
    if factor > 1:
        size = (round(width * factor), round(height * factor))
        frames = np.stack([cv2.resize(f, size, interpolation=cv2.INTER_CUBIC) for f in frames])
    detections = detect_frames(frames, mode="image")
    if not detections.valid.any():
        return None, 1.0
    options = TrackOptions(progress=False)
    options = replace(options, fit=replace(options.fit, smooth_weight=0.0))
    try:
        tracking = fit_sequence(head, detections, frames.shape[1:3], options)
    except NoFaceError:
        return None, 1.0
    return tracking, 1.0 / factor


def motion_metrics(prediction: Tracking | None, target: Tracking | None, count: int,
                   prediction_scale: float = 1.0, target_scale: float = 1.0) -> dict:
    """Per-frame AKD, AKD/IOD, AED, APD and pose angle (T,) of two trackings of the same frames,
    NaN where a side has no face (a missing tracking counts as no face anywhere)."""
    nan = np.full(count, np.nan)
    if prediction is None or target is None:
        return {"akd": nan, "akd_iod": nan, "aed": nan, "apd": nan, "pose_angle_deg": nan}
    out = akd(detected_landmarks(prediction, prediction_scale), detected_landmarks(target, target_scale))
    out["aed"] = aed(expression_parameters(prediction), expression_parameters(target))
    out.update(apd(head_pose(prediction), head_pose(target)))
    return out
