"""The training family of the Gaussian-embedding diffusion Animator (`model.kind: onehead-animator`).

Two stages (paper 003, 4.1): stage 1 trains single frames with every part but the temporal
layers; stage 2 starts from a stage-1 checkpoint (train.init_from) and trains only the temporal
layers on clips of real video. The `model` section is an Animator preset plus AnimatorConfig
fields to override; with train.init_from the checkpoint's own config is the base instead.

The model is reached only through the Animator's public methods (from_config, from_pretrained,
set_stage, training_loss, sample_batch, batch_control, save_pretrained).
"""

from __future__ import annotations

from pathlib import Path

import torch

from onehead.errors import ConfigError
from onehead.training.data import mixed_dataset
from onehead.training.family import ParamGroup, register_family

KIND = "onehead-animator"
INFERENCE_CHOICES = {"background": ("generated", "reference"), "initial_latent": ("noise", "zeros"),
                     "inference_domain": ("real", "synthetic")}


def check_inference_settings(config) -> None:
    """ConfigError (one line) for an AnimatorConfig value the Animator would refuse only at
    inference: background, initial_latent, inference_domain, default_steps, background_margin."""
    for key, allowed in INFERENCE_CHOICES.items():
        value = getattr(config, key)
        if value not in allowed:
            raise ConfigError(f"{key} must be one of {', '.join(allowed)}; got {value!r}")
    if config.default_steps < 1:
        raise ConfigError(f"default_steps must be at least 1, got {config.default_steps}")
    if not 0 <= config.background_margin < 1:
        raise ConfigError(f"background_margin must be in [0, 1), got {config.background_margin}")


def control_preview(animator, batch) -> torch.Tensor:
    """The splatted control maps' first three channels as (B, T, 3, H, W) in [0, 1]."""
    clips, frames = batch["target"].shape[:2]
    maps = animator.batch_control(batch)[:, :animator.config.control_channels]
    maps = maps.float().view(clips, frames, *maps.shape[1:])[:, :, :3]
    if maps.shape[2] < 3:
        maps = torch.cat([maps, maps[:, :, :1].expand(-1, -1, 3 - maps.shape[2], -1, -1)], 2)
    return (maps * 0.5 + 0.5).clamp(0, 1)  # the features are tanh'd into [-1, 1]


class GaussianDiffusionFamily:
    """TrainingFamily of the Animator; `onehead.training.get_family("onehead-animator")`."""

    name = KIND
    config_file = "animator.json"

    def check_config(self, config) -> None:
        t, d = config.train, config.data
        if t.stage not in (1, 2):
            raise ConfigError(f"train.stage must be 1 or 2, got {t.stage}")
        if t.stage == 1 and d.clip_length != 1:
            raise ConfigError(f"stage 1 trains single frames: data.clip_length must be 1, got {d.clip_length}")
        if t.stage == 2 and d.clip_length < 2:
            raise ConfigError("stage 2 trains the temporal layers: data.clip_length must be at least 2")
        if t.stage == 2 and not t.init_from:
            raise ConfigError("stage 2 starts from a stage-1 checkpoint: set train.init_from")
        sd_path = config.model.get("sd_path")
        if sd_path and not t.init_from and not Path(sd_path).is_dir():
            raise ConfigError(f"model.sd_path {sd_path}: no such folder; point it at a local diffusers-format "
                              "Stable Diffusion folder (unet/, vae/, scheduler/), e.g. --set model.sd_path=DIR")

    def build(self, model_config: dict, train, resume_from: Path | None):
        """A fresh Animator (preset + overrides), the train.init_from checkpoint (its config changed by
        the keys set in model_config, e.g. warp_guidance), or the checkpoint being resumed."""
        from onehead.pipelines.animator import Animator, AnimatorConfig
        from onehead.training.checkpoint import resolve_checkpoint

        settings = {k: v for k, v in model_config.items() if k != "kind"}
        if resume_from is not None:
            animator = Animator.from_pretrained(resume_from)
        elif train.init_from:
            overrides = {k: v for k, v in settings.items() if k != "preset"}
            start = resolve_checkpoint(train.init_from, Path(train.output_dir), self.config_file, need_state=False)
            animator = Animator.from_pretrained(start, overrides=overrides)
        else:
            preset = settings.pop("preset", "tiny")
            animator = Animator.from_config(AnimatorConfig.from_preset(preset, **settings))  # ConfigError on unknown keys
        animator.set_stage(train.stage)
        if train.gradient_checkpointing:
            animator.enable_gradient_checkpointing()
        return animator

    def datasets(self, model, config):
        """Every source with weight > 0 as a ReenactmentDataset (items keep their meta.json domain
        label: the domain token); stage 2 refuses synthetic data unless data.stage2_real_only is false."""
        from onehead.data.datasets import ReenactmentDataset

        size, seed = model.config.resolution, config.train.seed
        train_set = build_train_dataset(config.data, config.train.stage, size, seed)
        held_out = None
        if config.data.validation:
            held_out = ReenactmentDataset(config.data.validation, clip_length=config.data.clip_length, size=size,
                                          seed=seed)
        return train_set, held_out

    def parameter_groups(self, model, train) -> list[ParamGroup]:
        """One group: the parameters the stage trains (Animator.trainable_parameters), in model order."""
        wanted = {id(p) for p in model.trainable_parameters()}
        return [ParamGroup("trainable", {n: p for n, p in model.named_parameters() if id(p) in wanted})]

    def loss(self, model, batch: dict, generator: torch.Generator) -> torch.Tensor:
        return model.training_loss(batch, generator=generator)

    def validation_columns(self, model, batch: dict, train) -> list[torch.Tensor]:
        """reference | target | control maps (first 3 channels) | sample (the Animator's inference domain)."""
        samples = model.sample_batch(batch, num_steps=train.validation_sampling_steps, seed=train.seed)
        return [batch["reference"][:, None], batch["target"], control_preview(model, batch), samples]

    def save_pretrained(self, model, directory: Path) -> None:
        model.save_pretrained(directory)


def build_train_dataset(data, stage: int, size: int, seed: int):
    """The MixedDataset of data.train's sources with weight > 0 (ReenactmentDataset each)."""
    from onehead.data.datasets import ReenactmentDataset
    from onehead.training.seeding import mix_seed

    def open_source(i, source):
        ds = ReenactmentDataset(source.path, clip_length=data.clip_length, size=size, seed=mix_seed(seed, i))
        if stage == 2 and data.stage2_real_only and any(seq.meta.domain == "synthetic" for seq in ds.sequences):
            raise ConfigError(f"data.train[{i}] {source.path} holds synthetic sequences; stage 2 trains on real "
                              "video only: set its weight to 0 (or data.stage2_real_only: false for a demo)")
        return ds

    return mixed_dataset(data.train, open_source)


FAMILY = register_family(GaussianDiffusionFamily())
