"""How steady a video tracking is, and whether its smoothing lags.

    jitter(points, valid)              mean second difference of 2D points over the eye distance
    mouth_lag(fitted, detected)        the frame shift that best lines up two mouth-opening signals
    stability(tracking)                both, for a Tracking against its own mediapipe detections

The second difference |p[t+1] - 2 p[t] + p[t-1]| is zero for still points and for steady motion,
so it measures shake rather than movement. The lag is the peak of the cross-correlation of the
fitted mouth opening (inner lips 62-66 of the 68 points) against mediapipe's (13-14): a smoother
that trails the detections peaks at a positive shift.
"""

from __future__ import annotations

import numpy as np

from onehead.data.tracking_file import Tracking

IBUG_INNER_LIPS = (62, 66)  # upper and lower inner lip, middle
IBUG_OUTER_EYES = (36, 45)
MEDIAPIPE_INNER_LIPS = (13, 14)
MEDIAPIPE_OUTER_EYES = (33, 263)


def jitter(points: np.ndarray, valid: np.ndarray | None = None, eyes: tuple[int, int] = IBUG_OUTER_EYES) -> float:
    """Mean |p[t+1] - 2 p[t] + p[t-1]| over points (T, N, 2) and frames, each over that frame's
    outer-eye distance; only triples of valid (and finite) frames count. NaN below 3 frames."""
    points = np.asarray(points, np.float64)
    ok = np.isfinite(points).all((1, 2))
    if valid is not None:
        ok &= np.asarray(valid, bool)
    if len(points) < 3:
        return float("nan")
    second = points[2:] - 2 * points[1:-1] + points[:-2]
    iod = np.linalg.norm(points[1:-1, eyes[0]] - points[1:-1, eyes[1]], axis=-1)
    keep = ok[2:] & ok[1:-1] & ok[:-2] & (iod > 0)
    if not keep.any():
        return float("nan")
    return float((np.linalg.norm(second[keep], axis=-1) / iod[keep, None]).mean())


def opening(points: np.ndarray, lips: tuple[int, int], eyes: tuple[int, int]) -> np.ndarray:
    """(T,) inner-lip gap over the outer-eye distance of points (T, N, 2) or (T, N, 3)."""
    points = np.asarray(points, np.float64)
    gap = np.linalg.norm(points[:, lips[0]] - points[:, lips[1]], axis=-1)
    iod = np.linalg.norm(points[:, eyes[0]] - points[:, eyes[1]], axis=-1)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(iod > 0, gap / iod, np.nan)


def mouth_lag(fitted: np.ndarray, detected: np.ndarray, max_lag: int = 5) -> dict:
    """The shift (frames) in [-max_lag, max_lag] at which fitted[t] best matches detected[t - shift]
    (positive: the fit trails), and the correlation there and at zero shift. Signals (T,), NaN
    where lost."""
    fitted, detected = np.asarray(fitted, np.float64), np.asarray(detected, np.float64)
    scores = {}
    for shift in range(-max_lag, max_lag + 1):
        a = fitted[max(shift, 0): len(fitted) + min(shift, 0)]
        b = detected[max(-shift, 0): len(detected) + min(-shift, 0)]
        both = np.isfinite(a) & np.isfinite(b)
        if both.sum() < 3 or a[both].std() == 0 or b[both].std() == 0:
            continue
        scores[shift] = float(np.corrcoef(a[both], b[both])[0, 1])
    if not scores:
        return {"lag_frames": float("nan"), "r_at_lag": float("nan"), "r": float("nan")}
    best = max(scores, key=lambda s: (scores[s], -abs(s)))
    return {"lag_frames": best, "r_at_lag": scores[best], "r": scores.get(0, float("nan"))}


def vertex_jitter(vertices: np.ndarray, valid: np.ndarray | None = None) -> float:
    """Mean second difference of mesh vertices (T, V, 3), in the mesh's units (metres: x1000 for mm),
    over triples of valid frames, in the head's own frame (head pose included)."""
    vertices = np.asarray(vertices, np.float64)
    if len(vertices) < 3:
        return float("nan")
    ok = np.ones(len(vertices), bool) if valid is None else np.asarray(valid, bool)
    keep = ok[2:] & ok[1:-1] & ok[:-2]
    second = vertices[2:] - 2 * vertices[1:-1] + vertices[:-2]
    return float(np.linalg.norm(second[keep], axis=-1).mean()) if keep.any() else float("nan")


def stability(tracking: Tracking, head=None) -> dict:
    """Jitter of the reported 68 points (landmarks68) and of mediapipe's own points (its 68-point
    subset), the reported mouth's lag against mediapipe's, and with `head`, the jitter of the posed
    mesh's vertices in millimetres, for one video tracking."""
    from onehead.tracking.landmarks import MEDIAPIPE_TO_IBUG68

    detected68 = np.asarray(tracking.landmarks_mp)[:, list(MEDIAPIPE_TO_IBUG68)]
    lag = mouth_lag(opening(tracking.landmarks68, IBUG_INNER_LIPS, IBUG_OUTER_EYES),
                    opening(tracking.landmarks_mp, MEDIAPIPE_INNER_LIPS, MEDIAPIPE_OUTER_EYES))
    return {"jitter_fit": jitter(tracking.landmarks68, tracking.valid),
            "jitter_mediapipe": jitter(detected68, tracking.valid),
            "mouth_lag_frames": lag["lag_frames"], "mouth_r": lag["r"], "mouth_r_at_lag": lag["r_at_lag"],
            "jitter_vertices_mm": float("nan") if head is None else 1000 * vertex_jitter(_posed(tracking, head),
                                                                                        tracking.valid)}


def _posed(tracking: Tracking, head) -> np.ndarray:
    import torch

    params = {k: torch.as_tensor(v) for k, v in tracking.head_params().items()}
    with torch.no_grad():
        return head(**params).vertices.numpy()
