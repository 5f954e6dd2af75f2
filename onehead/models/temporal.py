"""Temporal layers: attention over frames after every transformer block of the denoising UNet.

Added through forward hooks on the UNet's Transformer2DModel blocks (no UNet fork). Each layer
attends, at every pixel, over the frames of a clip (with sinusoidal frame positions) and adds a
zero-initialised projection, so a stage-1 model is unchanged when the layers are added.
The UNet's batch is (clips x frames); `clips()` (the ReferenceNet bank's batch) gives the split.
"""

from __future__ import annotations

import math

import torch
from torch import nn


def _frame_positions(frames: int, channels: int, device, dtype) -> torch.Tensor:
    position = torch.arange(frames, device=device, dtype=torch.float32)[:, None]
    scale = torch.exp(torch.arange(0, channels, 2, device=device, dtype=torch.float32) * (-math.log(1e4) / channels))
    table = torch.zeros(frames, channels, device=device)
    table[:, 0::2] = torch.sin(position * scale)
    table[:, 1::2] = torch.cos(position * scale)[:, : channels // 2]
    return table.to(dtype)


class TemporalAttention(nn.Module):
    def __init__(self, channels: int, heads: int = 4, groups: int = 32):
        super().__init__()
        heads = max(1, min(heads, channels // 8))
        self.norm = nn.GroupNorm(math.gcd(groups, channels), channels)
        self.attention = nn.MultiheadAttention(channels, heads, batch_first=True)
        self.proj_out = nn.Linear(channels, channels)
        nn.init.zeros_(self.proj_out.weight)
        nn.init.zeros_(self.proj_out.bias)

    def forward(self, x: torch.Tensor, frames: int) -> torch.Tensor:
        """x: (clips * frames, C, H, W)."""
        bf, c, h, w = x.shape
        clips = bf // frames
        tokens = self.norm(x).view(clips, frames, c, h * w).permute(0, 3, 1, 2).reshape(clips * h * w, frames, c)
        tokens = tokens + _frame_positions(frames, c, x.device, x.dtype)
        attended, _ = self.attention(tokens, tokens, tokens, need_weights=False)
        out = self.proj_out(attended).view(clips, h * w, frames, c).permute(0, 2, 3, 1).reshape(bf, c, h, w)
        return x + out


class TemporalLayers(nn.Module):
    """One TemporalAttention per transformer block of a UNet, hooked onto that block's output."""

    def __init__(self, unet, heads: int = 4, clips=None):
        """clips: a function giving the number of clips in the current UNet batch."""
        super().__init__()
        blocks = self._transformer_blocks(unet)
        if not blocks:
            raise ValueError("the UNet has no transformer blocks to add temporal layers to")
        self.layers = nn.ModuleList(TemporalAttention(block.config.in_channels, heads) for block in blocks)
        self.clips = clips if clips is not None else (lambda: 1)
        self.enabled = True
        self._handles = [block.register_forward_hook(self._hook(layer)) for block, layer in zip(blocks, self.layers)]

    def untrained(self) -> bool:
        """True while every output projection is zero: the layers then add exactly nothing."""
        return all(not layer.proj_out.weight.any() and not layer.proj_out.bias.any() for layer in self.layers)

    @staticmethod
    def _transformer_blocks(unet) -> list:
        from diffusers.models.transformers.transformer_2d import Transformer2DModel

        return [m for m in unet.modules() if isinstance(m, Transformer2DModel)]

    def _hook(self, layer: TemporalAttention):
        def apply(module, inputs, output):
            if not self.enabled:
                return output
            sample = output[0] if isinstance(output, tuple) else output.sample
            frames = sample.shape[0] // self.clips()
            if isinstance(output, tuple):
                return (layer(sample, frames), *output[1:])
            output.sample = layer(sample, frames)
            return output
        return apply
