"""The seam between the generic training loop and one model family.

A family is a class whose instances have the methods of `TrainingFamily`, named as `training=` in
its entry of the one family registry (onehead.pipelines.families.register_family); a config's
`model.kind` (default onehead-animator) picks it. Every run gets a fresh instance (get_family), so a family may keep per-run
state (e.g. inference settings to save with the weights). The loop never imports a model class:
everything model-specific goes through these calls.

    class MyFamily:
        name = "my-model"
        config_file = "my_model.json"          # the file that marks a saved model folder
        def check_config(self, config): ...    # ConfigError before anything loads
        def build(self, model_config, train, resume_from): ...  # -> nn.Module
        def datasets(self, model, config): ... # -> (MixedDataset, held-out Dataset or None)
        def parameter_groups(self, model, train): ...            # -> [ParamGroup, ...]
        def loss(self, model, batch, generator): ...             # -> scalar tensor
        def validation_columns(self, model, batch, train): ...   # -> [(B, T, 3, H, W) in [0, 1], ...]
        def save_pretrained(self, model, directory): ...
    register_family("my-model", "training", "my_model.json", training=MyFamily)   # onehead.pipelines.families
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol, runtime_checkable

import torch

from onehead.errors import ConfigError


@dataclass
class ParamGroup:
    """Named parameters trained together; `lr` / `weight_decay` None take train.learning_rate /
    train.weight_decay. The LR schedule scales every group by the same factor."""

    name: str
    params: dict[str, torch.nn.Parameter] = field(default_factory=dict)
    lr: float | None = None
    weight_decay: float | None = None


@runtime_checkable
class TrainingFamily(Protocol):
    """What the training loop needs from a model family (onehead.training.loop calls these)."""

    name: str  # the `model.kind` that picks this family
    config_file: str  # the file in a saved model folder that marks it as a checkpoint

    def check_config(self, config) -> None:
        """Refuse wrong family-specific values (stages, clip lengths, paths) with ConfigError."""

    def build(self, model_config: dict, train, resume_from: Path | None) -> torch.nn.Module:
        """The model to train: resumed from `resume_from` (a checkpoint folder) when given, else
        from train.init_from when set, else fresh from `model_config`; set up for train.stage."""

    def datasets(self, model, config) -> tuple:
        """(training set, validation set or None). The training set is a
        onehead.training.data.MixedDataset (its sources' sizes and weights drive the sampler)."""

    def parameter_groups(self, model, train) -> list[ParamGroup]:
        """The trainable parameters by group, each name as in model.named_parameters()."""

    def loss(self, model, batch: dict, generator: torch.Generator) -> torch.Tensor:
        """The scalar training loss of one micro-batch; every random draw from `generator`."""

    def validation_columns(self, model, batch: dict, train) -> list[torch.Tensor]:
        """Picture columns of the validation grid, each (B, T, 3, H, W) in [0, 1] (any size)."""

    def save_pretrained(self, model, directory: Path) -> None:
        """Write the model folder that the family's inference side loads."""


def get_family(name: str) -> TrainingFamily:
    """A fresh instance of the training family of model kind `name`, from the one registry of
    families (onehead.pipelines.families); ConfigError naming the known kinds otherwise."""
    from onehead.pipelines.families import FAMILIES

    family = FAMILIES.get(name)
    if family is None or family.training is None:
        known = ", ".join(sorted(k for k, f in FAMILIES.items() if f.training is not None))
        raise ConfigError(f"model.kind {name!r}: no such training family; known: {known}")
    cls = family.load_training()
    instance = cls()
    if not isinstance(instance, TrainingFamily):
        raise TypeError(f"{cls!r} lacks methods of onehead.training.TrainingFamily")
    return instance
