"""Reading and writing videos and folders of frames.

These I/O functions work on uint8 numpy arrays: frames are (T, H, W, 3) RGB,
a single frame is (H, W, 3). Elsewhere in onehead, images at API boundaries
are float32 torch tensors (B, 3, H, W) in [0, 1].

`read_video` decodes with decord when it imports and reads the file, with
PyAV otherwise; `iter_video` and `probe_video` use PyAV.
Encoding uses PyAV (bundled ffmpeg): H.264 (libx264, yuv420p) when this PyAV
build has libx264, else MPEG-4 Part 2 (`mpeg4`) as a fallback.
"""

from __future__ import annotations

import itertools
import re
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import Any, Iterable, Iterator, Optional, Union

import numpy as np

from onehead.data.images import (
    IMAGE_EXTENSIONS,
    is_image_path,
    is_video_path,
    load_image,
)
from onehead.quiet import quiet_stderr
from onehead.errors import MediaReadError
from onehead.files import atomic_path

PathLike = Union[str, Path]

DEFAULT_FPS = 25.0


@dataclass(frozen=True)
class VideoInfo:
    """Basic facts about a video file."""

    num_frames: int
    fps: float
    height: int
    width: int


# ---------------------------------------------------------------- reading


def read_video(path: PathLike, max_frames: Optional[int] = None) -> tuple[np.ndarray, float]:
    """Decode a video into (T, H, W, 3) uint8 RGB frames and its fps.

    Reads at most `max_frames` frames from the start when given. Tries decord
    first and PyAV when decord is missing or fails on the file (decord 0.6
    fails on some frame widths, e.g. 16 or 48 pixels).
    """
    if max_frames is not None and max_frames <= 0:
        raise ValueError(f"read_video: max_frames must be positive, got {max_frames}")
    path = _check_file(path, "video")
    frames, fps = _read_decord(path, max_frames)
    if frames is None:
        frames, fps = _read_pyav(path, max_frames)
    if frames is None:
        raise MediaReadError(f"video has no frames: {path} (re-encode it or use another file)")
    return np.ascontiguousarray(frames, dtype=np.uint8), fps


def iter_video(path: PathLike) -> Iterator[np.ndarray]:
    """Yield the frames of a video one by one as (H, W, 3) uint8, without loading them all.

    A missing or empty file raises at once; an undecodable one when iteration starts.
    """
    return _iter_pyav(_check_file(path, "video"))


def probe_video(path: PathLike) -> VideoInfo:
    """Frame count, fps and size of a video, from its header (counts packets if needed)."""
    path = _check_file(path, "video")
    container = _open_pyav(path)
    try:
        stream = container.streams.video[0]
        n = stream.frames or _count_packets(container, stream, path)
        if n == 0:
            raise MediaReadError(f"video has no frames: {path} (re-encode it or use another file)")
        return VideoInfo(
            num_frames=int(n),
            fps=_stream_fps(stream),
            height=int(stream.codec_context.height),
            width=int(stream.codec_context.width),
        )
    finally:
        container.close()


def read_frames_folder(
    folder: PathLike, max_frames: Optional[int] = None, fps: float = DEFAULT_FPS
) -> tuple[np.ndarray, float]:
    """Read a folder of image files, in natural order (frame_2 before frame_10).

    Returns (T, H, W, 3) uint8 frames and `fps` (a folder has no frame rate).
    All images must have the same size.
    """
    if max_frames is not None and max_frames <= 0:
        raise ValueError(f"read_frames_folder: max_frames must be positive, got {max_frames}")
    folder = Path(folder)
    if not folder.is_dir():
        raise MediaReadError(f"frames folder not found: {folder} (check the path)")
    files = sorted((p for p in folder.iterdir() if p.is_file() and is_image_path(p)), key=natural_key)
    if not files:
        exts = ", ".join(e.lstrip(".") for e in IMAGE_EXTENSIONS)
        raise MediaReadError(f"no image files ({exts}) in folder {folder}; put the frames there")
    if max_frames is not None:
        files = files[:max_frames]
    frames = [load_image(f) for f in files]
    for f, frame in zip(files, frames):
        if frame.shape != frames[0].shape:
            raise MediaReadError(
                f"frame {f} is {frame.shape[1]}x{frame.shape[0]} but {files[0].name} is "
                f"{frames[0].shape[1]}x{frames[0].shape[0]}; all frames must have the same size"
            )
    return np.stack(frames), float(fps)


