"""`onehead eval --task views`: multi-view consistency of one-shot methods.

Each reference (a portrait image, or frame 0 of each sequence of a dataset) is rendered by every
method with its own expression and head pose turned on a yaw sweep (default -45 to 45 degrees, about
the camera's vertical axis, at the reference camera). The outputs are re-tracked, and each frame's
head rotation relative to the tracked reference is compared with the yaw asked for. Identity is
scored against the reference. No ground truth is needed, so real portraits work as well as held-out
synthetic identities. The report has the mean over the sweep and one row per yaw.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field, replace

import numpy as np
from scipy.spatial.transform import Rotation

from onehead.errors import ConfigError, MediaReadError, NoFaceError
from onehead.evaluation.methods import Method
from onehead.evaluation.real import Portrait, cached_reference, face_embedder, load_references, number_duplicates
from onehead.evaluation.run import nan_mean, resize_frames
from onehead.machine import machine_info
from onehead.metrics import motion as motion_metrics
from onehead.metrics.identity import DLIB_THRESHOLD, identity_kept
from onehead.pixels import frames_to_uint8

TASK = "views"
DEFAULT_SIZE = 256
DEFAULT_YAWS = (-45.0, -30.0, -15.0, 0.0, 15.0, 30.0, 45.0)

VIEWS_METRICS = {
    "yaw_error_deg": "|tracked yaw - asked yaw|, degrees: the output's tracked head rotation relative to the tracked "
                     "reference, as a yaw about the camera's vertical axis (Euler YXZ), against the yaw of the sweep "
                     "(lower is better)",
    "pose_angle_deg": "angle between the tracked relative rotation and the asked one (any axis), degrees",
    "tracked": "share of output frames in which the tracker found a face",
    "identity_kept": f"share of output frames whose dlib descriptor lies within {DLIB_THRESHOLD} of the reference's; "
                     "a frame without a face counts as lost (higher is better)",
    "csim": "cosine similarity of dlib face descriptors, output against the reference, frames with a face",
}


@dataclass
class ViewsOptions:
    references: list = field(default_factory=lambda: ["astronaut", "grace_hopper"])
    data: str | None = None  # a dataset folder: frame 0 of each sequence's first view, instead of references
    yaws: tuple = DEFAULT_YAWS  # degrees
    size: int = DEFAULT_SIZE
    max_items: int | None = None
    face_models: str | None = None
    video: str | None = None  # grid: reference | each method, one row of frames per yaw
    progress: bool = True
    command: str = ""


def yaw_sweep(tracking, yaws):
    """The reference's one-frame tracking repeated once per yaw (degrees), its head turned about the
    camera's vertical axis: R = C^T R_y(yaw) C R_ref, C the camera rotation. Render it with
    driving_motion(..., camera="driving") at the reference's camera."""
    first = tracking.select([0])
    camera = Rotation.from_matrix(np.asarray(first.world_to_cam[0, :3, :3], np.float64))
    reference = Rotation.from_rotvec(np.asarray(first.global_pose[0], np.float64))
    poses = [(camera.inv() * Rotation.from_euler("y", yaw, degrees=True) * camera * reference).as_rotvec()
             for yaw in yaws]
    sweep = first.select([0] * len(yaws))
    return replace(sweep, global_pose=np.asarray(poses, np.float32))


def camera_rotations(tracking) -> np.ndarray:
    """(T, 3, 3) head rotations in camera coordinates (world_to_cam rotation times the head's); NaN
    on frames without a face."""
    world = Rotation.from_rotvec(np.nan_to_num(np.asarray(tracking.global_pose, np.float64))).as_matrix()
    out = np.asarray(tracking.world_to_cam, np.float64)[:, :3, :3] @ world
    out[~np.asarray(tracking.valid, bool)] = np.nan
    return out


def yaw_errors(tracked: np.ndarray, reference: np.ndarray, yaws) -> dict:
    """Per frame: tracked camera-space rotations (T, 3, 3) relative to the reference's (3, 3), against
    R_y(yaw). Returns yaw_error_deg and pose_angle_deg (T,), NaN where a rotation is missing."""
    count = len(yaws)
    yaw_error, angle = np.full(count, np.nan), np.full(count, np.nan)
    if not np.isfinite(reference).all():
        return {"yaw_error_deg": yaw_error, "pose_angle_deg": angle}
    for i, yaw in enumerate(yaws):
        if not np.isfinite(tracked[i]).all():
            continue
        relative = Rotation.from_matrix(tracked[i] @ reference.T)
        yaw_error[i] = abs(relative.as_euler("YXZ", degrees=True)[0] - yaw)
        angle[i] = np.degrees((Rotation.from_euler("y", yaw, degrees=True).inv() * relative).magnitude())
    return {"yaw_error_deg": yaw_error, "pose_angle_deg": angle}


