"""Torch datasets over onehead's data format (onehead.data.sequence).

`ReenactmentDataset` gives what every one-shot model trains on: a reference frame of a
sequence, a target frame or clip of the same sequence (another view when there are several),
the target's head-model parameters and cameras, and the domain label (real or synthetic).

Broken data never passes silently: sequences that fail to open are skipped with a warning that
counts them (`skipped` lists the reasons), and a frame that fails to read is replaced by another
item with a counted warning (`read_failures`).
"""

from __future__ import annotations

import os
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from onehead.camera import scale_intrinsics
from onehead.data.sequence import DOMAINS, Sequence, View, list_sequences, open_sequence
from onehead.errors import ConfigError, MediaReadError, OneheadError

DOMAIN_IDS = {name: index for index, name in enumerate(DOMAINS)}  # the ids the domain token uses


@dataclass
class _Clip:
    sequence: int
    view: str
    start: int


def open_dataset(roots, *, warn: bool = True) -> tuple[list[Sequence], list[tuple[str, str]]]:
    """Open every sequence under one or more dataset folders; returns (sequences, skipped)."""
    roots = [roots] if isinstance(roots, (str, os.PathLike)) else list(roots)
    sequences, skipped = [], []
    for root in roots:
        for directory in list_sequences(root):
            try:
                sequences.append(open_sequence(directory))
            except OneheadError as exc:
                skipped.append((str(directory), str(exc)))
    if skipped and warn:
        reasons = "; ".join(reason for _, reason in skipped[:3])
        warnings.warn(f"skipped {len(skipped)} of {len(skipped) + len(sequences)} sequences: {reasons}"
                      + (" ..." if len(skipped) > 3 else ""), stacklevel=2)
    return sequences, skipped


class ReenactmentDataset(torch.utils.data.Dataset):
    """Items of (reference frame, target clip, target tracking, cameras, domain).

    clip_length: frames per target clip (1 for single-frame training).
    size: resize frames to size x size (cameras are scaled to match); None keeps them.
    cross_view: draw the reference from any view of the sequence (multi-view data), not only
        the target's view.
    Every item is a dict of tensors: reference (3, H, W), reference_mask (1, H, W),
    reference_params {shape (S,), expression (E,), ...}, reference_K (3, 3),
    reference_world_to_cam (4, 4), target (T, 3, H, W), target_mask (T, 1, H, W), target_params
    {shape (T, S), expression (T, E), ...}, K (T, 3, 3), world_to_cam (T, 4, 4), domain (),
    plus sequence, view and frames for bookkeeping. Masks are ones where a view has none.
    """

    def __init__(self, roots, clip_length: int = 1, size: int | None = None, cross_view: bool = True,
                 seed: int = 0, max_retries: int = 10):
        self.sequences, self.skipped = open_dataset(roots)
        if not self.sequences:
            raise MediaReadError(f"no readable sequence under {roots} (see datasets/README.md)")
        self.clip_length, self.size, self.cross_view = clip_length, size, cross_view
        self.seed, self.epoch, self.max_retries = seed, 0, max_retries
        self.read_failures = 0
        self.clips = [_Clip(s, name, start)
                      for s, seq in enumerate(self.sequences) for name, view in seq.views.items()
                      for start in range(0, view.num_frames - clip_length + 1)]
        if not self.clips:
            raise MediaReadError(f"no sequence has {clip_length} frames")

    def set_epoch(self, epoch: int) -> None:
        """Change the reference draws (they are deterministic per (seed, epoch, index))."""
        self.epoch = epoch

    def __len__(self) -> int:
        return len(self.clips)

    def __getitem__(self, index: int) -> dict:
        rng = np.random.default_rng((self.seed, self.epoch, index))
        for _ in range(self.max_retries):
            try:
                return self._item(self.clips[index], rng)
            except MediaReadError as exc:
                self.read_failures += 1
                warnings.warn(f"read failure {self.read_failures} ({exc}); using another item", stacklevel=2)
                index = int(rng.integers(len(self.clips)))
        raise MediaReadError(f"{self.max_retries} reads in a row failed; the dataset looks broken")

    # ------------------------------------------------------------------ internals
    def _item(self, clip: _Clip, rng: np.random.Generator) -> dict:
        seq = self.sequences[clip.sequence]
        view = seq.views[clip.view]
        frames = list(range(clip.start, clip.start + self.clip_length))
        ref_view = seq.views[rng.choice(list(seq.views))] if self.cross_view else view
        ref_frame = int(rng.integers(ref_view.num_frames))
        reference, reference_mask, ref_K = self._frames(ref_view, [ref_frame])
        target, target_mask, K = self._frames(view, frames)
        return {
            "reference": reference[0], "reference_mask": reference_mask[0],
            "reference_params": _params(ref_view, [ref_frame], squeeze=True),
            "reference_K": ref_K[0], "reference_world_to_cam": _tensor(ref_view.tracking.world_to_cam[ref_frame]),
            "target": target, "target_mask": target_mask, "target_params": _params(view, frames),
            "K": K, "world_to_cam": _tensor(view.tracking.world_to_cam[frames]),
            "domain": torch.tensor(DOMAIN_IDS[seq.meta.domain]),
            "sequence": seq.name, "view": view.name, "frames": torch.tensor(frames),
        }

    def _frames(self, view: View, frames: list[int]):
        height, width = (int(v) for v in view.tracking.image_size)
        images, mask = view.tensors(frames, self.size)
        if mask is None:
            mask = torch.ones(len(frames), 1, *images.shape[-2:])
        K = scale_intrinsics(_tensor(view.tracking.K[frames]), (height, width), tuple(images.shape[-2:]))
        return images, mask, K


