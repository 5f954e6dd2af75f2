"""onehead's one data format: a folder per sequence, a folder per camera view.

    DATASET/
      pairs.json                 optional: cross-reenactment pairs (onehead synth --cross-pairs)
      <sequence>/
        meta.json                format, fps, size, num_frames, head_model, domain, views, identity
        <view>/                  "cam00" for a monocular video; one folder per camera otherwise
          frames/000000.png ...  RGB frames (or frames.mp4)
          masks/000000.png ...   optional 8-bit foreground masks
          tracking.npz           the tracking file (onehead.data.tracking_file), one per view

Every model family reads and writes sequences only through this module. datasets/README.md
documents the format for people who make data with their own tools.
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import numpy as np

from onehead.data.images import load_image, save_image
from onehead.data.tracking_file import Tracking, load_tracking
from onehead.data.video import natural_key, read_video, write_video
from onehead.errors import MediaReadError
from onehead.files import write_json_atomic

FORMAT = "onehead-v1"
DOMAINS = ("real", "synthetic")  # the one list of domains (the models' domain token uses it too)
META_FILE = "meta.json"
TRACKING_FILE = "tracking.npz"
PAIRS_FILE = "pairs.json"


@dataclass
class SequenceMeta:
    """What meta.json holds."""

    fps: float
    size: tuple[int, int]  # (height, width)
    num_frames: int
    domain: str  # "real" or "synthetic"
    views: list[str] = field(default_factory=lambda: ["cam00"])
    head_model: str = "basic"
    identity: str | None = None  # who is in it (synthetic: the identity's name)
    format: str = FORMAT
    extra: dict = field(default_factory=dict)  # free-form provenance (source video, seed, pairs...)

    def save(self, directory: str | os.PathLike) -> Path:
        data = asdict(self)
        data["size"] = list(self.size)
        return write_json_atomic(Path(directory) / META_FILE, data)


def read_meta(directory: str | os.PathLike) -> SequenceMeta:
    path = Path(directory) / META_FILE
    if not path.is_file():
        raise MediaReadError(f"{path}: missing; every sequence folder needs a meta.json (see datasets/README.md)")
    try:
        data = json.loads(path.read_text())
        meta = SequenceMeta(**data)
    except (json.JSONDecodeError, TypeError, UnicodeDecodeError) as exc:
        raise MediaReadError(f"{path}: not a valid meta.json ({exc})") from None
    if meta.format != FORMAT:
        raise MediaReadError(f"{path}: format {meta.format!r}, this onehead reads {FORMAT!r}")
    if meta.domain not in DOMAINS:
        raise MediaReadError(f"{path}: domain must be one of {DOMAINS}, got {meta.domain!r}")
    meta.size = (int(meta.size[0]), int(meta.size[1]))
    return meta


@dataclass
class View:
    """One camera's frames, masks and tracking; frames are read on demand."""

    name: str
    directory: Path
    tracking: Tracking
    frame_files: list[Path] | None  # None when the frames are one video
    mask_files: list[Path] | None

    @property
    def num_frames(self) -> int:
        return self.tracking.num_frames

    def frame(self, index: int) -> np.ndarray:
        """uint8 (H, W, 3)."""
        if self.frame_files is None:
            return self._video()[index]
        return load_image(self.frame_files[index])

    def mask(self, index: int) -> np.ndarray | None:
        """float32 (H, W) in [0, 1], or None when the view has no masks."""
        if self.mask_files is None:
            return None
        return load_image(self.mask_files[index])[..., 0].astype(np.float32) / 255.0

    def tensors(self, frames, size: int | None = None):
        """Frames as float (N, 3, S, S) in [0, 1] and masks (N, 1, S, S), or None without masks,
        resized (bilinear, antialiased) to size x size when a size is given."""
        import torch
        import torch.nn.functional as F

        frames = list(frames)
        images = torch.from_numpy(np.stack([self.frame(t) for t in frames])).permute(0, 3, 1, 2).float() / 255
        masks = None if self.mask_files is None else torch.from_numpy(np.stack([self.mask(t) for t in frames]))[:, None]
        if size is not None and tuple(images.shape[-2:]) != (size, size):
            images = F.interpolate(images, size=(size, size), mode="bilinear", antialias=True, align_corners=False)
            if masks is not None:
                masks = F.interpolate(masks, size=(size, size), mode="bilinear", antialias=True, align_corners=False)
        return images, masks

    def _video(self) -> np.ndarray:
        if not hasattr(self, "_frames_cache"):
            self._frames_cache = read_video(self.directory / "frames.mp4")[0]
        return self._frames_cache


@dataclass
class Sequence:
    directory: Path
    meta: SequenceMeta
    views: dict[str, View]

    @property
    def name(self) -> str:
        return self.directory.name


