"""`onehead eval --task real`: real portraits driven by a real video, with no ground truth.

Every reference portrait (an image file, or a bundled sample: astronaut, grace_hopper) is driven
by every frame of one driving video (a file, or carphone, the bundled real clip). Each method runs
at its own resolution (the baselines at the evaluation size); a smaller output is upsampled to the
evaluation size before it is scored, and the report says so. The reference and the driving video
are tracked once per head model and shared by every method (the tracking is timed apart).

Scored per reference and in the mean (REAL_METRICS says exactly how):
- against the reference: identity kept (dlib, same-person threshold 0.6), CSIM;
- against the driving frames: mouth r, AED, APD (against the driving rotation applied to the
  reference's), and a motion AKD (displacements from each clip's mean shape, the driving's mapped
  into the output's frame; absolute keypoints of two identities are not comparable);
- flicker away from the head.
A metric that cannot run here is listed under "missing" with the reason, never given a number.
"""

from __future__ import annotations

import hashlib
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from onehead.errors import ConfigError, MediaReadError, MetricUnavailable, NoFaceError
from onehead.evaluation.methods import Method
from onehead.evaluation.run import nan_mean, resize_frames
from onehead.machine import machine_info
from onehead.metrics import motion as motion_metrics
from onehead.metrics.identity import DLIB_THRESHOLD, TURNS, identity_kept
from onehead.metrics.temporal import flicker, still_regions
from onehead.pixels import frames_to_uint8

TASK = "real"
DEFAULT_SIZE = 256
SAMPLE_DRIVING = ("carphone",)
FLICKER_GROW = 0.02  # the head silhouettes grow by this fraction of the size before flicker is measured

REAL_METRICS = {
    "identity_kept": f"share of output frames whose dlib face descriptor lies within {DLIB_THRESHOLD} (Euclidean, "
                     "dlib's same-person threshold) of the reference crop's; a frame with no face counts as lost "
                     "(higher is better)",
    "identity_kept_rolled": "the same, where a frame without a face is searched again turned in its plane by "
                            + ", ".join(f"{t:g}" for t in TURNS) + " degrees (dlib's HOG detector misses faces "
                            "rolled far from upright, sooner on a face turned towards profile); a frame lost here "
                            "shows no face the detector finds at any of those rolls, or another person",
    "csim": "cosine similarity of dlib face descriptors, output against the reference crop, frames with a face",
    "csim_distance": "Euclidean distance of the same descriptors (dlib calls < 0.6 the same person)",
    "mouth_r": "Pearson r over the clip between the mouth opening of the output and of the driving frames "
               "(mediapipe inner-lip gap, points 13-14, over the outer-eye-corner distance, 33-263); frames "
               "without a face on either side left out; the mean is over references (higher is better)",
    "mouth_gain": "how wide the output's mouth opens against the driving's: the least-squares slope of its "
                  "opening (as for mouth r, over each face's own eye distance) on the driving's; 1 opens as wide, "
                  "0.5 half as wide; the mean is over references",
    "aed": "mean L1 of the tracked expression coefficients and jaw pose, output against the driving frames",
    "apd": "mean L1 of the tracked head rotation (axis-angle, radians) against the rotation asked for: the "
           "driving rotation relative to its first frame, applied to the reference's tracked rotation",
    "pose_angle_deg": "angle between the same two rotations, degrees",
    "akd": "motion keypoint distance, pixels at the evaluation size: mediapipe's 68 points of each clip minus "
           "their clip mean, the driving displacements rotated and scaled into the output's frame by the "
           "similarity between the two mean shapes (the identities' difference in shape cancels; an output "
           "that does not move scores the size of the driving motion)",
    "akd_iod": "AKD over the output mean shape's inter-ocular distance",
    "flicker": "mean absolute change between consecutive output frames, 8-bit levels, where the motion leaves "
               "the picture still: outside the head model's silhouettes of the reference and of both frames "
               f"at the output camera, grown by {FLICKER_GROW:.0%} of the size (lower is better)",
}
# per-frame keys whose NaNs are frames without a face (counted under "failures")
FACE_KEYS = ("csim", "csim_distance", "aed", "apd", "pose_angle_deg", "akd", "akd_iod")
MOTION_KEYS = ("mouth_r", "mouth_gain", "aed", "apd", "pose_angle_deg", "akd", "akd_iod")


