"""Fit head-model parameters to 2D landmarks, batched over frames.

The objective for frame t (pixels divided by that frame's inter-ocular distance):
    sum_i w_i |project(model landmark i) - detected landmark i|^2      68 iBUG points
  + sum_j v_j rho(project(surface point j) - detected point j)        mediapipe's 478 points, at
                                                                        their dense embedding
                                                                        (onehead.tracking.dense),
                                                                        rho robust (pseudo-Huber)
  + sum_k d_k rho(s z_k - mediapipe's z_k)                             the relative depth of 64
                                                                        rigid points (nose, brows,
                                                                        cheeks); s fitted, as
                                                                        mediapipe's depth scale
                                                                        varies (depth_residual)
  + w_iris |project(pupils) - iris centres|^2                          eye gaze
  + priors on shape, expression and jaw, on the expression's lopsided part (what it moves on
    one side of the face and not the other: expression_asymmetry), which a landmark fit could
    otherwise trade against a turn of the head, and on what it moves the nose bridge by
    (expression_bridge_motion): the bridge is bone, and without the prior the fit explained
    mediapipe's points with expressions that move it
  + smoothness between consecutive frames (video)
The jaw points are compared on fixed surface points (the frontal contour), because
mediapipe's face-oval points are fixed points of its own mesh (FitSettings.dynamic_contour
compares them with the contour at the current yaw instead). Adam on the landmark
vertices only, so a batch of frames costs about as much as one.
"""

from __future__ import annotations

from contextlib import contextmanager
from dataclasses import dataclass

import numpy as np
import torch

from onehead.camera import project
from onehead.head.model import MOTION_PARAM_NAMES, HeadModel, SurfacePoints
from onehead.tracking.landmarks import IBUG68_FLIP

NOSE_BRIDGE = slice(27, 31)  # iBUG-68 points on the nose bridge


@dataclass
class FitSettings:
    """Weights and iteration counts of the landmark fit."""

    rigid_iterations: int = 40  # rotation and translation only, from a cold start
    iterations: int = 100  # everything, from a cold start
    warm_iterations: int = 50  # everything, warm-started video chunks
    jaw_contour_weight: float = 1.0
    dynamic_contour: bool = False  # compare the jaw points with the contour at the current yaw, not the frontal one
    landmark_weight: float = 1.0  # the 68-point term
    dense_weight: float = 1.0  # the 478-point term (when the fit is given DenseTargets)
    landmarks_on_dense: bool = False  # compare mediapipe's 68 with its own places on the head (the dense
    # embedding) instead of the head's iBUG landmarks: consistent with how the points were found
    dense_robust_scale: float = 0.03  # of the eye distance: beyond it a residual counts ~linearly
    iris_weight: float = 0.5
    shape_prior: float = 2e-5
    expression_prior: float = 5e-4
    jaw_prior: float = 1e-3
    smooth_weight: float = 0.02  # per-frame parameter changes in a video
    asymmetry_prior: float = 1000.0  # the expression's lopsided landmark motion (expression_asymmetry); 0: none
    bridge_prior: float = 1000.0  # the expression's motion of the nose bridge (expression_bridge_motion); 0: none
    depth_weight: float = 3.0  # mediapipe's relative depth of the rigid points (DenseTargets.depth); 0: none
    depth_robust_scale: float = 0.03  # of the eye distance, as dense_robust_scale
    learning_rate: float = 0.03


# Neck and global rotation both turn the whole head (the landmarks cannot tell them apart), so
# the fit keeps neck_pose at zero and fits every other per-frame parameter.
UNFITTED_PARAM_NAMES = ("neck_pose",)
FITTED_PARAM_NAMES = tuple(name for name in MOTION_PARAM_NAMES if name not in UNFITTED_PARAM_NAMES)


@dataclass
class DenseTargets:
    """mediapipe's points for the dense term: where they sit on the head and where they were found."""

    points: SurfacePoints  # (P) on the head model: the fitted ones of mediapipe's 478
    pixels: torch.Tensor  # (T, P, 2) detected, pixels (any finite value on lost frames)
    weights: torch.Tensor  # (P,)
    depth: torch.Tensor | None = None  # (T, P) mediapipe's relative depth, pixels (any finite value where unused)
    depth_weights: torch.Tensor | None = None  # (P,) the depth term's weights (0: 2D only)
    landmarks: torch.Tensor | None = None  # (68,) which of `points` are mediapipe's iBUG-68 points

    def select(self, frames) -> "DenseTargets":
        return DenseTargets(self.points, self.pixels[frames], self.weights,
                            None if self.depth is None else self.depth[frames], self.depth_weights, self.landmarks)


