"""`onehead eval --task tracking`: the tracker against the exact truth of synthetic heads.

Each view of each sequence of a dataset whose tracking files are the truth (`onehead synth`) is
tracked as a video from its frames alone, as `onehead track` does (the tracker's own camera and
focal length, not the truth's), and compared with the parameters that rendered it:

- the head's rotation as the camera sees it (the view's rotation times the head's), so the two
  cameras need not agree: its error in degrees, and the error of its turn from the first frame
  (the motion, where a fixed offset cancels);
- gains: how much of the true turn from the first frame about the camera's vertical axis (turn),
  horizontal axis (nod) and viewing axis (tilt) the tracker reads, a least-squares slope (1: all);
- the expression: its coefficients (mean absolute difference, AED against the truth), the jaw's
  opening, and what they do to the face: the distance between the face's 478 dense points
  (onehead.tracking.dense) posed with the tracked and with the true expression and jaw, on the
  true identity at rest, in millimetres. The baseline `neutral` (no expression, the jaw closed)
  says how much the truth's expression there is to read;
- the reported 68 points (`landmarks68`) against the truth's, over its outer-eye-corner distance,
  with mediapipe's mapped points from the same run as the baseline.

The baseline `mediapipe` also reads the head's motion from the detector alone: the rigid turn of
its 468 points in 3D (x, y and its relative depth, a least-squares similarity) from the first
frame, so the tracker's motion error and gains stand beside what its input says.

The summary row pools every frame of every view (medians for the angles, slopes over all frames
for the gains); `per_view` pools each camera view (synth's cam00 is near-frontal). The grid video
shows each view's frames twice: with the true head's mesh and 68 points, and with the tracked
head's, its reported 68 points (red) and mediapipe's (green).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
from scipy.spatial.transform import Rotation

from onehead.data.sequence import list_sequences, open_sequence
from onehead.errors import MediaReadError, NoFaceError
from onehead.machine import machine_info
from onehead.metrics.motion import pearson
from onehead.tracking.stability import IBUG_INNER_LIPS, IBUG_OUTER_EYES, opening

if TYPE_CHECKING:
    from onehead.data.tracking_file import Tracking
    from onehead.head.model import HeadModel
    from onehead.tracking.tracker import TrackOptions

TASK = "tracking"
JAW, INNER = slice(0, 17), slice(17, 68)
TRACKING_METRICS = {
    "rotation_deg": "error of the head's rotation as the camera sees it, degrees (median over frames)",
    "motion_deg": "error of the head's turn from the first frame, degrees (median over frames)",
    "turn_gain": "tracked over true turn about the camera's vertical axis, from the first frame (1: exact)",
    "nod_gain": "the same about the camera's horizontal axis",
    "tilt_gain": "the same about the viewing axis",
    "expression_l1": "mean absolute error of the expression coefficients (AED against the truth)",
    "expression_mm": "distance of the face's dense points posed with the tracked and the true expression and "
                     "jaw, on the true identity at rest, millimetres (mean)",
    "mouth_r": "Pearson r of the mouth's opening (inner-lip gap over the eye distance of the face at rest), "
               "tracked against true, all frames pooled",
    "mouth_gain": "tracked over true mouth opening, a least-squares slope of the two about their means (1: exact)",
    "jaw_deg": "error of the jaw's opening (its rotation about the head's x axis), degrees (mean over frames)",
    "nme": "mean distance of the reported 68 points from the truth's, over its outer-eye-corner distance",
    "nme_jaw": "the same over the 17 jaw points",
    "nme_inner": "the same over the 51 inner points",
    "found": "share of frames where mediapipe found the face",
}
AXES = {"nod_gain": 0, "turn_gain": 1, "tilt_gain": 2}  # camera axes: x right, y down, z forward (OpenCV)


@dataclass
class TrackingEvalOptions:
    progress: bool = True
    command: str = ""
    max_items: int | None = None
    track: TrackOptions | None = None  # default: the tracker's own defaults
    video: str | None = None  # a grid video: each view's frames with the true head | the tracked one


def head_in_camera(tracking: Tracking) -> Rotation:
    """(T) the head's rotation as its camera sees it: the view's rotation times global and neck pose."""
    world = (Rotation.from_rotvec(np.asarray(tracking.global_pose, np.float64))
             * Rotation.from_rotvec(np.asarray(tracking.neck_pose, np.float64)))
    return Rotation.from_matrix(np.asarray(tracking.world_to_cam, np.float64)[:, :3, :3]) * world


def turns_from_first(rotations: Rotation) -> np.ndarray:
    """(T, 3) rotation vectors of each frame's turn from the first, in the camera's axes."""
    return (rotations * rotations[0].inv()).as_rotvec()


def faces_at_rest(head: HeadModel, tracking: Tracking, shape: np.ndarray):
    """The head with `shape` and the tracking's expression and jaw, unposed: HeadOutput whose
    points are the face's 478 dense points (onehead.tracking.dense) and landmarks68 its 68."""
    import torch

    from onehead.tracking.dense import dense_points

    with torch.no_grad():
        return head(shape=torch.from_numpy(np.asarray(shape, np.float32))[None],
                    expression=torch.from_numpy(np.asarray(tracking.expression, np.float32)),
                    jaw_pose=torch.from_numpy(np.asarray(tracking.jaw_pose, np.float32)),
                    landmarks_only=True, frontal_contour=True, points=dense_points(head))