@dataclass
class RealOptions:
    references: list = field(default_factory=lambda: ["astronaut", "grace_hopper"])
    driving: str = "carphone"
    size: int = DEFAULT_SIZE
    max_frames: int | None = None  # the first frames of the driving video only
    face_models: str | None = None  # dlib files for CSIM, or $ONEHEAD_FACE_MODELS, or the cache
    motion_metrics: bool = True  # mouth r, AED, APD, AKD (track every output)
    video: str | None = None  # grid video: reference | driving | each method
    progress: bool = True
    command: str = ""


@dataclass
class Portrait:
    name: str
    source: str
    image: np.ndarray  # (H, W, 3) uint8


@dataclass
class _Record:
    values: dict = field(default_factory=dict)  # reference -> metric -> per-frame array
    clip: dict = field(default_factory=dict)  # reference -> per-clip numbers (mouth r, counts)
    seconds: float = 0.0
    frames: int = 0


# ----------------------------------------------------------------------------- inputs
def load_references(references) -> list[Portrait]:
    """Sample names or image files -> portraits named after the sample or the file's stem
    (numbered when two share a name)."""
    from onehead.data.images import load_image
    from onehead.data.samples import SAMPLE_IMAGES, sample_image

    out = []
    for source in references:
        source = str(source)
        if source in SAMPLE_IMAGES and not Path(source).exists():
            out.append(Portrait(source, f"sample:{source}", sample_image(source)))
        elif Path(source).expanduser().is_file():
            path = Path(source).expanduser()
            out.append(Portrait(path.stem, str(path.resolve()), load_image(path)))
        else:
            raise MediaReadError(f"--references {source}: not an image file nor a sample "
                                 f"({', '.join(SAMPLE_IMAGES)})")
    names = [p.name for p in out]
    for i, portrait in enumerate(out):
        if names.count(portrait.name) > 1:
            portrait.name = f"{portrait.name}#{names[:i].count(portrait.name) + 1}"
    if not out:
        raise ConfigError("--references: give at least one portrait")
    return out


def driving_source(driving: str) -> tuple[Path, str]:
    """(the video file, how it was named): 'carphone' is the bundled real clip."""
    if driving in SAMPLE_DRIVING and not Path(driving).exists():
        from onehead.data.samples import carphone_path

        return carphone_path(), "sample:carphone"
    path = Path(driving).expanduser()
    if not path.exists():
        raise MediaReadError(f"--driving {driving}: no such video, folder of frames or sample "
                             f"({', '.join(SAMPLE_DRIVING)})")
    return path, str(path.resolve())


