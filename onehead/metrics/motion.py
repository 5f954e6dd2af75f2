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
from onehead.head.geometry import similarity_transform, transferred_rotations
from onehead.tracking.landmarks import MEDIAPIPE_TO_IBUG68, interocular_distance
from onehead.tracking.stability import MEDIAPIPE_INNER_LIPS, MEDIAPIPE_OUTER_EYES, opening

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


# ----------------------------------------------------------------------------- without ground truth
MOUTH_INNER = MEDIAPIPE_INNER_LIPS  # mediapipe face mesh: inner upper lip, inner lower lip (13, 14)
EYE_OUTER = MEDIAPIPE_OUTER_EYES  # mediapipe face mesh: the outer eye corners (33, 263)


def mouth_opening(points: np.ndarray) -> np.ndarray:
    """mediapipe face-mesh points (T, 468 or 478, 2) (NaN where lost) -> (T,) mouth opening: the
    inner-lip gap (points 13-14) over the outer-eye-corner distance (33-263); NaN where lost.
    The ratio is free of the image scale, so frames of any size compare (the tracker's own
    measure, onehead.tracking.stability.opening)."""
    return opening(points, MOUTH_INNER, EYE_OUTER)


def mouth_points(tracking: Tracking | None, count: int) -> np.ndarray:
    """The face-mesh points (T, 478, 2) of a metric tracking, NaN on frames without a face (all NaN
    without a tracking)."""
    if tracking is None:
        return np.full((count, 478, 2), np.nan)
    points = np.asarray(tracking.landmarks_mp, np.float64).copy()
    points[~np.asarray(tracking.valid, bool)] = np.nan
    return points


def pearson(a: np.ndarray, b: np.ndarray) -> dict:
    """Pearson r of two signals (T,) over the frames where both are finite. Returns `r` (NaN when
    fewer than 3 frames are left or a side does not vary), `gain`, the least-squares slope of `a`
    on `b` about their means (how much of b's swing a makes; NaN likewise), `frames` used and
    `left_out`."""
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    both = np.isfinite(a) & np.isfinite(b)
    r = gain = float("nan")
    if both.sum() >= 3:
        x, y = a[both] - a[both].mean(), b[both] - b[both].mean()
        scale = np.sqrt((x * x).sum() * (y * y).sum())
        if scale > 1e-12 * max(1.0, float(np.abs(a[both]).max() * np.abs(b[both]).max())):
            r = float(np.clip((x * y).sum() / scale, -1.0, 1.0))
            gain = float((x * y).sum() / (y * y).sum())
    return {"r": r, "gain": gain, "frames": int(both.sum()), "left_out": int((~both).sum())}


def mouth_correlation(output_points: np.ndarray, driving_points: np.ndarray) -> dict:
    """Pearson r (and gain) between the mouth opening of the output frames and of the driving frames
    (face-mesh points (T, 478, 2) each, NaN where lost); frames without a face on either side are
    left out."""
    result = pearson(mouth_opening(output_points), mouth_opening(driving_points))
    result["output_no_face"] = int(np.isnan(np.asarray(output_points, np.float64)[:, MOUTH_INNER[0], 0]).sum())
    return result


def motion_akd(prediction: np.ndarray, driving: np.ndarray) -> dict:
    """Keypoint distance of the motion alone, for outputs of another identity than the driving
    video (no ground truth): 68 points (T, 68, 2) of the output and of the driving frames (NaN where
    lost). Each clip's points become displacements from their mean over the frames where both have
    a face; the driving displacements are rotated and scaled into the output's frame by the
    similarity between the two mean shapes. AKD is the mean distance of the displacements (output
    pixels), so the two faces' constant difference in shape cancels and a still output scores the
    size of the driving motion. Returns per-frame `akd` and `akd_iod` (over the output mean
    shape's inter-ocular distance), NaN where a side is lost."""
    prediction, driving = np.asarray(prediction, np.float64), np.asarray(driving, np.float64)
    count = len(prediction)
    both = np.isfinite(prediction).all((1, 2)) & np.isfinite(driving).all((1, 2))
    out = {"akd": np.full(count, np.nan), "akd_iod": np.full(count, np.nan)}
    if not both.any():
        return out
    mean_p, mean_d = prediction[both].mean(0), driving[both].mean(0)
    scale, rotation, _ = similarity_transform(mean_d, mean_p)
    moved_p = prediction[both] - mean_p
    moved_d = scale * (driving[both] - mean_d) @ rotation.T
    per_frame = np.linalg.norm(moved_p - moved_d, axis=-1).mean(-1)
    out["akd"][both] = per_frame
    out["akd_iod"][both] = per_frame / interocular_distance(mean_p)
    return out


def relative_pose(driving_pose: np.ndarray, reference_pose: np.ndarray, anchor: int | None = None) -> np.ndarray:
    """The head rotations a one-shot method is asked to show at the reference's camera (as in
    onehead.pipelines.reenactment: onehead.head.geometry.transferred_rotations), axis-angle (T, 3).
    The anchor is the first driving frame with a pose (the default); NaN rows stay NaN."""
    driving_pose = np.asarray(driving_pose, np.float64)
    found = np.isfinite(driving_pose).all(1)
    out = np.full_like(driving_pose, np.nan)
    if not found.any() or not np.isfinite(reference_pose).all():
        return out
    anchor = int(np.argmax(found)) if anchor is None else anchor
    out[found] = transferred_rotations(driving_pose[found], driving_pose[anchor], reference_pose)
    return out