def neutral_like(tracking: Tracking) -> Tracking:
    """The `neutral` baseline: the tracking with no expression and the jaw closed."""
    return replace(tracking, expression=np.zeros_like(tracking.expression), jaw_pose=np.zeros_like(tracking.jaw_pose))


def compare(tracked: Tracking, truth: Tracking, head: HeadModel, true_face=None) -> dict:
    """Per-frame errors of one tracked view against its truth (arrays; pooled by `summarise`).
    true_face: `faces_at_rest(head, truth, truth.shape)` when the caller has it."""
    from onehead.tracking.landmarks import MEDIAPIPE_TO_IBUG68

    if tracked.expression.shape != truth.expression.shape:
        raise MediaReadError(f"the truth has {truth.expression.shape[1]} expression coefficients over "
                             f"{len(truth.expression)} frames, the tracking {tracked.expression.shape[1]} over "
                             f"{len(tracked.expression)}: track with the head model that rendered the data")
    ours, true = head_in_camera(tracked), head_in_camera(truth)
    face = faces_at_rest(head, tracked, truth.shape)
    true_face = faces_at_rest(head, truth, truth.shape) if true_face is None else true_face
    ours_turn, true_turn = turns_from_first(ours), turns_from_first(true)
    labels = truth.landmarks68.astype(np.float64)
    eyes = np.linalg.norm(labels[:, 45] - labels[:, 36], axis=-1)[:, None]
    detected = tracked.landmarks_mp[:, list(MEDIAPIPE_TO_IBUG68)].astype(np.float64)
    return {
        "rotation_deg": np.degrees((ours * true.inv()).magnitude()),
        "turn_ours": ours_turn, "turn_true": true_turn,
        "expression_l1": np.abs(tracked.expression - truth.expression).mean(-1),
        "expression_mm": 1000 * (face.points - true_face.points).norm(dim=-1).mean(-1).numpy(),
        "mouth_ours": opening(face.landmarks68.numpy(), IBUG_INNER_LIPS, IBUG_OUTER_EYES),
        "mouth_true": opening(true_face.landmarks68.numpy(), IBUG_INNER_LIPS, IBUG_OUTER_EYES),
        "jaw_deg": np.degrees(np.abs(tracked.jaw_pose[:, 0] - truth.jaw_pose[:, 0])),  # the opening
        "distance": np.linalg.norm(tracked.landmarks68 - labels, axis=-1) / eyes,  # (T, 68)
        "distance_mediapipe": np.linalg.norm(detected - labels, axis=-1) / eyes,  # NaN where lost
        "found": tracked.valid.astype(np.float64),
    }