# ----------------------------------------------------------------------------- the run
def evaluate_real(methods: list[Method], options: RealOptions) -> dict:
    """Run every method on every reference x the driving video; the report as a dict (REAL_METRICS)."""
    from tqdm import tqdm

    from onehead.data.video import read_frames
    from onehead.head.model import load_head_model
    from onehead.pipelines.reenactment import driving_motion, head_masks
    from onehead.tracking.tracker import TrackOptions, track_frames

    if not methods:
        raise ConfigError("nothing to evaluate: no methods")
    number_duplicates(methods)
    size = options.size
    portraits = load_references(options.references)
    path, driving_name = driving_source(options.driving)
    driving_frames, fps = read_frames(path, max_frames=options.max_frames)
    if len(driving_frames) < 2:
        raise MediaReadError(f"--driving {options.driving}: {len(driving_frames)} frame(s); the real task needs 2 or more")
    count = len(driving_frames)
    embedder, missing = face_embedder(options)
    if not options.motion_metrics:
        missing.update({k: "switched off (--no-motion-metrics)" for k in MOTION_KEYS})

    tracking_seconds = time.perf_counter()
    metric_head = load_head_model("basic")  # one metric tracker for every output and the driving frames
    driving_metric, driving_scale = (motion_metrics.track_for_metrics(driving_frames, metric_head)
                                     if options.motion_metrics else (None, 1.0))
    driving_tracks = {}  # id(head) -> the driving video's tracking by that head (what the methods follow)
    for method in methods:
        if id(method.head) not in driving_tracks:
            driving_tracks[id(method.head)] = track_frames(driving_frames, fps, method.head,
                                                           TrackOptions(progress=False), name=str(path))
    lost_driving = int((~next(iter(driving_tracks.values())).valid).sum())
    prepared = {}  # (reference, id(head), resolution) -> Reference
    tracking_seconds = time.perf_counter() - tracking_seconds

    records = {m.name: _Record() for m in methods}
    grid = []
    still_head = methods[-1].head
    for portrait in tqdm(portraits, desc="evaluating", unit="portrait", disable=not options.progress):
        start = time.perf_counter()
        try:
            reference_at_size = cached_reference(prepared, portrait, still_head, size, size)
        except NoFaceError as exc:
            raise NoFaceError(f"reference {portrait.source}: {exc}") from None
        motion_at_size = driving_motion(driving_tracks[id(still_head)], reference_at_size, still_head, size)
        moving = head_masks(still_head, motion_at_size.tracking, size)
        always = head_masks(still_head, reference_at_size.tracking, size)
        still = still_regions(moving, max(1, round(FLICKER_GROW * size)), always)
        reference_pixels = reference_at_size.image
        anchor = _reference_scores(reference_pixels, embedder, metric_head, options)
        tracking_seconds += time.perf_counter() - start
        outputs = {}
        for method in methods:
            resolution = method.resolution or size
            ref = cached_reference(prepared, portrait, method.head, resolution, size)
            start = time.perf_counter()
            motion = driving_motion(driving_tracks[id(method.head)], ref, method.head, resolution)
            frames = method.run(ref, motion).float()
            record = records[method.name]
            record.seconds += time.perf_counter() - start
            record.frames += len(frames)
            frames = resize_frames(frames, size)
            outputs[method.name] = frames
            values, clip = _scores(frames, still, anchor, embedder, metric_head, driving_metric, driving_scale,
                                   count, options)
            record.values[portrait.name], record.clip[portrait.name] = values, clip
        if options.video:
            grid.append(_grid_rows(reference_pixels, driving_frames, size, outputs))
    report = _report(methods, records, portraits, path, driving_name, driving_frames, fps, lost_driving, size,
                     missing, tracking_seconds, options)
    if options.video:
        from onehead.evaluation.run import _write_grid

        _write_grid(options.video, grid, ["reference", "driving"] + [m.name for m in methods])
    return report


def number_duplicates(methods: list[Method]) -> None:
    names = [m.name for m in methods]
    for i, (method, name) in enumerate(zip(methods, names)):
        if names.count(name) > 1:
            method.name = f"{name}#{names[:i].count(name) + 1}"


def cached_reference(cache: dict, portrait: Portrait, head, resolution: int, size: int):
    """The reference tracked and cropped once per head at the evaluation size; other resolutions
    are that crop resized (the same framing for every method)."""
    import cv2

    from onehead.pipelines.reenactment import prepare_reference

    key = (portrait.name, id(head), resolution)
    if key not in cache:
        base = (portrait.name, id(head), size)
        if base not in cache:
            cache[base] = prepare_reference(portrait.image, head, size)
        if resolution != size:
            resized = prepare_reference(cache[base].image, head, resolution, cache[base].tracking)
            resized.foreground = cv2.resize(cache[base].foreground, (resolution, resolution),
                                            interpolation=cv2.INTER_AREA if resolution < size else cv2.INTER_LINEAR)
            cache[key] = resized
    return cache[key]


def face_embedder(options) -> tuple:
    """(dlib's face embedder or None, the identity metrics it leaves missing and why)."""
    missing = {}
    try:
        from onehead.metrics.identity import load_face_embedder

        return load_face_embedder(options.face_models), missing
    except MetricUnavailable as exc:
        for key in ("identity_kept", "identity_kept_rolled", "csim", "csim_distance"):
            missing[key] = str(exc)
        return None, missing


