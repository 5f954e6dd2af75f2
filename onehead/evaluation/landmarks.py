"""`onehead eval --task landmarks`: the tracker's 68 points against labelled images.

A folder of images, each with its iBUG-68 labels beside it in 300-W's `.pts` format (same name,
`.pts` extension; coordinates are read as pixels, as written). Each image goes through
`onehead.track_image`, as `onehead track IMAGE` does, and is scored by the NME: the mean distance
of the 68 points over the labels' outer-eye-corner distance (36-45). The baseline is mediapipe's
own 68 points from the same run (`MEDIAPIPE_TO_IBUG68`). An image where no face is found has no
NME and counts in `found`.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from onehead.data.images import is_image_path, load_image
from onehead.errors import MediaReadError
from onehead.machine import machine_info

if TYPE_CHECKING:
    from onehead.tracking.tracker import TrackOptions

TASK = "landmarks"
JAW = slice(0, 17)
INNER = slice(17, 68)
LANDMARK_METRICS = {
    "nme": "mean distance of the 68 points from the labels, over the labels' outer-eye-corner distance "
           "(lower is better)",
    "nme_jaw": "the same over the 17 jaw points",
    "nme_inner": "the same over the 51 inner points (brows, nose, eyes, mouth)",
    "better_than_mediapipe": "share of images where the method's NME is below mediapipe's",
    "found": "share of images where a face was found",
}


@dataclass
class LandmarkOptions:
    progress: bool = True
    command: str = ""
    track: TrackOptions | None = None  # default: the tracker's own defaults


def read_pts(path: str | Path) -> np.ndarray:
    """(N, 2) points of a 300-W `.pts` file: `version: 1`, `n_points: N`, then N `x y` lines in braces."""
    path = Path(path)
    try:
        text = path.read_text(encoding="ascii")
    except (OSError, UnicodeDecodeError) as exc:
        raise MediaReadError(f"{path}: cannot read the labels ({exc})") from None
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    header = {k.strip(): v.strip() for k, _, v in (line.partition(":") for line in lines if ":" in line)}
    try:
        count = int(header["n_points"])
        body = lines[lines.index("{") + 1: lines.index("}")]
        points = np.array([[float(v) for v in line.split()] for line in body], np.float64)
    except (KeyError, ValueError) as exc:
        raise MediaReadError(f"{path}: not a .pts file (n_points, then x y lines between {{ and }}): {exc}") from None
    if points.shape != (count, 2):
        raise MediaReadError(f"{path}: n_points says {count}, the file has {points.shape[0]} lines of x y")
    return points


def write_pts(path: str | Path, points: np.ndarray) -> None:
    lines = ["version: 1", f"n_points: {len(points)}", "{"] + [f"{x:.3f} {y:.3f}" for x, y in points] + ["}"]
    Path(path).write_text("\n".join(lines) + "\n", encoding="ascii")


def labelled_images(folder: str | Path) -> list[tuple[Path, Path]]:
    """(image, labels) pairs of a folder: every image file with a `.pts` of the same name."""
    folder = Path(folder)
    if not folder.is_dir():
        raise MediaReadError(f"--data {folder}: not a folder")
    pairs = [(image, image.with_suffix(".pts")) for image in sorted(folder.iterdir())
             if is_image_path(image) and image.with_suffix(".pts").is_file()]
    if not pairs:
        raise MediaReadError(f"--data {folder}: no image with labels beside it (IMAGE.png and IMAGE.pts)")
    return pairs


def nme(points: np.ndarray, labels: np.ndarray) -> dict:
    """NME over all, jaw and inner points, over the labels' outer-eye-corner distance."""
    distance = np.linalg.norm(points - labels, axis=-1) / np.linalg.norm(labels[45] - labels[36])
    return {"nme": float(distance.mean()), "nme_jaw": float(distance[JAW].mean()),
            "nme_inner": float(distance[INNER].mean())}


def evaluate_landmarks(folder: str | Path, options: LandmarkOptions | None = None) -> dict:
    """Track every labelled image of `folder`; the report as a dict (LANDMARK_METRICS)."""
    from tqdm import tqdm

    from onehead.head.model import load_head_model
    from onehead.tracking.landmarks import MEDIAPIPE_TO_IBUG68
    from onehead.tracking.tracker import TrackOptions, detect_frames, fit_sequence

    options = options or LandmarkOptions()
    track_options = options.track or TrackOptions(progress=False)
    head = load_head_model("basic")
    rows = {"onehead": {}, "mediapipe": {}}
    seconds = {"onehead": 0.0, "mediapipe": 0.0}
    for image_path, label_path in tqdm(labelled_images(folder), desc="labelled images", unit="image",
                                       disable=not options.progress):
        labels = read_pts(label_path)
        if labels.shape != (68, 2):
            raise MediaReadError(f"{label_path}: {len(labels)} points; the iBUG layout has 68")
        pixels = load_image(image_path)
        start = time.perf_counter()
        detections = detect_frames(pixels[None], mode="image")  # as onehead.track_image
        seconds["mediapipe"] += time.perf_counter() - start
        if not detections.valid[0]:
            for method in rows:
                rows[method][image_path.name] = {"found": 0.0}
            continue
        tracking = fit_sequence(head, detections, pixels.shape[:2], track_options)
        seconds["onehead"] += time.perf_counter() - start
        ours = nme(tracking.landmarks68[0], labels)
        detected = nme(tracking.landmarks_mp[0][list(MEDIAPIPE_TO_IBUG68)], labels)
        rows["onehead"][image_path.name] = {**ours, "found": 1.0,
                                            "better_than_mediapipe": float(ours["nme"] < detected["nme"])}
        rows["mediapipe"][image_path.name] = {**detected, "found": 1.0}
    count = len(rows["onehead"])
    methods = {}
    for method, per_image in rows.items():
        mean = {}
        for key in LANDMARK_METRICS:
            values = [v[key] for v in per_image.values() if key in v]
            mean[key] = float(np.mean(values)) if values else None
        methods[method] = {"mean": mean, "per_sequence": per_image,
                           "seconds_per_frame": seconds[method] / max(count, 1)}
    return {"task": TASK, "size": None, "metrics": LANDMARK_METRICS, "methods": methods, "missing": {},
            "data": {"folder": str(folder), "items": count, "frames": count},
            "command": options.command, "machine": machine_info()}

