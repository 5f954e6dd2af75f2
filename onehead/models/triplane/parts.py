"""The networks of the tri-plane family, each small and tested through TriplaneModel, plus the splatter.

    PlaneEncoder       image-like (B, I, H, W) -> tri-plane (B, 3, C, R, R): diffusers' VAE Encoder
                       (halvings, bottleneck attention) then its Decoder (doublings)
    LiftFeatures       the appearance branch's E_p: source image -> per-pixel features
    TriplaneDecoder    EG3D's MLP: summed plane features -> raw density and features
    SuperResolution    render-resolution features -> RGB at the output resolution (PixelShuffle)
    BackdropEncoder    the source's filled-in picture at render resolution -> background features
    DualDiscriminator  EG3D's dual discrimination for stage 2: (image, its low-resolution version) -> logit
    splat_triplane     points with values -> three planes (bilinear scatter-add, normalised by weight)
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

MIN_SPLAT_WEIGHT = 1e-4  # a texel's splatted values are divided by max(weight, this): faint hits fade out


class PlaneEncoder(nn.Module):
    """(B, in_channels, H, W) -> (B, 3, plane_channels, R, R), R = H / 2^(len(down)-1) * 2^(len(up)-1).

    Its two halves are diffusers' `Encoder` and `Decoder` (the Stable Diffusion VAE's parts) under
    the names `encoder` and `decoder`, so the tensors of a diffusers AutoencoderKL whose names and
    shapes match can be loaded into it (TriplaneModel.load_canonical_init)."""

    def __init__(self, in_channels: int, plane_channels: int, down: tuple[int, ...], up: tuple[int, ...],
                 latent_channels: int, norm_groups: int, attention: bool):
        super().__init__()
        from diffusers.models.autoencoders.vae import Decoder, Encoder

        self.plane_channels = plane_channels
        self.encoder = Encoder(in_channels, latent_channels, ("DownEncoderBlock2D",) * len(down), tuple(down),
                               layers_per_block=1, norm_num_groups=norm_groups, double_z=False,
                               mid_block_add_attention=attention)
        self.decoder = Decoder(latent_channels, 3 * plane_channels, ("UpDecoderBlock2D",) * len(up), tuple(up),
                               layers_per_block=1, norm_num_groups=norm_groups, mid_block_add_attention=attention)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        planes = self.decoder(self.encoder(x))
        return planes.view(planes.shape[0], 3, self.plane_channels, *planes.shape[-2:])


class LiftFeatures(nn.Module):
    """E_p: source image (B, 3, S, S) in [-1, 1] -> features (B, out_channels, S / 2^halvings, ...)."""

    def __init__(self, out_channels: int, hidden: int, halvings: int):
        super().__init__()
        layers: list[nn.Module] = [nn.Conv2d(3, hidden, 3, padding=1), nn.SiLU()]
        for _ in range(halvings):
            layers += [nn.Conv2d(hidden, hidden, 4, stride=2, padding=1), nn.SiLU()]
        layers.append(nn.Conv2d(hidden, out_channels, 3, padding=1))
        self.net = nn.Sequential(*layers)

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        return self.net(image)


class TriplaneDecoder(nn.Module):
    """EG3D's OSG decoder: features (..., C) -> (raw density (...), features (..., F) in about [0, 1])."""

    def __init__(self, plane_channels: int, hidden: int, feature_channels: int):
        super().__init__()
        self.net = nn.Sequential(nn.Linear(plane_channels, hidden), nn.Softplus(),
                                 nn.Linear(hidden, 1 + feature_channels))

    def forward(self, features: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        out = self.net(features)
        return out[..., 0], torch.sigmoid(out[..., 1:]) * (1 + 2 * 0.001) - 0.001  # EG3D's output range


class SuperResolution(nn.Module):
    """Features (B, F, r, r) (first 3: RGB) -> RGB (B, 3, r 2^d, r 2^d) in [0, 1]: the bilinear
    upsampling of the rendered RGB plus a residual from convolutions and d PixelShuffle doublings."""

    def __init__(self, in_channels: int, channels: int, doublings: int):
        super().__init__()
        self.factor = 2 ** doublings
        self.stem = nn.Conv2d(in_channels, channels, 3, padding=1)
        self.ups = nn.ModuleList(nn.Sequential(nn.SiLU(), nn.Conv2d(channels, 4 * channels, 3, padding=1),
                                               nn.PixelShuffle(2)) for _ in range(doublings))
        self.out = nn.Sequential(nn.SiLU(), nn.Conv2d(channels, 3, 3, padding=1))

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        x = self.stem(features)
        for up in self.ups:
            x = up(x)
        rgb = features[:, :3]
        if self.factor > 1:
            rgb = F.interpolate(rgb, scale_factor=self.factor, mode="bilinear", align_corners=False)
        return (rgb + self.out(x)).clamp(0, 1)


class BackdropEncoder(nn.Module):
    """(B, 3, r, r) picture in [0, 1] and (B, 1, r, r) mask of what was filled in -> background
    features (B, F, r, r): the picture in the first 3 channels (the RGB the render composites over)
    plus a residual from two convolutions, zero at initialisation."""

    def __init__(self, feature_channels: int, hidden: int):
        super().__init__()
        self.feature_channels = feature_channels
        self.net = nn.Sequential(nn.Conv2d(4, hidden, 3, padding=1), nn.SiLU(),
                                 nn.Conv2d(hidden, feature_channels, 3, padding=1))
        nn.init.zeros_(self.net[-1].weight)
        nn.init.zeros_(self.net[-1].bias)

    def forward(self, picture: torch.Tensor, filled: torch.Tensor) -> torch.Tensor:
        base = F.pad(picture, (0, 0, 0, 0, 0, self.feature_channels - 3))
        return base + self.net(torch.cat([picture * 2 - 1, filled], 1))


class DualDiscriminator(nn.Module):
    """EG3D's dual discriminator (training only): the image (B, 3, S, S) and its low-resolution
    version upsampled to S (bilinear) concatenated -> one logit per image. Residual blocks halve the
    size down to 4 x 4 (channels doubling from `channels`, at most `max_channels`), then a linear
    layer. Seeing both, it can tell a super-resolved frame that does not agree with its own render."""

    def __init__(self, resolution: int, channels: int = 32, max_channels: int = 256):
        super().__init__()
        if resolution < 8 or resolution & (resolution - 1):
            raise ValueError(f"the discriminator needs a power-of-two resolution of at least 8, got {resolution}")
        self.resolution = resolution
        self.stem = nn.Conv2d(6, channels, 1)
        blocks, width = [], channels
        for _ in range(halvings(resolution, 4)):
            out = min(2 * width, max_channels)
            blocks.append(_DownBlock(width, out))
            width = out
        self.blocks = nn.Sequential(*blocks)
        self.head = nn.Sequential(nn.Flatten(), nn.Linear(width * 16, width), nn.LeakyReLU(0.2), nn.Linear(width, 1))

    def forward(self, image: torch.Tensor, low_res: torch.Tensor) -> torch.Tensor:
        size = image.shape[-1]
        if tuple(image.shape[-2:]) != (self.resolution, self.resolution):
            raise ValueError(f"the discriminator takes {self.resolution}x{self.resolution} images, got {tuple(image.shape)}")
        low = F.interpolate(low_res, size=(size, size), mode="bilinear", align_corners=False)
        x = torch.cat([image, low], 1) * 2 - 1
        return self.head(self.blocks(self.stem(x)))[:, 0]


class _DownBlock(nn.Module):
    def __init__(self, channels: int, out: int):
        super().__init__()
        self.conv = nn.Sequential(nn.LeakyReLU(0.2), nn.Conv2d(channels, channels, 3, padding=1), nn.LeakyReLU(0.2),
                                  nn.Conv2d(channels, out, 3, padding=1), nn.AvgPool2d(2))
        self.skip = nn.Sequential(nn.AvgPool2d(2), nn.Conv2d(channels, out, 1, bias=False))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (self.conv(x) + self.skip(x)) / math.sqrt(2)


def splat_triplane(points: torch.Tensor, values: torch.Tensor, valid: torch.Tensor, resolution: int,
                   bounds: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Splat points (B, N, 3) carrying values (B, N, D) onto three R x R planes: (planes (B, 3, D, R, R),
    weights (B, 3, 1, R, R)). The inverse of onehead.render.volume.triplane_features' lookup.

    Same layout as triplane_features: plane 0 xy (width x, height y), 1 xz, 2 yz; the cube
    [-bounds, bounds]^3 spans each plane, texel k centred at (2k + 1) / R - 1 (align_corners=False).
    Each point adds its value with bilinear weights to the 4 texels around it (scatter-add);
    each texel is then divided by its summed weight (at least MIN_SPLAT_WEIGHT), so a point
    exactly on a texel centre leaves its value there. `valid` (B, N) False points add nothing.
    Differentiable w.r.t. `values` (not the positions)."""
    B, N, D = values.shape
    R = resolution
    coords = points.detach().to(values.dtype) / bounds
    pairs = torch.stack([coords[..., [0, 1]], coords[..., [0, 2]], coords[..., [1, 2]]], 1)  # (B, 3, N, 2)
    texel = ((pairs + 1) * R - 1) / 2  # continuous (column, row), texel centres at integers
    corner = torch.floor(texel)
    frac = texel - corner
    total = values.new_zeros(B, 3, R * R, D)
    weight = values.new_zeros(B, 3, R * R)
    spread = values[:, None].expand(B, 3, N, D)
    for dy in (0, 1):
        for dx in (0, 1):
            col, row = corner[..., 0] + dx, corner[..., 1] + dy
            w = (frac[..., 0] if dx else 1 - frac[..., 0]) * (frac[..., 1] if dy else 1 - frac[..., 1])
            w = w * ((col >= 0) & (col < R) & (row >= 0) & (row < R) & valid[:, None])
            index = (row.clamp(0, R - 1) * R + col.clamp(0, R - 1)).long()  # (B, 3, N)
            total = total.scatter_add(2, index[..., None].expand(B, 3, N, D), w[..., None] * spread)
            weight = weight.scatter_add(2, index, w)
    planes = total / weight.clamp(min=MIN_SPLAT_WEIGHT)[..., None]
    return (planes.view(B, 3, R, R, D).permute(0, 1, 4, 2, 3),
            weight.view(B, 3, 1, R, R))


def halvings(big: int, small: int) -> int:
    """log2(big / small) for sizes whose ratio is a power of two (the config checks that)."""
    return int(round(math.log2(big // small)))