def detected_turns(points: np.ndarray) -> np.ndarray:
    """(T, 3) rotation vectors, camera axes, of the rigid turn from the first frame of mediapipe's
    points (T, P, 3) (x, y, relative depth: x right, y down, z away, like the camera's): the
    rotation of the least-squares similarity taking the first frame's points onto each frame's.
    NaN rows where a frame, or the first, has no face."""
    from onehead.head.geometry import similarity_transform

    turns = np.full((len(points), 3), np.nan)
    found = np.isfinite(points).all((1, 2))
    if found[0]:
        for t in np.flatnonzero(found):
            turns[t] = Rotation.from_matrix(similarity_transform(points[0], points[t])[1]).as_rotvec()
    return turns


def motion_scores(turns: np.ndarray, true_turns: np.ndarray) -> dict:
    """motion_deg (median) and the turn, nod and tilt gains of turns (T, 3) against the true ones
    (rotation vectors from the first frame), over the rows where both are finite."""
    found = np.isfinite(turns).all(-1) & np.isfinite(true_turns).all(-1)
    turns, true_turns = turns[found], true_turns[found]
    if not found.any():
        return {}
    error = (Rotation.from_rotvec(turns) * Rotation.from_rotvec(true_turns).inv()).magnitude()
    scores = {"motion_deg": float(np.median(np.degrees(error)))}
    for name, axis in AXES.items():
        true = true_turns[:, axis]
        scores[name] = float((turns[:, axis] * true).sum() / max((true * true).sum(), 1e-12))
    return scores


def summarise(parts: list[dict]) -> dict:
    """The metrics of several compared views, their frames pooled."""
    pooled = {key: np.concatenate([p[key] for p in parts]) for key in parts[0]}
    scores = {"rotation_deg": float(np.median(pooled["rotation_deg"])),
              **motion_scores(pooled["turn_ours"], pooled["turn_true"]),
              "expression_l1": float(pooled["expression_l1"].mean()),
              "expression_mm": float(pooled["expression_mm"].mean()),
              "jaw_deg": float(pooled["jaw_deg"].mean()),
              "found": float(pooled["found"].mean())}
    mouth = pearson(pooled["mouth_ours"], pooled["mouth_true"])
    scores["mouth_r"] = None if np.isnan(mouth["r"]) else mouth["r"]
    scores["mouth_gain"] = None if np.isnan(mouth["gain"]) else mouth["gain"]
    scores.update(_nme(pooled["distance"]))
    return scores


def summarise_neutral(parts: list[dict]) -> dict:
    """The `neutral` baseline's expression scores (its parts compare `neutral_like` trackings)."""
    return {key: float(np.concatenate([p[key] for p in parts]).mean())
            for key in ("expression_l1", "expression_mm", "jaw_deg")}


def summarise_mediapipe(parts: list[dict]) -> dict:
    """The detector's own scores: its mapped 68 points, and the rigid turn of its 3D points."""
    distance = np.concatenate([p["distance_mediapipe"] for p in parts])
    found = np.isfinite(distance).all(-1)
    turns = [p["turn_mediapipe"] for p in parts if "turn_mediapipe" in p]
    motion = motion_scores(np.concatenate(turns), np.concatenate([p["turn_true"] for p in parts])) if turns else {}
    return {**motion, **(_nme(distance[found]) if found.any() else {}), "found": float(found.mean())}


def _nme(distance: np.ndarray) -> dict:
    return {"nme": float(distance.mean()), "nme_jaw": float(distance[:, JAW].mean()),
            "nme_inner": float(distance[:, INNER].mean())}


def truth_views(root: str | Path) -> list[tuple[str, str, object]]:
    """(sequence, view name, View) for every view of a synthetic dataset with two or more frames."""
    views = []
    for directory in list_sequences(root):
        sequence = open_sequence(directory)
        if sequence.meta.domain != "synthetic":
            continue  # a real video's tracking is itself a fit, not a truth
        views += [(sequence.name, name, view) for name, view in sequence.views.items() if view.num_frames >= 2]
    if not views:
        raise MediaReadError(f"--data {root}: no synthetic sequence with two or more frames (onehead synth writes "
                             "them); --task tracking needs exact ground truth")
    return views


