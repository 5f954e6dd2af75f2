"""`onehead eval`: every method on the same frames, every metric, one report.

Each method renders at its own resolution; outputs and targets are compared at one evaluation
size. Per frame: PSNR, SSIM, L1 (and inside the ground-truth head mask), LPIPS, CSIM, AKD, AED
and APD, each where its inputs exist. A metric that cannot run here is listed under "missing"
with the reason, never given a number. Frames where a face metric finds no face are counted
under "failures" and left out of that metric's means.
"""

from __future__ import annotations

import sys
import time
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from onehead.pixels import frames_to_uint8
from onehead.errors import MetricUnavailable
from onehead.evaluation.methods import Method
from onehead.evaluation.tasks import Item, evaluation_items
from onehead.files import write_json_atomic
from onehead.machine import machine_info
from onehead.metrics import image as image_metrics
from onehead.metrics import motion as motion_metrics

# what each reported number means (written into every report)
METRICS = {
    "psnr": "PSNR in dB against the ground truth (higher is better)",
    "ssim": "SSIM, Gaussian 11x11 window, sigma 1.5 (higher is better)",
    "l1": "mean absolute error, images in [0, 1] (lower is better)",
    "psnr_head": "PSNR inside the ground-truth head mask",
    "ssim_head": "SSIM inside the ground-truth head mask",
    "l1_head": "L1 inside the ground-truth head mask",
    "psnr_unseen": "PSNR on the head pixels whose surface point the reference does not show (what a mesh warp "
                   "can only inpaint; frames with fewer than 16 such pixels are left out)",
    "ssim_unseen": "SSIM on those pixels",
    "l1_unseen": "L1 on those pixels",
    "lpips": "LPIPS (AlexNet), weights from a user file (lower is better)",
    "csim": "cosine similarity of dlib face embeddings: to the ground truth (self) or the reference (cross)",
    "csim_distance": "Euclidean distance of the same embeddings (dlib calls < 0.6 the same person)",
    "akd": "mean distance of mediapipe's 68 points, output against ground truth, pixels",
    "akd_iod": "AKD over the ground truth's inter-ocular distance",
    "aed": "mean L1 of tracked expression coefficients and jaw pose, output against ground truth "
           "(or the driving frames without ground truth)",
    "apd": "mean L1 of the tracked head rotation (axis-angle, radians), same pairing as AED",
    "pose_angle_deg": "angle between the tracked head rotations, degrees",
    "flicker_head": "flicker against the ground truth: mean absolute difference between the output's change from "
                    "the previous frame and the ground truth's, inside the ground-truth head masks of both frames, "
                    "8-bit levels (lower is better; consecutive frames only)",
}
MIN_UNSEEN_PIXELS = 16
FACE_KEYS = ("csim", "csim_distance", "akd", "akd_iod", "aed", "apd", "pose_angle_deg")


@dataclass
class EvalOptions:
    task: str = "self"
    size: int | None = None  # evaluation size; default: the smallest model resolution (64 without models)
    lpips_weights: str | None = None  # or $ONEHEAD_LPIPS_WEIGHTS
    face_models: str | None = None  # dlib files for CSIM, or $ONEHEAD_FACE_MODELS, or the cache
    motion_metrics: bool = True  # AKD / AED / APD (tracks every output)
    max_items: int | None = None
    video: str | None = None  # grid video of reference, target and every method
    trained_on: dict | None = None  # task avatar: the avatar's training record (those frames are not scored)
    frames: str | None = None  # task avatar: only frames in this slice, e.g. "100:120"
    matte: float | None = None  # targets composited onto this grey with their masks (what avatars render)
    progress: bool = True
    command: str = ""


@dataclass
class _Scores:
    values: dict = field(default_factory=lambda: defaultdict(list))  # metric -> per-frame arrays
    sequences: list = field(default_factory=list)  # the item name of each frame
    seconds: float = 0.0
    frames: int = 0