def open_sequence(directory: str | os.PathLike) -> Sequence:
    """Read meta.json and every view's tracking; check the frame counts agree.

    Raises MediaReadError naming the file at fault.
    """
    directory = Path(directory)
    meta = read_meta(directory)
    views = {}
    for name in meta.views:
        view_dir = directory / name
        tracking = load_tracking(view_dir / TRACKING_FILE)
        frames = _listed(view_dir / "frames")
        if frames is None and not (view_dir / "frames.mp4").is_file():
            raise MediaReadError(f"{view_dir}: no frames/ folder and no frames.mp4")
        masks = _listed(view_dir / "masks")
        for kind, files in (("frames", frames), ("masks", masks)):
            if files is not None and len(files) != tracking.num_frames:
                raise MediaReadError(f"{view_dir / kind}: {len(files)} files but the tracking has "
                                     f"{tracking.num_frames} frames")
        views[name] = View(name, view_dir, tracking, frames, masks)
    return Sequence(directory, meta, views)


def list_sequences(root: str | os.PathLike) -> list[Path]:
    """Sequence folders under `root` (any folder holding a meta.json), in natural order."""
    root = Path(root)
    if root.is_file():
        raise MediaReadError(f"{root}: is a file; a dataset is a folder of sequences (onehead synth, "
                             "datasets/prepare_video.py)")
    if not root.is_dir():
        raise MediaReadError(f"{root}: dataset folder does not exist")
    if (root / META_FILE).is_file():
        return [root]
    return sorted((p.parent for p in root.glob(f"*/{META_FILE}")), key=natural_key)


def write_view(sequence_dir: str | os.PathLike, view: str, frames: np.ndarray, tracking: Tracking,
               masks: np.ndarray | None = None, video: bool = False) -> Path:
    """Write one view: frames uint8 (T, H, W, 3), masks uint8/float (T, H, W), the tracking."""
    view_dir = Path(sequence_dir) / view
    if len(frames) != tracking.num_frames:
        raise ValueError(f"{len(frames)} frames but the tracking has {tracking.num_frames}")
    if video:
        write_video(view_dir / "frames.mp4", frames, fps=tracking.fps)
    else:
        for t, frame in enumerate(frames):
            save_image(view_dir / "frames" / f"{t:06d}.png", frame)
    if masks is not None:
        for t, mask in enumerate(masks):
            mask = np.asarray(mask)
            if mask.dtype != np.uint8:
                mask = np.clip(np.rint(mask * 255), 0, 255).astype(np.uint8)
            save_image(view_dir / "masks" / f"{t:06d}.png", np.repeat(mask[..., None], 3, -1))
    tracking.save(view_dir / TRACKING_FILE)
    return view_dir


def copy_frames(source: str | os.PathLike, out: str | os.PathLike, start: int, stop: int) -> Path:
    """A new sequence folder `out` holding frames [start, stop) of the sequence `source` (every view,
    its masks and tracking), e.g. to hold out part of a video: the training half and the evaluation
    half of one clip. `out` must not exist yet; the source is only read. Returns `out`."""
    sequence = open_sequence(source)
    out = Path(out)
    if out.exists():
        raise MediaReadError(f"{out}: already exists; choose a new folder (the source is never written)")
    total = sequence.meta.num_frames
    if not 0 <= start < stop <= total:
        raise MediaReadError(f"{source}: frames {start}:{stop} are not a non-empty range of its {total} frames")
    for view in sequence.views.values():
        frames = np.stack([view.frame(t) for t in range(start, stop)])
        masks = None if view.mask_files is None else np.stack([view.mask(t) for t in range(start, stop)])
        write_view(out, view.name, frames, view.tracking.select(slice(start, stop)), masks,
                   video=view.frame_files is None)
    extra = {**sequence.meta.extra, "copied_from": str(Path(source).resolve()), "copied_frames": [start, stop]}
    replace(sequence.meta, num_frames=stop - start, extra=extra).save(out)
    return out


def read_pairs(root: str | os.PathLike) -> list[dict]:
    """Cross-reenactment pairs: [{"reference": seq, "driving": seq, "target": seq}, ...]."""
    path = Path(root) / PAIRS_FILE
    if not path.is_file():
        raise MediaReadError(f"{path}: missing; make pairs with `onehead synth --cross-pairs`")
    try:
        pairs = json.loads(path.read_text())["pairs"]
    except (json.JSONDecodeError, KeyError, TypeError) as exc:
        raise MediaReadError(f"{path}: not a valid pairs file ({exc})") from None
    return pairs


def write_pairs(root: str | os.PathLike, pairs: list[dict]) -> Path:
    return write_json_atomic(Path(root) / PAIRS_FILE, {"format": FORMAT, "pairs": pairs})


def _listed(folder: Path) -> list[Path] | None:
    if not folder.is_dir():
        return None
    files = [p for p in folder.iterdir() if p.suffix.lower() in (".png", ".jpg", ".jpeg")]
    return sorted(files, key=natural_key)