def evaluate_tracking(root: str | Path, options: TrackingEvalOptions | None = None) -> dict:
    """Track every view of a synthetic dataset; the report as a dict (TRACKING_METRICS)."""
    from tqdm import tqdm

    from onehead.head.model import load_head_model
    from onehead.tracking.tracker import TrackOptions, detect_frames, fit_sequence
    from onehead.tracking.visualize import overlay_tracking

    options = options or TrackingEvalOptions()
    track_options = options.track or TrackOptions(progress=False)
    views = truth_views(root)[: options.max_items]
    heads = {}
    parts, neutral, lost, seconds, frames = {}, {}, {}, 0.0, 0
    grid = []
    for sequence, view_name, view in tqdm(views, desc="tracking", unit="view", disable=not options.progress):
        truth = view.tracking
        if truth.head_model not in heads:
            heads[truth.head_model] = load_head_model(truth.head_model)
        pixels = np.stack([view.frame(i) for i in range(view.num_frames)])
        start = time.perf_counter()
        frames += len(pixels)
        detections = detect_frames(pixels, mode="video")  # as track_frames, keeping the detections
        tracked = (fit_sequence(heads[truth.head_model], detections, pixels.shape[1:3], track_options, float(truth.fps))
                   if detections.valid.any() else None)
        seconds += time.perf_counter() - start
        if tracked is None:
            lost[(sequence, view_name)] = len(pixels)  # no frame to score; counts against `found`
            continue
        true_face = faces_at_rest(heads[truth.head_model], truth, truth.shape)  # shared with `neutral`
        parts[(sequence, view_name)] = compare(tracked, truth, heads[truth.head_model], true_face)
        points = np.concatenate([detections.points, detections.depth[..., None]], -1)[:, :468]
        parts[(sequence, view_name)]["turn_mediapipe"] = detected_turns(points.astype(np.float64))
        if options.video:
            grid.append(np.concatenate([overlay_tracking(pixels, truth, heads[truth.head_model], show_detections=False),
                                        overlay_tracking(pixels, tracked, heads[truth.head_model])], axis=2))
        neutral[(sequence, view_name)] = compare(neutral_like(tracked), truth, heads[truth.head_model], true_face)
    if not parts:
        raise NoFaceError(f"--data {root}: mediapipe found no face in any view")
    if options.video:
        from onehead.evaluation.run import _write_grid

        _write_grid(options.video, grid, ["truth: mesh, 68 points", "onehead: mesh, 68, mediapipe"])

    def rows(summary, parts=parts):
        def scores(keys):
            found = [parts[k] for k in keys if k in parts]
            if not found:
                return {"found": 0.0}
            result = summary(found)
            seen = sum(len(p["found"]) for p in found)
            if "found" in result:
                result["found"] *= seen / (seen + sum(lost.get(k, 0) for k in keys))
            return result
        keys = list(dict.fromkeys(list(parts) + list(lost)))
        views = dict.fromkeys(v for _, v in keys)
        return {"mean": scores(keys),
                "per_view": {name: scores([k for k in keys if k[1] == name]) for name in views},
                "per_sequence": {f"{s}/{v}": scores([(s, v)]) for s, v in keys}}

    methods = {"onehead": {**rows(summarise), "seconds_per_frame": seconds / max(frames, 1)},
               "mediapipe": {**rows(summarise_mediapipe), "seconds_per_frame": 0.0},
               "neutral": {**rows(summarise_neutral, neutral), "seconds_per_frame": 0.0}}
    return {"task": TASK, "size": None, "metrics": TRACKING_METRICS, "methods": methods, "missing": {},
            "data": {"folder": str(root), "items": len(parts), "frames": frames},
            "command": options.command, "machine": machine_info()}
