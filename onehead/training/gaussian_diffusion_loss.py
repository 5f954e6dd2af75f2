"""The training loss of the Gaussian-embedding diffusion family (paper 003): v-prediction MSE.

For a correct_warp model the clean latent is the target's minus the filled mesh warp's."""

from __future__ import annotations

import torch
import torch.nn.functional as F


def gaussian_diffusion_loss(model, batch: dict, generator: torch.Generator | None = None) -> torch.Tensor:
    """v-prediction MSE of a GaussianDiffusionModel on a batch of ReenactmentDataset items
    (onehead.data.datasets); every random draw (latent sampling, noise, timesteps) from `generator`."""
    from diffusers import DDPMScheduler

    target = batch["target"].to(model.device)
    clips, frames = target.shape[:2]
    control = model.batch_control(batch)
    base = model.batch_warp(batch)
    warp = None
    with torch.no_grad():
        latents = model.codec.encode(target.flatten(0, 1) * 2 - 1, sample=True, generator=generator)
        reference_latents = model.codec.encode(batch["reference"].to(model.device) * 2 - 1)
        if base is not None:
            base_latents, warp = model.warp_condition(base)
            latents = latents - base_latents
    scheduler = DDPMScheduler(**model.scheduler_config())
    draw_on = generator.device if generator is not None else None
    noise = torch.randn(latents.shape, generator=generator, device=draw_on).to(latents)
    timesteps = torch.randint(model.config.min_train_timestep, model.config.num_train_timesteps, (clips,),
                              generator=generator, device=draw_on)
    timesteps = timesteps.to(model.device).repeat_interleave(frames)
    noisy = scheduler.add_noise(latents, noise, timesteps)
    velocity = scheduler.get_velocity(latents, noise, timesteps)
    context = model.context(batch["domain"])
    model.run_reference(reference_latents, context)
    prediction = model.denoise(noisy, timesteps, context.repeat_interleave(frames, 0), control, warp)
    return F.mse_loss(prediction.float(), velocity.float())
