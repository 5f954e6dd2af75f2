"""LPIPS v0.1 (Zhang et al. 2018) with the AlexNet backbone, defined here (no torchvision).

The weights come only from a user file: one safetensors file with the backbone
(`features.N.*`, torchvision's key names) and the five linear layers (`lin0.weight` ..
`lin4.weight`). Make it once from torchvision's AlexNet state dict and the official
LPIPS `alex.pth` with `onehead convert-lpips` (or `convert_lpips_weights`).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Optional, Union

import torch
import torch.nn as nn
import torch.nn.functional as F

from onehead.errors import CheckpointError, MetricUnavailable
from onehead.files import atomic_path

PathLike = Union[str, Path]

ENV_VAR = "ONEHEAD_LPIPS_WEIGHTS"
SHIFT = (-0.030, -0.088, -0.188)
SCALE = (0.458, 0.448, 0.450)
CHANNELS = (64, 192, 384, 256, 256)
TAPS = (1, 4, 7, 9, 11)  # the five ReLUs of AlexNet's features
MIN_SIDE = 31  # smaller inputs vanish in the second max-pool
FORMAT = "onehead-lpips-alex-v0.1"
HOW_TO_MAKE = ("make one with `onehead convert-lpips --alexnet ALEXNET.pth --linear alex.pth --out FILE` "
               "from torchvision's AlexNet weights (alexnet-owt-7be5be79.pth) and LPIPS v0.1's alex.pth")


def _alexnet_features() -> nn.Sequential:
    """torchvision's `alexnet().features` up to the last ReLU (same layers, same state-dict keys)."""
    return nn.Sequential(
        nn.Conv2d(3, 64, 11, stride=4, padding=2), nn.ReLU(), nn.MaxPool2d(3, 2),
        nn.Conv2d(64, 192, 5, padding=2), nn.ReLU(), nn.MaxPool2d(3, 2),
        nn.Conv2d(192, 384, 3, padding=1), nn.ReLU(),
        nn.Conv2d(384, 256, 3, padding=1), nn.ReLU(),
        nn.Conv2d(256, 256, 3, padding=1), nn.ReLU(),
    )


def _unit(x: torch.Tensor, eps: float = 1e-10) -> torch.Tensor:
    """Each feature vector divided by its channel norm (LPIPS's normalize_tensor)."""
    return x / (x.pow(2).sum(1, keepdim=True).sqrt() + eps)