def _tensor(array) -> torch.Tensor:
    return torch.as_tensor(np.asarray(array, np.float32))


def _params(view: View, frames: list[int], squeeze: bool = False) -> dict:
    raw = view.tracking.head_params(frames)
    params = {k: torch.from_numpy(np.ascontiguousarray(v)) for k, v in raw.items()}
    return {k: v[0] for k, v in params.items()} if squeeze else params


@dataclass(frozen=True)
class FrameKey:
    """One frame of one view of one sequence folder."""

    sequence: str  # the sequence folder's path
    view: str
    frame: int


def parse_frames(text: str | None) -> slice | None:
    """"100:120" -> slice(100, 120); None -> None (every frame)."""
    if text is None:
        return None
    try:
        parts = [int(p) if p.strip() else None for p in str(text).split(":")]
    except ValueError:
        parts = []
    if len(parts) not in (2, 3):
        raise ConfigError(f"frames must be a slice like 0:100 (or ::2), got {text!r}")
    return slice(*parts)


def select_frames(roots, views: list[str] | None = None, frames: slice | None = None,
                  tracked_only: bool = True) -> list[FrameKey]:
    """Every frame under the dataset folders, restricted to some views and a range of frame indices;
    tracked_only leaves out frames whose tracking lost the face (`valid` false). A sequence that
    does not open (no tracking, bad meta.json) is an error here, not a skipped folder."""
    sequences, skipped = open_dataset(roots, warn=False)
    if skipped:
        raise MediaReadError(skipped[0][1] + (" (every sequence folder needs a tracking.npz per view; "
                                              "datasets/prepare_video.py or `onehead avatar train VIDEO` make them)"
                                              if "tracking" in skipped[0][1] else ""))
    keys = []
    for sequence in sequences:
        for name, view in sequence.views.items():
            if views is not None and name not in views:
                continue
            indices = range(view.num_frames)[frames] if frames is not None else range(view.num_frames)
            keys += [FrameKey(str(sequence.directory), name, t) for t in indices
                     if view.tracking.valid[t] or not tracked_only]
    return keys


class FrameDataset(torch.utils.data.Dataset):
    """Single frames for a person-specific model: image (3, S, S), mask (1, S, S) (ones without
    masks), params {shape (S,), expression (E,), ...}, K (3, 3) at size S, world_to_cam (4, 4)."""

    def __init__(self, keys: list[FrameKey], size: int):
        if not keys:
            raise MediaReadError("no frames selected (check the views and frame range)")
        self.keys, self.size = list(keys), size
        self._views: dict[tuple[str, str], View] = {}

    def __len__(self) -> int:
        return len(self.keys)

    def view(self, key: FrameKey) -> View:
        if (key.sequence, key.view) not in self._views:
            self._views[key.sequence, key.view] = open_sequence(key.sequence).views[key.view]
        return self._views[key.sequence, key.view]

    def __getitem__(self, index: int) -> dict:
        key = self.keys[index]
        view = self.view(key)
        images, masks = view.tensors([key.frame], self.size)
        if masks is None:
            masks = torch.ones(1, 1, self.size, self.size)
        height, width = (int(v) for v in view.tracking.image_size)
        K = scale_intrinsics(_tensor(view.tracking.K[key.frame]), (height, width), (self.size, self.size))
        return {"image": images[0], "mask": masks[0], "params": _params(view, [key.frame], squeeze=True),
                "K": K, "world_to_cam": _tensor(view.tracking.world_to_cam[key.frame])}


def training_record(keys) -> dict:
    """What an avatar trained on, compactly: {sequence path (as given): {view: [[first, last], ...]}}."""
    record: dict = {}
    for key in keys:
        record.setdefault(str(key.sequence), {}).setdefault(key.view, []).append(key.frame)
    for views in record.values():
        for view, frames in views.items():
            frames = sorted(frames)
            runs, start = [], frames[0]
            for a, b in zip(frames, frames[1:] + [None]):
                if b != a + 1:
                    runs.append([start, a])
                    start = b
            views[view] = runs
    return {"frames": record, "count": len(keys)}


def record_keys(record: dict):
    """The FrameKeys of a training_record."""
    return [FrameKey(sequence, view, t) for sequence, views in record.get("frames", {}).items()
            for view, runs in views.items() for first, last in runs for t in range(first, last + 1)]
