"""The framing of onehead's data: square crops around a tracked face, as exact camera changes.

The crop is a square around the tracked face, smoothed over time, scaled to `size`. Cropping
and scaling are exact camera operations, so the tracking is not refitted: K and the 2-D
landmarks are mapped through the same affine transform as the pixels. Turning a whole video
into a sequence (track, crop, matte) is onehead.pipelines.prepare_video.
"""

from __future__ import annotations

from dataclasses import replace

import numpy as np
from scipy.ndimage import gaussian_filter1d

from onehead.data.tracking_file import Tracking


# The framing every onehead frame shares (real crops and synthetic cameras): a square of
# FRAMING_SCALE times the 68 landmarks' extent, its centre FRAMING_LIFT of the extent above theirs.
FRAMING_SCALE = 2.3
FRAMING_LIFT = 0.25


def crop_boxes(landmarks68: np.ndarray, valid: np.ndarray, scale: float = FRAMING_SCALE, lift: float = FRAMING_LIFT,
               smooth_frames: float = 4.0) -> np.ndarray:
    """Square crops (T, 3) as (centre x, centre y, side) in pixels around the 68 landmarks:
    `scale` times the larger landmark extent, the centre raised by `lift` of the extent (the
    landmarks stop at the brows; the crop should hold the whole head), Gaussian-smoothed over time."""
    points = landmarks68[valid] if valid.any() else landmarks68
    extent = (points.max(1) - points.min(1)).max(-1)
    centre = (points.max(1) + points.min(1)) / 2 - np.stack([0 * extent, lift * extent], -1)
    side = scale * extent
    boxes = np.concatenate([centre, side[:, None]], 1)
    if valid.any():  # frames without a face take their neighbours' boxes
        times = np.flatnonzero(valid)
        boxes = np.stack([np.interp(np.arange(len(valid)), times, boxes[:, k]) for k in range(3)], 1)
    if smooth_frames > 0 and len(boxes) > 1:
        boxes = gaussian_filter1d(boxes, smooth_frames, axis=0, mode="nearest")
    return boxes


def crop_affine(box: np.ndarray, size: int) -> np.ndarray:
    """The 2x3 map from source pixels to crop pixels (pixel centres at integers, as cv2 and
    onehead.camera use): x' = s x + (0.5 - left) s - 0.5 with left the crop's left edge."""
    cx, cy, side = box
    s = size / side
    left, top = cx + 0.5 - side / 2, cy + 0.5 - side / 2
    return np.array([[s, 0, (0.5 - left) * s - 0.5], [0, s, (0.5 - top) * s - 0.5]])


def crop_tracking(tracking: Tracking, affines: np.ndarray, size: int) -> Tracking:
    """The same tracking seen through per-frame crop affines (T, 2, 3)."""
    scale = affines[:, 0, 0]
    K = tracking.K.copy()
    K[:, 0, 0] *= scale
    K[:, 1, 1] *= scale
    K[:, :2, 2] = tracking.K[:, :2, 2] * scale[:, None] + affines[:, :, 2]

    def warp(points):
        return points * scale[:, None, None] + affines[:, None, :, 2]

    return replace(tracking, K=K.astype(np.float32), landmarks68=warp(tracking.landmarks68).astype(np.float32),
                   landmarks_mp=warp(tracking.landmarks_mp).astype(np.float32),
                   image_size=np.array([size, size]))