def evaluate(data: str | Path, methods: list[Method], options: EvalOptions) -> dict:
    """Run every method on the task's items; the report as a dict (see METRICS)."""
    from tqdm import tqdm

    from onehead.pipelines.reenactment import driving_motion, prepare_reference

    from onehead.data.datasets import parse_frames

    items = evaluation_items(data, options.task, options.trained_on, parse_frames(options.frames))[: options.max_items]
    names = [m.name for m in methods]
    for i, (method, name) in enumerate(zip(methods, names)):  # two folders with one name: number them
        if names.count(name) > 1:
            method.name = f"{name}#{names[:i].count(name) + 1}"
    size = options.size or min([m.resolution for m in methods if m.resolution] or [64])
    lpips_model, csim_embedder, missing = _perceptual_models(options)
    if not options.motion_metrics:
        missing.update({k: "switched off (--no-motion-metrics)" for k in ("akd", "akd_iod", "aed", "apd")})
    from onehead.head.model import load_head_model

    metric_head = load_head_model("basic")  # one tracker for every output: AED and APD comparable
    scores = {m.name: _Scores() for m in methods}
    grid = []
    for item in tqdm(items, desc="evaluating", unit="clip", disable=not options.progress):
        target, mask = (None, None) if item.target is None else item.target.tensors(item.frames, size)
        if options.matte is not None and mask is not None:
            target = target * mask + options.matte * (1 - mask)
        driving_tracking = item.driving.tracking.select(item.frames)
        unseen = None  # the head pixels a warp of the reference cannot show (one-shot tasks, basic head only)
        if target is not None and options.task != "avatar" and item.target.tracking.head_model == metric_head.kind:
            unseen = unseen_mask(item, size, metric_head)
        truth = frames_to_uint8(target) if target is not None else _driving_frames(item, size)
        truth_tracking = _track(truth, metric_head, options)
        outputs = {}
        for method in methods:
            resolution = method.resolution or size
            start = time.perf_counter()
            ref = prepare_reference(item.reference_image, method.head, resolution, item.reference.tracking,
                                    foreground=item.reference_foreground)
            motion = driving_motion(driving_tracking, ref, method.head, resolution, camera=item.camera)
            frames = method.run(ref, motion).float()
            scores[method.name].seconds += time.perf_counter() - start
            frames = resize_frames(frames, size)
            outputs[method.name] = frames
            values = _frame_scores(frames, target, mask, item, truth_tracking, metric_head, size,
                                   lpips_model, csim_embedder, options, unseen)
            record = scores[method.name]
            for key, value in values.items():
                record.values[key].append(np.asarray(value, np.float64))
            record.sequences += [item.name] * len(frames)
            record.frames += len(frames)
        if options.video:
            grid.append(_grid_rows(item, size, truth, outputs))
    report = _report(data, items, size, methods, scores, missing, options)
    if options.video:
        _write_grid(options.video, grid, ["reference", "ground truth" if items[0].target else "driving"]
                    + [m.name for m in methods])
    return report


# ----------------------------------------------------------------------------- per frame
def _frame_scores(frames, target, mask, item: Item, truth_tracking, metric_head, size: int,
                  lpips_model, csim_embedder, options: EvalOptions, unseen=None) -> dict:
    values = {}
    if target is not None and unseen is not None:
        enough = unseen.flatten(1).sum(1) >= MIN_UNSEEN_PIXELS
        nan = torch.tensor(float("nan"))
        for key, metric in (("psnr_unseen", image_metrics.psnr), ("ssim_unseen", image_metrics.ssim),
                            ("l1_unseen", image_metrics.l1)):
            values[key] = torch.where(enough, metric(frames, target, unseen), nan)
    if target is not None:
        values["psnr"] = image_metrics.psnr(frames, target)
        values["ssim"] = image_metrics.ssim(frames, target)
        values["l1"] = image_metrics.l1(frames, target)
        if mask is not None:
            values["psnr_head"] = image_metrics.psnr(frames, target, mask)
            values["ssim_head"] = image_metrics.ssim(frames, target, mask)
            values["l1_head"] = image_metrics.l1(frames, target, mask)
            values["flicker_head"] = _flicker_head(frames, target, mask, item.frames)
        if lpips_model is not None:
            from onehead.metrics.lpips import lpips

            with torch.no_grad():
                values["lpips"] = torch.cat([lpips(a, b, lpips_model) for a, b in
                                             zip(frames.split(16), target.split(16))])
    values = {k: v.numpy() for k, v in values.items()}
    pixels = frames_to_uint8(frames)
    if csim_embedder is not None:
        if target is not None:
            anchors = csim_embedder.embed(frames_to_uint8(target))
        else:
            reference = resize_frames(_tensor(item.reference_image), size)
            anchors = np.repeat(csim_embedder.embed(frames_to_uint8(reference)), len(frames), 0)
        embeddings = csim_embedder.embed(pixels)
        values["csim"] = _cosine(embeddings, anchors)
        values["csim_distance"] = np.linalg.norm(embeddings - anchors, axis=-1)
    if options.motion_metrics:
        tracking, scale = motion_metrics.track_for_metrics(pixels, metric_head)
        truth, truth_scale = truth_tracking
        found = motion_metrics.motion_metrics(tracking, truth, len(frames), scale, truth_scale)
        if target is None:  # no ground truth: keypoints are not comparable, expressions and poses are
            found.pop("akd"), found.pop("akd_iod")
        values.update(found)
    return values


