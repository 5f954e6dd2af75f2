"""Turning render buffers into pictures a person can check: colour maps and contact sheets."""

from __future__ import annotations

import numpy as np
import torch

from onehead.pixels import frames_to_uint8


def feature_rgb(features: torch.Tensor, alpha: torch.Tensor | None = None) -> torch.Tensor:
    """(B, C, H, W) features -> (B, 3, H, W) in [0, 1]: the first 3 principal components of the
    covered pixels (alpha > 0.5), each stretched between its 1st and 99th percentile."""
    b, c, h, w = features.shape
    features = features.detach().float()
    weight = torch.ones(b, 1, h, w) if alpha is None else alpha.detach().float()
    pixels = features.permute(0, 2, 3, 1).reshape(-1, c)
    covered = pixels[weight.reshape(-1) > 0.5]
    if len(covered) < 3:
        return torch.zeros(b, 3, h, w)
    mean = covered.mean(0)
    basis = torch.linalg.svd(covered - mean, full_matrices=False).Vh[: min(3, c)].T  # (C, <=3)
    projected = (pixels - mean) @ basis
    low = torch.quantile(projected[weight.reshape(-1) > 0.5][:200_000], 0.01, dim=0)
    high = torch.quantile(projected[weight.reshape(-1) > 0.5][:200_000], 0.99, dim=0)
    rgb = ((projected - low) / (high - low).clamp(min=1e-8)).clamp(0, 1)
    if rgb.shape[1] < 3:
        rgb = torch.cat([rgb, rgb[:, :1].expand(-1, 3 - rgb.shape[1])], 1)
    return rgb.reshape(b, h, w, 3).permute(0, 3, 1, 2) * weight.clamp(0, 1)


def normals_rgb(normals: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Camera-space OpenCV normals (B, 3, H, W) -> the usual normal-map colours (x red, up green,
    toward the camera blue)."""
    flip = torch.tensor([1.0, -1.0, -1.0], device=normals.device).view(1, 3, 1, 1)
    return (0.5 + 0.5 * normals * flip) * mask


def depth_rgb(depth: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """(B, 1, H, W) depth -> grey, near is bright, stretched over the covered range."""
    covered = depth[mask > 0.5]
    if covered.numel() == 0:
        return torch.zeros_like(depth).expand(-1, 3, -1, -1)
    near, far = covered.min(), covered.max()
    grey = (1 - (depth - near) / (far - near).clamp(min=1e-8)) * 0.8 + 0.2
    return (grey * mask).clamp(0, 1).expand(-1, 3, -1, -1)


def range_rgb(values: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """(B, C<=3, H, W) -> RGB with each channel stretched over its covered range (canonical
    coordinates, UVs)."""
    b, c, h, w = values.shape
    out = torch.zeros(b, 3, h, w)
    for k in range(c):
        channel = values[:, k : k + 1]
        covered = channel[mask > 0.5]
        if covered.numel():
            low, high = covered.min(), covered.max()
            out[:, k : k + 1] = (channel - low) / (high - low).clamp(min=1e-8)
    return out.clamp(0, 1) * mask


LABEL_HEIGHT = 18  # pixels above each tile for its label


def contact_sheet(rows: list[list[tuple[str, torch.Tensor]]], label_height: int = LABEL_HEIGHT) -> np.ndarray:
    """Tile labelled (3, H, W) images in [0, 1] into one uint8 (H', W', 3) picture, row by row."""
    import cv2

    tile_h = max(img.shape[1] for row in rows for _, img in row)
    tile_w = max(img.shape[2] for row in rows for _, img in row)
    columns = max(len(row) for row in rows)
    sheet = np.full((len(rows) * (tile_h + label_height), columns * tile_w, 3), 24, np.uint8)
    for r, row in enumerate(rows):
        for c, (label, image) in enumerate(row):
            picture = frames_to_uint8(image[None])[0]
            top, left = r * (tile_h + label_height), c * tile_w
            sheet[top + label_height : top + label_height + picture.shape[0], left : left + picture.shape[1]] = picture
            cv2.putText(sheet, label, (left + 4, top + label_height - 5), cv2.FONT_HERSHEY_SIMPLEX, 0.42,
                        (235, 235, 235), 1, cv2.LINE_AA)
    return sheet


def control_rgb(control_maps: torch.Tensor) -> torch.Tensor:
    """A control signal (T, C, H, W) as pictures (T, 3, H, W): `feature_rgb` over the covered
    (non-zero) pixels."""
    return feature_rgb(control_maps, (control_maps.abs().sum(1, keepdim=True) > 0).float())


def side_by_side(columns, tile: int = 256) -> np.ndarray:
    """Frames (T, H', W', 3) uint8: labelled columns next to each other, one row per frame.

        side_by_side([("reference", ref), ("driving", frames), ("output", out)], tile=256)

    Each column is (label, images): a float tensor (T, 3, H, W) or (3, H, W) in [0, 1], or a
    uint8 array (T, H, W, 3) or (H, W, 3). A single image is shown beside every frame; the other
    columns must have the same number of frames T. Non-square images are letterboxed, then
    every tile is resized to tile x tile.
    """
    import torch.nn.functional as F

    stacks = [(label, _as_image_stack(images)) for label, images in columns]
    if not stacks:
        raise ValueError("side_by_side: no columns")
    lengths = {len(images) for _, images in stacks if len(images) != 1}
    if len(lengths) > 1:
        raise ValueError("side_by_side: columns have different frame counts "
                         + ", ".join(f"{label}: {len(images)}" for label, images in stacks))
    frames = lengths.pop() if lengths else 1

    def fit(images):
        return F.interpolate(_letterbox(images), size=(tile, tile), mode="bilinear", align_corners=False,
                             antialias=True)

    stacks = [(label, fit(images)) for label, images in stacks]
    return np.stack([contact_sheet([[(label, images[min(t, len(images) - 1)]) for label, images in stacks]])
                     for t in range(frames)])


def _as_image_stack(images) -> torch.Tensor:
    """(N, 3, H, W) float in [0, 1] on the CPU from a tensor (N, 3, H, W) / (3, H, W) or a uint8
    array (N, H, W, 3) / (H, W, 3)."""
    if isinstance(images, np.ndarray):
        if images.dtype != np.uint8 or images.ndim not in (3, 4) or images.shape[-1] != 3:
            raise ValueError(f"side_by_side: expected uint8 (T, H, W, 3) frames, got {images.dtype} {images.shape}")
        stack = images if images.ndim == 4 else images[None]
        images = torch.from_numpy(np.ascontiguousarray(stack)).permute(0, 3, 1, 2).float() / 255
    images = images.detach().float().cpu()
    if images.ndim == 3:
        images = images[None]
    if images.ndim != 4 or images.shape[1] != 3:
        raise ValueError(f"side_by_side: expected (T, 3, H, W) images, got shape {tuple(images.shape)}")
    return images


def _letterbox(images: torch.Tensor) -> torch.Tensor:
    """Pad (T, 3, h, w) to a square with black bars."""
    t, c, h, w = images.shape
    side = max(h, w)
    out = torch.zeros(t, c, side, side)
    top, left = (side - h) // 2, (side - w) // 2
    out[:, :, top:top + h, left:left + w] = images
    return out
