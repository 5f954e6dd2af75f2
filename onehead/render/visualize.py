"""Turning render buffers into pictures a person can check: colour maps and contact sheets."""

from __future__ import annotations

import numpy as np
import torch


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


def contact_sheet(rows: list[list[tuple[str, torch.Tensor]]], label_height: int = 18) -> np.ndarray:
    """Tile labelled (3, H, W) images in [0, 1] into one uint8 (H', W', 3) picture, row by row."""
    import cv2

    tile_h = max(img.shape[1] for row in rows for _, img in row)
    tile_w = max(img.shape[2] for row in rows for _, img in row)
    columns = max(len(row) for row in rows)
    sheet = np.full((len(rows) * (tile_h + label_height), columns * tile_w, 3), 24, np.uint8)
    for r, row in enumerate(rows):
        for c, (label, image) in enumerate(row):
            picture = (image.detach().float().clamp(0, 1).permute(1, 2, 0).numpy() * 255 + 0.5).astype(np.uint8)
            top, left = r * (tile_h + label_height), c * tile_w
            sheet[top + label_height : top + label_height + picture.shape[0], left : left + picture.shape[1]] = picture
            cv2.putText(sheet, label, (left + 4, top + label_height - 5), cv2.FONT_HERSHEY_SIMPLEX, 0.42,
                        (235, 235, 235), 1, cv2.LINE_AA)
    return sheet


def side_by_side(result, tile: int = 256) -> np.ndarray:
    """Frames (T, H', W', 3) uint8 of reference | driving (when it was a video) | control signal |
    output for an onehead.pipelines.animator.AnimationResult."""
    import torch.nn.functional as F

    def fit(images):
        return F.interpolate(images, size=(tile, tile), mode="bilinear", align_corners=False, antialias=True)

    frames = result.frames.shape[0]
    control = feature_rgb(result.control_maps, (result.control_maps.abs().sum(1, keepdim=True) > 0).float())
    columns = [("reference", fit(result.reference[None]).expand(frames, -1, -1, -1))]
    if result.driving_frames is not None:
        driving = torch.from_numpy(np.ascontiguousarray(result.driving_frames)).permute(0, 3, 1, 2).float() / 255
        columns.append(("driving", fit(_letterbox(driving))))
    columns += [("control signal", fit(control)), ("output", fit(result.frames))]
    return np.stack([contact_sheet([[(name, images[t]) for name, images in columns]]) for t in range(frames)])


def _letterbox(images: torch.Tensor) -> torch.Tensor:
    """Pad (T, 3, h, w) to a square with black bars."""
    t, c, h, w = images.shape
    side = max(h, w)
    out = torch.zeros(t, c, side, side)
    top, left = (side - h) // 2, (side - w) // 2
    out[:, :, top:top + h, left:left + w] = images
    return out