def _flicker_head(frames, target, mask, indices: list[int]) -> torch.Tensor:
    """Per frame: change_error from the previous frame; NaN for the first frame and after a gap."""
    from onehead.metrics.temporal import change_error

    values = torch.full((len(frames),), float("nan"))
    if len(frames) >= 2:
        consecutive = torch.tensor(np.diff(indices) == 1)
        values[1:] = torch.where(consecutive, change_error(frames, target, mask), values[1:])
    return values


def unseen_mask(item: Item, size: int, head) -> torch.Tensor:
    """(T, 1, S, S): the target's head pixels whose surface point is hidden in the reference, from
    the two trackings (the ground-truth motion of the target, the reference's frame 0)."""
    from onehead.camera import scale_intrinsics
    from onehead.render.warp import warp_reference

    def posed(tracking):
        params = {k: torch.as_tensor(v) for k, v in tracking.head_params().items()}
        K = scale_intrinsics(torch.as_tensor(tracking.K), tuple(int(v) for v in tracking.image_size), (size, size))
        with torch.no_grad():
            return head(**params).vertices, K, torch.as_tensor(tracking.world_to_cam)

    ref_vertices, ref_K, ref_w2c = posed(item.reference.tracking.select([0]))
    vertices, K, w2c = posed(item.target.tracking.select(item.frames))
    warp = warp_reference(torch.zeros(1, 3, size, size), head.faces, ref_vertices, ref_K[0], ref_w2c[0],
                          vertices, K, w2c)
    return warp.covered * (1 - warp.visible)