def landmark_weights(settings: FitSettings) -> torch.Tensor:
    weights = torch.ones(68)
    weights[:17] = settings.jaw_contour_weight
    return weights * settings.landmark_weight


def pseudo_huber(squared: torch.Tensor, scale: float) -> torch.Tensor:
    """2 c^2 (sqrt(1 + r^2 / c^2) - 1) of squared residuals r^2: r^2 near 0, 2 c |r| far out."""
    return 2 * scale ** 2 * (torch.sqrt(1 + squared / scale ** 2) - 1)


def initial_translation(head: HeadModel, targets: torch.Tensor, K: torch.Tensor,
                        world_to_cam: torch.Tensor) -> torch.Tensor:
    """Place the neutral head so its landmarks' centre and eye distance match the detections."""
    with torch.no_grad():
        neutral = head(landmarks_only=True, frontal_contour=True).landmarks68[0]  # (68, 3)
        model_iod = (neutral[45] - neutral[36]).norm()
        target_iod = (targets[:, 45] - targets[:, 36]).norm(dim=-1)  # (T,)
        depth = K[:, 0, 0] * model_iod / target_iod.clamp(min=1.0)
        center_px = targets.mean(1)  # (T, 2)
        ray_x = (center_px[:, 0] - K[:, 0, 2]) / K[:, 0, 0] * depth
        ray_y = (center_px[:, 1] - K[:, 1, 2]) / K[:, 1, 1] * depth
        cam_point = torch.stack([ray_x, ray_y, depth], -1)  # where the landmark centre should be
        rot, trans = world_to_cam[:, :3, :3], world_to_cam[:, :3, 3]
        world_point = torch.einsum("tji,tj->ti", rot, cam_point - trans)
        return world_point - neutral.mean(0)