def read_frames(source: Any, max_frames: Optional[int] = None) -> tuple[np.ndarray, float]:
    """Read a video file, a folder of frames or a single image as (T, H, W, 3) uint8 and fps.

    A single image (path, PIL image, array or tensor) gives T = 1 and the default fps.
    """
    if not isinstance(source, (str, Path)):
        return load_image(source)[None], DEFAULT_FPS
    path = Path(source)
    if path.is_dir():
        return read_frames_folder(path, max_frames)
    if not path.exists():
        raise MediaReadError(f"not found: {path} (give a video file, an image or a folder of frames)")
    if is_video_path(path):
        return read_video(path, max_frames)
    if is_image_path(path):
        return load_image(path)[None], DEFAULT_FPS
    try:
        return load_image(path)[None], DEFAULT_FPS
    except MediaReadError:
        pass
    try:
        return read_video(path, max_frames)
    except MediaReadError:
        raise MediaReadError(
            f"cannot read {path} as an image or a video; use a common format (png, jpg, mp4)"
        ) from None


def natural_key(path: PathLike) -> list:
    """Sort key that orders embedded numbers numerically: frame_2 < frame_10."""
    parts = re.split(r"(\d+)", Path(path).name.lower())
    return [(0, int(p), "") if p.isdigit() else (1, 0, p) for p in parts]


def _check_file(path: PathLike, kind: str) -> Path:
    path = Path(path)
    if not path.exists():
        raise MediaReadError(f"{kind} not found: {path} (check the path)")
    if not path.is_file():
        raise MediaReadError(f"expected a {kind} file but {path} is a directory")
    if path.stat().st_size == 0:
        raise MediaReadError(f"{kind} file is empty (0 bytes): {path}; re-export or re-download it")
    return path


def _read_decord(path: Path, max_frames: Optional[int]) -> tuple[Optional[np.ndarray], float]:
    """(T, H, W, 3) frames and fps with decord; (None, 0.0) when decord is missing or fails."""
    try:
        import decord
    except ImportError:
        return None, 0.0
    try:
        with quiet_stderr():  # decord and ffmpeg print their own lines before failing
            vr = decord.VideoReader(str(path), ctx=decord.cpu(0))
        n = len(vr) if max_frames is None else min(len(vr), max_frames)
        if n == 0:
            return None, 0.0
        return vr.get_batch(list(range(n))).asnumpy(), float(vr.get_avg_fps())
    except Exception:  # DECORDError / RuntimeError: PyAV gets a second try
        return None, 0.0


def _open_pyav(path: Path) -> Any:
    import av

    try:
        container = av.open(str(path))
    except Exception as exc:
        raise MediaReadError(
            f"cannot open video {path}: {exc.__class__.__name__}; re-encode it (e.g. H.264 mp4)"
        ) from None
    if not container.streams.video:
        container.close()
        raise MediaReadError(f"no video stream in {path}; give a file with video in it")
    return container


def _stream_fps(stream: Any) -> float:
    rate = stream.average_rate or stream.guessed_rate or stream.base_rate
    return float(rate) if rate else DEFAULT_FPS


def _iter_pyav(path: Path, max_frames: Optional[int] = None) -> Iterator[np.ndarray]:
    container = _open_pyav(path)
    try:
        yield from _frames_pyav(container, path, max_frames)
    finally:
        container.close()