@dataclass
class _Anchor:
    embedding: np.ndarray | None  # (128,) of the reference crop, NaN without a face; None without dlib
    pose: np.ndarray | None  # (3,) tracked rotation of the reference crop, NaN without a face


def _reference_scores(pixels: np.ndarray, embedder, metric_head, options: RealOptions) -> _Anchor:
    embedding = None if embedder is None else embedder.embed(pixels[None])[0]
    pose = None
    if options.motion_metrics:
        tracking, _ = motion_metrics.track_for_metrics(pixels[None], metric_head)
        pose = np.full(3, np.nan) if tracking is None else motion_metrics.head_pose(tracking)[0]
    return _Anchor(embedding, pose)


def _scores(frames, still, anchor: _Anchor, embedder, metric_head, driving, driving_scale, count: int,
            options: RealOptions) -> tuple[dict, dict]:
    """Per-frame values (metric -> (T,) or (T - 1,) for flicker) and per-clip numbers."""
    values, clip = {"flicker": flicker(frames, still).numpy().astype(np.float64)}, {}
    pixels = frames_to_uint8(frames)
    if embedder is not None:
        if anchor.embedding is None or not np.isfinite(anchor.embedding).all():
            clip["reference_no_face"] = True
        else:
            embeddings = embedder.embed(pixels)
            kept = identity_kept(embeddings, anchor.embedding)
            values["identity_kept"] = kept["kept"].astype(np.float64)
            values["csim"], values["csim_distance"] = kept["cosine"], kept["distance"]
            clip["identity_no_face"] = kept["no_face"]
            for i in np.flatnonzero(~np.isfinite(embeddings).all(1)):  # lost upright: searched turned only
                found = embedder.embed_turned(pixels[i], turns=TURNS)
                embeddings[i] = np.nan if found is None else found
            values["identity_kept_rolled"] = identity_kept(embeddings, anchor.embedding)["kept"].astype(np.float64)
    if options.motion_metrics:
        tracking, scale = motion_metrics.track_for_metrics(pixels, metric_head)
        mouth = motion_metrics.mouth_correlation(motion_metrics.mouth_points(tracking, count),
                                                 motion_metrics.mouth_points(driving, count))
        clip["mouth_r"] = None if np.isnan(mouth["r"]) else mouth["r"]
        clip["mouth_gain"] = None if np.isnan(mouth["gain"]) else mouth["gain"]
        clip["mouth_frames_left_out"] = mouth["left_out"]
        nan = np.full(count, np.nan)
        if tracking is None or driving is None:
            values.update({k: nan for k in ("aed", "apd", "pose_angle_deg", "akd", "akd_iod")})
        else:
            values["aed"] = motion_metrics.aed(motion_metrics.expression_parameters(tracking),
                                               motion_metrics.expression_parameters(driving))
            asked = motion_metrics.relative_pose(motion_metrics.head_pose(driving), anchor.pose)
            values.update(motion_metrics.apd(motion_metrics.head_pose(tracking), asked))
            values.update(motion_metrics.motion_akd(motion_metrics.detected_landmarks(tracking, scale),
                                                    motion_metrics.detected_landmarks(driving, driving_scale)))
    return values, clip


