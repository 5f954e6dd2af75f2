"""Latent spaces of the Animator: Stable Diffusion's VAE, or an exact pixel-space stand-in.

Both take images in [-1, 1] (B, 3, H, W) and give latents (B, c, H/f, W/f) scaled for diffusion.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class PixelShuffleAutoencoder(nn.Module):
    """Invertible space-to-depth: (3, H, W) -> (3 f^2, H/f, W/f). For tiny CPU models and tests:
    no weights, decode(encode(x)) == x exactly."""

    def __init__(self, factor: int = 2):
        super().__init__()
        self.factor = factor
        self.latent_channels = 3 * factor * factor

    def encode(self, images: torch.Tensor, sample: bool = False, generator=None) -> torch.Tensor:
        return F.pixel_unshuffle(images, self.factor)

    def decode(self, latents: torch.Tensor) -> torch.Tensor:
        return F.pixel_shuffle(latents, self.factor)


class VaeCodec(nn.Module):
    """diffusers' AutoencoderKL with its scaling factor applied."""

    def __init__(self, vae):
        super().__init__()
        self.vae = vae
        self.factor = 2 ** (len(vae.config.block_out_channels) - 1)
        self.latent_channels = vae.config.latent_channels
        self.scaling = vae.config.scaling_factor

    def encode(self, images: torch.Tensor, sample: bool = False, generator=None) -> torch.Tensor:
        dist = self.vae.encode(images.to(self.vae.dtype)).latent_dist
        latents = dist.sample(generator) if sample else dist.mode()
        return latents * self.scaling

    def decode(self, latents: torch.Tensor) -> torch.Tensor:
        return self.vae.decode(latents.to(self.vae.dtype) / self.scaling).sample
