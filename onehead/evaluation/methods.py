"""What `onehead eval` can run: the baselines, and model folders of every family onehead has.

A method turns a prepared reference and motion (onehead.pipelines.reenactment, at the method's own
resolution) into frames (T, 3, S, S) in [0, 1]. A model folder is recognised by the "kind" in its
JSON config; a new model family adds one entry to MODEL_FAMILIES and is evaluated unchanged.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from onehead.errors import CheckpointError
from onehead.evaluation import baselines


@dataclass
class Method:
    name: str
    run: Callable  # (Reference, Motion) -> (T, 3, S, S) in [0, 1]
    head: object  # the head model it renders (shape from the reference, motion from the driving)
    resolution: int | None = None  # its native output size; None: any (runs at the evaluation size)
    identifier: dict = field(default_factory=dict)  # what exactly ran (path, weight hash, settings)


def baseline_methods(head) -> list[Method]:
    return [
        Method("copy_reference", baselines.copy_reference, head, identifier={"kind": "baseline"}),
        Method("mesh_warp", lambda ref, motion: baselines.mesh_warp(ref, motion, head), head,
               identifier={"kind": "baseline"}),
    ]


def _animator(directory: Path, num_steps: int | None, seed: int) -> Method:
    from onehead.pipelines.animator import Animator

    animator = Animator.from_pretrained(directory)
    animator.eval()

    def run(reference, motion):
        return animator.reenact(reference, motion, num_steps=num_steps, seed=seed, progress=False)[0]

    steps = num_steps or animator.config.default_steps
    return Method(directory.name, run, animator.head, animator.config.resolution,
                  {"kind": "onehead-animator", "steps": steps, "seed": seed})


# kind in the folder's JSON config -> (config file name, loader(directory, num_steps, seed))
MODEL_FAMILIES = {
    "onehead-animator": ("animator.json", _animator),
}


def load_method(directory: str | Path, num_steps: int | None = None, seed: int = 0) -> Method:
    """A model folder of any family in MODEL_FAMILIES, identified by path and weight hash."""
    directory = Path(directory)
    if not directory.is_dir():
        raise CheckpointError(f"{directory}: model folder does not exist")
    for kind, (config_name, loader) in MODEL_FAMILIES.items():
        config = directory / config_name
        if config.is_file():
            try:
                found = json.loads(config.read_text()).get("kind")
            except (json.JSONDecodeError, AttributeError):
                raise CheckpointError(f"{config}: not a valid JSON config") from None
            if found != kind:
                raise CheckpointError(f"{config}: kind {found!r}, expected {kind!r}")
            method = loader(directory, num_steps, seed)
            method.identifier.update(path=str(directory.resolve()), weights_sha256=weights_hash(directory))
            return method
    known = ", ".join(f"{name} ({kind})" for kind, (name, _) in MODEL_FAMILIES.items())
    raise CheckpointError(f"{directory}: not a onehead model folder (no {known})")


def weights_hash(directory: Path) -> str:
    """sha256 over the folder's safetensors files (names and bytes), in sorted order."""
    digest = hashlib.sha256()
    for path in sorted(directory.rglob("*.safetensors")):
        digest.update(str(path.relative_to(directory)).encode())
        with open(path, "rb") as handle:
            for block in iter(lambda: handle.read(1 << 20), b""):
                digest.update(block)
    return digest.hexdigest()[:16]
