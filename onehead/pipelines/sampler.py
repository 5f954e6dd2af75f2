"""The diffusion sampler shared by the diffusion families: DDIM over overlapping temporal windows.

    latents = sample_windows(denoise, scheduler, initial, window=16, overlap=4)

`initial` (clips, frames, c, h, w) is the start latent (the same noise for every frame of a clip,
see `initial_latents`). At every step each window of frames is denoised by `denoise(latents, t,
start, end)` (window latents flattened to (clips * count, c, h, w) -> the model output of the same
shape), the windows' outputs are blended with linear ramps over their overlaps, and the scheduler
(any diffusers scheduler with `set_timesteps` already called) takes one step on all frames.
"""

from __future__ import annotations

from typing import Callable

import torch


def initial_latents(clips: int, frames: int, shape: tuple[int, int, int], kind: str = "noise",
                    seed: int = 0, device=None, scale: float = 1.0) -> torch.Tensor:
    """(clips, frames, *shape): one draw of noise per clip shared by all its frames, or zeros."""
    if kind == "zeros":
        start = torch.zeros(clips, 1, *shape)
    elif kind == "noise":
        start = torch.randn(clips, 1, *shape, generator=torch.Generator().manual_seed(seed))
    else:
        raise ValueError(f"initial latent must be 'noise' or 'zeros', got {kind!r}")
    return (start.to(device) * scale).expand(clips, frames, *shape).contiguous()


def sample_windows(denoise: Callable, scheduler, initial: torch.Tensor, *, window: int, overlap: int,
                   progress: bool = False) -> torch.Tensor:
    """Run the scheduler's timesteps from `initial` (clips, frames, ...) -> the final latents."""
    from tqdm import tqdm

    latents = initial
    clips, frames = latents.shape[:2]
    windows = temporal_windows(frames, window, overlap)
    ramps = [window_weights(end - start, start, end, frames, overlap).to(latents.device) for start, end in windows]
    for t in tqdm(scheduler.timesteps, desc="denoising", unit="step", disable=not progress):
        output = torch.zeros_like(latents)
        weight = torch.zeros(frames, device=latents.device)
        for (start, end), ramp in zip(windows, ramps):
            count = end - start
            inputs = scheduler.scale_model_input(latents[:, start:end].flatten(0, 1), t)
            out = denoise(inputs, t, start, end)
            output[:, start:end] += out.view(clips, count, *out.shape[1:]) * ramp.view(1, -1, 1, 1, 1)
            weight[start:end] += ramp
        output /= weight.view(1, -1, 1, 1, 1)
        latents = scheduler.step(output.flatten(0, 1), t, latents.flatten(0, 1)).prev_sample.view_as(latents)
    return latents


def temporal_windows(frames: int, window: int, overlap: int) -> list[tuple[int, int]]:
    """[start, end) windows of at most `window` frames covering 0..frames, neighbours sharing `overlap`."""
    if frames <= window:
        return [(0, frames)]
    stride = max(1, window - overlap)
    starts = list(range(0, frames - window + 1, stride))
    if starts[-1] + window < frames:
        starts.append(frames - window)
    return [(s, s + window) for s in starts]


def window_weights(count: int, start: int, end: int, frames: int, overlap: int) -> torch.Tensor:
    """Blend weights of one window: a linear ramp over the overlap at edges shared with a neighbour."""
    weights = torch.ones(count)
    n = min(overlap, count)
    if n:
        ramp = torch.linspace(0, 1, n + 2)[1:-1]
        if start > 0:
            weights[:n] = ramp
        if end < frames:
            weights[count - n:] = torch.minimum(weights[count - n:], ramp.flip(0))
    return weights
