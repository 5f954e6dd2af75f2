"""The one conversion from float image tensors to pixels."""

from __future__ import annotations

import numpy as np


def frames_to_uint8(frames) -> np.ndarray:
    """Frames (T, C, H, W), a torch tensor in [0, 1] -> (T, H, W, C) uint8, rounded to nearest."""
    return (frames.detach().float().clamp(0, 1).permute(0, 2, 3, 1) * 255 + 0.5).byte().cpu().numpy()
