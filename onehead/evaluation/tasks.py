"""Which frames an evaluation renders, from a dataset in onehead's format.

self:  per sequence and view, the reference is frame 0 and the targets are the other frames,
       rendered with the view's own cameras and absolute poses.
cross: pairs.json (onehead synth --cross-pairs). The reference is frame 0 of the reference
       sequence's first view. With a target sequence (exact ground truth: the reference identity
       with the driving motion) each view is rendered at the driving cameras; without one, at the
       reference camera with the driving head motion relative to its first frame, and only the
       metrics that need no ground truth are computed. A dataset without pairs.json pairs each
       sequence with the next one, without ground truth.
avatar: a person-specific avatar's self-reenactment: every tracked frame under the dataset folder
       that the avatar did not train on (its training record), optionally within a frame range,
       rendered at the frame's own camera and pose. Items are grouped as "new view" (a camera it
       never saw), "new segment" (a sequence it never saw), both, and "new frames" (held-out frames
       of a sequence and view it trained on); the "reference" is the view's first frame (grid video only).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from onehead.data.sequence import PAIRS_FILE, View, list_sequences, open_sequence, read_pairs
from onehead.errors import ConfigError, MediaReadError

TASKS = ("self", "cross", "avatar")


@dataclass
class Item:
    name: str  # the sequence the scores are grouped under
    view: str
    reference: View
    driving: View
    frames: list[int]  # the driving (and target) frames to render
    target: View | None  # ground truth, or None
    camera: str | None  # "driving" or None (see onehead.pipelines.reenactment.driving_motion)
    real_reference: bool = False  # the reference is a real video's frame: its mask is the person's

    @property
    def reference_image(self):
        return self.reference.frame(0)

    @property
    def reference_foreground(self):
        """The person mask of a real reference frame (datasets/prepare_video.py mattes it with the
        selfie segmentation a photo's Reference.foreground comes from); None for synthetic frames,
        whose masks are render coverage, or without masks."""
        return self.reference.mask(0) if self.real_reference else None


def evaluation_items(root: str | Path, task: str, trained_on: dict | None = None,
                     frames: slice | None = None) -> list[Item]:
    """The items of a task; "avatar" takes the avatar's training record (trained_on) and a frame range."""
    root = Path(root)
    if task not in TASKS:
        raise ConfigError(f"task must be one of {', '.join(TASKS)}, got {task!r}")
    if task == "avatar":
        items = _avatar_items(root, trained_on or {}, frames)
    else:
        items = _self_items(root) if task == "self" else _cross_items(root)
    if not items:
        raise MediaReadError(f"{root}: nothing to evaluate for task {task!r}")
    return items


def _self_items(root: Path) -> list[Item]:
    targets = {pair.get("target") for pair in read_pairs(root)} if (root / PAIRS_FILE).is_file() else set()
    items = []
    for directory in list_sequences(root):
        if directory.name in targets:  # cross-pair ground truth, not a sequence of its own
            continue
        sequence = open_sequence(directory)
        for name, view in sequence.views.items():
            if view.num_frames < 2:
                continue
            items.append(Item(sequence.name, name, view, view, list(range(1, view.num_frames)), view, "driving",
                              real_reference=sequence.meta.domain == "real"))
    return items


def _cross_items(root: Path) -> list[Item]:
    if (root / PAIRS_FILE).is_file():
        pairs = read_pairs(root)
    else:
        names = [d.name for d in list_sequences(root)]
        if len(names) < 2:
            raise MediaReadError(f"{root}: cross reenactment needs pairs.json or at least two sequences")
        pairs = [{"reference": a, "driving": b} for a, b in zip(names, names[1:] + names[:1])]
    items = []
    for pair in pairs:
        reference = open_sequence(root / pair["reference"])
        ref_view = next(iter(reference.views.values()))
        driving = open_sequence(root / pair["driving"])
        target_dir = root / pair["target"] if pair.get("target") else None
        if target_dir is not None and target_dir.is_dir():
            target = open_sequence(target_dir)
            for name, view in target.views.items():
                if name not in driving.views:
                    raise MediaReadError(f"{target_dir}: view {name} is not in the driving sequence {driving.name}")
                items.append(Item(target.name, name, ref_view, driving.views[name],
                                  list(range(view.num_frames)), view, "driving",
                                  real_reference=reference.meta.domain == "real"))
        else:
            for name, view in driving.views.items():
                items.append(Item(f"{reference.name}_by_{driving.name}", name, ref_view, view,
                                  list(range(view.num_frames)), None, None,
                                  real_reference=reference.meta.domain == "real"))
    return items


def _avatar_items(root: Path, trained_on: dict, frames: slice | None) -> list[Item]:
    from onehead.data.datasets import record_keys, select_frames

    seen = {type(k)(str(Path(k.sequence).resolve()), k.view, k.frame) for k in record_keys(trained_on)}
    seen_sequences = {k.sequence for k in seen}
    seen_views = {k.view for k in seen}
    held_out: dict = {}
    for key in select_frames(root, frames=frames):
        key = type(key)(str(Path(key.sequence).resolve()), key.view, key.frame)
        if key not in seen:
            held_out.setdefault((key.sequence, key.view), []).append(key.frame)
    items = []
    for (sequence_dir, name), indices in held_out.items():
        view = open_sequence(sequence_dir).views[name]
        new_view, new_segment = name not in seen_views, sequence_dir not in seen_sequences
        group = ("new view and segment" if new_view and new_segment else "new view" if new_view
                 else "new segment" if new_segment else "new frames")
        items.append(Item(group, name, view, view, indices, view, "driving"))
    return items
