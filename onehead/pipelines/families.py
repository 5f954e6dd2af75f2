"""The registry of model families: which class loads a model folder, found by the `kind` in its config.

Two protocols share it:
- "one-shot" families (onehead.pipelines.one_shot.Animator): a reference image and a driving motion;
- "person" families (onehead.pipelines.person_avatar.PersonAvatar): trained on one person's video;
plus "training"-only entries (experiments with no inference side yet).

Each entry names its pipeline class and its training family (onehead.training.TrainingFamily) as
"module:Class", so a lookup imports only the family it needs. A new family adds one
`register_family(...)` call (or one line below); the CLI, eval, bench and training all look
families up here, training by the `model.kind` of its config.
"""

from __future__ import annotations

import importlib
import json
from dataclasses import dataclass
from pathlib import Path

from onehead.errors import CheckpointError


@dataclass(frozen=True)
class Family:
    kind: str  # the "kind" written in the folder's config file
    protocol: str  # "one-shot", "person" or "training"
    config_file: str  # the JSON config in a model folder
    target: str | None = None  # "module:Class" of its pipeline
    training: str | type | None = None  # "module:Class" (or the class) of its TrainingFamily

    def load_class(self):
        return _load(self.target, f"{self.kind} has no inference pipeline")

    def load_training(self):
        return _load(self.training, f"{self.kind} has no training family")


def _load(target, missing: str):
    if target is None:
        raise CheckpointError(missing)
    if isinstance(target, type):
        return target
    module, name = target.split(":")
    return getattr(importlib.import_module(module), name)


FAMILIES: dict[str, Family] = {}
PROTOCOLS = ("one-shot", "person", "training")


def register_family(kind: str, protocol: str, config_file: str, target: str | None = None,
                    training: str | type | None = None) -> Family:
    if protocol not in PROTOCOLS:
        raise ValueError(f"protocol must be one of {', '.join(PROTOCOLS)}, got {protocol!r}")
    if protocol != "training" and target is None:
        raise ValueError(f"a {protocol} family needs its pipeline class (target)")
    FAMILIES[kind] = Family(kind, protocol, config_file, target, training)
    return FAMILIES[kind]


register_family("onehead-animator", "one-shot", "animator.json",
                target="onehead.pipelines.gaussian_diffusion:GaussianDiffusionAnimator",
                training="onehead.training.gaussian_diffusion:GaussianDiffusionFamily")

register_family("onehead-triplane", "one-shot", "triplane.json",
                target="onehead.pipelines.triplane:TriplaneAnimator",
                training="onehead.training.triplane:TriplaneFamily")

register_family("onehead-avatar", "person", "avatar.json",
                target="onehead.pipelines.diffusion_avatar:DiffusionAvatar",
                training="onehead.training.person_avatar:PersonAvatarFamily")

# the embedded default model, shipped inside the package (a plain `pip install .` has it)
DEFAULT_MODEL_DIR = Path(__file__).resolve().parents[1] / "checkpoints" / "animator-small"


def default_model_dir() -> Path:
    """The embedded default model's folder, inside the installed package."""
    if not DEFAULT_MODEL_DIR.is_dir():
        raise CheckpointError(f"the embedded default model is missing from this install ({DEFAULT_MODEL_DIR}); "
                              "reinstall onehead, or pass a model folder (--model DIR)")
    return DEFAULT_MODEL_DIR


def families(protocol: str | None = None) -> list[Family]:
    """Registered families of one protocol (None: the inference protocols, one-shot and person)."""
    wanted = (protocol,) if protocol else ("one-shot", "person")
    return [f for f in FAMILIES.values() if f.protocol in wanted]


def read_model_config(directory: str | Path, protocol: str | None = None) -> tuple[Family, dict]:
    """The family of a model folder and its parsed config; CheckpointError with the reason otherwise."""
    directory = Path(directory)
    if not directory.exists():
        raise CheckpointError(f"{directory}: model folder does not exist")
    if not directory.is_dir():
        raise CheckpointError(f"{directory}: is a file; a model is a folder (the one save_pretrained wrote)")
    candidates = families(protocol)
    for name in dict.fromkeys(f.config_file for f in candidates):
        path = directory / name
        if not path.is_file():
            continue
        try:
            data = json.loads(path.read_text())
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise CheckpointError(f"{path}: not valid JSON ({exc})") from None
        if not isinstance(data, dict):
            raise CheckpointError(f"{path}: expected a JSON object with a 'kind', got {type(data).__name__}")
        kind = data.get("kind")
        match = [f for f in candidates if f.kind == kind and f.config_file == name]
        if not match:
            known = ", ".join(f.kind for f in candidates)
            raise CheckpointError(f"{path}: kind {kind!r} is not a {protocol or 'onehead'} model family "
                                  f"(known: {known})")
        return match[0], data
    expected = " or ".join(sorted({f.config_file for f in candidates})) or "a config file"
    others = [f for f in FAMILIES.values() if f not in candidates and (directory / f.config_file).is_file()]
    if others:
        loader = {"one-shot": "Animator.from_pretrained", "person": "PersonAvatar.from_pretrained"}
        other = others[0]
        raise CheckpointError(f"{directory}: a {other.protocol} model ({other.config_file}), not a {protocol} model; "
                              f"load it with {loader.get(other.protocol, 'its training family')}")
    raise CheckpointError(f"{directory}: not an onehead model folder (no {expected})")
