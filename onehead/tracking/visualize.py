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
    """(T, H, W, 3) uint8 frames with the fitted mesh (blue), fitted 68 points (red) and
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
