"""Quick CPU drawings over images: a shaded mesh (painter's algorithm) and landmark points.

Used for `onehead track --vis`. These are pictures for people, not differentiable renders.
"""

from __future__ import annotations

import cv2
import numpy as np


def draw_mesh(image: np.ndarray, pixels: np.ndarray, depth: np.ndarray, faces: np.ndarray,
              alpha: float = 0.55, color=(150, 190, 255)) -> np.ndarray:
    """Blend a Lambert-shaded mesh over `image` (H, W, 3) uint8.

    pixels (V, 2) and depth (V,) are the projected vertices (OpenCV camera); back faces are skipped.
    """
    tri_px = pixels[faces]
    edge1, edge2 = tri_px[:, 1] - tri_px[:, 0], tri_px[:, 2] - tri_px[:, 0]
    signed_area = edge1[:, 0] * edge2[:, 1] - edge1[:, 1] * edge2[:, 0]
    front = signed_area < 0  # counter-clockwise in the world is clockwise with y down
    if front.sum() < (~front).sum():  # the mesh's own winding decides what "front" means
        front = ~front
    tri_depth = depth[faces].mean(1)
    keep = np.where(front & (depth[faces] > 0).all(1))[0]
    order = keep[np.argsort(-tri_depth[keep])]  # far to near
    # shading from the screen-space facing ratio and depth slope: cheap and readable
    shade = np.clip(np.abs(signed_area) / (np.abs(signed_area[keep]).max() + 1e-9), 0, 1) ** 0.25
    canvas = image.copy()
    mask = np.zeros(image.shape[:2], np.uint8)
    base = np.asarray(color, np.float32)
    pts = np.round(tri_px * 4).astype(np.int32)  # 2 bits of sub-pixel precision
    for f in order:
        c = tuple(int(v) for v in base * (0.35 + 0.65 * shade[f]))
        cv2.fillConvexPoly(canvas, pts[f], c, lineType=cv2.LINE_AA, shift=2)
        cv2.fillConvexPoly(mask, pts[f], 255, shift=2)
    out = image.copy()
    sel = mask > 0
    out[sel] = (alpha * canvas[sel] + (1 - alpha) * image[sel]).astype(np.uint8)
    return out


def draw_points(image: np.ndarray, points: np.ndarray, color=(255, 60, 60), radius: int | None = None) -> np.ndarray:
    """Draw (N, 2) pixel points as filled dots."""
    out = image.copy()
    radius = radius or max(1, round(min(image.shape[:2]) / 250))
    for x, y in np.asarray(points):
        if np.isfinite(x) and np.isfinite(y):
            cv2.circle(out, (int(round(x)), int(round(y))), radius, color, -1, lineType=cv2.LINE_AA)
    return out