def _frames_pyav(container: Any, path: Path, max_frames: Optional[int]) -> Iterator[np.ndarray]:
    stream = container.streams.video[0]
    stream.thread_type = "AUTO"
    for i, frame in enumerate(_decode(container, stream, path)):
        if max_frames is not None and i >= max_frames:
            break
        yield frame.to_ndarray(format="rgb24")


def _count_packets(container: Any, stream: Any, path: Path) -> int:
    import av

    try:
        return sum(1 for packet in container.demux(stream) if packet.size)
    except av.error.FFmpegError as exc:
        raise MediaReadError(f"cannot read video {path}: {exc}; re-encode it") from None


def _decode(container: Any, stream: Any, path: Path) -> Iterator[Any]:
    import av

    try:
        yield from container.decode(stream)
    except av.error.FFmpegError as exc:
        raise MediaReadError(f"cannot decode video {path}: {exc}; re-encode it") from None


def _read_pyav(path: Path, max_frames: Optional[int]) -> tuple[Optional[np.ndarray], float]:
    """(T, H, W, 3) frames, or None when there are none, and fps."""
    container = _open_pyav(path)
    try:
        fps = _stream_fps(container.streams.video[0])
        frames = list(_frames_pyav(container, path, max_frames))
        return (np.stack(frames) if frames else None), fps
    finally:
        container.close()


# ---------------------------------------------------------------- writing


def h264_available() -> bool:
    """True when this PyAV build can encode H.264 with libx264."""
    import av

    return "libx264" in av.codecs_available


def write_video(
    path: PathLike,
    frames: Union[np.ndarray, Iterable[Any]],
    fps: float = DEFAULT_FPS,
    crf: int = 18,
) -> Path:
    """Write frames ((T, H, W, 3) uint8, or any iterable of images) as an mp4 file, atomically.

    Uses H.264 (libx264, yuv420p, quality `crf`) when PyAV has libx264, else
    MPEG-4 Part 2 (`mpeg4`, high bit rate; `crf` is then ignored). Odd widths or
    heights are padded to even by repeating the last row/column, so the file
    can be one pixel larger than the input. Creates parent directories.

    Frames are encoded as they come (an iterable is read once, lazily) into a temporary file
    beside `path`, which replaces `path` only when the whole video is written: a failed or
    interrupted write leaves an existing `path` as it was and no temporary file behind.
    """
    import av

    if not fps > 0:
        raise ValueError(f"write_video: fps must be positive, got {fps}")
    frames = iter(frames)
    first = next(frames, None)
    if first is None:
        raise ValueError("write_video: no frames to write")
    first = load_image(first)
    h, w = first.shape[:2]
    path = Path(path)
    with atomic_path(path) as tmp:  # keeps the suffix, from which PyAV picks the container
        container = av.open(str(tmp), mode="w")
        try:
            stream = _add_stream(container, fps, crf, w + w % 2, h + h % 2)
            for i, f in enumerate(itertools.chain([first], frames)):
                f = f if i == 0 else load_image(f)
                if f.shape[:2] != (h, w):
                    raise ValueError(f"write_video: frame {i} is {f.shape[1]}x{f.shape[0]}, frame 0 is {w}x{h}")
                frame = av.VideoFrame.from_ndarray(_pad_even(f), format="rgb24")
                container.mux(stream.encode(frame))
            container.mux(stream.encode(None))
        finally:
            container.close()
    return path


def _add_stream(container: Any, fps: float, crf: int, width: int, height: int) -> Any:
    rate = Fraction(fps).limit_denominator(1001)
    if h264_available():
        stream = container.add_stream("libx264", rate=rate, options={"crf": str(crf)})
    else:
        stream = container.add_stream("mpeg4", rate=rate)
        stream.bit_rate = 20_000_000
    stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
    return stream


def _pad_even(frame: np.ndarray) -> np.ndarray:
    h, w = frame.shape[:2]
    if h % 2 == 0 and w % 2 == 0:
        return frame
    return np.pad(frame, ((0, h % 2), (0, w % 2), (0, 0)), mode="edge")