@contextmanager
def _one_thread():
    """The fit is many tiny ops: one thread is fastest, and several contend badly with
    mediapipe's worker threads (measured: 40 s instead of 1.7 s for 120 frames)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def fit_frames(head: HeadModel, targets: torch.Tensor, K: torch.Tensor, world_to_cam: torch.Tensor,
               valid: torch.Tensor, iris: torch.Tensor | None = None, shape: torch.Tensor | None = None,
               init: dict | None = None, settings: FitSettings | None = None,
               optimize_shape: bool = True, previous: dict | None = None,
               optimize_focal: bool = False, dense: DenseTargets | None = None) -> dict:
    """Fit T frames at once.

    targets (T, 68, 2) pixels; K (T, 3, 3); world_to_cam (T, 4, 4); valid (T,) bool;
    iris (T, 2, 2) pixel centres of the (left, right) iris or None; shape (S,) to start from or keep;
    init: per-frame parameters to warm-start from; previous: the frame before this batch (smoothing).
    optimize_focal: also fit one focal-length scale for all frames (weakly determined for one image).
    dense: mediapipe's points and their places on the head (the dense term), or None.
    Returns detached tensors: shape (S,), expression (T, E), global_pose, jaw_pose, eye_pose (T, 6),
    translation (T, 3), K (T, 3, 3).
    """
    settings = settings or FitSettings()
    frames = targets.shape[0]
    dtype = torch.float32
    valid_f = valid.to(dtype)
    iod = (targets[:, 45] - targets[:, 36]).norm(dim=-1).clamp(min=1.0)
    weights = landmark_weights(settings)

    sizes = head.parameter_sizes
    params = {name: torch.zeros(frames, sizes[name]) for name in FITTED_PARAM_NAMES}
    params["translation"] = initial_translation(head, targets, K, world_to_cam)
    if init is not None:
        for key in FITTED_PARAM_NAMES:
            if key in init:
                params[key] = init[key].detach().clone().to(dtype)
    shape_param = (shape.detach().clone() if shape is not None else torch.zeros(head.num_shape)).to(dtype)
    for value in params.values():
        value.requires_grad_(True)
    shape_param.requires_grad_(optimize_shape)
    log_focal = torch.zeros((), requires_grad=optimize_focal)
    focal_mask = torch.tensor([[1.0, 0, 0], [0, 1.0, 0], [0, 0, 0]])

    posing = head if optimize_shape else head.with_shape(shape_param)  # a known shape: cheaper poses
    asymmetry = expression_asymmetry(head) if settings.asymmetry_prior > 0 else None
    bridge = expression_bridge_motion(head) if settings.bridge_prior > 0 else None
    on_dense = settings.landmarks_on_dense and dense is not None and dense.landmarks is not None

    def camera() -> torch.Tensor:
        return K + K * focal_mask * (torch.exp(log_focal) - 1)

    def loss_fn(rigid_only: bool) -> torch.Tensor:
        shape_kw = {"shape": shape_param[None]} if optimize_shape else {}
        out = posing(frontal_contour=not settings.dynamic_contour, landmarks_only=True, neck_pose=None,
                     points=None if dense is None else dense.points, **shape_kw, **params)
        K_now = camera()
        pixels, _ = project(out.points[:, dense.landmarks] if on_dense else out.landmarks68, K_now, world_to_cam)
        residual = (pixels - targets) / iod[:, None, None]
        per_frame = (residual.pow(2).sum(-1) * weights).sum(-1)
        if dense is not None:
            found, depth = project(out.points, K_now, world_to_cam)
            squared = ((found - dense.pixels) / iod[:, None, None]).pow(2).sum(-1)
            robust = pseudo_huber(squared, settings.dense_robust_scale)
            per_frame = per_frame + settings.dense_weight * (robust * dense.weights).sum(-1)
            if dense.depth is not None and settings.depth_weight > 0:
                depth_res = depth_residual(relative_depth(depth, K_now), dense, valid_f) / iod[:, None]
                robust = pseudo_huber(depth_res.pow(2), settings.depth_robust_scale)
                per_frame = per_frame + settings.depth_weight * (robust * dense.depth_weights).sum(-1)
        if iris is not None and not rigid_only:
            pupils, _ = project(out.pupils, K_now, world_to_cam)
            iris_res = (pupils - iris) / iod[:, None, None]
            iris_ok = torch.isfinite(iris_res).all(-1).all(-1)
            iris_term = torch.where(iris_ok, iris_res.nan_to_num().pow(2).sum((-1, -2)), torch.zeros_like(iod))
            per_frame = per_frame + settings.iris_weight * iris_term
        loss = (per_frame * valid_f).sum()
        if rigid_only:
            return loss
        loss = loss + settings.shape_prior * shape_param.pow(2).sum() * max(frames, 1) ** 0.5
        loss = loss + settings.expression_prior * params["expression"].pow(2).sum()
        if settings.asymmetry_prior > 0:
            lopsided = params["expression"] @ asymmetry  # (T, 68 * 3), in eye distances
            loss = loss + settings.asymmetry_prior * lopsided.pow(2).sum()
        if settings.bridge_prior > 0:
            loss = loss + settings.bridge_prior * (params["expression"] @ bridge).pow(2).sum()
        loss = loss + settings.jaw_prior * params["jaw_pose"].pow(2).sum() * 100
        loss = loss + 1e-3 * params["eye_pose"].pow(2).sum()
        if settings.smooth_weight > 0:
            loss = loss + settings.smooth_weight * _smoothness(params, previous)
        return loss

    stages = []
    if init is None:
        stages.append((True, settings.rigid_iterations))
        stages.append((False, settings.iterations))
    else:
        stages.append((False, settings.warm_iterations))
    with _one_thread():
        _run_stages(stages, params, shape_param, log_focal, loss_fn, settings, optimize_shape, optimize_focal)
    result = {k: v.detach() for k, v in params.items()}
    result["shape"] = shape_param.detach()
    result["K"] = camera().detach()
    return result


def relative_depth(depth: torch.Tensor, K: torch.Tensor) -> torch.Tensor:
    """(T, P) camera depths -> each point's depth behind the points' mean, in pixels (focal x depth
    offset / mean depth): the units of mediapipe's z."""
    mean = depth.mean(-1, keepdim=True)
    return K[:, 0, 0, None] * (depth - mean) / mean


