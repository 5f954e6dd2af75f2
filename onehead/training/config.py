"""The typed config of a training run: one YAML file with the sections `model`, `data`, `train`.

    config = load_config("training/configs/tiny.yaml", ["train.learning_rate=1e-4"])

Parsing, type coercion and unknown-key errors come from onehead.config; `--set key.path=value`
overrides are applied to the raw YAML before it is typed. The `model` section stays a plain dict:
the family named by `model.kind` (default `onehead-animator`) types it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from onehead.config import apply_override, from_dict, to_dict
from onehead.errors import ConfigError, MediaReadError

DEFAULT_FAMILY = "onehead-animator"


@dataclass
class DataSource:
    """One dataset folder (onehead's data format) and its sampling weight."""

    path: str
    weight: float = 1.0  # 0 leaves the folder out (e.g. the synthetic data in stage 2)


@dataclass
class DataConfig:
    train: list[DataSource] = field(default_factory=list)
    validation: str | None = None  # a held-out dataset folder; None: no validation pictures
    clip_length: int = 1  # frames per target clip: 1 in stage 1, N (e.g. 14) in stage 2
    num_workers: int = 0
    samples_per_epoch: int | None = None  # None: the number of clips in all sources
    # The paper trains stage 2 on real video only (its synthetic multi-view frames are not
    # continuous). onehead's synthetic sequences are continuous motion, so a demo without real
    # video may set this to false.
    stage2_real_only: bool = True
    # person-specific families (onehead-avatar): which views and frames of data.train to train on
    views: list[str] | None = None  # None: every view
    frames: str | None = None  # a slice of each view's frame indices, e.g. "0:100"; None: all


@dataclass
class EMAConfig:
    enabled: bool = False
    decay: float = 0.9999
    warmup: bool = True  # decay ramps up as (1 + step) / (10 + step) early on


@dataclass
class TrainConfig:
    output_dir: str = "runs/animator"
    stage: int = 1  # what a stage means is the family's (the Animator: 1 frames, 2 temporal layers)
    init_from: str | None = None  # a checkpoint (or run folder with latest.txt) to start from
    seed: int = 0
    max_steps: int = 1000
    batch_size: int = 1  # per process
    gradient_accumulation_steps: int = 1
    learning_rate: float = 1e-5  # of every parameter group that names no rate of its own
    lr_schedule: Literal["constant", "cosine"] = "constant"  # both after a linear warm-up
    warmup_steps: int = 0
    adam_beta1: float = 0.9
    adam_beta2: float = 0.999
    adam_epsilon: float = 1e-8
    weight_decay: float = 0.01
    max_grad_norm: float = 1.0  # 0: no clipping
    mixed_precision: Literal["no", "fp16", "bf16"] = "no"
    gradient_checkpointing: bool = False
    allow_tf32: bool = False
    find_unused_parameters: bool = True  # DDP: parts of ReferenceNet feed no loss
    ema: EMAConfig = field(default_factory=EMAConfig)
    log_every: int = 10  # a plain log line every N steps (the progress bar updates every step)
    validate_every: int = 500  # 0: never
    validation_items: int = 4
    validation_sampling_steps: int = 8
    save_every: int = 500  # 0: only at the end
    keep_checkpoints: int = 3  # newest N kept; 0 keeps every one


@dataclass
class ExperimentConfig:
    """Everything a YAML config holds: `model` (the family's dict), `data`, `train`."""

    model: dict = field(default_factory=lambda: {"preset": "tiny"})
    data: DataConfig = field(default_factory=DataConfig)
    train: TrainConfig = field(default_factory=TrainConfig)

    @property
    def family(self) -> str:
        """The training family, `model.kind` (default onehead-animator)."""
        return self.model.get("kind", DEFAULT_FAMILY)

    @classmethod
    def from_dict(cls, raw, where: str = "config") -> "ExperimentConfig":
        """Typed from a raw YAML mapping; ConfigError (one line) on unknown keys or wrong types."""
        if not isinstance(raw, dict):
            raise ConfigError(f"{where}: expected the sections model, data and train")
        raw = dict(raw)
        train = raw.get("train")
        if isinstance(train, dict) and train.get("mixed_precision") in (False, None) and "mixed_precision" in train:
            raw["train"] = {**train, "mixed_precision": "no"}  # YAML reads a bare `no` as false
        data = raw.get("data")
        if isinstance(data, dict) and isinstance(data.get("train"), list):  # a bare path is {path: it}
            raw["data"] = {**data, "train": [{"path": s} if isinstance(s, str) else s for s in data["train"]]}
        if raw.get("model") is None and "model" in raw:
            raw.pop("model")
        return from_dict(cls, raw, where)

    def to_dict(self) -> dict:
        return to_dict(self)


def load_config(path: str | Path, overrides: list[str] | tuple[str, ...] = ()) -> ExperimentConfig:
    """Read a YAML config, apply `--set` overrides, check it; ConfigError on anything wrong.

    The family's own checks (its `check_config`) run too, so a wrong value fails here, before any
    data or model loads.
    """
    import yaml

    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"{path}: config file not found (the examples are in training/configs/)")
    try:
        raw = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML ({str(exc).splitlines()[0]})") from None
    if not isinstance(raw, dict):
        raise ConfigError(f"{path}: expected the sections model, data and train")
    for assignment in overrides:
        apply_override(raw, assignment)
    config = ExperimentConfig.from_dict(raw, path.name)
    check_config(config)
    return config


def check_config(config: ExperimentConfig) -> None:
    """Checks that need no data and no model: the generic ones here, then the family's."""
    from onehead.training.family import get_family

    t, d = config.train, config.data
    if min(t.batch_size, t.gradient_accumulation_steps, t.max_steps) < 1:
        raise ConfigError("train.batch_size, gradient_accumulation_steps and max_steps must be at least 1")
    if t.warmup_steps < 0 or t.keep_checkpoints < 0:
        raise ConfigError("train.warmup_steps and keep_checkpoints must not be negative")
    if not isinstance(config.model, dict):
        raise ConfigError("model must be a mapping of the family's config keys")
    sources = [s for s in d.train if s.weight > 0]
    if not sources:
        raise ConfigError("data.train lists no dataset folder with a weight above 0")
    for i, source in enumerate(d.train):
        if source.weight > 0 and not Path(source.path).is_dir():
            raise MediaReadError(f"data.train[{i}].path {source.path}: dataset folder does not exist "
                                 "(datasets/README.md says how to make one)")
    if d.validation and not Path(d.validation).is_dir():
        raise MediaReadError(f"data.validation {d.validation}: dataset folder does not exist")
    get_family(config.family).check_config(config)
