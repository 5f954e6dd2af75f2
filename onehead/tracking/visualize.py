"""Pictures of a tracking result: the fitted mesh and landmarks drawn over the input frames."""

from __future__ import annotations

import numpy as np
import torch

from onehead.camera import project
from onehead.data.tracking_file import Tracking
from onehead.head.model import HeadModel
from onehead.render.overlay import draw_mesh, draw_points


def overlay_tracking(frames: np.ndarray, tracking: Tracking, head: HeadModel,
                     show_detections: bool = True) -> np.ndarray:
    """(T, H, W, 3) uint8 frames with the fitted mesh (blue), the reported 68 points (red) and
    mediapipe's mapped points (green). Frames where the face was lost get a red border."""
    out = []
    faces = head.faces.numpy()
    params = {k: torch.from_numpy(v) for k, v in tracking.head_params().items()}
    with torch.no_grad():
        vertices = head(**params).vertices
        pixels, depth = project(vertices, torch.from_numpy(tracking.K), torch.from_numpy(tracking.world_to_cam))
    from onehead.tracking.landmarks import MEDIAPIPE_TO_IBUG68
    for t, frame in enumerate(frames):
        image = draw_mesh(frame, pixels[t].numpy(), depth[t].numpy(), faces)
        if show_detections and tracking.valid[t]:
            image = draw_points(image, tracking.landmarks_mp[t][list(MEDIAPIPE_TO_IBUG68)], (60, 220, 60))
        image = draw_points(image, tracking.landmarks68[t], (255, 60, 60))
        if not tracking.valid[t]:
            image[:4], image[-4:], image[:, :4], image[:, -4:] = 255, 255, 255, 255
            image[:4, :, 1:] = image[-4:, :, 1:] = image[:, :4, 1:] = image[:, -4:, 1:] = 0
        out.append(image)
    return np.stack(out)


MIN_PICTURE_HEIGHT = 320  # pixels: smaller video frames are enlarged (nearest) in the fit picture


def mouth_extremes(tracking: Tracking) -> list[tuple[str, int]]:
    """(label, frame) of the most closed mouth, the middle frame and the most open mouth of a
    tracking, by the fitted inner-lip gap (onehead.tracking.stability.opening); found frames only."""
    from onehead.tracking.stability import IBUG_INNER_LIPS, IBUG_OUTER_EYES, opening

    gap = opening(tracking.landmarks68, IBUG_INNER_LIPS, IBUG_OUTER_EYES)
    gap = np.where(np.asarray(tracking.valid, bool), gap, np.nan)
    if not np.isfinite(gap).any():
        return [("middle frame", tracking.num_frames // 2)]
    closed, opened = int(np.nanargmin(gap)), int(np.nanargmax(gap))
    return [(f"mouth closed (frame {closed})", closed), (f"middle (frame {tracking.num_frames // 2})",
                                                        tracking.num_frames // 2),
            (f"mouth open (frame {opened})", opened)]


def fit_picture(drawn: np.ndarray, tracking: Tracking) -> np.ndarray:
    """One picture of a tracked video's overlays (T, H, W, 3): the frames of `mouth_extremes` side by
    side, labelled; an image's only overlay as it is."""
    import cv2

    from onehead.render.visualize import contact_sheet

    if len(drawn) == 1:
        return drawn[0]
    scale = max(1, int(np.ceil(MIN_PICTURE_HEIGHT / drawn.shape[1])))  # small videos: enlarged to be seen
    tiles = []
    for label, t in mouth_extremes(tracking):
        frame = cv2.resize(drawn[t], None, fx=scale, fy=scale, interpolation=cv2.INTER_NEAREST) if scale > 1 else drawn[t]
        tiles.append((label, torch.from_numpy(frame).permute(2, 0, 1).float() / 255))
    return contact_sheet([tiles])
