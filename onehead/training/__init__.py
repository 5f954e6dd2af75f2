"""The library side of training, shared by every model family.

    from onehead.training import load_config, train
    train(load_config("training/configs/tiny.yaml", ["train.max_steps=50"]))

A model family plugs in through `TrainingFamily` (onehead.training.family), named in its entry of
the one family registry (onehead.pipelines.families); the config's `model.kind` picks it
(default onehead-animator, onehead.training.gaussian_diffusion).
"""

from onehead.training.checkpoint import LATEST_FILE, STATE_DIR, load_training_state, resolve_checkpoint, save_checkpoint
from onehead.training.config import (DEFAULT_FAMILY, DataConfig, DataSource, EMAConfig, ExperimentConfig, TrainConfig,
                                     check_config, load_config)
from onehead.training.data import EpochBatchSampler, MixedDataset, batch_stream, mixed_dataset, spread_batch
from onehead.training.ema import EMA
from onehead.training.family import ParamGroup, TrainingFamily, get_family
from onehead.training.loop import LOG_FILE, Trainer, lr_lambda, train
from onehead.training.seeding import micro_generator, micro_slot, mix_seed
from onehead.training.state import rng_preserved, rng_state_tensors, set_rng_state_tensors
from onehead.training.validation import validation_grid, write_validation_grid

__all__ = [
    "DEFAULT_FAMILY", "EMA", "LATEST_FILE", "LOG_FILE", "STATE_DIR", "DataConfig", "DataSource", "EMAConfig",
    "EpochBatchSampler", "ExperimentConfig", "MixedDataset", "ParamGroup", "TrainConfig", "Trainer",
    "TrainingFamily", "batch_stream", "check_config", "get_family", "load_config", "load_training_state",
    "lr_lambda", "micro_generator", "micro_slot", "mix_seed", "mixed_dataset",
    "resolve_checkpoint", "rng_preserved", "rng_state_tensors", "save_checkpoint", "set_rng_state_tensors",
    "spread_batch", "train", "validation_grid", "write_validation_grid",
]
