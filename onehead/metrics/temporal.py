"""Temporal stability: flicker, the change between consecutive frames where nothing should move,
and its error against ground truth (change_error).

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


def change_error(frames: torch.Tensor, target: torch.Tensor, region: torch.Tensor | None = None) -> torch.Tensor:
    """Flicker against ground truth. Frames and target (T, 3, H, W) in [0, 1], region (T, 1, H, W)
    or None (everywhere) -> per-transition mean absolute difference (T - 1,) between the output's
    change from frame t to t + 1 and the target's, in 8-bit levels, over the channels and the
    pixels inside the region of frame t or t + 1; NaN for a transition without such pixels.
    0 when the output changes exactly as the truth does, whatever its error in each frame."""
    if frames.shape != target.shape or frames.ndim != 4 or len(frames) < 2:
        raise ValueError(f"change_error needs two (T >= 2, 3, H, W) stacks of one shape, got "
                         f"{tuple(frames.shape)} and {tuple(target.shape)}")
    change = frames[1:].float() - frames[:-1].float()
    truth = target[1:].float() - target[:-1].float()
    error = (change - truth).abs().mean(1, keepdim=True)  # (T - 1, 1, H, W)
    if region is None:
        return 255 * error.flatten(1).mean(1)
    if region.shape[0] != len(frames) or region.shape[-2:] != frames.shape[-2:]:
        raise ValueError(f"region {tuple(region.shape)} does not fit {len(frames)} frames {tuple(frames.shape[-2:])}")
    weight = torch.maximum(region[1:].float(), region[:-1].float())
    count = weight.flatten(1).sum(1)
    total = (error * weight).flatten(1).sum(1)
    return torch.where(count > 0, 255 * total / count.clamp(min=1), torch.full_like(count, float("nan")))
