"""Turn a real video into onehead's data format: track, crop and align, matte.

The crop is a square around the tracked face, smoothed over time, scaled to `size`. Cropping
and scaling are exact camera operations, so the tracking is not refitted: K and the 2-D
landmarks are mapped through the same affine transform as the pixels. The foreground mask comes
from mediapipe's selfie segmentation. `datasets/prepare_video.py` is the command-line wrapper.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np
from scipy.ndimage import gaussian_filter1d

from onehead.data.sequence import SequenceMeta, write_view
from onehead.data.tracking_file import Tracking
from onehead.data.video import read_frames
from onehead.quiet import quiet_stderr


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


def selfie_masks(frames: np.ndarray) -> np.ndarray:
    """mediapipe selfie segmentation: (T, H, W, 3) uint8 -> (T, H, W) float in [0, 1]."""
    import mediapipe as mp

    masks = []
    with quiet_stderr(), mp.solutions.selfie_segmentation.SelfieSegmentation(model_selection=0) as segmenter:
        for frame in frames:
            result = segmenter.process(np.ascontiguousarray(frame))
            masks.append(np.clip(result.segmentation_mask, 0, 1).astype(np.float32))
    return np.stack(masks)


def prepare_video(source, out, *, size: int = 512, head=None, options=None, matte: bool = True,
                  max_frames: int | None = None, video: bool = False) -> Path:
    """Track `source` (video file or frame folder), crop, matte and write one sequence to `out`."""
    import cv2

    from onehead.tracking.tracker import TrackOptions, track_frames

    options = options or TrackOptions()
    frames, fps = read_frames(source, max_frames=max_frames)
    tracking = track_frames(frames, fps, head, options, name=str(source))
    boxes = crop_boxes(tracking.landmarks68, tracking.valid)
    affines = np.stack([crop_affine(box, size) for box in boxes])
    cropped = np.stack([cv2.warpAffine(frame, affine, (size, size), flags=cv2.INTER_AREA if affine[0, 0] < 1
                                       else cv2.INTER_CUBIC, borderMode=cv2.BORDER_REPLICATE)
                        for frame, affine in zip(frames, affines)])
    cropped_tracking = crop_tracking(tracking, affines, size)
    masks = selfie_masks(cropped) if matte else None
    out = Path(out)
    write_view(out, "cam00", cropped, cropped_tracking, masks=masks, video=video)
    SequenceMeta(fps=float(fps), size=(size, size), num_frames=len(frames), domain="real",
                 head_model=tracking.head_model,
                 extra={"source": str(source), "crop_boxes_xys": boxes.round(2).tolist(),
                        "faces_found": int(tracking.valid.sum())}).save(out)
    return out
