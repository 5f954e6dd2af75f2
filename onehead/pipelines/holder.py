"""What every family's pipeline shares: its weights live in `self.model`, one nn.Module with its own
head model (`model.head`), a config with the output size (`model.config.resolution`) and a device."""

from __future__ import annotations

import torch


class ModelHolder:
    model: torch.nn.Module

    @property
    def head(self):
        """The head model this family renders."""
        return self.model.head

    @property
    def resolution(self) -> int:
        """Output frames are resolution x resolution."""
        return self.model.config.resolution

    @property
    def device(self) -> torch.device:
        return self.model.device

    def to(self, device):
        self.model.to(device)
        return self
