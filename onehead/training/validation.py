"""Validation pictures: one PNG grid per validation step, columns from the family."""

from __future__ import annotations

import contextlib
from pathlib import Path

import numpy as np
import torch

from onehead.files import atomic_path
from onehead.training.state import rng_preserved


def validation_grid(columns: list[torch.Tensor], max_frames: int = 4) -> np.ndarray:
    """Rows: item x frame (at most max_frames, spread over the clip); columns: the given pictures.

    Every column is (B, T, 3, H, W) in [0, 1]; a column of another size is resized (bilinear) to
    the last column's size. Returns (rows * H, columns * W, 3) uint8.
    """
    from onehead.pixels import frames_to_uint8

    last = columns[-1]
    T, size = last.shape[1], last.shape[-2:]
    frames = np.linspace(0, T - 1, min(T, max_frames)).round().astype(int)
    tiles = []
    for column in columns:
        column = column.detach().float().cpu()[:, frames if column.shape[1] == T else [0] * len(frames)]
        flat = column.flatten(0, 1)
        if flat.shape[-2:] != size:
            flat = torch.nn.functional.interpolate(flat, size=size, mode="bilinear", align_corners=False)
        tiles.append(frames_to_uint8(flat))  # (clips * frames, H, W, 3)
    return np.concatenate(np.concatenate(tiles, axis=2), axis=0)


def write_validation_grid(path: Path, columns: list[torch.Tensor], max_frames: int = 4) -> Path:
    """validation_grid(...) written as a PNG, atomically."""
    from PIL import Image

    with atomic_path(path) as tmp:
        Image.fromarray(validation_grid(columns, max_frames)).save(tmp)
    return Path(path)


def validate(trainer, step: int) -> Path | None:
    """Sample the validation batch and write output_dir/validation/step_XXXXXX.png (main process).

    Uses the EMA weights when on, moves no global RNG, and leaves the model in training mode.
    """
    from accelerate.utils import send_to_device

    acc = trainer.accelerator
    if trainer.validation_batch is None or not acc.is_main_process:
        return None
    batch = send_to_device(trainer.validation_batch, acc.device)
    ema = trainer.ema.applied(trainer.named_trainable) if trainer.ema is not None else contextlib.nullcontext()
    with rng_preserved(), ema, torch.no_grad(), acc.autocast():
        columns = trainer.family.validation_columns(trainer.model, batch, trainer.config.train)
    trainer.model.train()
    return write_validation_grid(trainer.output_dir / "validation" / f"step_{step:06d}.png", columns)
