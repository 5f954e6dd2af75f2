"""Exponential moving average of named parameters, kept in float32."""

from __future__ import annotations

import contextlib

import torch

from onehead.errors import CheckpointError


class EMA:
    """shadow[name] <- lerp(shadow[name], param, 1 - decay) after every optimizer step."""

    def __init__(self, named_parameters: dict, decay: float, warmup: bool = True):
        self.decay, self.warmup = decay, warmup
        self.shadow = {name: p.detach().float().clone() for name, p in named_parameters.items()}

    def current_decay(self, step: int) -> float:
        """The decay used after optimizer step `step`: ramps up as (1 + step) / (10 + step) with warmup."""
        return min(self.decay, (1 + step) / (10 + step)) if self.warmup else self.decay

    @torch.no_grad()
    def update(self, named_parameters: dict, step: int) -> None:
        weight = 1 - self.current_decay(step)
        names = list(self.shadow)
        torch._foreach_lerp_([self.shadow[n] for n in names],
                             [named_parameters[n].detach().float() for n in names], weight)

    @contextlib.contextmanager
    def applied(self, named_parameters: dict):
        """Temporarily put the averaged weights into the model (validation, saving ema/)."""
        backup = {n: p.detach().clone() for n, p in named_parameters.items()}
        with torch.no_grad():
            for n, p in named_parameters.items():
                p.copy_(self.shadow[n])
        try:
            yield
        finally:
            with torch.no_grad():
                for n, p in named_parameters.items():
                    p.copy_(backup[n])

    def load(self, tensors: dict) -> None:
        missing = sorted(set(self.shadow) - set(tensors))
        if missing:
            raise CheckpointError(f"the EMA state lacks {len(missing)} trainable parameters, e.g. {missing[0]}")
        for n in self.shadow:
            self.shadow[n].copy_(tensors[n])