def depth_residual(model_depth: torch.Tensor, dense: DenseTargets, valid: torch.Tensor) -> torch.Tensor:
    """(T, P) model depth x s - mediapipe's depth, both relative to their weighted mean; s, one
    least-squares scale over the valid frames, because mediapipe's depth scale differs from face to
    face (0.5-1.1 of the model's on synthetic heads). The residual says how the surface is turned,
    which a landmark fit reads short: a head that turns moves its nose in depth."""
    w = dense.depth_weights / dense.depth_weights.sum()
    model = model_depth - (model_depth * w).sum(-1, keepdim=True)
    seen = dense.depth - (dense.depth * w).sum(-1, keepdim=True)
    weight = w * valid[:, None]
    scale = (weight * model * seen).sum() / (weight * model * model).sum().clamp(min=1e-9)
    return model * scale - seen


def expression_landmark_motion(head: HeadModel) -> torch.Tensor:
    """(E, 68, 3): what each expression coefficient moves the 68 landmarks of the neutral head by,
    over the eye distance."""
    with torch.no_grad():
        rest = head(frontal_contour=True, landmarks_only=True).landmarks68[0]
        moved = head(expression=torch.eye(head.num_expression), frontal_contour=True,
                     landmarks_only=True).landmarks68 - rest
    return moved / (rest[45] - rest[36]).norm()


def expression_asymmetry(head: HeadModel) -> torch.Tensor:
    """(E, 68 * 3): what each expression coefficient moves the 68 landmarks by (over the eye
    distance), less its mirror image; zero for a symmetric expression (a smile, an open mouth),
    large for one that moves one side (which a landmark fit can trade against a head turn)."""
    moved = expression_landmark_motion(head)
    mirrored = moved[:, list(IBUG68_FLIP)] * torch.tensor([-1.0, 1.0, 1.0])
    return ((moved - mirrored) / 2).flatten(1)


def expression_bridge_motion(head: HeadModel) -> torch.Tensor:
    """(E, 4 * 3): what each expression coefficient moves the nose bridge's landmarks (iBUG 27-30)
    by, over the eye distance: large for a nose wrinkle, a frown or a brow raise (its top point
    sits between the brows), zero for an open mouth or a smile."""
    return expression_landmark_motion(head)[:, NOSE_BRIDGE].flatten(1)


def _run_stages(stages, params, shape_param, log_focal, loss_fn, settings, optimize_shape, optimize_focal):
    for rigid_only, steps in stages:
        groups = [{"params": [params["global_pose"]], "lr": settings.learning_rate},
                  {"params": [params["translation"]], "lr": settings.learning_rate * 0.1}]
        if not rigid_only:
            groups += [{"params": [params["expression"]], "lr": settings.learning_rate * 3},
                       {"params": [params["jaw_pose"], params["eye_pose"]], "lr": settings.learning_rate},]
            if optimize_shape:
                groups.append({"params": [shape_param], "lr": settings.learning_rate * 3})
            if optimize_focal:
                groups.append({"params": [log_focal], "lr": settings.learning_rate})
        optimizer = torch.optim.Adam(groups)
        schedule = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, steps, eta_min=settings.learning_rate * 0.05)
        for _ in range(steps):
            optimizer.zero_grad(set_to_none=True)
            loss = loss_fn(rigid_only)
            loss.backward()
            optimizer.step()
            schedule.step()


def _smoothness(params: dict, previous: dict | None) -> torch.Tensor:
    """Squared change between consecutive frames (and from the frame before the batch). The head's
    pose (rotation, translation) is held 2.5 times harder than before the seventh session (its
    scales x1.58): less shake of the head without touching the mouth, whose expression and jaw keep
    their scale (smoothing those too dulled the fast mouth openings)."""
    scale = {"expression": 1.0, "global_pose": 47.0, "jaw_pose": 30.0, "eye_pose": 3.0, "translation": 470.0}
    total = 0.0
    for key, s in scale.items():
        value = params[key]
        if previous is not None and key in previous:
            value = torch.cat([previous[key][None].to(value), value])
        if value.shape[0] > 1:
            total = total + (s * (value[1:] - value[:-1])).pow(2).sum()
    return total


def interpolate_invalid(values: np.ndarray, valid: np.ndarray) -> np.ndarray:
    """Fill frames where the face was lost by linear interpolation between found frames."""
    values = values.copy()
    found = np.where(valid)[0]
    if len(found) == 0 or len(found) == len(valid):
        return values
    flat = values.reshape(len(values), -1)
    for j in range(flat.shape[1]):
        flat[:, j] = np.interp(np.arange(len(valid)), found, flat[found, j])
    return flat.reshape(values.shape)
