"""Image metrics on (B, 3, H, W) tensors in [0, 1]: PSNR, SSIM and L1, optionally inside a mask."""

from __future__ import annotations

import torch
import torch.nn.functional as F


def psnr(prediction: torch.Tensor, target: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
    """Peak signal-to-noise ratio in dB per image (B,), over the mask (B, 1, H, W) when given."""
    error = (prediction - target) ** 2
    if mask is None:
        mse = error.flatten(1).mean(1)
    else:
        weight = mask.expand_as(error)
        mse = (error * weight).flatten(1).sum(1) / weight.flatten(1).sum(1).clamp(min=1e-8)
    return 10 * torch.log10(1.0 / mse.clamp(min=1e-12))


def l1(prediction: torch.Tensor, target: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
    """Mean absolute error per image (B,)."""
    error = (prediction - target).abs()
    if mask is None:
        return error.flatten(1).mean(1)
    weight = mask.expand_as(error)
    return (error * weight).flatten(1).sum(1) / weight.flatten(1).sum(1).clamp(min=1e-8)


def ssim(prediction: torch.Tensor, target: torch.Tensor, mask: torch.Tensor | None = None,
         window: int = 11, sigma: float = 1.5) -> torch.Tensor:
    """Structural similarity per image (B,) (Wang et al. 2004: Gaussian 11x11 window, sigma 1.5,
    K1 = 0.01, K2 = 0.03, data range 1), averaged over channels and over the valid (unpadded)
    window positions, or over the mask there."""
    channels = prediction.shape[1]
    coords = torch.arange(window, dtype=prediction.dtype, device=prediction.device) - (window - 1) / 2
    g = torch.exp(-(coords ** 2) / (2 * sigma ** 2))
    g = g / g.sum()
    kernel = (g[:, None] * g[None, :]).expand(channels, 1, window, window)

    def blur(x):
        return F.conv2d(x, kernel, groups=channels)

    c1, c2 = 0.01 ** 2, 0.03 ** 2
    mu_x, mu_y = blur(prediction), blur(target)
    var_x = blur(prediction * prediction) - mu_x ** 2
    var_y = blur(target * target) - mu_y ** 2
    cov = blur(prediction * target) - mu_x * mu_y
    # the sample (N - 1) normalisation of the original, as in scikit-image's gaussian_weights mode
    n = window * window
    var_x, var_y, cov = (v * n / (n - 1) for v in (var_x, var_y, cov))
    index = ((2 * mu_x * mu_y + c1) * (2 * cov + c2)) / ((mu_x ** 2 + mu_y ** 2 + c1) * (var_x + var_y + c2))
    if mask is None:
        return index.flatten(1).mean(1)
    pad = (window - 1) // 2
    inner = mask[..., pad:mask.shape[-2] - pad, pad:mask.shape[-1] - pad].expand_as(index)
    return (index * inner).flatten(1).sum(1) / inner.flatten(1).sum(1).clamp(min=1e-8)
