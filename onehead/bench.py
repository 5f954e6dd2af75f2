"""`onehead bench ...`: speed figures (printed, never asserted in tests)."""

from __future__ import annotations

import platform
import time

import numpy as np
import torch


def _machine() -> str:
    return (f"{platform.processor() or platform.machine()}, {torch.get_num_threads()} torch threads, "
            f"torch {torch.__version__}, {'CUDA ' + torch.cuda.get_device_name() if torch.cuda.is_available() else 'CPU'}")


def _benchmark_video(size: int, frames: int) -> tuple[np.ndarray, str]:
    """A real talking head (the carphone clip) letterboxed to size x size; a moving portrait otherwise."""
    import cv2

    from onehead.data.samples import astronaut, carphone_path
    from onehead.data.video import read_video
    from onehead.errors import MediaReadError

    try:
        clip, _ = read_video(carphone_path())
        source = "carphone clip (real), letterboxed"
    except MediaReadError:
        still = astronaut()
        clip = []
        for t in range(frames):
            m = cv2.getRotationMatrix2D((256, 256), 8 * np.sin(t / 9), 1 + 0.05 * np.sin(t / 13))
            m[:, 2] += (6 * np.sin(t / 7), 4 * np.cos(t / 11))
            clip.append(cv2.warpAffine(still, m, (512, 512), borderMode=cv2.BORDER_REFLECT))
        clip = np.stack(clip)
        source = "astronaut portrait with synthetic motion"
    h, w = clip.shape[1:3]
    scale = size / max(h, w)
    nh, nw = round(h * scale), round(w * scale)
    out = np.zeros((len(clip), size, size, 3), np.uint8)
    top, left = (size - nh) // 2, (size - nw) // 2
    for t, frame in enumerate(clip):
        out[t, top:top + nh, left:left + nw] = cv2.resize(frame, (nw, nh), interpolation=cv2.INTER_CUBIC)
    reps = int(np.ceil(frames / len(out)))
    looped = np.concatenate([out, out[::-1]] * reps)[:frames]  # ping-pong keeps the motion continuous
    return looped, source


def bench_track(size: int = 512, frames: int = 120) -> dict:
    from onehead.data.samples import astronaut
    from onehead.head.model import load_head_model
    from onehead.tracking.tracker import TrackOptions, detect_frames, fit_sequence, track_image

    head = load_head_model("basic")
    video, source = _benchmark_video(size, frames)
    options = TrackOptions(progress=False)
    # warm-up: mediapipe graphs, torch kernels
    fit_sequence(head, detect_frames(video[:8], mode="video"), video.shape[1:3], options)
    track_image(astronaut(), head, options)

    detections = detect_frames(video, mode="video")
    start = time.perf_counter()
    tracking = fit_sequence(head, detections, video.shape[1:3], options)
    fit_seconds = time.perf_counter() - start
    total = detections.seconds + fit_seconds

    image = astronaut()
    single = []
    for _ in range(3):
        det = detect_frames(image[None], mode="image")
        start = time.perf_counter()
        fit_sequence(head, det, image.shape[:2], options)
        single.append((det.seconds, time.perf_counter() - start))
    det_s, fit_s = np.median(np.asarray(single), axis=0)
    return {
        "machine": _machine(), "video": f"{frames} frames at {size}x{size}: {source}",
        "faces_found": int(tracking.valid.sum()),
        "landmarks_ms_per_frame": 1000 * detections.seconds / frames,
        "fit_ms_per_frame": 1000 * fit_seconds / frames,
        "video_fps": frames / total,
        "mean_fit_error_iod": float(np.nanmean(tracking.fit_error)),
        "image_detect_ms": 1000 * det_s, "image_fit_ms": 1000 * fit_s,
    }


def report_track(size: int | None = None, frames: int | None = None) -> dict:
    size, frames = size or 512, frames or 120
    r = bench_track(size, frames)
    print(f"onehead bench track  ({r['machine']})")
    print(f"  video: {r['video']}; face found in {r['faces_found']}/{frames}")
    print(f"  landmarks (mediapipe, video mode)  {r['landmarks_ms_per_frame']:7.2f} ms/frame")
    print(f"  head-model fit (batched)           {r['fit_ms_per_frame']:7.2f} ms/frame")
    print(f"  video tracking                     {r['video_fps']:7.1f} frames/s  "
          f"(mean fit error {r['mean_fit_error_iod']:.3f} of the eye distance)")
    print(f"  single image (512x512 astronaut)   detect {r['image_detect_ms']:.1f} ms + fit {r['image_fit_ms']:.1f} ms")
    return r


# name -> function(size=None, frames=None) that prints its figures and returns them as a dict.
# Each part of onehead registers its benchmark here; `onehead bench NAME` runs one.
BENCHMARKS = {
    "track": report_track,
}


def run_bench(what: str, size: int | None = None, frames: int | None = None) -> dict:
    if what not in BENCHMARKS:
        raise ValueError(f"unknown benchmark {what!r}; choose from {sorted(BENCHMARKS)}")
    return BENCHMARKS[what](size=size, frames=frames)