def _cosine(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return (a * b).sum(-1) / (np.linalg.norm(a, axis=-1) * np.linalg.norm(b, axis=-1))


def _track(frames: np.ndarray, head, options: EvalOptions):
    if not options.motion_metrics:
        return None, 1.0
    return motion_metrics.track_for_metrics(frames, head)


def _driving_frames(item: Item, size: int) -> np.ndarray:
    images, _ = item.driving.tensors(item.frames, size)
    return frames_to_uint8(images)


def _tensor(image: np.ndarray) -> torch.Tensor:
    """uint8 (H, W, 3) -> float (1, 3, H, W) in [0, 1] (a copy: frames read from disk may be read-only)."""
    return torch.tensor(image).permute(2, 0, 1)[None].float() / 255


def resize_frames(frames: torch.Tensor, size: int) -> torch.Tensor:
    """(T, 3, H, W) frames resized to (size, size) (bilinear, antialiased), clamped to [0, 1]."""
    if tuple(frames.shape[-2:]) == (size, size):
        return frames
    return F.interpolate(frames, size=(size, size), mode="bilinear", antialias=True, align_corners=False).clamp(0, 1)


def _perceptual_models(options: EvalOptions):
    missing = {}
    lpips_model = csim_embedder = None
    try:
        from onehead.metrics.lpips import load_lpips

        lpips_model = load_lpips(options.lpips_weights)
    except MetricUnavailable as exc:
        missing["lpips"] = str(exc)
    try:
        from onehead.metrics.identity import load_face_embedder

        csim_embedder = load_face_embedder(options.face_models)
    except MetricUnavailable as exc:
        missing["csim"] = missing["csim_distance"] = str(exc)
    return lpips_model, csim_embedder, missing


# ----------------------------------------------------------------------------- the report
def _report(data, items, size, methods, scores, missing, options: EvalOptions) -> dict:
    report = {
        "command": options.command,
        "task": options.task,
        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "data": {"path": str(Path(data).resolve()), "fingerprint": data_fingerprint(data, items),
                 "items": len(items), "frames": sum(len(i.frames) for i in items),
                 "ground_truth": items[0].target is not None},
        "size": size,
        "machine": machine_info(),
        "metrics": {k: v for k, v in METRICS.items() if k not in missing},
        "missing": missing,
        "methods": {},
    }
    for method in methods:
        record = scores[method.name]
        per_frame = {key: np.concatenate(parts) for key, parts in record.values.items()}
        sequences = np.array(record.sequences)
        report["methods"][method.name] = {
            "identifier": method.identifier,
            "resolution": method.resolution or size,
            "seconds": round(record.seconds, 3),
            "seconds_per_frame": round(record.seconds / max(1, record.frames), 5),
            "mean": {k: nan_mean(v) for k, v in per_frame.items()},
            "failures": {k: int(np.isnan(v).sum()) for k, v in per_frame.items() if k in FACE_KEYS},
            "per_sequence": {name: {k: nan_mean(v[sequences == name]) for k, v in per_frame.items()}
                             for name in dict.fromkeys(record.sequences)},
        }
    return report


def nan_mean(values: np.ndarray) -> float | None:
    """The mean of the values that are not NaN, to 5 decimals; None when every value is NaN."""
    values = values[~np.isnan(values)]
    return round(float(values.mean()), 5) if len(values) else None


def data_fingerprint(data, items: list[Item]) -> str:
    """sha256 of the trackings and the pairs file the items read (their bytes), 16 hex digits."""
    import hashlib

    digest = hashlib.sha256()
    root = Path(data)
    files = sorted({v.directory / "tracking.npz" for i in items for v in (i.reference, i.driving, i.target) if v})
    if (root / "pairs.json").is_file():
        files.append(root / "pairs.json")
    for path in files:
        digest.update(path.read_bytes())
    return digest.hexdigest()[:16]


def format_table(report: dict, per_sequence: bool | None = None) -> str:
    """The mean scores as a markdown table, one row per method, in the order of the report's
    metrics; per_sequence (default: for the real task) adds a row per method and sequence (for the
    real task: per reference portrait). A method run below the evaluation size is marked with its
    resolution."""
    order = list(report.get("metrics") or METRICS)
    keys = [k for k in order if any(m["mean"].get(k) is not None for m in report["methods"].values())]
    lines = ["| method | " + " | ".join(keys) + " | s/frame |", "|---" * (len(keys) + 2) + "|"]
    if per_sequence is None:
        per_sequence = report.get("task") == "real"
    for name, entry in report["methods"].items():
        label = name if entry.get("resolution", report["size"]) == report["size"] else \
            f"{name} ({entry['resolution']}², upsampled)"
        rows = [(label, entry["mean"])]
        if per_sequence:
            rows += [(f"{label} · {sequence}", values) for sequence, values in entry.get("per_sequence", {}).items()]
        for row, values in rows:
            cells = [_cell(values.get(k)) for k in keys]
            lines.append(f"| {row} | " + " | ".join(cells) + f" | {entry['seconds_per_frame']:.4f} |")
    return "\n".join(lines)


def _cell(value) -> str:
    if value is None:
        return "n/a"
    return f"{value:.2f}" if abs(value) >= 10 else f"{value:.4f}" if abs(value) < 1 else f"{value:.3f}"


def write_report(report: dict, path: str | Path) -> Path:
    """Write the report as JSON, atomically (onehead.files)."""
    return write_json_atomic(path, report)


# ----------------------------------------------------------------------------- the grid video
def _grid_rows(item: Item, size: int, truth: np.ndarray, outputs: dict) -> np.ndarray:
    """(T, size, size * (2 + methods), 3) uint8: reference | target or driving | each method."""
    reference = resize_frames(_tensor(item.reference_image), size)
    reference = np.repeat(frames_to_uint8(reference), len(truth), 0)
    return np.concatenate([reference, truth] + [frames_to_uint8(f) for f in outputs.values()], axis=2)


def _write_grid(path: str, clips: list[np.ndarray], labels: list[str], tile: int = 192) -> None:
    import cv2

    from onehead.data.video import write_video

    frames = np.concatenate(clips)
    scale = max(1, tile // frames.shape[1])
    if scale > 1:
        frames = np.stack([cv2.resize(f, None, fx=scale, fy=scale, interpolation=cv2.INTER_NEAREST) for f in frames])
    side = frames.shape[1]
    header = np.full((28, frames.shape[2], 3), 255, np.uint8)
    for i, label in enumerate(labels):
        cv2.putText(header, label[: max(4, side // 9)], (i * side + 4, 19), cv2.FONT_HERSHEY_SIMPLEX, 0.5,
                    (0, 0, 0), 1, cv2.LINE_AA)
    frames = np.concatenate([np.repeat(header[None], len(frames), 0), frames], axis=1)
    write_video(path, frames, fps=12)


def command_line() -> str:
    return " ".join(["onehead"] + sys.argv[1:]) if sys.argv and sys.argv[0].endswith("onehead") else " ".join(sys.argv)
