"""Temporal stability: flicker, the change between consecutive frames where nothing should move.

The caller says where the picture should stay still (for reenactment: away from the head, whose
motion is the only motion asked for; `still_regions` builds that from head-model silhouettes).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def flicker(frames: torch.Tensor, still: torch.Tensor) -> torch.Tensor:
    """Frames (T, 3, H, W) in [0, 1] and still masks (T - 1, 1, H, W) (bool or {0, 1}: where frame t
    and t + 1 should agree) -> per-transition mean absolute change (T - 1,), in 8-bit levels (0 to
    255), over the channels and the still pixels; NaN for a transition without still pixels."""
    if frames.ndim != 4 or len(frames) < 2:
        raise ValueError(f"flicker needs (T >= 2, 3, H, W) frames, got shape {tuple(frames.shape)}")
    if still.shape[0] != len(frames) - 1 or still.shape[-2:] != frames.shape[-2:]:
        raise ValueError(f"still masks {tuple(still.shape)} do not fit {len(frames)} frames {tuple(frames.shape[-2:])}")
    change = (frames[1:].float() - frames[:-1].float()).abs().mean(1, keepdim=True)  # (T - 1, 1, H, W)
    weight = still.float()
    count = weight.flatten(1).sum(1)
    total = (change * weight).flatten(1).sum(1)
    return torch.where(count > 0, 255 * total / count.clamp(min=1), torch.full_like(count, float("nan")))


def still_regions(moving: torch.Tensor, grow: int = 0, always_moving: torch.Tensor | None = None) -> torch.Tensor:
    """Masks (T, 1, H, W) of what moves in each frame (e.g. the head model's silhouette) -> still
    masks (T - 1, 1, H, W) bool: outside the moving region of both frames t and t + 1, grown by
    `grow` pixels, and outside `always_moving` (1, 1, H, W) (e.g. the reference's own head, whose
    pixels a method must move or fill)."""
    moving = moving.float()
    if always_moving is not None:
        moving = torch.maximum(moving, always_moving.float().expand_as(moving))
    if grow > 0:
        moving = F.max_pool2d(moving, 2 * grow + 1, stride=1, padding=grow)
    busy = moving > 0.5
    return ~(busy[1:] | busy[:-1])