def evaluate_views(methods: list[Method], options: ViewsOptions) -> dict:
    """Every method on every reference's yaw sweep; the report as a dict (VIEWS_METRICS)."""
    from tqdm import tqdm

    from onehead.head.model import load_head_model
    from onehead.pipelines.reenactment import driving_motion

    if not methods:
        raise ConfigError("nothing to evaluate: no methods")
    yaws = tuple(float(y) for y in options.yaws)
    if not yaws or any(abs(y) > 90 for y in yaws):
        raise ConfigError(f"yaws must be 1 or more angles within +-90 degrees, got {options.yaws}")
    number_duplicates(methods)
    portraits = dataset_portraits(options.data) if options.data else load_references(options.references)
    portraits = portraits[: options.max_items]
    size = options.size
    embedder, missing = face_embedder(options)
    metric_head = load_head_model("basic")
    values = {m.name: {} for m in methods}  # method -> portrait -> metric -> (len(yaws),)
    seconds = {m.name: 0.0 for m in methods}
    cache, grid = {}, []
    for portrait in tqdm(portraits, desc="yaw sweeps", unit="reference", disable=not options.progress):
        try:
            at_size = cached_reference(cache, portrait, methods[-1].head, size, size)
        except NoFaceError as exc:
            raise NoFaceError(f"reference {portrait.source}: {exc}") from None
        anchor_tracking, _ = motion_metrics.track_for_metrics(at_size.image[None], metric_head)
        anchor = np.full((3, 3), np.nan) if anchor_tracking is None else camera_rotations(anchor_tracking)[0]
        anchor_embedding = None if embedder is None else embedder.embed(at_size.image[None])[0]
        outputs = {}
        for method in methods:
            resolution = method.resolution or size
            ref = cached_reference(cache, portrait, method.head, resolution, size)
            start = time.perf_counter()
            motion = driving_motion(yaw_sweep(ref.tracking, yaws), ref, method.head, resolution, camera="driving")
            frames = resize_frames(method.run(ref, motion).float(), size)
            seconds[method.name] += time.perf_counter() - start
            outputs[method.name] = frames
            values[method.name][portrait.name] = _scores(frames, anchor, anchor_embedding, embedder, metric_head, yaws)
        if options.video:
            grid.append(np.concatenate([np.repeat(at_size.image[None], len(yaws), 0)]
                                       + [frames_to_uint8(f) for f in outputs.values()], axis=2))
    report = _report(methods, values, seconds, portraits, yaws, size, missing, options)
    if options.video:
        from onehead.evaluation.run import _write_grid

        _write_grid(options.video, grid, ["reference"] + [m.name for m in methods])
    return report


def dataset_portraits(root) -> list[Portrait]:
    """Frame 0 of the first view of every sequence under a dataset folder (not the ground-truth
    sequences of cross pairs: those show a reference identity again)."""
    from pathlib import Path

    from onehead.data.sequence import PAIRS_FILE, list_sequences, open_sequence, read_pairs

    root = Path(root)
    targets = {pair.get("target") for pair in read_pairs(root)} if (root / PAIRS_FILE).is_file() else set()
    portraits = []
    for directory in list_sequences(root):
        if directory.name in targets:
            continue
        sequence = open_sequence(directory)
        view_name, view = next(iter(sequence.views.items()))
        portraits.append(Portrait(sequence.name, f"{directory}/{view_name}#0", view.frame(0)))
    if not portraits:
        raise MediaReadError(f"{root}: no sequences to take references from")
    return portraits


def _scores(frames, anchor, anchor_embedding, embedder, metric_head, yaws) -> dict:
    pixels = frames_to_uint8(frames)
    tracking, _ = motion_metrics.track_for_metrics(pixels, metric_head)
    count = len(yaws)
    if tracking is None:
        out = {"yaw_error_deg": np.full(count, np.nan), "pose_angle_deg": np.full(count, np.nan),
               "tracked": np.zeros(count)}
    else:
        out = yaw_errors(camera_rotations(tracking), anchor, yaws)
        out["tracked"] = np.asarray(tracking.valid, np.float64)
    if embedder is not None and anchor_embedding is not None and np.isfinite(anchor_embedding).all():
        kept = identity_kept(embedder.embed(pixels), anchor_embedding)
        out["identity_kept"] = kept["kept"].astype(np.float64)
        out["csim"] = kept["cosine"]
    return out


def _report(methods, values, seconds, portraits, yaws, size, missing, options: ViewsOptions) -> dict:
    report = {
        "command": options.command,
        "task": TASK,
        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "data": {"references": [{"name": p.name, "source": p.source} for p in portraits],
                 "yaws_deg": list(yaws), "items": len(portraits), "frames": len(portraits) * len(yaws),
                 "ground_truth": False},
        "size": size,
        "machine": machine_info(),
        "metrics": {k: v for k, v in VIEWS_METRICS.items() if k not in missing},
        "missing": missing,
        "methods": {},
    }
    for method in methods:
        per_portrait = values[method.name]
        keys = dict.fromkeys(k for v in per_portrait.values() for k in v)
        stacked = {k: np.stack([v[k] for v in per_portrait.values() if k in v]) for k in keys}  # (refs, yaws)
        frames = len(portraits) * len(yaws)
        report["methods"][method.name] = {
            "identifier": method.identifier,
            "resolution": method.resolution or size,
            "seconds": round(seconds[method.name], 3),
            "seconds_per_frame": round(seconds[method.name] / max(1, frames), 5),
            "mean": {k: nan_mean(v) for k, v in stacked.items()},
            "failures": {"no_face": int(frames - np.sum(stacked["tracked"]))},
            "per_sequence": {f"yaw {yaw:+.0f}°": {k: nan_mean(v[:, i]) for k, v in stacked.items()}
                             for i, yaw in enumerate(yaws)},
            "per_reference": {name: {k: nan_mean(v) for k, v in metrics.items()} for name, metrics in per_portrait.items()},
        }
    return report
