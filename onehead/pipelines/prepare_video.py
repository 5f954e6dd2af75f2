"""Turn a real video into onehead's data format: track, crop and align (onehead.data.prepare), matte.

The foreground mask comes from mediapipe's selfie segmentation. `datasets/prepare_video.py` is
the command-line wrapper.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from onehead.data.prepare import crop_affine, crop_boxes, crop_tracking
from onehead.data.sequence import SequenceMeta, write_view
from onehead.data.video import read_frames
from onehead.quiet import quiet_stderr


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
