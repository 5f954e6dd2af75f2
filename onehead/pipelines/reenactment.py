"""From user inputs to what a one-shot model renders: the reference crop and the driving motion.

Shared by every one-shot mode (the Animator now, the tri-plane mode later) and by evaluation.
Cross-identity: the shape comes from the reference; expression, jaw, eyes and head motion from
the driving frames.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from onehead.camera import project, scale_intrinsics
from onehead.data.images import load_image
from onehead.data.tracking_file import Tracking, load_tracking
from onehead.errors import ConfigError
from onehead.head import MOTION_PARAM_NAMES
from onehead.head.geometry import transferred_rotations


@dataclass
class Reference:
    image: np.ndarray  # (S, S, 3) uint8, framed like onehead's data (onehead.data.prepare)
    tracking: Tracking  # one frame, at the camera of `image`
    foreground: np.ndarray | None = None  # (S, S) float in [0, 1]: the person in a photo (mediapipe's
    # selfie segmentation), whose hair and hat a model may move with the head; None for onehead's frames


@dataclass
class Motion:
    tracking: Tracking  # what to render: reference shape, driving motion, output cameras
    frames: np.ndarray | None  # the driving video's frames (T, H, W, 3), when it was a video


def prepare_reference(reference, head, size: int, reference_tracking=None, progress: bool = False,
                      foreground: np.ndarray | None = None) -> Reference:
    """Track (or take the given tracking of) a reference portrait and crop it to `size`. With a
    tracking, a square image is taken as already framed (onehead's data) and only resized.
    foreground: the person mask (H, W) in [0, 1] of the image when it is known (a real sequence's
    mask), framed with it; otherwise a photo's is segmented and onehead's frames have none."""
    import cv2

    from onehead.data.prepare import crop_affine, crop_boxes, crop_tracking
    from onehead.tracking.tracker import TrackOptions, track_image

    image = load_image(reference)
    if reference_tracking is not None:
        tracking = _as_tracking(reference_tracking).select([0])
        h, w = image.shape[:2]
        tracked = tuple(int(v) for v in tracking.image_size)
        if tracked != (h, w):
            raise ConfigError(f"the reference tracking is for {tracked} images, "
                              f"the reference is {(h, w)}")
        if h == w:  # a frame in onehead's framing (onehead synth, prepare_video): resize only
            interpolation = cv2.INTER_AREA if size < h else cv2.INTER_CUBIC
            resized = cv2.resize(image, (size, size), interpolation=interpolation)
            K = scale_intrinsics(torch.as_tensor(tracking.K), (h, w), (size, size)).numpy()
            mask = None if foreground is None else np.clip(cv2.resize(np.asarray(foreground, np.float32), (size, size),
                                                                      interpolation=interpolation), 0, 1)
            return Reference(resized, replace(tracking, K=K, image_size=np.array([size, size])), mask)
        # any other photo: cropped around its tracked face, as when onehead tracks it
    else:
        tracking = track_image(image, head, TrackOptions(progress=progress), name=_name(reference))
    box = crop_boxes(tracking.landmarks68, tracking.valid, smooth_frames=0)[0]
    affine = crop_affine(box, size)
    crop = cv2.warpAffine(image, affine, (size, size), flags=cv2.INTER_AREA if affine[0, 0] < 1 else cv2.INTER_CUBIC,
                          borderMode=cv2.BORDER_REPLICATE)
    mask = (person_mask(crop) if foreground is None else
            np.clip(cv2.warpAffine(np.asarray(foreground, np.float32), affine, (size, size), flags=cv2.INTER_LINEAR,
                                   borderMode=cv2.BORDER_REPLICATE), 0, 1))
    return Reference(crop, crop_tracking(tracking, affine[None], size), mask)


def split_foreground(reference: Reference, fade: float = 0.1) -> tuple[np.ndarray, np.ndarray] | None:
    """The reference's person mask split in two, (S, S) each: (what moves with the head, in [0, 1];
    what stays beside it, bool). None when the reference has no mask.

    What moves (hair, a hat): above `fade` of the image height over the chin, the piece of the mask
    that holds the nose tip, less what joins it beside the head (`beside_the_head`: another face,
    a raised shoulder). Below that, fading out to the chin: only what lies under the lower jaw
    (jaw points 3-13: the neck). So the collar and the torso stay, also where a collar rises
    beside the chin. What stays beside the head (other people, a raised shoulder, a collar's rim):
    the rest of the mask above that line; it is never mirrored into the plate behind the moved
    head (`fill_warp`'s `staying`)."""
    from scipy import ndimage

    if reference.foreground is None:
        return None
    size = reference.foreground.shape[0]
    landmarks = reference.tracking.landmarks68[0]
    rows = np.arange(size, dtype=np.float32) + 0.5
    weight = np.clip((float(landmarks[8, 1]) - rows) / max(fade * size, 1), 0, 1)[:, None]
    moving = reference.foreground * weight
    core = (moving > 0.5) & (weight >= 1)
    thin = max(1, round(0.012 * size))  # bridges this thin (a collar's rim touching the jaw) are cut
    pieces, _ = ndimage.label(ndimage.binary_erosion(core, iterations=thin), structure=np.ones((3, 3)))
    x, y = np.clip(np.round(landmarks[30]).astype(int), 0, size - 1)
    if pieces[y, x] == 0:  # the mask misses the face: keep it all
        return moving, np.zeros_like(core)
    keep = ndimage.binary_dilation(pieces == pieces[y, x], iterations=thin) & core
    keep &= ~beside_the_head(keep, landmarks)  # another face, a raised shoulder: they stay
    jaw, columns = landmarks[3:14, 0], np.arange(size)[None, :]
    under_jaw = (weight < 1) & (columns >= jaw.min()) & (columns <= jaw.max())
    carried = ndimage.binary_dilation(keep | under_jaw, iterations=2)  # with its soft edge
    return moving * carried, core & ~carried


def beside_the_head(person: np.ndarray, landmarks68: np.ndarray, reach: float = 0.5,
                    thickness: float = 0.2, skull: float = 1.0) -> np.ndarray:
    """(S, S) bool: what of a person mask (S, S, bool) joined to the head belongs to something else,
    such as another person's face or a shoulder raised beside the chin. The mask is split along its
    narrowest joins (watershed of its distance to the edge) between two kinds of seeds: the head
    (the hull of the 68 landmarks and of the brows raised by `skull` eye distances, for the scalp),
    and every thick part (a local maximum of that distance, at least `thickness` eye distances)
    further than `reach` eye distances from the head. Returns what the second kind claims; hair,
    however wide, has no thick part of its own away from the head and stays with it."""
    import cv2
    from scipy import ndimage
    from skimage.segmentation import watershed

    eyes = float(np.linalg.norm(landmarks68[45] - landmarks68[36]))
    up = landmarks68[27] - landmarks68[8]
    up = up / max(float(np.linalg.norm(up)), 1e-6)
    outline = np.concatenate([landmarks68, landmarks68[17:27] + up * skull * eyes])
    if not np.isfinite(outline).all() or eyes <= 0:
        return np.zeros_like(person)
    head = np.zeros(person.shape, np.uint8)
    cv2.fillConvexPoly(head, cv2.convexHull(np.round(outline).astype(np.int32)), 1)
    head = head.astype(bool)
    depth = ndimage.distance_transform_edt(person)
    far = ndimage.distance_transform_edt(~head) > reach * eyes
    thick = (depth == ndimage.maximum_filter(depth, size=5)) & (depth >= thickness * eyes) & far & person
    if not thick.any() or not (head & person).any():
        return np.zeros_like(person)
    seeds = np.zeros(person.shape, np.int32)
    seeds[thick] = 2
    seeds[head & person] = 1
    return watershed(-depth, seeds, mask=person) == 2


def person_mask(image: np.ndarray) -> np.ndarray:
    """(S, S) float in [0, 1]: where the person is in a photo (mediapipe's selfie segmentation)."""
    from onehead.pipelines.prepare_video import selfie_masks

    return selfie_masks(image[None])[0]


def driving_motion(driving, reference: Reference, head, size: int, camera=None, max_frames: int | None = None,
                   progress: bool = False) -> Motion:
    """The motion to render: the reference's shape with the driving frames' expression, jaw,
    eyes and head pose. camera: None (the reference's camera, head motion relative to the first
    driving frame), "driving" (the driving cameras and absolute poses) or (K, world_to_cam)."""
    from onehead.data.video import read_frames
    from onehead.tracking.tracker import TrackOptions, track_frames

    frames = None
    if isinstance(driving, Tracking) or (isinstance(driving, (str, os.PathLike)) and str(driving).endswith(".npz")):
        tracking = _as_tracking(driving)
    else:
        frames, fps = read_frames(driving, max_frames=max_frames)
        tracking = track_frames(frames, fps, head, TrackOptions(progress=progress), name=_name(driving))
    count = tracking.num_frames if max_frames is None else min(max_frames, tracking.num_frames)
    tracking = tracking.select(slice(0, count))
    frames = None if frames is None else frames[:count]

    values = {
        "shape": _fit(reference.tracking.shape, head.num_shape),
        "expression": _fit(tracking.expression, head.num_expression),
        "jaw_pose": tracking.jaw_pose, "eye_pose": tracking.eye_pose, "neck_pose": tracking.neck_pose,
    }
    if isinstance(camera, str) and camera == "driving":
        values["global_pose"], values["translation"] = tracking.global_pose, tracking.translation
        K = scale_intrinsics(torch.as_tensor(tracking.K), tuple(int(v) for v in tracking.image_size),
                             (size, size)).numpy()
        world_to_cam = tracking.world_to_cam
    else:
        values["global_pose"], values["translation"] = _relative_motion(tracking, reference.tracking)
        if camera is None:
            K, world_to_cam = reference.tracking.K[0], reference.tracking.world_to_cam[0]
        elif isinstance(camera, (tuple, list)) and len(camera) == 2:
            K, world_to_cam = (np.asarray(c, np.float32) for c in camera)
            if K.shape != (3, 3) or world_to_cam.shape != (4, 4):
                raise ConfigError("camera must be (K (3, 3), world_to_cam (4, 4)) at the output resolution")
        else:
            raise ConfigError(f"camera must be None, 'driving' or (K, world_to_cam); got {camera!r}")
        K = np.repeat(np.asarray(K, np.float32)[None], count, 0)
        world_to_cam = np.repeat(np.asarray(world_to_cam, np.float32)[None], count, 0)

    rendered = Tracking(
        shape=values["shape"], **{name: values[name].astype(np.float32) for name in MOTION_PARAM_NAMES},
        K=K.astype(np.float32),
        world_to_cam=world_to_cam.astype(np.float32), landmarks68=np.zeros((count, 68, 2), np.float32),
        landmarks_mp=np.full((count, 478, 2), np.nan, np.float32), valid=tracking.valid,
        fit_error=tracking.fit_error, image_size=np.array([size, size]), fps=tracking.fps,
        head_model=head.kind)
    with torch.no_grad():
        params = {k: torch.as_tensor(v) for k, v in rendered.head_params().items()}
        points, _ = project(head(**params).landmarks68, torch.as_tensor(rendered.K), torch.as_tensor(rendered.world_to_cam))
    rendered.landmarks68 = points.numpy().astype(np.float32)
    return Motion(rendered, frames)


def head_masks(head, tracking: Tracking, size: int) -> torch.Tensor:
    """Where the head model covers each frame of a tracking, rendered at size x size: (T, 1, S, S)."""
    from onehead.render.rasterize import rasterize_mesh

    with torch.no_grad():
        params = {k: torch.as_tensor(v) for k, v in tracking.head_params().items()}
        K = scale_intrinsics(torch.as_tensor(tracking.K), tuple(int(v) for v in tracking.image_size), (size, size))
        vertices = head(**params).vertices
        fragments = rasterize_mesh(vertices, head.faces, K, torch.as_tensor(tracking.world_to_cam), size, size)
    return fragments.mask[:, None].float()


def head_region(head, trackings: list[Tracking], size: int, margin: float) -> torch.Tensor:
    """The union of the head masks of several trackings (one-frame trackings apply to every frame),
    grown by `margin` of the image size and feathered over half of that: (T, 1, S, S) in [0, 1]."""
    return grown_region([head_masks(head, tracking, size) for tracking in trackings], margin)


def grown_region(masks: list[torch.Tensor], margin: float) -> torch.Tensor:
    """head_region from masks already rendered ((T or 1, 1, S, S) each, e.g. a warp's covered masks)."""
    frames = max(len(m) for m in masks)
    size = masks[0].shape[-1]
    union = torch.stack([m.float().expand(frames, -1, -1, -1) for m in masks]).amax(0)
    grow = max(1, round(margin * size))
    # square windows as a row pass then a column pass: the same result, O(k) instead of O(k^2)
    for kernel, padding in (((1, 2 * grow + 1), (0, grow)), ((2 * grow + 1, 1), (grow, 0))):
        union = F.max_pool2d(union, kernel, stride=1, padding=padding)
    feather = grow // 2
    if feather:
        for kernel, padding in (((1, 2 * feather + 1), (0, feather)), ((2 * feather + 1, 1), (feather, 0))):
            union = F.avg_pool2d(union, kernel, stride=1, padding=padding, count_include_pad=False)
    return union


def paste_back(frames: torch.Tensor, reference: torch.Tensor, region: torch.Tensor) -> torch.Tensor:
    """Frames (T, 3, H, W) inside the region (T, 1, H, W), the reference (3, H, W) outside it."""
    return region * frames + (1 - region) * reference[None]


def mesh_warp(reference: Reference, motion: Motion, head, inpaint_radius: int = 3) -> torch.Tensor:
    """The mesh-warp baseline, (T, 3, S, S) in [0, 1]: the reference warped by the head model's
    motion, holes inpainted (onehead.render.warp.fill_warp)."""
    from onehead.render.warp import fill_warp, warp_reference

    image = torch.from_numpy(reference.image).permute(2, 0, 1).float()[None] / 255
    with torch.no_grad():
        warp = warp_reference(image, head.faces, _vertices(head, reference.tracking),
                              torch.as_tensor(reference.tracking.K[0]),
                              torch.as_tensor(reference.tracking.world_to_cam[0]), _vertices(head, motion.tracking),
                              torch.as_tensor(motion.tracking.K), torch.as_tensor(motion.tracking.world_to_cam))
    return fill_warp(image, warp, inpaint_radius)


def _vertices(head, tracking: Tracking) -> torch.Tensor:
    params = {k: torch.as_tensor(v) for k, v in tracking.head_params().items()}
    return head(**params).vertices


def _relative_motion(driving: Tracking, reference: Tracking) -> tuple[np.ndarray, np.ndarray]:
    """Head rotation and translation of the driving frames relative to their first frame, applied
    to the reference's pose: the turn in the head's own frame (transferred_rotations), the shift in
    the camera's, x_t = x_ref + x_drv(t) - x_drv(0)."""
    rotations = transferred_rotations(driving.global_pose, driving.global_pose[0], reference.global_pose[0])
    translation = reference.translation[0] + driving.translation - driving.translation[0]
    return rotations.astype(np.float32), translation.astype(np.float32)


def _fit(values: np.ndarray, size: int) -> np.ndarray:
    """Truncate or zero-pad the last axis to `size` (trackings of models with other basis sizes)."""
    values = np.asarray(values, np.float32)
    if values.shape[-1] >= size:
        return values[..., :size]
    pad = [(0, 0)] * (values.ndim - 1) + [(0, size - values.shape[-1])]
    return np.pad(values, pad)


def _as_tracking(source) -> Tracking:
    return source if isinstance(source, Tracking) else load_tracking(source)


def _name(source) -> str:
    return str(source) if isinstance(source, (str, Path)) else "reference image"
