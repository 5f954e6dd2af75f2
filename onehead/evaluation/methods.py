"""What `onehead eval` can run: the baselines, and model folders of every family onehead has.

A method turns a prepared reference and motion (onehead.pipelines.reenactment, at the method's own
resolution) into frames (T, 3, S, S) in [0, 1]. A model folder is recognised by the "kind" in its
JSON config (onehead.pipelines.families); a new family registers there and is evaluated unchanged.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from onehead.evaluation import baselines


@dataclass
class Method:
    name: str
    run: Callable  # (Reference, Motion) -> (T, 3, S, S) in [0, 1]
    head: object  # the head model it renders (shape from the reference, motion from the driving)
    resolution: int | None = None  # its native output size; None: any (runs at the evaluation size)
    identifier: dict = field(default_factory=dict)  # what exactly ran (path, weight hash, settings)
    protocol: str = "one-shot"  # or "person" (onehead.pipelines.families)
    training_data: dict | None = None  # a person-specific model's training record


def baseline_methods(head) -> list[Method]:
    return [
        Method("copy_reference", baselines.copy_reference, head, identifier={"kind": "baseline"}),
        Method("mesh_warp", lambda ref, motion: baselines.mesh_warp(ref, motion, head), head,
               identifier={"kind": "baseline"}),
    ]


def load_method(directory: str | Path, **settings) -> Method:
    """A model folder of any registered family (onehead.pipelines.families), identified by path and
    weight hash. settings: inference settings for every call (steps=..., seed=...). A person-specific
    avatar renders the motion's own frames (self-reenactment; the reference is not used)."""
    from onehead.pipelines import Animator, PersonAvatar
    from onehead.pipelines.families import read_model_config

    directory = Path(directory)
    family, _ = read_model_config(directory)
    if family.protocol == "person":
        model = PersonAvatar.from_pretrained(directory, **settings)

        def run(reference, motion):
            return model.render(motion.tracking)
    else:
        model = Animator.from_pretrained(directory, **settings)

        def run(reference, motion):
            return model.reenact(reference, motion).frames

    identifier = {**model.describe(), "path": str(directory.resolve()), "weights_sha256": weights_hash(directory)}
    return Method(directory.name, run, model.head, model.resolution, identifier, family.protocol,
                  getattr(model, "training_data", None))


def nearest_frame_method(training_data: dict, size: int, head, background: float = 0.0) -> Method:
    """The nearest-training-frame baseline over an avatar's training record."""
    from onehead.data.datasets import record_keys

    nearest = baselines.NearestTrainingFrame(record_keys(training_data), size, background)
    return Method("nearest_training_frame", nearest, head, size, identifier={"kind": "baseline"})


def weights_hash(directory: Path) -> str:
    """sha256 over the folder's safetensors files (names and bytes), in sorted order."""
    digest = hashlib.sha256()
    for path in sorted(directory.rglob("*.safetensors")):
        digest.update(str(path.relative_to(directory)).encode())
        with open(path, "rb") as handle:
            for block in iter(lambda: handle.read(1 << 20), b""):
                digest.update(block)
    return digest.hexdigest()[:16]