class LPIPS(nn.Module):
    """LPIPS distance with an AlexNet backbone. Random weights until loaded: use `from_file`."""

    def __init__(self):
        super().__init__()
        self.features = _alexnet_features()
        for i, c in enumerate(CHANNELS):
            setattr(self, f"lin{i}", nn.Conv2d(c, 1, 1, bias=False))
        with torch.no_grad():
            for i in range(len(CHANNELS)):
                getattr(self, f"lin{i}").weight.abs_()  # learned weights are non-negative
        self.register_buffer("shift", torch.tensor(SHIFT).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("scale", torch.tensor(SCALE).view(1, 3, 1, 1), persistent=False)

    @classmethod
    def from_file(cls, path: PathLike) -> "LPIPS":
        """The model with the weights of an onehead LPIPS safetensors file, in eval mode, frozen."""
        from safetensors import SafetensorError
        from safetensors.torch import load_file

        path = Path(path).expanduser()
        if not path.is_file():
            raise CheckpointError(f"LPIPS weights file {path} does not exist; {HOW_TO_MAKE}")
        try:
            state = load_file(str(path))
        except (SafetensorError, OSError, ValueError) as exc:
            raise CheckpointError(f"{path} is not a readable safetensors file ({exc}); {HOW_TO_MAKE}") from None
        model = cls()
        _check_state(model, state, path)
        model.load_state_dict(state)
        return model.eval().requires_grad_(False)

    def layer_distances(self, prediction: torch.Tensor, target: torch.Tensor) -> list[torch.Tensor]:
        """The five per-layer distance maps (B, 1, h_l, w_l) before the spatial mean."""
        if prediction.shape != target.shape or prediction.ndim != 4 or prediction.shape[1] != 3:
            raise ValueError(f"LPIPS needs two (B, 3, H, W) images of one shape, got "
                             f"{tuple(prediction.shape)} and {tuple(target.shape)}")
        if min(prediction.shape[-2:]) < MIN_SIDE:
            raise ValueError(f"LPIPS needs images of at least {MIN_SIDE}x{MIN_SIDE} px, got {tuple(prediction.shape[-2:])}")
        both = torch.cat([prediction, target]).to(self.shift)  # one pass, on the model's device and dtype
        x = (both * 2 - 1 - self.shift) / self.scale
        maps = []
        for i, layer in enumerate(self.features):
            x = layer(x)
            if i in TAPS:
                a, b = _unit(x).chunk(2)
                lin = getattr(self, f"lin{len(maps)}")
                maps.append(lin((a - b) ** 2))
        return maps

    def forward(self, prediction: torch.Tensor, target: torch.Tensor,
                mask: Optional[torch.Tensor] = None) -> torch.Tensor:
        return lpips(prediction, target, self, mask)


def lpips(prediction: torch.Tensor, target: torch.Tensor, model: LPIPS,
          mask: Optional[torch.Tensor] = None) -> torch.Tensor:
    """LPIPS distance per image (B,) between (B, 3, H, W) images in [0, 1] (0 for identical ones).
    With a mask (B, 1, H, W), each layer's distance map is averaged over the mask resized to that
    layer's resolution (area average) instead of over the whole image."""
    total = 0
    for d in model.layer_distances(prediction, target):
        if mask is None:
            total = total + d.flatten(1).mean(1)
        else:
            m = F.adaptive_avg_pool2d(mask.to(d), d.shape[-2:]).expand_as(d)
            total = total + (d * m).flatten(1).sum(1) / m.flatten(1).sum(1).clamp(min=1e-8)
    return total


def _check_state(model: LPIPS, state: dict, path: Path) -> None:
    """CheckpointError naming the missing, unexpected or misshapen keys, or negative linear weights."""
    expected = model.state_dict()
    missing = sorted(set(expected) - set(state))
    unexpected = sorted(set(state) - set(expected))
    shapes = [f"{k} {tuple(state[k].shape)} (want {tuple(v.shape)})"
              for k, v in expected.items() if k in state and state[k].shape != v.shape]
    problems = [f"{label}: {', '.join(keys)}" for label, keys in
                (("missing", missing), ("unexpected", unexpected), ("wrong shape", shapes)) if keys]
    if problems:
        raise CheckpointError(f"{path} is not an onehead LPIPS (AlexNet) weights file; "
                              f"{'; '.join(problems)}. {HOW_TO_MAKE}")
    negative = [k for k in state if k.startswith("lin") and bool((state[k] < 0).any())]
    if negative:
        raise CheckpointError(f"{path}: LPIPS linear weights must be non-negative ({', '.join(negative)})")


def load_lpips(path: Optional[PathLike] = None) -> LPIPS:
    """The LPIPS model from `path`, else from $ONEHEAD_LPIPS_WEIGHTS. MetricUnavailable when neither
    is given; CheckpointError when the named file is missing or wrong."""
    path = path or os.environ.get(ENV_VAR) or None
    if path is None:
        raise MetricUnavailable(f"LPIPS weights absent: no weights file given and ${ENV_VAR} is not set; "
                                f"{HOW_TO_MAKE}, then pass it or set ${ENV_VAR}")
    return LPIPS.from_file(path)


def _load_pth(path: PathLike, what: str) -> dict:
    path = Path(path).expanduser()
    if not path.is_file():
        raise CheckpointError(f"{what} file {path} does not exist")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # pickle, zip and weights-only errors alike
        raise CheckpointError(f"cannot read {what} file {path} as a state dict ({exc.__class__.__name__}: {exc})") from None
    if not isinstance(state, dict):
        raise CheckpointError(f"{what} file {path} holds a {type(state).__name__}, not a state dict")
    return state


def convert_lpips_weights(alexnet_pth: PathLike, linear_pth: PathLike, out_safetensors: PathLike) -> Path:
    """Write onehead's LPIPS safetensors file from torchvision's AlexNet state dict (`features.*`
    keys used, `classifier.*` ignored) and LPIPS v0.1's `alex.pth` (`lin{i}.model.1.weight`).
    Both are read with torch.load(weights_only=True). Returns the path written."""
    from safetensors.torch import save_file

    backbone = _load_pth(alexnet_pth, "AlexNet weights")
    linear = _load_pth(linear_pth, "LPIPS linear weights")
    state = {k: v for k, v in backbone.items() if k.startswith("features.")}
    for i in range(len(CHANNELS)):
        key = f"lin{i}.model.1.weight"
        if key not in linear:
            raise CheckpointError(f"{linear_pth} has no {key}: not LPIPS v0.1's alex.pth "
                                  f"(keys: {', '.join(sorted(linear)[:8])})")
        state[f"lin{i}.weight"] = linear[key]
    state = {k: v.detach().to(torch.float32).contiguous() for k, v in state.items()}
    _check_state(LPIPS(), state, Path(f"{alexnet_pth} + {linear_pth}"))
    out = Path(out_safetensors).expanduser()
    with atomic_path(out) as tmp:
        save_file(state, str(tmp), metadata={"format": FORMAT})
    return out
