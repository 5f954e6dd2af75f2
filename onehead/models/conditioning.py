"""The two small conditioning modules of the Animator: the pose guider and the domain tokens."""

from __future__ import annotations

import math

import torch
from torch import nn

from onehead.data.sequence import DOMAINS  # defined once, by the data format


class PoseGuider(nn.Module):
    """Control maps (B, C, H, W) -> a residual at latent resolution added after the UNet's conv_in.

    Strided convolutions down by `downsample` (a power of two), SiLU in between; the last layer
    is zero-initialised, so an untrained guider leaves the UNet exactly as it was.
    """

    def __init__(self, in_channels: int, out_channels: int, downsample: int,
                 channels: tuple[int, ...] = (16, 32, 64, 128)):
        super().__init__()
        steps = int(round(math.log2(downsample)))
        if 2 ** steps != downsample:
            raise ValueError(f"downsample must be a power of two, got {downsample}")
        widths = [channels[min(i, len(channels) - 1)] for i in range(steps + 1)]
        layers = [nn.Conv2d(in_channels, widths[0], 3, padding=1), nn.SiLU()]
        for i in range(steps):
            layers += [nn.Conv2d(widths[i], widths[i], 3, padding=1), nn.SiLU(),
                       nn.Conv2d(widths[i], widths[i + 1], 3, padding=1, stride=2), nn.SiLU()]
        self.body = nn.Sequential(*layers)
        self.out = nn.Conv2d(widths[-1], out_channels, 3, padding=1)
        nn.init.zeros_(self.out.weight)
        nn.init.zeros_(self.out.bias)

    def forward(self, control: torch.Tensor) -> torch.Tensor:
        return self.out(self.body(control))


class DomainTokens(nn.Module):
    """Learnable `real` and `synthetic` tokens: the cross-attention context (B, 1, D).

    With `image_embed_dim`, an image embedding from a user-supplied encoder is projected to one
    more token (B, 2, D).
    """

    def __init__(self, dim: int, image_embed_dim: int | None = None):
        super().__init__()
        self.tokens = nn.Parameter(torch.randn(len(DOMAINS), dim) * 0.02)
        self.image_proj = nn.Linear(image_embed_dim, dim) if image_embed_dim else None

    def forward(self, domain: torch.Tensor, image_embeds: torch.Tensor | None = None) -> torch.Tensor:
        context = self.tokens[domain.long()][:, None]
        if image_embeds is not None:
            if self.image_proj is None:
                raise ValueError("this model was built without an image embedding (image_embed_dim)")
            context = torch.cat([context, self.image_proj(image_embeds)[:, None]], 1)
        return context