# ----------------------------------------------------------------------------- the report
def _report(methods, records, portraits, path, driving_name, driving_frames, fps, lost_driving, size, missing,
            tracking_seconds, options: RealOptions) -> dict:
    fingerprint = _fingerprint(portraits, path)
    report = {
        "command": options.command,
        "task": TASK,
        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "data": {
            "references": [{"name": p.name, "source": p.source, "size": list(p.image.shape[:2]),
                            "sha256": _sha(p.image.tobytes())} for p in portraits],
            "driving": {"source": driving_name, "path": str(path), "frames": len(driving_frames), "fps": round(fps, 3),
                        "size": list(driving_frames.shape[1:3]), "lost_frames": lost_driving,
                        "sha256": _file_sha(path)},
            "fingerprint": fingerprint,
            "items": len(portraits),
            "frames": len(portraits) * len(driving_frames),
            "ground_truth": False,
        },
        "size": size,
        "machine": machine_info(),
        "tracking_seconds": round(tracking_seconds, 3),
        "metrics": {k: v for k, v in REAL_METRICS.items() if k not in missing},
        "missing": missing,
        "methods": {},
    }
    for method in methods:
        record = records[method.name]
        resolution = method.resolution or size
        per_sequence = {name: _summary(record.values[name], record.clip[name]) for name in record.values}
        entry = {
            "identifier": method.identifier,
            "resolution": resolution,
            "seconds": round(record.seconds, 3),
            "seconds_per_frame": round(record.seconds / max(1, record.frames), 5),
            "mean": _mean_summary(record),
            "failures": _failures(record),
            "per_sequence": {name: s["mean"] for name, s in per_sequence.items()},
            "per_sequence_failures": {name: s["failures"] for name, s in per_sequence.items()},
        }
        if resolution != size:
            entry["note"] = f"runs at {resolution}x{resolution}; upsampled (bilinear) to {size}x{size} to score"
        report["methods"][method.name] = entry
    return report


def _summary(values: dict, clip: dict) -> dict:
    mean = {k: nan_mean(v) for k, v in values.items()}
    for key in ("mouth_r", "mouth_gain"):
        if key in clip:
            mean[key] = None if clip[key] is None else round(clip[key], 5)
    failures = {k: int(np.isnan(v).sum()) for k, v in values.items() if k in FACE_KEYS}
    for key in ("identity_no_face", "mouth_frames_left_out"):
        if key in clip:
            failures[key] = clip[key]
    if clip.get("reference_no_face"):
        failures["reference_no_face"] = 1
    return {"mean": mean, "failures": failures}


def _mean_summary(record: _Record) -> dict:
    """Means over every frame of every reference (each reference has the same frames, so this is
    the mean of the per-reference means); mouth r and gain: the means of the per-reference ones."""
    keys = dict.fromkeys(k for v in record.values.values() for k in v)
    mean = {k: nan_mean(np.concatenate([v[k] for v in record.values.values() if k in v])) for k in keys}
    for key in ("mouth_r", "mouth_gain"):
        values = [c[key] for c in record.clip.values() if c.get(key) is not None]
        if any(key in c for c in record.clip.values()):
            mean[key] = round(float(np.mean(values)), 5) if values else None
    return mean


def _failures(record: _Record) -> dict:
    out = {}
    for name in record.values:
        for key, value in _summary(record.values[name], record.clip[name])["failures"].items():
            out[key] = out.get(key, 0) + value
    return out


def _sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()[:16]


def _file_sha(path: Path) -> str:
    digest = hashlib.sha256()
    files = [path] if path.is_file() else sorted(p for p in path.rglob("*") if p.is_file())
    for file in files:
        digest.update(file.read_bytes())
    return digest.hexdigest()[:16]


def _fingerprint(portraits, path: Path) -> str:
    """sha256 over the reference pixels (in order) and the driving video's bytes, 16 hex digits."""
    digest = hashlib.sha256()
    for portrait in portraits:
        digest.update(portrait.image.tobytes())
    digest.update(_file_sha(path).encode())
    return digest.hexdigest()[:16]


# ----------------------------------------------------------------------------- the grid video
def _grid_rows(reference: np.ndarray, driving: np.ndarray, size: int, outputs: dict) -> np.ndarray:
    """(T, size, size * (2 + methods), 3) uint8: reference | driving (letterboxed) | each method."""
    import cv2

    reference = cv2.resize(reference, (size, size), interpolation=cv2.INTER_AREA) if reference.shape[0] != size \
        else reference
    from onehead.data.images import letterbox

    tiles = [np.repeat(reference[None], len(driving), 0), letterbox(driving, size)] + [frames_to_uint8(f) for f in outputs.values()]
    return np.concatenate(tiles, axis=2)
